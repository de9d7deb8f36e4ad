"""Online scoring, one protocol step per function: the partner's partial score, the card center's answer.

A partner answers `partial_score` for one applicant: it checks the consent,
looks the applicant up by digest in its own data and returns u_k, its part of
the log-odds, or None when it does not know the applicant. The card center
asks every partner at once, waits at most its timeout, and turns its own
contributions, the intercept and the partial scores into the answer
(fedscore.scoring.scorecard). Each answered request becomes a `scoring`
entry; `EntryBatcher` gathers entries into blocks co-signed by every member,
and `Journal` keeps the entries (and a partner's answers) on disk until their
block is on the chain, so a restart loses none of them.

What crosses a party's boundary: the card center sends a partner the
applicant's digest and consent token; the partner returns one number. The
card center learns each partner's partial score for the applicant it asked
about (it needs them for the reasons); a partner learns that the applicant,
if it holds them, applied (the applicant consented to exactly that).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from nacl.secret import SecretBox

from fedscore.errors import DataError, FedscoreError
from fedscore.ledger.member import LedgerMember
from fedscore.ledger.scoring import REQUEST_ID, ScoringFacts, scoring_entry
from fedscore.model.data import normalise_id
from fedscore.model.model_file import PartyModel
from fedscore.scoring.consent import PURPOSE, ConsentError, ConsentToken, applicant_digest, check_consent
from fedscore.scoring.offline import feature_contributions, partial_score
from fedscore.scoring.scorecard import Answer, ScoringPolicy, answer
from fedscore.scoring.sources import ApplicantSource

log = logging.getLogger("fedscore.scoring")


@dataclass(frozen=True)
class ConsentPolicy:
    """Which consents a party accepts."""

    trusted_issuers: frozenset[bytes]
    purposes: frozenset[str] = frozenset({PURPOSE})
    max_age: int = 30 * 86_400

    def check(self, token: ConsentToken, digest: bytes, card_center: str) -> None:
        check_consent(token, digest, card_center, self.trusted_issuers, self.purposes, self.max_age)


class Journal:
    """Records not yet on the chain, one JSON line each, flushed before the request is answered."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._handle = path.open("a", encoding="utf-8")

    def load(self) -> list[dict]:
        records = []
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    break   # a line cut short by a crash: nothing after it was acknowledged
        return records

    def append(self, record: dict) -> None:
        line = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
        with self._lock:
            self._handle.write(line)
            self._handle.flush()

    def keep_only(self, keep: Callable[[dict], bool]) -> None:
        """Rewrite the journal without the records now on the chain."""
        with self._lock:
            self._handle.close()
            records = [r for r in self.load() if keep(r)]
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text("".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in records))
            os.replace(temporary, self.path)
            self._handle = self.path.open("a", encoding="utf-8")

    def close(self) -> None:
        with self._lock:
            self._handle.close()


# -- partner -------------------------------------------------------------------


class PartnerScorer:
    """A partner's side of scoring one model."""

    def __init__(self, model: PartyModel, source: ApplicantSource, card_center: str, consent: ConsentPolicy,
                 facts: ScoringFacts, journal: Journal):
        self.model = model
        self.source = source
        self.card_center = card_center
        self.consent = consent
        self.facts = facts
        self.journal = journal
        for record in journal.load():
            facts.answered.setdefault(record["request_id"], record["consent_digest"])

    def partial_score(self, request_id: str, digest: bytes, consent: str) -> float | None:
        """u_k for the applicant ``digest`` (None: not known here), once the consent checks out."""
        if not isinstance(request_id, str) or not REQUEST_ID.match(request_id):
            raise DataError(f"partner {self.facts.member!r}: request id {request_id!r} is not one fedscore issues")
        if len(digest) != 32:
            raise DataError(f"partner {self.facts.member!r}: the applicant digest must be 32 bytes, got {len(digest)}")
        try:
            token = ConsentToken.from_text(consent)
            self.consent.check(token, digest, self.card_center)
        except ConsentError as error:
            raise ConsentError(f"partner {self.facts.member!r} refuses request {request_id}: {error}") from None
        values = self.source.find(digest)
        if values is None:
            return None
        score = partial_score(self.model, values)
        token_digest = token.digest()
        self.journal.append({"request_id": request_id, "consent_digest": token_digest})
        self.facts.answered[request_id] = token_digest
        return score

    def forget_committed(self) -> None:
        """Drop from the journal the answers a committed block now records."""
        answered = self.facts.answered
        self.journal.keep_only(lambda record: record["request_id"] in answered)


# -- card center -----------------------------------------------------------------


class PartnerHandle(Protocol):
    """How the card center asks one partner; the future gives u_k, or None if the partner does not know the applicant."""

    def ask_partial_score(self, request_id: str, digest: bytes, consent: str, timeout: float) -> Future: ...


@dataclass(frozen=True)
class Scored:
    request_id: str
    answer: Answer
    partial_scores: dict[str, float | None]


class ScoringSecrets:
    """The card center's two scoring secrets: the salt of applicant digests on the chain, and the consent key."""

    def __init__(self, salt: bytes, consent_key: bytes):
        self.salt = salt
        self._box = SecretBox(consent_key)

    @classmethod
    def load_or_create(cls, folder: Path) -> "ScoringSecrets":
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        values = []
        for name in ("applicant-salt.key", "consent.key"):
            path = folder / name
            if not path.exists():
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "wb") as out:
                    out.write(os.urandom(32))
            values.append(path.read_bytes())
        return cls(*values)

    def salted_applicant(self, applicant_id: str) -> str:
        return hmac.new(self.salt, normalise_id(applicant_id).encode("utf-8"), hashlib.sha256).hexdigest()

    def seal_consent(self, token: str) -> str:
        return self._box.encrypt(token.encode("ascii")).hex()

    def open_consent(self, sealed: str) -> str:
        """For a dispute: the token behind a chain entry (only the card center can do this)."""
        return self._box.decrypt(bytes.fromhex(sealed)).decode("ascii")


class CardCenterScorer:
    """The card center's side of scoring one model."""

    def __init__(self, model: PartyModel, policy: ScoringPolicy, partners: Mapping[str, PartnerHandle],
                 consent: ConsentPolicy, secrets: ScoringSecrets, facts: ScoringFacts, journal: Journal,
                 timeout: float = 0.5):
        if model.intercept is None:
            raise DataError(f"party {model.party!r}: its model has no intercept; is it the card center's?")
        self.model = model
        self.policy = policy
        self.partners = dict(partners)
        self.consent = consent
        self.secrets = secrets
        self.facts = facts
        self.journal = journal
        self.timeout = timeout
        self.pending: list[dict] = []
        self._lock = threading.Lock()
        for entry in journal.load():
            facts.answered.setdefault(entry["request_id"], entry["consent_digest"])
            self.pending.append(entry)

    def own_values(self, features: Mapping[str, float]) -> list[float]:
        """The model's columns from the request, in model order; every one present and finite."""
        missing = [name for name in self.model.features if name not in features]
        if missing:
            raise DataError(f"the request lacks the card center's feature {missing[0]!r} (needs {', '.join(self.model.features)})")
        unknown = sorted(set(features) - set(self.model.features) - {self.policy.limit_basis})
        if unknown:
            raise DataError(f"the request has a feature the model does not use: {unknown[0]!r}")
        values = []
        for name in self.model.features:
            value = features[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise DataError(f"feature {name!r} must be a finite number, got {value!r}")
            values.append(float(value))
        return values

    def ask_partners(self, request_id: str, digest: bytes, consent: str) -> dict[str, float | None]:
        """Every partner at once; one that does not know the applicant, fails or is late gives None."""
        deadline = time.monotonic() + self.timeout
        futures = {name: handle.ask_partial_score(request_id, digest, consent, self.timeout) for name, handle in self.partners.items()}
        scores: dict[str, float | None] = {}
        for name, future in futures.items():
            try:
                scores[name] = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                log.warning("request %s: partner %s did not answer within %.0f ms", request_id, name, self.timeout * 1000)
                scores[name] = None
            except FedscoreError as error:
                log.warning("request %s: partner %s: %s", request_id, name, error)
                scores[name] = None
        return scores

    def score(self, applicant_id: str, features: Mapping[str, float], consent: str) -> Scored:
        """The whole answer for one applicant, recorded for the chain before it is returned."""
        if not normalise_id(applicant_id):
            raise DataError("the request has no applicant id")
        values = self.own_values(features)
        digest = applicant_digest(applicant_id)
        token = ConsentToken.from_text(consent)
        self.consent.check(token, digest, self.facts.member)   # refused here before any partner is asked
        request_id = uuid.uuid4().hex
        scores = self.ask_partners(request_id, digest, consent)
        own = feature_contributions(self.model, values)
        base = float(features.get(self.policy.limit_basis, 0.0))
        result = answer(own, self.model.intercept, scores, base, self.policy)
        entry = scoring_entry(
            request_id, time.time_ns() // 1_000_000, self.secrets.salted_applicant(applicant_id),
            self.secrets.seal_consent(token.to_text()), token.digest(),
            contributors=[n for n, u in scores.items() if u is not None],
            missing=[n for n, u in scores.items() if u is None],
        )
        self.journal.append(entry)
        with self._lock:
            self.facts.answered[request_id] = entry["consent_digest"]
            self.pending.append(entry)
        return Scored(request_id, result, scores)

    def take_pending(self, limit: int) -> list[dict]:
        with self._lock:
            taken, self.pending = self.pending[:limit], self.pending[limit:]
        return taken

    def put_back(self, entries: list[dict]) -> None:
        with self._lock:
            self.pending = entries + self.pending

    def pending_count(self) -> int:
        with self._lock:
            return len(self.pending)


BlockAppender = Callable[[list[dict]], object]


class EntryBatcher:
    """Turns pending scoring entries into blocks: when `batch_entries` wait, or the oldest waited `batch_seconds`.

    A block that cannot be co-signed (a partner down) leaves its entries
    pending, in memory and in the journal; they go into a later block.
    """

    def __init__(self, scorer: CardCenterScorer, member: LedgerMember, append: BlockAppender,
                 batch_entries: int = 500, batch_seconds: float = 1.0):
        self.scorer = scorer
        self.member = member
        self.append = append
        self.batch_entries = batch_entries
        self.batch_seconds = batch_seconds
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str = ""

    def flush(self) -> int:
        """Put every pending entry on the chain now; returns how many went on."""
        with self._flush_lock:
            return self._flush_locked()

    def _flush_locked(self) -> int:
        """What is pending now, in blocks of at most batch_entries; requests arriving meanwhile wait for the next flush."""
        written, due = 0, self.scorer.pending_count()
        while written < due:
            entries = self.scorer.take_pending(min(self.batch_entries, due - written))
            if not entries:
                break
            try:
                self.append(entries)
            except FedscoreError as error:
                self.scorer.put_back(entries)
                self.last_error = str(error)
                raise
            written += len(entries)
        if written:
            on_chain = self.member.seen.requests
            self.scorer.journal.keep_only(lambda record: record["request_id"] not in on_chain)
            self.last_error = ""
        return written

    def append_after_pending(self, make_entry: Callable[[], dict]) -> None:
        """Flush, then append ``make_entry()`` alone, with no scoring block in between (a settlement)."""
        with self._flush_lock:
            self._flush_locked()
            self.append([make_entry()])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scoring-blocks", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        waited_since: float | None = None
        while not self._stop.wait(min(0.05, self.batch_seconds / 4)):
            count = self.scorer.pending_count()
            if not count:
                waited_since = None
                continue
            waited_since = waited_since or time.monotonic()
            if count >= self.batch_entries or time.monotonic() - waited_since >= self.batch_seconds:
                try:
                    self.flush()
                    waited_since = None
                except FedscoreError as error:
                    log.warning("scoring block not co-signed yet, entries kept: %s", error)
                    waited_since = time.monotonic()   # try again after another batch_seconds

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
