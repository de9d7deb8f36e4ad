"""Online scoring, one protocol step per function: the partner's partial score, the card center's answer.

A partner answers `partial_score` for one applicant: it checks the consent,
looks the applicant up by digest in its own data and returns u_k, its part of
the log-odds, or None when it does not know the applicant. The card center
asks every partner at once (each under its own tag for the request), waits
at most its timeout, and turns its own contributions, the intercept and the
partial scores into the answer (fedscore.scoring.scorecard). Each answered
request becomes a `scoring` entry (fedscore.ledger.scoring); `EntryBatcher`
gathers entries into blocks co-signed by every member, and `Journal` keeps
the entries (and a partner's answers) on disk until their block is on the
chain, so a daemon that restarts loses none of them.

What crosses a party's boundary: the card center sends a partner the
applicant's digest, the consent token and the partner's tag for the request;
the partner returns one number. The card center learns each partner's
partial score for the applicant it asked about (it needs them for the
reasons); a partner learns that the applicant, if it holds them, applied
(the applicant consented to exactly that).
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

from fedscore.errors import DataError, FedscoreError, ProtocolError
from fedscore.ledger.block import Block, decode_entry
from fedscore.ledger.member import LedgerMember
from fedscore.ledger.scoring import TAG, ScoringFacts, entry_digest, mark, pair_key, partner_tag, scoring_entry
from fedscore.model.data import normalise_id
from fedscore.files import cut_torn_tail, read_json_lines, write_atomically, write_secret
from fedscore.model.model_file import PartyModel
from fedscore.protocol.audit import LedgerHandle, co_sign, propose
from fedscore.scoring.consent import PURPOSE, ConsentError, ConsentToken, applicant_digest, check_consent
from fedscore.scoring.offline import feature_contributions, partial_score
from fedscore.scoring.scorecard import Answer, ScoringPolicy, answer
from fedscore.scoring.sources import ApplicantSource

log = logging.getLogger("fedscore.scoring")
ANSWER_LIFETIME_MS = 2 * 86_400_000   # a partner's answer no block recorded within this is given up (and counted)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class ConsentPolicy:
    """Which consents a party accepts, and how often each."""

    trusted_issuers: frozenset[bytes]
    purposes: frozenset[str] = frozenset({PURPOSE})
    max_age: int = 30 * 86_400
    max_uses: int = 3          # one application, and a retry or two

    def check(self, token: ConsentToken, digest: bytes, card_center: str) -> None:
        check_consent(token, digest, card_center, self.trusted_issuers, self.purposes, self.max_age)


class ConsentUses:
    """How often this party has acted on each consent, so a consent cannot be replayed for more checks
    than the applicant agreed to. One per party, whatever model is asked (a daemon keeps it in its state
    folder), kept on disk (digest and date of each use) for as long as a consent can be valid, so
    neither a restart nor another model resets it."""

    def __init__(self, path: Path, policy: ConsentPolicy):
        self.path, self.policy = path, policy
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        cutoff = time.time() - policy.max_age - 86_400
        kept = []
        for use in read_json_lines(path):
            try:
                if use["issued_at"] >= cutoff:
                    kept.append(use)
                    self._counts[use["digest"]] = self._counts.get(use["digest"], 0) + 1
            except (KeyError, TypeError):
                continue   # not a use this version wrote
        write_atomically(path, "".join(json.dumps(u, sort_keys=True) + "\n" for u in kept), 0o600)
        self._handle = path.open("a", encoding="utf-8")

    def admit(self, token: ConsentToken, where: str) -> None:
        """Count one use of ``token``, or refuse it if it has been used up."""
        digest = token.digest()
        with self._lock:
            used = self._counts.get(digest, 0)
            if used >= self.policy.max_uses:
                raise ConsentError(f"{where}: this consent has been used {used} times; it allows {self.policy.max_uses}")
            self._counts[digest] = used + 1
            self._handle.write(json.dumps({"digest": digest, "issued_at": token.issued_at}, sort_keys=True) + "\n")
            self._handle.flush()

    def close(self) -> None:
        with self._lock:
            self._handle.close()


class Journal:
    """Records not yet on the chain, one JSON line each, written before the request is answered.

    Each line is flushed to the operating system before the answer goes out,
    so it survives the daemon crashing (not the machine losing power). A line
    cut short by a crash is cut off when the journal is opened again.
    """

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        cut_torn_tail(path)
        self._handle = path.open("a", encoding="utf-8")

    def load(self) -> list[dict]:
        return read_json_lines(self.path)

    def append(self, record: dict, before: Callable[[], None] | None = None) -> None:
        """Write one record; ``before`` runs under the journal's lock first (so a pruning never misses it)."""
        line = json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"
        with self.lock:
            if self._handle.closed:
                raise ProtocolError(f"{self.path.name}: the model is closing; request not recorded")
            if before is not None:
                before()
            self._handle.write(line)
            self._handle.flush()

    def keep_only(self, keep: Callable[[dict], bool]) -> None:
        """Rewrite the journal without the records now on the chain."""
        with self.lock:
            self._handle.close()
            try:
                records = [r for r in self.load() if keep(r)]
                text = "".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in records)
                write_atomically(self.path, text, 0o600)
            finally:   # a failed rewrite leaves the journal as it was, and open for the next request
                self._handle = self.path.open("a", encoding="utf-8")

    def close(self) -> None:
        with self.lock:
            self._handle.close()


# -- partner -------------------------------------------------------------------


class PartnerScorer:
    """A partner's side of scoring one model."""

    def __init__(self, model: PartyModel, source: ApplicantSource, card_center: str, consent: ConsentPolicy,
                 facts: ScoringFacts, journal: Journal, on_chain: Callable[[str], bool] = lambda tag: False,
                 uses: "ConsentUses | None" = None):
        self.model = model
        self.source = source
        self.card_center = card_center
        self.consent = consent
        self.facts = facts
        self.journal = journal
        self.uses = uses or ConsentUses(journal.path.with_name("consent-uses.jsonl"), consent)
        self._answered_at: dict[str, int] = {}
        for record in journal.load():
            if not on_chain(record["tag"]):
                facts.answered.setdefault(record["tag"], record["consent_digest"])
                self._answered_at[record["tag"]] = record.get("time_ms", now_ms())

    def partial_score(self, tag: str, digest: bytes, consent: str, deadline_ms: int = 0) -> float | None:
        """u_k for the applicant ``digest`` (None: not known here), once the consent checks out."""
        me = self.facts.member
        if not isinstance(tag, str) or not TAG.match(tag):
            raise DataError(f"partner {me!r}: request tag {tag!r} is not one fedscore issues")
        if len(digest) != 32:
            raise DataError(f"partner {me!r}: the applicant digest must be 32 bytes, got {len(digest)}")
        if deadline_ms and now_ms() > deadline_ms:
            raise DataError(f"partner {me!r}: request {tag} arrived after its deadline; not answered")
        try:
            token = ConsentToken.from_text(consent)
            self.consent.check(token, digest, self.card_center)
        except ConsentError as error:
            raise ConsentError(f"partner {me!r} refuses request {tag}: {error}") from None
        self.uses.admit(token, f"partner {me!r} refuses request {tag}")
        values = self.source.find(digest)
        if values is None:
            return None
        score = partial_score(self.model, values)
        if not math.isfinite(score):
            raise DataError(f"partner {me!r}: its data gives no finite score for request {tag}")
        token_digest = token.digest()
        stamp = now_ms()

        def remember() -> None:
            if tag in self.facts.answered:
                raise ProtocolError(f"partner {me!r}: request {tag} was already answered")
            self.facts.answered[tag] = token_digest
            self._answered_at[tag] = stamp

        self.journal.append({"tag": tag, "consent_digest": token_digest, "time_ms": stamp}, before=remember)
        return score

    def forget_committed(self) -> None:
        """Drop from the journal the answers a committed block now records, and give up on answers
        no block recorded for ANSWER_LIFETIME_MS (counted as unbilled)."""
        answered, cutoff = self.facts.answered, now_ms() - ANSWER_LIFETIME_MS
        with self.journal.lock:   # answers arriving meanwhile change these maps under the same lock
            stale = [tag for tag, at in self._answered_at.items() if at < cutoff and tag in answered]
            for tag in stale:
                answered.pop(tag, None)
            for tag in [t for t in self._answered_at if t not in answered]:
                del self._answered_at[tag]
        if stale:
            self.facts.unbilled += len(stale)
            log.warning("%d answers were never recorded on the scoring chain; counted as unbilled", len(stale))
        self.journal.keep_only(lambda record: record["tag"] in answered)


# -- card center -----------------------------------------------------------------


class PartnerHandle(Protocol):
    """How the card center asks one partner; the future gives u_k, or None if the partner does not know the applicant."""

    def ask_partial_score(self, tag: str, digest: bytes, consent: str, timeout: float) -> Future: ...


@dataclass(frozen=True)
class Scored:
    request_id: str
    answer: Answer
    partial_scores: dict[str, float | None]


def _secret_file(path: Path) -> bytes:
    """32 random bytes kept in ``path`` (owner-only), made atomically the first time."""
    if not path.exists():
        try:
            write_secret(path, os.urandom(32))
        except FileExistsError:   # another process made it first: both use that one
            pass
    value = path.read_bytes()
    if len(value) != 32:
        raise ProtocolError(f"{path} is damaged: a 32-byte secret was expected, it holds {len(value)} bytes")
    return value


class ScoringSecrets:
    """The card center's scoring secrets: the salt of applicant digests and request tags, and the consent key."""

    def __init__(self, salt: bytes, consent_key: bytes):
        self.salt = salt
        self._box = SecretBox(consent_key)

    @classmethod
    def load_or_create(cls, folder: Path) -> "ScoringSecrets":
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return cls(_secret_file(folder / "applicant-salt.key"), _secret_file(folder / "consent.key"))

    def salted_applicant(self, applicant_id: str) -> str:
        return hmac.new(self.salt, normalise_id(applicant_id).encode("utf-8"), hashlib.sha256).hexdigest()

    def tag(self, request_id: str, partner: str) -> str:
        return partner_tag(self.salt, request_id, partner)

    def pair_key(self, job_id: str, partner: str) -> bytes:
        return pair_key(self.salt, job_id, partner)

    def seal_consent(self, token: str) -> str:
        return self._box.encrypt(token.encode("ascii")).hex()

    def open_consent(self, sealed: str) -> str:
        """For a dispute: the token behind a chain entry (only the card center can do this)."""
        return self._box.decrypt(bytes.fromhex(sealed)).decode("ascii")


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


class CardCenterScorer:
    """The card center's side of scoring one model."""

    def __init__(self, model: PartyModel, policy: ScoringPolicy, partners: Mapping[str, PartnerHandle],
                 consent: ConsentPolicy, secrets: ScoringSecrets, facts: ScoringFacts, journal: Journal,
                 timeout: float = 0.5, on_chain: Callable[[str], bool] = lambda request_id: False,
                 uses: "ConsentUses | None" = None):
        if model.intercept is None:
            raise DataError(f"party {model.party!r}: its model has no intercept; is it the card center's?")
        self.model = model
        self.policy = policy
        self.partners = dict(partners)
        self.consent = consent
        self.secrets = secrets
        self.facts = facts
        self.journal = journal
        self.uses = uses or ConsentUses(journal.path.with_name("consent-uses.jsonl"), consent)
        self.timeout = timeout
        self.pending: list[dict] = []
        self._lock = threading.Lock()
        for entry in journal.load():
            if not on_chain(entry["request_id"]):
                facts.answered.setdefault(entry["request_id"], entry_digest(entry))
                self.pending.append(entry)

    def own_values(self, features: Mapping[str, object]) -> tuple[list[float], float]:
        """The model's columns from the request, in model order, and the credit limit's base amount;
        every one present and a finite number (checked before any partner is asked)."""
        missing = [name for name in self.model.features if name not in features]
        if missing:
            raise DataError(f"the request lacks the card center's feature {missing[0]!r} (needs {', '.join(self.model.features)})")
        unknown = sorted(set(features) - set(self.model.features) - {self.policy.limit_basis})
        if unknown:
            raise DataError(f"the request has a feature the model does not use: {unknown[0]!r}")
        for name in [*self.model.features, *([self.policy.limit_basis] if self.policy.limit_basis in features else [])]:
            if not _is_number(features[name]):
                raise DataError(f"feature {name!r} must be a finite number")
        base = float(features.get(self.policy.limit_basis, 0.0))   # zero or less: no limit is suggested
        return [float(features[name]) for name in self.model.features], base

    def ask_partners(self, request_id: str, tags: Mapping[str, str], digest: bytes, consent: str) -> dict[str, float | None]:
        """Every partner at once, each under its own tag; one that does not know the applicant, refuses,
        fails, is late or answers something that is not a finite number gives None."""
        deadline = time.monotonic() + self.timeout
        futures = {
            name: handle.ask_partial_score(tags[name], digest, consent, self.timeout)
            for name, handle in self.partners.items()
        }
        scores: dict[str, float | None] = {}
        for name, future in futures.items():
            try:
                value = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                log.warning("request %s: partner %s did not answer within %.0f ms", request_id, name, self.timeout * 1000)
                value = None
            except FedscoreError as error:
                log.warning("request %s: partner %s: %s", request_id, name, error)
                value = None
            if value is not None and not (isinstance(value, float) and math.isfinite(value)):
                log.warning("request %s: partner %s answered %r, not a finite number; left out", request_id, name, value)
                value = None
            scores[name] = value
        return scores

    def score(self, applicant_id: str, features: Mapping[str, object], consent: str) -> Scored:
        """The whole answer for one applicant, recorded for the chain before it is returned."""
        if not normalise_id(applicant_id):
            raise DataError("the request has no applicant id")
        values, base = self.own_values(features)
        digest = applicant_digest(applicant_id)
        token = ConsentToken.from_text(consent)
        self.consent.check(token, digest, self.facts.member)   # refused here before any partner is asked
        self.uses.admit(token, f"card center {self.facts.member!r}")
        request_id = uuid.uuid4().hex
        tags = {name: self.secrets.tag(request_id, name) for name in self.partners}
        scores = self.ask_partners(request_id, tags, digest, consent)
        own = feature_contributions(self.model, values)
        result = answer(own, self.model.intercept, scores, base, self.policy)
        marks = {
            name: {"tag": tag, "mark": mark(self.facts.pair_keys[name], tag, scores[name] is not None)}
            for name, tag in tags.items()
        }
        entry = scoring_entry(
            request_id, now_ms(), self.secrets.salted_applicant(applicant_id),
            self.secrets.seal_consent(token.to_text()), token.digest(), marks,
        )

        def remember() -> None:
            with self._lock:
                self.facts.answered[request_id] = entry_digest(entry)
                self.pending.append(entry)

        self.journal.append(entry, before=remember)
        return Scored(request_id, result, scores)

    def take_pending(self, limit: int) -> list[dict]:
        with self._lock:
            taken, self.pending = self.pending[:limit], self.pending[limit:]
        return taken

    def put_back(self, entries: list[dict]) -> None:
        with self._lock:
            self.pending = entries + self.pending

    def drop_pending(self, request_ids: set[str]) -> None:
        """Forget pending entries that are already in a proposed block."""
        with self._lock:
            self.pending = [e for e in self.pending if e["request_id"] not in request_ids]

    def pending_count(self) -> int:
        with self._lock:
            return len(self.pending)


def block_to_json(block: Block) -> str:
    return json.dumps({
        "height": block.height, "previous": block.previous.hex(), "timestamp_ns": block.timestamp_ns,
        "merkle_root": block.merkle_root.hex(), "entries": [e.decode("utf-8") for e in block.entries],
        "signatures": {n: s.hex() for n, s in block.signatures.items()},
    })


def block_from_json(text: str) -> Block:
    d = json.loads(text)
    return Block(d["height"], bytes.fromhex(d["previous"]), d["timestamp_ns"], bytes.fromhex(d["merkle_root"]),
                 tuple(e.encode("utf-8") for e in d["entries"]), {n: bytes.fromhex(s) for n, s in d["signatures"].items()})


class EntryBatcher:
    """Turns pending scoring entries into blocks: when `batch_entries` wait, or the oldest waited `batch_seconds`.

    A proposed block is kept (on disk too) and proposed again, unchanged,
    until every member signed it, so a member that signed it once never sees
    a second block at that height. After a failure the members are brought
    up to date first (`sync`: reopened where they restarted, sent the blocks
    they missed). Entries arriving meanwhile wait for the next block.
    """

    def __init__(self, scorer: CardCenterScorer, member: LedgerMember, peers: Mapping[str, LedgerHandle],
                 sync: Callable[[], None], proposal_path: Path, batch_entries: int = 500, batch_seconds: float = 1.0):
        self.scorer = scorer
        self.member = member
        self.peers = dict(peers)
        self.sync = sync
        self.proposal_path = proposal_path
        self.batch_entries = batch_entries
        self.batch_seconds = batch_seconds
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._needs_sync = False
        self._proposal: Block | None = self._saved_proposal()

    def _saved_proposal(self) -> Block | None:
        """A block proposed before a restart and not yet on the chain: proposed again first."""
        if not self.proposal_path.exists():
            return None
        block = block_from_json(self.proposal_path.read_text())
        if block.height < self.member.height:
            self.proposal_path.unlink()
            return None
        self.scorer.drop_pending({decode_entry(e).get("request_id") for e in block.entries})
        self._needs_sync = True
        return block

    @property
    def has_proposal(self) -> bool:
        return self._proposal is not None

    def flush(self) -> int:
        """Put every pending entry on the chain now; returns how many went on."""
        with self._flush_lock:
            return self._flush_locked()

    def _flush_locked(self, extra: list[dict] | None = None) -> int:
        """Co-sign the block proposed earlier if any, then what is pending now (or, given ``extra``, that alone)."""
        written, taken, due = 0, 0, 0 if extra is not None else self.scorer.pending_count()
        while True:
            if self._proposal is None:
                if extra is not None:
                    entries, extra = extra, None
                elif taken < due:
                    entries = self.scorer.take_pending(min(self.batch_entries, due - taken))
                    taken += len(entries)
                else:
                    entries = []
                if not entries:
                    break
                try:
                    self._proposal = propose(self.member, entries)
                except Exception:
                    if entries and entries[0].get("kind") == "scoring":
                        self.scorer.put_back(entries)
                    raise
                write_atomically(self.proposal_path, block_to_json(self._proposal), 0o600)
            try:
                if self._needs_sync:
                    self.sync()
                    self._needs_sync = False
                signed = co_sign(self.member, self.peers, self._proposal)
            except Exception:
                self._needs_sync = True
                raise
            written += sum(1 for e in signed.decoded() if e.get("kind") == "scoring")
            self._proposal = None
            self.proposal_path.unlink(missing_ok=True)
            self._distribute(signed)
            on_chain = self.member.seen.requests
            self.scorer.journal.keep_only(lambda record: record["request_id"] not in on_chain)
        return written

    def _distribute(self, block: Block) -> None:
        """Commit at every member; one that misses it is brought up to date before the next block."""
        for name, peer in self.peers.items():
            try:
                peer.commit_block(block)
            except Exception as error:
                log.warning("scoring block %d: member %s did not commit it (%s); it is sent again later", block.height, name, error)
                self._needs_sync = True

    def append_after_pending(self, make_entry: Callable[[], dict | None]) -> None:
        """Flush, then append ``make_entry()`` alone, with no scoring block in between (a settlement);
        nothing if it returns None."""
        with self._flush_lock:
            self._flush_locked()
            entry = make_entry()
            if entry is not None:
                self._flush_locked(extra=[entry])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scoring-blocks", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        waited_since: float | None = None
        while not self._stop.wait(min(0.05, self.batch_seconds / 4)):
            count = self.scorer.pending_count() + (self._proposal is not None)
            if not count:
                waited_since = None
                continue
            waited_since = waited_since or time.monotonic()
            if count >= self.batch_entries or time.monotonic() - waited_since >= self.batch_seconds:
                try:
                    self.flush()
                    waited_since = None
                except Exception as error:   # nothing is lost: the proposal and the journal keep the entries
                    log.warning("scoring block not co-signed yet, entries kept: %s", error)
                    waited_since = time.monotonic()   # try again after another batch_seconds

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
