"""The card center's acts on an audience chain: hand a model over, ask, start a campaign, record a conversion,
settle; each one block it proposes and the partner co-signs (fedscore.daemons.party.audience keeps the chains).

Nothing the partner answered is lost on the way to the chain. Before each act the card center asks the
partner for what it answered that no block holds yet (a query answered, or a campaign made, whose block
failed or whose card center restarted) and records those first: the partner answers no new query until then,
and its budget counts every answer it gave, recorded or not. A block that failed to reach the partner is
proposed again as it was, so neither side is left holding a signature for a block the other never committed.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fedscore.errors import ConfigError, DataError, FedscoreError, PeerError, ProtocolError
from fedscore.files import write_atomically
from fedscore.job import JobSpec, PartySpec
from fedscore.job_file import ScoringSettings
from fedscore.ledger.audience_rules import (
    audience_chain_id, audience_model_entry, audience_query_entry, audience_start_entry, campaign_entry,
    conversion_entry, entry_digest, entry_id, new_conversion_id,
)
from fedscore.ledger.block import Block
from fedscore.ledger.cosign import co_sign, propose, settlement_entry
from fedscore.model.data import normalise_id
from fedscore.protocol.audience.budget import DAY_MS
from fedscore.protocol.audience.model import card_center_part
from fedscore.protocol.audience.query import CAMPAIGN_ID, AudienceAnswer, AudienceQuery, new_query_id
from fedscore.protocol.scoring.batcher import block_to_json
from fedscore.protocol.scoring.journal import now_ms
from fedscore.protocol.scoring.secrets import ScoringSecrets
from fedscore.transport.clients.audience import AudiencePeer

if TYPE_CHECKING:
    from fedscore.daemons.party.audience import AudienceChain, AudienceHost

log = logging.getLogger("fedscore.audience")


class CardCenterAudience:
    """The card center's side of its audience chains (one per partner)."""

    def __init__(self, host: AudienceHost):
        self.host = host
        self.name = host.name
        self.label = host.label

    # -- reaching the partner and the chain ------------------------------------------------

    def partner_of(self, spec: JobSpec) -> PartySpec:
        if not spec.party(self.name).is_card_center:
            raise ProtocolError(f"{self.label} is not the card center of job {spec.name!r}")
        if len(spec.partners) != 1:
            raise ConfigError(f"job {spec.name!r} has {len(spec.partners)} partners; an audience model is trained "
                              "with exactly one (the partner that evaluates it on its own users)")
        partner = spec.partners[0]
        if not partner.address:
            raise ConfigError(f"job {spec.name!r}: no address for partner {partner.name!r}")
        return partner

    def peer(self, chain: AudienceChain, partner: PartySpec) -> AudiencePeer:
        if chain.peer is None or chain.peer.peer.address != partner.address:
            if chain.peer is not None:
                chain.peer.close()
            chain.peer = AudiencePeer(partner.name, partner.address, chain.chain_id, self.name, tls=self.host.config.tls)
        return chain.peer

    def catch_up(self, chain: AudienceChain, partner_blocks: int) -> None:
        """Send the partner the blocks its replica lacks (a commit it missed)."""
        member = chain.member
        if partner_blocks > member.height:
            raise ProtocolError(f"partner {chain.partner!r} holds {partner_blocks} audience blocks, more than the "
                                f"card center's {member.height}")
        for block in member.store.blocks(partner_blocks) if partner_blocks < member.height else ():
            chain.peer.commit_block(block)
        chain.partner_blocks = member.height

    def append(self, chain: AudienceChain, entry: dict) -> None:
        """One entry this card center made, co-signed by the partner and committed at both. A block the partner
        may have signed but that was never committed is proposed again first, unchanged."""
        self.resend(chain)
        if entry["kind"] not in ("audience_start", "audience_settlement"):
            chain.member.rules.facts.sent[entry_id(entry)] = entry_digest(entry)
        self.keep_pending(chain, propose(chain.member, [entry]))
        self.resend(chain)

    @staticmethod
    def keep_pending(chain: AudienceChain, block: Block | None) -> None:
        """The block proposed and not yet committed, on disk too: after a restart the card center proposes that
        same block again, the one the partner may have signed (it signs one block per height)."""
        chain.pending = block
        if block is None:
            chain.pending_path.unlink(missing_ok=True)
        else:
            write_atomically(chain.pending_path, block_to_json(block))

    def resend(self, chain: AudienceChain) -> None:
        """Co-sign and commit the pending block, if any: kept on a failure to reach the partner (the same block
        goes again), dropped when the partner refuses it (its reason is the error)."""
        if chain.partner_blocks is not None and chain.partner_blocks < chain.member.height:
            self.catch_up(chain, chain.partner_blocks)
        if chain.pending is None:
            return
        partners = {chain.partner: chain.peer}
        try:
            signed = co_sign(chain.member, partners, chain.pending)
        except PeerError:
            raise   # unreachable: the same block goes again with the next act
        except FedscoreError:
            self.keep_pending(chain, None)
            chain.member.abandon_uncommitted()   # refused: this height is free for another block
            raise
        self.keep_pending(chain, None)
        chain.partner_blocks = chain.member.height - 1
        chain.peer.commit_block(signed)
        chain.partner_blocks = chain.member.height

    def recover(self, chain: AudienceChain) -> None:
        """Record what the partner answered that no block holds: the pending block first (it may hold some of
        them), then its answers, then its campaigns."""
        self.resend(chain)
        document, blocks = chain.peer.unrecorded()
        self.catch_up(chain, blocks)
        seen = chain.member.rules.seen
        for record in document.get("queries", []):
            query = AudienceQuery.from_dict(record.get("query"), f"partner {chain.partner!r}'s unrecorded query")
            answer = AudienceAnswer.from_dict(record.get("answer"), f"partner {chain.partner!r}'s unrecorded answer")
            if query.query_id in seen.queries:
                continue
            if answer.query_id != query.query_id:
                raise ProtocolError(f"partner {chain.partner!r} lists an answer to another query than {query.query_id}")
            answered_ms = record.get("time_ms")
            if isinstance(answered_ms, bool) or not isinstance(answered_ms, int):
                raise ProtocolError(f"partner {chain.partner!r} lists query {query.query_id} without its answer time")
            self.record_answer(chain, query, answer, answered_ms)
            log.info("audience query %s, answered before its block was recorded, recorded now", query.query_id)
        for record in document.get("campaigns", []):
            if record.get("campaign_id") not in seen.campaigns:
                self.record_campaign(chain, record)

    def record_answer(self, chain: AudienceChain, query: AudienceQuery, answer: AudienceAnswer, answered_ms: int) -> None:
        """The query's entry, dated no earlier than the answer (nor than the chain's last entry); an answer
        recorded so late that its time has left the budget window is dated now (a later date only makes the budget
        count it longer)."""
        when = max(answered_ms, chain.member.rules.seen.last_time_ms)
        window_ms = int(chain.member.rules.facts.policy["window_days"]) * DAY_MS
        if when <= now_ms() - window_ms + 60_000:
            when = max(now_ms(), chain.member.rules.seen.last_time_ms)
        spent = chain.member.rules.query_spent(when, query.epsilon)
        self.append(chain, audience_query_entry(query.to_dict(), answer.digest(), spent, when, answer.total))

    def record_campaign(self, chain: AudienceChain, document: dict) -> dict:
        """A campaign's entry; it bills the members its query's answer totals, nothing else."""
        campaign_id, query_id, members = document.get("campaign_id"), document.get("query_id"), document.get("members")
        recorded = chain.member.rules.seen.queries.get(query_id)
        if not isinstance(campaign_id, str) or not CAMPAIGN_ID.fullmatch(campaign_id) or recorded is None:
            raise ProtocolError(f"partner {chain.partner!r} answered a campaign that is not one: {document!r}"[:300])
        if members != recorded["total"]:
            raise ProtocolError(f"partner {chain.partner!r} bills {members!r} members for campaign {campaign_id}; "
                                f"its answer to query {query_id} totalled {recorded['total']}")
        self.append(chain, campaign_entry(campaign_id, query_id, members, max(now_ms(), chain.member.rules.seen.last_time_ms)))
        return {"campaign_id": campaign_id, "query_id": query_id, "members": members}

    def chain_for(self, spec: JobSpec) -> tuple[AudienceChain, PartySpec]:
        """The chain with the job's partner, caught up with what the partner answered (under the chain's lock)."""
        partner = self.partner_of(spec)
        chain = self.host.open_chain(self.name, partner.name)
        self.peer(chain, partner)
        return chain, partner

    # -- the acts ------------------------------------------------------------------------------

    def handover(self, spec: JobSpec, job_id: str, settings_json: str) -> tuple[dict, AudienceChain]:
        partner = self.partner_of(spec)
        job_id = job_id or self.host.scoring.newest_model(spec.name)
        model, facts, start = self.host.scoring.training_facts(job_id, "card_center")
        if facts.partners != [partner.name]:
            raise ConfigError(f"{self.label}: job {job_id!r} was trained with partners {', '.join(facts.partners)}")
        settings = ScoringSettings.from_json(settings_json) if settings_json else ScoringSettings()
        part = card_center_part(model, settings.policy, partner.name)
        peer = AudiencePeer(partner.name, partner.address, audience_chain_id(self.name, partner.name), self.name,
                            tls=self.host.config.tls)
        try:
            accepted, blocks = peer.accept_model(part.to_dict())
        finally:
            peer.close()
        if accepted.get("part_digest") != part.digest():
            raise ProtocolError(f"partner {partner.name!r} assembled the model from a part other than the one sent")
        model_digest = accepted.get("model_digest")
        chain = self.host.open_chain(self.name, partner.name, facts.members, start["fees"], accepted.get("policy"))
        with chain.lock:
            self.peer(chain, partner)
            self.catch_up(chain, blocks)
            if chain.member.height > 0:
                self.recover(chain)
            if chain.member.height == 0:
                self.append(chain, audience_start_entry(chain.member.rules.facts))
            if model_digest not in chain.member.rules.seen.models:
                self.append(chain, audience_model_entry(job_id, facts.training_head, part.digest(), model_digest,
                                                        max(now_ms(), chain.member.rules.seen.last_time_ms)))
        log.info("audience model %s handed to %s as %s", job_id, partner.name, model_digest)
        return {"job_id": job_id, "partner": partner.name, "model": model_digest, "part_digest": part.digest(),
                "policy": chain.member.rules.facts.policy}, chain

    def query(self, spec: JobSpec, body: dict) -> tuple[dict, AudienceChain]:
        query = AudienceQuery.from_dict({"unseen_only": False, **body, "query_id": new_query_id()}, "the audience query")
        chain, partner = self.chain_for(spec)
        with chain.lock:
            self.recover(chain)
            if query.model not in chain.member.rules.seen.models:
                raise ProtocolError(f"model {query.model!r} is not on the audience chain with {partner.name!r}; "
                                    "hand it over first (fedscore audience handover)")
            document, blocks = chain.peer.answer_query(query.to_dict())
            answer = AudienceAnswer.from_dict(document, f"partner {partner.name!r}'s answer")
            if answer.query_id != query.query_id or answer.model != query.model:
                raise ProtocolError(f"partner {partner.name!r} answered another query than {query.query_id}")
            self.catch_up(chain, blocks)
            try:
                self.record_answer(chain, query, answer, now_ms())
            except PeerError as error:   # answered and paid for: shown now, recorded by the next act
                log.warning("audience query %s answered but its block did not reach %s (%s); the next act records it",
                            query.query_id, partner.name, error)
                return {**answer.to_dict(), "recorded": False}, chain
        return answer.to_dict(), chain

    def campaign(self, spec: JobSpec, body: dict) -> tuple[dict, AudienceChain]:
        query_id = body.get("query_id")
        if not isinstance(query_id, str):
            raise DataError("a campaign names the answered query's id (query_id)")
        chain, partner = self.chain_for(spec)
        with chain.lock:
            self.recover(chain)
            if query_id not in chain.member.rules.seen.queries:
                raise ProtocolError(f"query {query_id!r} is not on the audience chain with {partner.name!r}")
            made = next((c for c, q in chain.member.rules.seen.campaigns.items() if q == query_id), None)
            if made is not None:
                raise ProtocolError(f"query {query_id} already has campaign {made} on the audience chain")
            document, blocks = chain.peer.start_campaign(query_id)
            self.catch_up(chain, blocks)
            if document.get("query_id") != query_id:
                raise ProtocolError(f"partner {partner.name!r} answered the campaign of another query than {query_id}")
            return self.record_campaign(chain, document), chain

    def conversion(self, spec: JobSpec, body: dict) -> tuple[dict, AudienceChain]:
        campaign_id, applicant = body.get("campaign_id"), normalise_id(str(body.get("applicant_id") or ""))
        if not applicant or not isinstance(campaign_id, str):
            raise DataError("a conversion names its campaign id and the application's applicant id")
        secrets = ScoringSecrets.load_or_create(self.host.config.state_dir / "scoring-secrets")
        chain, partner = self.chain_for(spec)
        with chain.lock:
            self.recover(chain)
            if campaign_id not in chain.member.rules.seen.campaigns:
                raise ProtocolError(f"campaign {campaign_id!r} is not on the audience chain with {partner.name!r}")
            salted = secrets.salted_applicant(applicant)
            conversion_id = chain.member.rules.conversion_of(campaign_id, salted)
            if conversion_id is None:   # an application is one conversion, however often it is reported
                conversion_id = new_conversion_id()
                self.append(chain, conversion_entry(conversion_id, campaign_id, salted,
                                                    max(now_ms(), chain.member.rules.seen.last_time_ms)))
        return {"conversion_id": conversion_id, "campaign_id": campaign_id}, chain

    def settle(self, spec: JobSpec) -> tuple[dict, AudienceChain]:
        chain, partner = self.chain_for(spec)
        with chain.lock:
            self.recover(chain)
            if not any(chain.member.rules.seen.unsettled.values()):
                raise ProtocolError("nothing to settle: no query, campaign or conversion since the last settlement")
            entry = settlement_entry(chain.member, {partner.name: chain.peer})
            self.append(chain, entry)
        return entry, chain
