"""The audience side of a party daemon: a card center's marketing queries, and a partner answering them.

A card center and a partner share one audience chain (fedscore.ledger.audience_rules), kept under
``state_dir/audience/<the other party>/``; the card center proposes its blocks. The card center hands the
partner its part of a trained audience model (the intercept, the calibration, its points' scale), then asks
queries, starts campaigns on answered ones and records the conversions that arrive with a campaign id; each
act is one block, co-signed by both before the next. The partner keeps the whole model, its users, the noise
and the budget at home (fedscore.protocol.audience.partner): what crosses the wire is the card center's part,
a query, its noisy counts, a campaign's id and billed count.
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from nacl.signing import SigningKey

from fedscore.daemons.chain_reads import AUDIENCE_FOLDER, CHAIN_FILES
from fedscore.daemons.config import DaemonConfig, resolve_data_file
from fedscore.daemons.party.alignment import aligned_ids
from fedscore.daemons.party.audience_card_center import CardCenterAudience
from fedscore.daemons.party.scoring import ScoringHost
from fedscore.errors import ProtocolError
from fedscore.job import JobSpec, check_job_id
from fedscore.files import write_atomically
from fedscore.ledger.audience_rules import AudienceFacts, AudienceRules, audience_chain_id, entry_digest
from fedscore.ledger.block import Block, decode_entry
from fedscore.ledger.member import LedgerMember
from fedscore.ledger.store import LedgerStore
from fedscore.protocol.audience.model import AudienceModel, CardCenterPart
from fedscore.protocol.audience.partner import AudiencePartner
from fedscore.protocol.audience.policy import AudiencePolicy
from fedscore.protocol.audience.query import AudienceAnswer, AudienceQuery
from fedscore.protocol.audience.users import UserBase, load_user_base
from fedscore.protocol.scoring.batcher import block_from_json
from fedscore.protocol.scoring.journal import now_ms

if TYPE_CHECKING:
    from fedscore.transport.clients.audience import AudiencePeer

log = logging.getLogger("fedscore.audience")

CHAIN_FILE = CHAIN_FILES["audience"]   # in state_dir/AUDIENCE_FOLDER/<other party>/, with a partner's records
PENDING_FILE = "pending-block.json"   # the card center's: a block it proposed, proposed again until committed
HELD_FILE = "held.json"               # the partner's: what an audience_model entry must state of each model it holds


@dataclass
class AudienceChain:
    """One pair's audience chain at this member; the card center's also holds its peer, the partner's its answers."""

    chain_id: str
    card_center: str
    partner: str
    member: LedgerMember
    peer: "AudiencePeer | None" = None         # the card center's
    answers: AudiencePartner | None = None     # the partner's
    lock: threading.Lock = field(default_factory=threading.Lock)   # one act at a time on this chain
    pending: Block | None = None               # the card center's: a block proposed, not yet committed at both
    partner_blocks: int | None = None          # the card center's: the partner's replica height, when known

    @property
    def pending_path(self) -> Path:
        """The card center's block proposed and not yet committed (fedscore.daemons.party.audience_card_center)."""
        return self.member.path.parent / PENDING_FILE

    @property
    def reply(self) -> dict:
        head = self.member.head
        return {"chain_id": self.chain_id, "blocks": self.member.height, "head": "" if head is None else head.hash().hex()}


def read_held(folder: Path) -> dict[str, dict]:
    """The models a partner holds for one card center, with what their audience_model entries must state."""
    path = folder / HELD_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def stored_genesis(path: Path) -> dict | None:
    """The genesis entry of a stored audience chain (None: no chain yet)."""
    if not path.is_file():
        return None
    store = LedgerStore(path, read_only=True)
    try:
        first = next(iter(store.blocks()), None)
    finally:
        store.close()
    return None if first is None else decode_entry(first.entries[0])


class AudienceHost:
    """This party's audience chains and both sides of them: as a partner it answers here; as a card center its
    acts are CardCenterAudience's (fedscore.daemons.party.audience_card_center)."""

    def __init__(self, config: DaemonConfig, key: SigningKey, scoring: ScoringHost):
        self.config = config
        self.name = config.name
        self.label = f"party {config.name!r}"
        self.key = key
        self.scoring = scoring   # the models this party trained, and their settled training chains
        self._chains: dict[str, AudienceChain] = {}
        self._lock = threading.Lock()
        self.card_center = CardCenterAudience(self)

    # -- chains --------------------------------------------------------------------

    def folder(self, other: str) -> Path:
        return self.config.state_dir / AUDIENCE_FOLDER / other

    def _facts(self, role: str, card_center: str, partner: str, genesis: dict | None, members: dict, fees: dict,
               policy: dict) -> AudienceFacts:
        """This member's facts about the pair's chain: the stored genesis' when there is one (it is what the
        chain holds), else those of the first model handed over."""
        if genesis is not None:
            members, fees, policy = genesis["members"], genesis["fees"], genesis["policy"]
        return AudienceFacts(member=self.name, role=role, chain_id=audience_chain_id(card_center, partner),
                             card_center=card_center, partner=partner, members=members, fees=fees, policy=policy)

    def open_chain(self, card_center: str, partner: str, members: dict | None = None, fees: dict | None = None,
                   policy: dict | None = None) -> AudienceChain:
        """The pair's chain, opened once per daemon: from its stored genesis, or (first contact) from the facts given."""
        chain_id = audience_chain_id(card_center, partner)
        with self._lock:
            chain = self._chains.get(chain_id)
            if chain is not None:
                return chain
            role = "card_center" if self.name == card_center else "partner"
            other = partner if role == "card_center" else card_center
            path = self.folder(other) / CHAIN_FILE
            genesis = stored_genesis(path)
            if genesis is None and members is None:
                raise ProtocolError(f"{self.label} holds no audience chain with {other!r}; hand a model over first")
            path.parent.mkdir(parents=True, exist_ok=True)
            facts = self._facts(role, card_center, partner, genesis, members or {}, fees or {}, policy or {})
            chain = AudienceChain(chain_id, card_center, partner, LedgerMember(self.name, self.key, path, AudienceRules(facts)))
            try:
                if role == "partner":
                    chain.answers = self._answers(card_center, facts.policy)
                    self._remember_answers(chain)
                elif chain.pending_path.is_file():
                    pending = block_from_json(chain.pending_path.read_text())
                    if pending.height >= chain.member.height:
                        chain.pending = pending   # proposed again, unchanged, by the next act
                    else:
                        chain.pending_path.unlink()
            except BaseException:
                chain.member.close()
                raise
            self._chains[chain_id] = chain
            return chain

    def chain(self, chain_id: str) -> AudienceChain:
        """An open chain by id, or one this member holds on disk (after a restart)."""
        with self._lock:
            chain = self._chains.get(chain_id)
        if chain is not None:
            return chain
        root = self.config.state_dir / AUDIENCE_FOLDER
        for folder in sorted(root.glob("*")) if root.is_dir() else []:
            for card_center, partner in ((self.name, folder.name), (folder.name, self.name)):
                if audience_chain_id(card_center, partner) == chain_id and (folder / CHAIN_FILE).is_file():
                    return self.open_chain(card_center, partner)
        raise ProtocolError(f"{self.label} holds no audience chain {chain_id!r}")

    def proposer(self, chain_id: str) -> str:
        return self.chain(chain_id).card_center

    def ledger(self, chain_id: str) -> LedgerMember:
        return self.chain(chain_id).member

    def committed(self, chain_id: str) -> None:
        """A block was appended: the partner's answers on the chain no longer count as pending in its budget."""
        chain = self.chain(chain_id)
        if chain.answers is not None:
            self._mark_recorded(chain)

    @staticmethod
    def _mark_recorded(chain: AudienceChain) -> None:
        """The partner's record says recorded what the chain holds (after a commit, and at start: a crash inside
        a commit leaves the chain ahead of the record)."""
        seen = chain.member.rules.seen
        for query_id in list(seen.queries):
            chain.answers.recorded(query_id)
        for campaign_id in list(seen.campaigns):
            chain.answers.campaign_recorded(campaign_id)

    def close_all(self) -> None:
        with self._lock:
            chains, self._chains = list(self._chains.values()), {}
        for chain in chains:
            if chain.peer is not None:
                chain.peer.close()
            if chain.answers is not None:
                chain.answers.close()
            chain.member.close()

    # -- the partner's side ----------------------------------------------------------

    def policy(self):
        if self.config.audience is None:
            raise ProtocolError(f"{self.label} answers no audience queries: its config has no [party.audience] table")
        return self.config.audience

    def _answers(self, card_center: str, stated: dict) -> AudiencePartner:
        """The partner's answers to one card center, under the policy its chain states (the contract both sides
        audit against); its config's users file and id column say where its users are. A config whose policy
        has changed since is named in the log: the chain's goes on applying."""
        policy = self.policy()
        if stated and stated != policy.to_dict():
            log.warning("%s: [party.audience] differs from the policy its audience chain with %s states; the "
                        "chain's applies (a chain's policy is fixed when it starts)", self.label, card_center)
            policy = replace(AudiencePolicy.from_dict(stated, f"{self.label}: the audience chain's policy"),
                             users=policy.users, id_column=policy.id_column)
        return AudiencePartner(self.name, card_center, policy, self.folder(card_center),
                               lambda model: self._users(model, policy), self._seen_ids)

    def _remember_answers(self, chain: AudienceChain) -> None:
        """What this partner answered and made that no block holds yet, and the models it holds: the facts it
        signs entries against (after a restart, from its own record)."""
        facts, answers, seen = chain.member.rules.facts, chain.answers, chain.member.rules.seen
        self._mark_recorded(chain)
        for digest, held in read_held(self.folder(chain.card_center)).items():
            facts.models.add(digest)
            facts.held[digest] = held
        queries, campaigns = answers.unrecorded()
        for record in queries:
            if record["query"]["query_id"] not in seen.queries:
                self._note_answer(facts, AudienceQuery.from_dict(record["query"], "its record"),
                                  AudienceAnswer.from_dict(record["answer"], "its record"), record["time_ms"])
        for record in campaigns:
            if record["campaign_id"] not in seen.campaigns:
                facts.answered[record["campaign_id"]] = record["query_id"]
                facts.billed[record["campaign_id"]] = record["members"]

    @staticmethod
    def _note_answer(facts, query: AudienceQuery, answer: AudienceAnswer, answered_ms: int) -> None:
        facts.answered[query.query_id] = answer.digest()
        facts.asked[query.query_id] = entry_digest(query.to_dict())
        facts.answered_at[query.query_id] = answered_ms
        facts.totals[query.query_id] = answer.total

    def _seen_ids(self, model: AudienceModel) -> set[str]:
        """The users this partner aligned with the card center in the model's job (kept at home at alignment)."""
        return aligned_ids(self.scoring.jobs_dir() / model.part.job_id) or set()

    def _users(self, model: AudienceModel, policy: AudiencePolicy) -> UserBase:
        """This partner's whole user base, as the model reads it: the users file its audience policy names, with
        the segment columns the policy (its chain's) exposes."""
        path = resolve_data_file(self.config.data_dir, policy.users, self.name)
        return load_user_base(path, policy.id_column, list(model.partner_model.features), list(policy.segments), self.name)

    def accept_model(self, card_center: str, body: dict) -> tuple[dict, AudienceChain]:
        """Check the card center's part against this partner's own settled training of the same job, assemble
        the whole model and keep it; the chain records both digests."""
        policy = self.policy()
        part = CardCenterPart.from_dict(body, f"{self.label}: the card center's part of the audience model")
        if part.partner != self.name or part.card_center != card_center:
            raise ProtocolError(f"{self.label}: the part names card center {part.card_center!r} and partner "
                                f"{part.partner!r}; it was sent by {card_center!r} to {self.name!r}")
        model, facts, start = self.scoring.training_facts(check_job_id(part.job_id, self.label), "partner")
        if facts.card_center != card_center or facts.partners != [self.name]:
            raise ProtocolError(f"{self.label}: job {part.job_id!r} was not trained by {card_center!r} with this "
                                "party as its only partner; an audience model has exactly these two parties")
        chain = self.open_chain(card_center, self.name, facts.members, start["fees"], policy.to_dict())
        with chain.lock:
            held = chain.member.rules.facts.held
            other = next((d for d, h in held.items() if h["job_id"] == part.job_id and h["part_digest"] != part.digest()), None)
            if other is not None:   # a second part (another offset, say) would shift the cut-offs past the gap rule
                raise ProtocolError(f"{self.label} already holds job {part.job_id!r} as model {other}, from another "
                                    "part; one part per job")
            audience = chain.answers.accept_model(part, model)
            held[audience.digest()] = {"job_id": part.job_id, "part_digest": part.digest(),
                                       "training_head": facts.training_head}
            chain.member.rules.facts.models.add(audience.digest())
            write_atomically(self.folder(card_center) / HELD_FILE, json.dumps(held, sort_keys=True))
        return {"model_digest": audience.digest(), "part_digest": part.digest(), "policy": policy.to_dict()}, chain

    def answer_query(self, card_center: str, body: dict) -> tuple[dict, AudienceChain]:
        chain = self.open_chain(card_center, self.name)
        query = AudienceQuery.from_dict(body, f"{self.label}: the audience query")
        if query.unseen_only:
            job_id = chain.answers.model(query.model).part.job_id
            if aligned_ids(self.scoring.jobs_dir() / job_id) is None:
                raise ProtocolError(f"{self.label} kept no record of the users it aligned in job {job_id!r}, so it "
                                    "cannot leave them out (unseen_only); ask without it")
        with chain.lock:
            seen, now, window = chain.member.rules.seen, now_ms(), chain.answers.policy.window_days
            if query.model not in seen.models:
                raise ProtocolError(f"{self.label}: model {query.model} is not on the audience chain with {card_center!r}")
            answer = chain.answers.answer(query, seen.spent(now, window), now, seen.cutoffs(now, window))
            self._note_answer(chain.member.rules.facts, query, answer, chain.answers.answered_at(query.query_id))
        log.info("audience query %s answered for %s: %d cells, ε %.3g (spent %.3g of %.3g)", query.query_id,
                 card_center, len(answer.cells), answer.epsilon, answer.spent, answer.budget)
        return answer.to_dict(), chain

    def start_campaign(self, card_center: str, body: dict) -> tuple[dict, AudienceChain]:
        chain = self.open_chain(card_center, self.name)
        query_id = body.get("query_id")
        if not isinstance(query_id, str) or query_id not in chain.member.rules.seen.queries:
            raise ProtocolError(f"{self.label}: query {query_id!r} is not on the audience chain; a campaign starts "
                                "from an answered, recorded query")
        with chain.lock:
            campaign = chain.answers.campaign(query_id, now_ms())
            chain.member.rules.facts.answered[campaign.campaign_id] = query_id
            chain.member.rules.facts.billed[campaign.campaign_id] = campaign.members
        log.info("campaign %s of query %s: %d users in %s (kept here)", campaign.campaign_id, query_id,
                 campaign.members, campaign.audience_file.name)
        return {"campaign_id": campaign.campaign_id, "query_id": query_id, "members": campaign.members}, chain

    def unrecorded(self, card_center: str, body: dict) -> tuple[dict, AudienceChain]:
        """What this partner answered or made for the card center that no block holds yet, for it to record."""
        chain = self.open_chain(card_center, self.name)
        with chain.lock:
            seen = chain.member.rules.seen
            queries, campaigns = chain.answers.unrecorded()
        return {"queries": [q for q in queries if q["query"]["query_id"] not in seen.queries],
                "campaigns": [c for c in campaigns if c["campaign_id"] not in seen.campaigns]}, chain

    # -- the card center's side (fedscore.daemons.party.audience_card_center) -------------------

    def handover(self, spec: JobSpec, job_id: str, settings_json: str) -> tuple[dict, AudienceChain]:
        return self.card_center.handover(spec, job_id, settings_json)

    def query(self, spec: JobSpec, body: dict) -> tuple[dict, AudienceChain]:
        return self.card_center.query(spec, body)

    def campaign(self, spec: JobSpec, body: dict) -> tuple[dict, AudienceChain]:
        return self.card_center.campaign(spec, body)

    def conversion(self, spec: JobSpec, body: dict) -> tuple[dict, AudienceChain]:
        return self.card_center.conversion(spec, body)

    def settle(self, spec: JobSpec) -> tuple[dict, AudienceChain]:
        return self.card_center.settle(spec)
