"""The scoring side of a party daemon: serve a trained model, keep its scoring chain.

The card center opens a model (its newest settled one for the job, unless
named), opens it at every partner, starts the model's scoring chain if it is
new, and answers Score requests; a block of scoring entries is proposed in
the background. A partner opens the same model, checks consents and returns
partial scores. Both refuse to serve a model whose training chain does not
verify or was never settled.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from nacl.signing import SigningKey

from fedscore.daemons.config import DaemonConfig, resolve_data_file
from fedscore.job import JobSpec, check_job_id
from fedscore.job_file import ScoringSettings
from fedscore.errors import ConfigError, DataError, FedscoreError, ProtocolError
from fedscore.files import write_atomically
from fedscore.ledger import identity
from fedscore.ledger.block import decode_entry
from fedscore.ledger.cosign import append_block, settlement_entry
from fedscore.ledger.member import LedgerMember
from fedscore.ledger.scoring_rules import ScoringFacts, ScoringRules, scoring_start_entry
from fedscore.ledger.store import LedgerStore
from fedscore.ledger.verify import LedgerError, verify_chain
from fedscore.model.data import normalise_id
from fedscore.model.model_file import PartyModel
from fedscore.monitoring.scoring_log import LOG_FOLDER, ScoringLog, own_buckets
from fedscore.protocol.training.fanout import call_each
from fedscore.protocol.scoring.batcher import EntryBatcher
from fedscore.protocol.scoring.card_center import Applicant, CardCenterScorer, Scored
from fedscore.protocol.scoring.consent import ConsentPolicy, ConsentUses
from fedscore.protocol.scoring.journal import Journal, now_ms
from fedscore.protocol.scoring.partner import PartnerScorer
from fedscore.protocol.scoring.secrets import ScoringSecrets
from fedscore.protocol.scoring.sources import CsvSource, SqliteSource
from fedscore.protocol.scoring.verification import chain_entry, received_record
from fedscore.transport.clients.scoring import ScoringPeer

PAIR_KEY_FILE = "scoring-pair.key"   # a partner's copy of its mark key: to check a fee bundle later


def keep_pair_key(folder: Path, key: bytes) -> None:
    """Keep the key that reads this partner's marks (owner-only), so it can check its bills from its own state."""
    path = folder / PAIR_KEY_FILE
    if not (path.is_file() and path.read_bytes() == key):
        write_atomically(path, key)


log = logging.getLogger("fedscore.scoring")


@dataclass
class ServedModel:
    job_id: str
    role: str
    member: LedgerMember
    scorer: CardCenterScorer | PartnerScorer
    peers: dict[str, ScoringPeer] = field(default_factory=dict)   # the card center's only
    batcher: EntryBatcher | None = None
    spec: JobSpec | None = None


class ScoringHost:
    def __init__(self, config: DaemonConfig, key: SigningKey):
        self.config = config
        self.name = config.name
        self.label = f"party {config.name!r}"
        self.key = key
        self.reason = config.reason   # as a partner: its own words for its reason line, sent when a model opens
        self._models: dict[str, ServedModel] = {}
        self._lock = threading.Lock()
        self._open_lock = threading.Lock()
        self._uses: ConsentUses | None = None

    def consent_uses(self) -> ConsentUses:
        """This party's one count of consent uses, for every model it serves."""
        with self._lock:
            if self._uses is None:
                self._uses = ConsentUses(self.config.state_dir / "consent-uses.jsonl", self.consent_policy())
            return self._uses

    # -- which model -------------------------------------------------------------

    def jobs_dir(self) -> Path:
        return self.config.state_dir / "jobs"

    def newest_model(self, job_name: str) -> str:
        """The job id of this party's newest model of ``job_name`` whose training was settled."""
        found = []
        for path in self.jobs_dir().glob("*/model.json"):
            try:
                model = PartyModel.from_json(path.read_text())
            except (OSError, ValueError, TypeError):
                continue
            if model.job_name == job_name:
                found.append((path.stat().st_mtime, model.job_id))
        if not found:
            raise ConfigError(f"{self.label} has no trained model of job {job_name!r}; run the job first")
        return max(found)[1]

    def served(self, job_id: str) -> ServedModel:
        if job_id:
            check_job_id(job_id, self.label)
        with self._lock:
            if not job_id:
                if len(self._models) != 1:
                    open_ids = ", ".join(sorted(self._models)) or "none"
                    raise ProtocolError(f"{self.label}: name the model to score with (open: {open_ids})")
                return next(iter(self._models.values()))
            served = self._models.get(job_id)
        if served is None:
            raise ProtocolError(f"{self.label}: model {job_id!r} is not open for scoring here")
        return served

    def training_facts(self, job_id: str, role: str) -> tuple[PartyModel, ScoringFacts, dict]:
        """This party's model, what its settled training chain says (members, fees, head), and that chain's
        genesis entry (the job's name and digest as this party trained it)."""
        folder = self.jobs_dir() / check_job_id(job_id, self.label)
        try:
            model = PartyModel.from_json((folder / "model.json").read_text())
        except FileNotFoundError:
            raise ConfigError(f"{self.label} has no model for job {job_id!r}") from None
        except (ValueError, TypeError) as error:
            raise DataError(f"{self.label}: model file of job {job_id!r} is not readable: {error}") from None
        if model.role != role:
            raise ProtocolError(f"{self.label} is the {model.role} of job {job_id!r}, not its {role}")
        if not (folder / "ledger.sqlite").is_file():
            raise LedgerError(0, f"{self.label} has no training chain for job {job_id!r}")
        store = LedgerStore(folder / "ledger.sqlite", read_only=True)
        try:
            blocks = list(store.blocks())
        finally:
            store.close()
        summary = verify_chain(blocks, workers=1)
        start, last = decode_entry(blocks[0].entries[0]), decode_entry(blocks[-1].entries[-1])
        if start.get("job_id") != job_id or last.get("kind") != "settlement":
            raise LedgerError(summary.blocks - 1, f"{self.label}: the training of job {job_id!r} was not settled; its model cannot serve")
        members = {n: m for n, m in start["members"].items() if m["role"] in ("card_center", "partner")}
        if members.get(self.name, {}).get("key") != identity.public_hex(self.key):
            raise LedgerError(0, f"{self.label}: the training chain of job {job_id!r} does not list this party's key")
        facts = ScoringFacts(
            self.name, identity.public_hex(self.key), role, job_id, members, start["fees"], summary.head.hex()
        )
        return model, facts, start

    def consent_policy(self) -> ConsentPolicy:
        if not self.config.consent_issuers:
            raise ConfigError(
                f"{self.label} trusts no consent issuer (consent_issuers in its config), so it would refuse every request"
            )
        return ConsentPolicy(
            frozenset(bytes.fromhex(i) for i in self.config.consent_issuers),
            max_age=self.config.consent_max_age_days * 86_400, max_uses=self.config.consent_max_uses,
        )

    # -- opening and closing ---------------------------------------------------

    def open(self, job_id: str, spec: JobSpec, settings_json: str, pair_key: bytes = b"") -> tuple[ServedModel, list[str], str]:
        """Open a model for scoring, or return it if it is open already (the same model is never opened twice)."""
        me = spec.party(self.name)
        with self._open_lock:
            if me.is_card_center:
                job_id = job_id or self.newest_model(spec.name)
            elif not job_id:
                raise ProtocolError(f"{self.label}: a partner opens the model the card center names")
            with self._lock:
                served = self._models.get(job_id)
            if served is None:
                if me.is_card_center:
                    served = self._open_card_center(job_id, spec, settings_json)
                else:
                    served = self._open_partner(job_id, spec, pair_key)
                with self._lock:
                    self._models[job_id] = served
                log.info("model %s open for scoring (%s), scoring chain at %d blocks", job_id, served.role, served.member.height)
        return served, served.scorer.model.features, self._limit_basis(served)

    @staticmethod
    def _limit_basis(served: ServedModel) -> str:
        return served.scorer.policy.limit_basis if isinstance(served.scorer, CardCenterScorer) else ""

    def _open_partner(self, job_id: str, spec: JobSpec, key: bytes) -> ServedModel:
        model, facts, start = self.training_facts(job_id, "partner")
        # the data file and id columns come from the request's spec: only as the job this party trained
        if spec.digest() != start.get("job_digest"):
            raise ProtocolError(
                f"{self.label}: the job sent to open model {job_id!r} has digest {spec.digest()}, but this party "
                f"trained it as job digest {start.get('job_digest')} (its training chain's genesis); not opened"
            )
        if facts.card_center != spec.card_center.name:
            raise ProtocolError(f"{self.label}: job {job_id!r} was trained with card center {facts.card_center!r}")
        if len(key) != 32:
            raise ProtocolError(f"{self.label}: the card center must send a 32-byte mark key to open scoring")
        facts.pair_keys = {self.name: key}
        keep_pair_key(self.jobs_dir() / job_id, key)
        me = spec.party(self.name)
        # a binned model scores raw values (empty cells, NULL and text are data); a standardised one finite numbers
        if self.config.scoring_database is not None:
            source = SqliteSource(self.config.scoring_database, self.config.scoring_table, self.config.scoring_id,
                                  model.features, party=self.name, raw_values=model.binned)
        else:
            path = resolve_data_file(self.config.data_dir, me.data, self.name)
            source = CsvSource(path, list(me.id_columns), model.features, party=self.name, raw_values=model.binned)
        folder = self.jobs_dir() / job_id
        member = LedgerMember(self.name, self.key, folder / "scoring.sqlite", ScoringRules(facts))
        journal = None
        try:
            journal = Journal(folder / "scoring-answers.jsonl")
            scorer = PartnerScorer(model, source, facts.card_center, self.consent_policy(), facts, journal,
                                   on_chain=member.rules.seen.tags.__contains__, uses=self.consent_uses())
            scorer.forget_committed()
        except BaseException:
            if journal is not None:
                journal.close()
            member.close()
            raise
        return ServedModel(job_id, "partner", member, scorer)

    def _open_card_center(self, job_id: str, spec: JobSpec, settings_json: str) -> ServedModel:
        try:
            settings = ScoringSettings.from_json(settings_json) if settings_json else ScoringSettings()
        except (ValueError, TypeError, KeyError) as error:
            raise ConfigError(f"{self.label}: scoring settings are not readable: {error}") from None
        settings.validate(f"{self.label}: scoring settings")
        model, facts, start = self.training_facts(job_id, "card_center")
        job_name = start["job_name"]
        partners = [p for p in spec.partners]
        if sorted(p.name for p in partners) != facts.partners:
            raise ConfigError(f"{self.label}: job {job_id!r} was trained with partners {', '.join(facts.partners)}")
        missing = [p.name for p in partners if not p.address]
        if missing:
            raise ConfigError(f"{self.label}: no address for partner {missing[0]!r}")
        secrets = ScoringSecrets.load_or_create(self.config.state_dir / "scoring-secrets")
        facts.pair_keys = {p.name: secrets.pair_key(job_id, p.name) for p in partners}
        folder = self.jobs_dir() / job_id
        peers = {p.name: ScoringPeer(p.name, p.address, job_id, timeout=10.0, tls=self.config.tls) for p in partners}
        member = journal = None
        try:
            member = LedgerMember(self.name, self.key, folder / "scoring.sqlite", ScoringRules(facts))
            journal = Journal(folder / "scoring-pending.jsonl")
            scorer = CardCenterScorer(
                model, settings.policy, peers, self.consent_policy(), secrets, facts, journal,
                timeout=settings.timeout_ms / 1000, on_chain=member.rules.seen.requests.__contains__,
                uses=self.consent_uses(), scoring_log=ScoringLog(folder / LOG_FOLDER, own_buckets(model, folder)),
                max_batch=settings.max_batch_applicants,
            )
            sync = lambda: self._sync_partners(spec, member, peers, facts, scorer)   # noqa: E731
            sync()
            if member.height == 0:
                append_block(member, peers, [scoring_start_entry(facts, job_name)])
            batcher = EntryBatcher(scorer, member, peers, sync, folder / "scoring-proposal.json",
                                   settings.batch_entries, settings.batch_seconds)
            if scorer.pending_count() or batcher.has_proposal:
                batcher.flush()   # entries journalled before a restart
            batcher.start()
        except BaseException:
            for peer in peers.values():
                peer.close()
            if journal is not None:
                journal.close()
            if member is not None:
                member.close()
            raise
        return ServedModel(job_id, "card_center", member, scorer, peers, batcher, spec)

    def _sync_partners(self, spec: JobSpec, member: LedgerMember, peers: dict[str, ScoringPeer], facts: ScoringFacts,
                       scorer: CardCenterScorer) -> None:
        """Open the model at every partner (again, after a restart), take its wording of its reason line, and
        send each the blocks it missed."""
        replies = call_each(peers, lambda name, peer: peer.open_scoring(spec, facts.pair_keys[name]))
        scorer.partner_wording = {name: reply.reason for name, reply in replies.items() if reply.reason}
        for name, reply in replies.items():
            if reply.blocks > member.height:
                raise LedgerError(member.height, f"partner {name!r} holds {reply.blocks} scoring blocks, more than the card center's {member.height}")
            if reply.blocks < member.height:
                log.info("partner %s is %d scoring blocks behind; sending them", name, member.height - reply.blocks)
                for block in member.store.blocks(reply.blocks):
                    peers[name].commit_block(block)

    def close(self, job_id: str) -> None:
        with self._lock:
            served = self._models.pop(job_id, None)
        if served is None:
            return
        try:
            if served.batcher is not None:
                served.batcher.stop()
                try:
                    served.batcher.flush()
                finally:
                    call_each(served.peers, lambda name, peer: peer.close_scoring())
        finally:
            for peer in served.peers.values():
                peer.close()
            served.scorer.journal.close()
            if isinstance(served.scorer, CardCenterScorer) and served.scorer.scoring_log is not None:
                served.scorer.scoring_log.close()
            served.member.close()
        log.info("model %s closed for scoring", job_id)

    def close_all(self) -> None:
        for job_id in list(self._models):
            try:
                self.close(job_id)
            except Exception as error:   # shutting down: keep closing the others; entries stay journalled
                log.warning("closing model %s: %s", job_id, error)
        if self._uses is not None:
            self._uses.close()

    def open_models(self) -> list[dict]:
        with self._lock:
            return [{"job_id": j, "role": m.role, "blocks": m.member.height,
                     **({"unbilled": m.scorer.unbilled} if isinstance(m.scorer, PartnerScorer) else {})}
                    for j, m in sorted(self._models.items())]

    # -- requests -----------------------------------------------------------------

    def card_center_model(self, job_id: str) -> ServedModel:
        served = self.served(job_id)
        if not isinstance(served.scorer, CardCenterScorer):
            raise ProtocolError(f"{self.label} is a partner of model {served.job_id!r}; ask its card center")
        return served

    def score(self, job_id: str, applicant_id: str, features: dict, consent: str) -> tuple[str, Scored]:
        served = self.card_center_model(job_id)
        return served.job_id, served.scorer.score(applicant_id, features, consent)

    def score_batch(self, job_id: str, batch: list[Applicant | FedscoreError]) -> tuple[str, list[Scored | FedscoreError]]:
        served = self.card_center_model(job_id)
        return served.job_id, served.scorer.score_batch(batch)

    def record_verification(self, job_id: str, applicant_id: str, method: str, at: int, verifier: str,
                            signature: bytes, evidence: dict[str, str]) -> tuple[str, dict]:
        """Check a verifier's record against this card center's trusted verifiers, then journal its chain entry
        (fedscore.protocol.scoring.verification); the entry goes on the chain with the next scoring block."""
        served = self.card_center_model(job_id)
        if not normalise_id(applicant_id):
            raise DataError("the verification has no applicant id")
        trusted = {name: bytes.fromhex(key) for name, key in self.config.verifiers}
        record = received_record(applicant_id, method, at, verifier, signature, evidence, trusted)
        entry = chain_entry(record, applicant_id, served.scorer.secrets, now_ms())
        served.scorer.record_verification(entry)
        log.info("verification %s recorded (%s by %s)", entry["verification_id"], record.method, record.verifier)
        return served.job_id, entry

    def partial_score(self, job_id: str, tag: str, digest: bytes, consent: str, deadline_ms: int) -> float | None:
        if not job_id:
            raise ProtocolError(f"{self.label}: a partial score names its model")
        served = self.served(job_id)
        if not isinstance(served.scorer, PartnerScorer):
            raise ProtocolError(f"{self.label} is not a partner of model {served.job_id!r}")
        return served.scorer.partial_score(tag, digest, consent, deadline_ms)

    def settle(self, job_id: str) -> dict:
        """Settle every request since the last settlement: each partner signs, then the block is co-signed."""
        served = self.card_center_model(job_id)
        member, peers = served.member, served.peers
        settlement: dict = {}

        def make_entry() -> dict | None:
            if member.rules.seen.last_kind == "scoring_settlement":   # nothing since the last (a retried settle)
                return None
            settlement.update(settlement_entry(member, peers))
            return settlement

        served.batcher.append_after_pending(make_entry)
        if not settlement:
            settlement.update(self._last_settlement(member))
        return settlement

    @staticmethod
    def _last_settlement(member: LedgerMember) -> dict:
        for block in reversed(list(member.store.blocks(max(0, member.height - 1)))):
            for entry in reversed(block.decoded()):
                if entry.get("kind") == "scoring_settlement":
                    return entry
        return {}

    # -- the scoring chain, as a member -------------------------------------------

    def trained_card_center(self, job_id: str) -> str:
        """The card center this partner trained model ``job_id`` with, from its own replica of the training chain."""
        if not job_id:
            raise ProtocolError(f"{self.label}: a partner opens the model the card center names")
        return self.training_facts(job_id, "partner")[1].card_center

    def card_center_of(self, job_id: str) -> str:
        """Who runs model ``job_id``'s scoring: this party, or the card center it answers."""
        served = self.served(job_id)
        return served.scorer.card_center if isinstance(served.scorer, PartnerScorer) else self.name

    def ledger(self, job_id: str) -> LedgerMember:
        return self.served(job_id).member

    def committed(self, job_id: str) -> None:
        served = self.served(job_id)
        if isinstance(served.scorer, PartnerScorer):
            served.scorer.forget_committed()
