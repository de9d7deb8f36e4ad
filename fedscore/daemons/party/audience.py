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

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from nacl.signing import SigningKey

from fedscore.daemons.config import DaemonConfig, resolve_data_file
from fedscore.daemons.party.alignment import aligned_ids
from fedscore.daemons.party.scoring import ScoringHost
from fedscore.errors import ConfigError, DataError, ProtocolError
from fedscore.job import JobSpec, PartySpec, check_job_id
from fedscore.job_file import ScoringSettings
from fedscore.ledger.audience_rules import (
    AudienceFacts, AudienceRules, audience_chain_id, audience_model_entry, audience_query_entry,
    audience_start_entry, campaign_entry, conversion_entry, entry_digest, entry_id, new_conversion_id,
)
from fedscore.ledger.block import decode_entry
from fedscore.ledger.cosign import append_block, settlement_entry
from fedscore.ledger.member import LedgerMember
from fedscore.ledger.store import LedgerStore
from fedscore.model.data import normalise_id
from fedscore.protocol.audience.model import AudienceModel, CardCenterPart, card_center_part
from fedscore.protocol.audience.partner import AudiencePartner
from fedscore.protocol.audience.query import AudienceAnswer, AudienceQuery, new_query_id
from fedscore.protocol.audience.users import UserBase, load_user_base
from fedscore.protocol.scoring.journal import now_ms
from fedscore.protocol.scoring.secrets import ScoringSecrets
from fedscore.transport.clients.audience import AudiencePeer

log = logging.getLogger("fedscore.audience")

AUDIENCE_FOLDER = "audience"      # state_dir/audience/<other party>/: the pair's chain, a partner's records
CHAIN_FILE = "audience.sqlite"


@dataclass
class AudienceChain:
    """One pair's audience chain at this member; the card center's also holds its peer, the partner's its answers."""

    chain_id: str
    card_center: str
    partner: str
    member: LedgerMember
    peer: AudiencePeer | None = None           # the card center's
    answers: AudiencePartner | None = None     # the partner's
    lock: threading.Lock = threading.Lock()

    @property
    def reply(self) -> dict:
        head = self.member.head
        return {"chain_id": self.chain_id, "blocks": self.member.height, "head": "" if head is None else head.hash().hex()}


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
    def __init__(self, config: DaemonConfig, key: SigningKey, scoring: ScoringHost):
        self.config = config
        self.name = config.name
        self.label = f"party {config.name!r}"
        self.key = key
        self.scoring = scoring   # the models this party trained, and their settled training chains
        self._chains: dict[str, AudienceChain] = {}
        self._lock = threading.Lock()

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

    def _open(self, card_center: str, partner: str, members: dict | None = None, fees: dict | None = None,
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
            chain.lock = threading.Lock()
            if role == "partner":
                chain.answers = self._answers(card_center)
                facts.models.update(path.stem for path in (self.folder(card_center) / "models").glob("*.json"))
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
                    return self._open(card_center, partner)
        raise ProtocolError(f"{self.label} holds no audience chain {chain_id!r}")

    def proposer(self, chain_id: str) -> str:
        return self.chain(chain_id).card_center

    def ledger(self, chain_id: str) -> LedgerMember:
        return self.chain(chain_id).member

    def committed(self, chain_id: str) -> None:
        """A block was appended: the partner's answers on the chain no longer count as pending in its budget."""
        chain = self.chain(chain_id)
        if chain.answers is not None:
            for query_id in list(chain.member.rules.seen.queries):
                chain.answers.recorded(query_id)

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

    def _answers(self, card_center: str) -> AudiencePartner:
        policy = self.policy()
        return AudiencePartner(self.name, card_center, policy, self.folder(card_center), self._users, self._seen_ids)

    def _seen_ids(self, model: AudienceModel) -> set[str]:
        """The users this partner aligned with the card center in the model's job (kept at home at alignment)."""
        return aligned_ids(self.scoring.jobs_dir() / model.part.job_id) or set()

    def _users(self, model: AudienceModel) -> UserBase:
        """This partner's whole user base, as the model reads it: the users file its audience policy names."""
        policy = self.policy()
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
        chain = self._open(card_center, self.name, facts.members, start["fees"], policy.to_dict())
        audience = chain.answers.accept_model(part, model)
        chain.member.rules.facts.models.add(audience.digest())
        return {"model_digest": audience.digest(), "part_digest": part.digest(), "policy": policy.to_dict()}, chain

    def answer_query(self, card_center: str, body: dict) -> tuple[dict, AudienceChain]:
        chain = self._open(card_center, self.name)
        query = AudienceQuery.from_dict(body, f"{self.label}: the audience query")
        if query.unseen_only:
            job_id = chain.answers.model(query.model).part.job_id
            if aligned_ids(self.scoring.jobs_dir() / job_id) is None:
                raise ProtocolError(f"{self.label} kept no record of the users it aligned in job {job_id!r}, so it "
                                    "cannot leave them out (unseen_only); ask without it")
        with chain.lock:
            now = now_ms()
            spent = chain.member.rules.seen.spent(now, self.policy().window_days)
            answer = chain.answers.answer(query, spent, now)
            facts = chain.member.rules.facts
            facts.answered[query.query_id] = answer.digest()
            facts.asked[query.query_id] = entry_digest(query.to_dict())
        log.info("audience query %s answered for %s: %d cells, ε %.3g (spent %.3g of %.3g)", query.query_id,
                 card_center, len(answer.cells), answer.epsilon, answer.spent, answer.budget)
        return answer.to_dict(), chain

    def start_campaign(self, card_center: str, body: dict) -> tuple[dict, AudienceChain]:
        chain = self._open(card_center, self.name)
        query_id = body.get("query_id")
        if query_id not in chain.member.rules.seen.queries:
            raise ProtocolError(f"{self.label}: query {query_id!r} is not on the audience chain; a campaign starts "
                                "from an answered, recorded query")
        with chain.lock:
            campaign = chain.answers.campaign(query_id, now_ms())
            chain.member.rules.facts.answered[campaign.campaign_id] = query_id
            chain.member.rules.facts.billed[campaign.campaign_id] = campaign.members
        log.info("campaign %s of query %s: %d users in %s (kept here)", campaign.campaign_id, query_id,
                 campaign.members, campaign.audience_file.name)
        return {"campaign_id": campaign.campaign_id, "query_id": query_id, "members": campaign.members}, chain

    # -- the card center's side -------------------------------------------------------

    def _partner_of(self, spec: JobSpec) -> PartySpec:
        if not spec.party(self.name).is_card_center:
            raise ProtocolError(f"{self.label} is not the card center of job {spec.name!r}")
        if len(spec.partners) != 1:
            raise ConfigError(f"job {spec.name!r} has {len(spec.partners)} partners; an audience model is trained "
                              "with exactly one (the partner that evaluates it on its own users)")
        partner = spec.partners[0]
        if not partner.address:
            raise ConfigError(f"job {spec.name!r}: no address for partner {partner.name!r}")
        return partner

    def _peer(self, chain: AudienceChain, partner: PartySpec) -> AudiencePeer:
        if chain.peer is None or chain.peer.peer.address != partner.address:
            if chain.peer is not None:
                chain.peer.close()
            chain.peer = AudiencePeer(partner.name, partner.address, chain.chain_id, self.name, tls=self.config.tls)
        return chain.peer

    def _catch_up(self, chain: AudienceChain, partner_blocks: int) -> None:
        """Send the partner the blocks its replica lacks (it missed a commit, or restarted from a copy)."""
        member = chain.member
        if partner_blocks > member.height:
            raise ProtocolError(f"partner {chain.partner!r} holds {partner_blocks} audience blocks, more than the "
                                f"card center's {member.height}")
        for block in member.store.blocks(partner_blocks) if partner_blocks < member.height else ():
            chain.peer.commit_block(block)

    def _append(self, chain: AudienceChain, entry: dict) -> None:
        """One entry this card center made, co-signed by the partner and committed at both."""
        if entry["kind"] != "audience_start":
            chain.member.rules.facts.sent[entry_id(entry)] = entry_digest(entry)
        append_block(chain.member, {chain.partner: chain.peer}, [entry])

    def handover(self, spec: JobSpec, job_id: str, settings_json: str) -> tuple[dict, AudienceChain]:
        partner = self._partner_of(spec)
        job_id = job_id or self.scoring.newest_model(spec.name)
        model, facts, start = self.scoring.training_facts(job_id, "card_center")
        if facts.partners != [partner.name]:
            raise ConfigError(f"{self.label}: job {job_id!r} was trained with partners {', '.join(facts.partners)}")
        settings = ScoringSettings.from_json(settings_json) if settings_json else ScoringSettings()
        part = card_center_part(model, settings.policy, partner.name)
        chain_id = audience_chain_id(self.name, partner.name)
        peer = AudiencePeer(partner.name, partner.address, chain_id, self.name, tls=self.config.tls)
        try:
            accepted, blocks = peer.accept_model(part.to_dict())
        finally:
            peer.close()
        if accepted.get("part_digest") != part.digest():
            raise ProtocolError(f"partner {partner.name!r} assembled the model from a part other than the one sent")
        model_digest = accepted.get("model_digest")
        chain = self._open(self.name, partner.name, facts.members, start["fees"], accepted.get("policy"))
        with chain.lock:
            self._peer(chain, partner)
            self._catch_up(chain, blocks)
            if chain.member.height == 0:
                self._append(chain, audience_start_entry(chain.member.rules.facts))
            if model_digest not in chain.member.rules.seen.models:
                self._append(chain, audience_model_entry(job_id, facts.training_head, part.digest(), model_digest, now_ms()))
        log.info("audience model %s handed to %s as %s", job_id, partner.name, model_digest)
        return {"job_id": job_id, "partner": partner.name, "model": model_digest, "part_digest": part.digest(),
                "policy": chain.member.rules.facts.policy}, chain

    def _card_center_chain(self, spec: JobSpec) -> tuple[AudienceChain, PartySpec]:
        partner = self._partner_of(spec)
        chain = self._open(self.name, partner.name)
        self._peer(chain, partner)
        return chain, partner

    def query(self, spec: JobSpec, body: dict) -> tuple[dict, AudienceChain]:
        chain, partner = self._card_center_chain(spec)
        query = AudienceQuery.from_dict({"unseen_only": False, **body, "query_id": new_query_id()},
                                        "the audience query")
        with chain.lock:
            if query.model not in chain.member.rules.seen.models:
                raise ProtocolError(f"model {query.model!r} is not on the audience chain with {partner.name!r}; "
                                    "hand it over first (fedscore audience handover)")
            document, blocks = chain.peer.answer_query(query.to_dict())
            answer = AudienceAnswer.from_dict(document, f"partner {partner.name!r}'s answer")
            if answer.query_id != query.query_id or answer.model != query.model:
                raise ProtocolError(f"partner {partner.name!r} answered another query than {query.query_id}")
            self._catch_up(chain, blocks)
            now = now_ms()
            spent = chain.member.rules.query_spent(now, query.epsilon)
            self._append(chain, audience_query_entry(query.to_dict(), answer.digest(), spent, now))
        return answer.to_dict(), chain

    def campaign(self, spec: JobSpec, body: dict) -> tuple[dict, AudienceChain]:
        chain, partner = self._card_center_chain(spec)
        query_id = body.get("query_id")
        with chain.lock:
            if query_id not in chain.member.rules.seen.queries:
                raise ProtocolError(f"query {query_id!r} is not on the audience chain with {partner.name!r}")
            document, blocks = chain.peer.start_campaign(query_id)
            self._catch_up(chain, blocks)
            campaign_id, members = document.get("campaign_id"), document.get("members")
            if document.get("query_id") != query_id or not isinstance(members, int) or isinstance(members, bool):
                raise ProtocolError(f"partner {partner.name!r} answered the campaign of {query_id} with {document!r}")
            self._append(chain, campaign_entry(campaign_id, query_id, members, now_ms()))
        return {"campaign_id": campaign_id, "query_id": query_id, "members": members}, chain

    def conversion(self, spec: JobSpec, body: dict) -> tuple[dict, AudienceChain]:
        chain, partner = self._card_center_chain(spec)
        campaign_id, applicant = body.get("campaign_id"), normalise_id(str(body.get("applicant_id") or ""))
        if not applicant:
            raise DataError("a conversion needs the application's applicant id")
        salted = ScoringSecrets.load_or_create(self.config.state_dir / "scoring-secrets").salted_applicant(applicant)
        with chain.lock:
            if campaign_id not in chain.member.rules.seen.campaigns:
                raise ProtocolError(f"campaign {campaign_id!r} is not on the audience chain with {partner.name!r}")
            conversion_id = new_conversion_id()
            self._append(chain, conversion_entry(conversion_id, campaign_id, salted, now_ms()))
        return {"conversion_id": conversion_id, "campaign_id": campaign_id}, chain

    def settle(self, spec: JobSpec) -> tuple[dict, AudienceChain]:
        chain, partner = self._card_center_chain(spec)
        with chain.lock:
            if chain.member.rules.seen.last_kind == "audience_settlement":
                raise ProtocolError("nothing to settle: no query, campaign or conversion since the last settlement")
            entry = settlement_entry(chain.member, {partner.name: chain.peer})
            append_block(chain.member, {partner.name: chain.peer}, [entry])
        return entry, chain

