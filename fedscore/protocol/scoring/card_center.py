"""The card center's side of online scoring: its own values, the partners' partial scores, the answer.

The card center checks the request's own features and the consent before
any partner is asked, then asks every partner at once (each under its own
tag for the request), waits at most its timeout, and turns its own
contributions, the intercept and the partial scores into the answer
(fedscore.protocol.scoring.offline.center_answer, the offline reference's own
computation, under the model's calibration). Each answered request becomes a
`scoring` entry (fedscore.ledger.scoring_rules), journalled before the answer is
returned; `EntryBatcher` (fedscore.protocol.scoring.batcher) puts the
entries on the chain.

A batch (`score_batch`, up to `max_batch` applicants) is the same per
applicant: each is checked, admitted on its own consent and recorded in its
own entry; only the partners are asked once per batch, each in one call
carrying every admitted applicant. An applicant that fails a check gets its
own error in the result list; the others are scored.

What crosses the card center's boundary: it sends each partner the
applicant's digest, the consent token and that partner's tag for the
request. It learns each partner's partial score for the applicant it asked
about (it needs them for the reasons), and nothing about applicants it did
not ask about.
"""
from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from fedscore.errors import DataError, FedscoreError
from fedscore.ledger.scoring_rules import ScoringFacts, entry_digest, entry_id, mark, scoring_entry
from fedscore.model.data import normalise_id
from fedscore.model.model_file import PartyModel
from fedscore.monitoring.scoring_log import PartnerReply, ScoringLog
from fedscore.protocol.ports import PartnerScorerHandle
from fedscore.protocol.scoring.consent import ConsentPolicy, ConsentToken, ConsentUses, applicant_digest
from fedscore.protocol.scoring.journal import Journal, now_ms
from fedscore.protocol.scoring.offline import center_answer
from fedscore.protocol.scoring.scorecard import Answer, ScoringPolicy
from fedscore.protocol.scoring.secrets import ScoringSecrets

log = logging.getLogger("fedscore.scoring")
BATCH_SECONDS_PER_APPLICANT = 0.002   # a batch's extra wait per applicant for partners' answers (each costs one ~0.3 ms)


@dataclass(frozen=True)
class Scored:
    request_id: str
    answer: Answer
    partial_scores: dict[str, float | None]


@dataclass(frozen=True)
class Applicant:
    """One applicant of a batch, as the approval system sent it."""

    applicant_id: str
    features: Mapping[str, object]
    consent: str


@dataclass(frozen=True)
class _Admitted:
    """An applicant past the card center's own checks, with its request id and each partner's tag."""

    applicant_id: str
    values: list[object]
    base: float
    digest: bytes
    token: ConsentToken
    consent: str
    request_id: str
    tags: dict[str, str]


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _is_raw_value(value: object) -> bool:
    """What a binned model scores: a number (NaN: missing), text, or null."""
    return value is None or isinstance(value, str) or (not isinstance(value, bool) and isinstance(value, (int, float)))


def _names(names: list[str]) -> str:
    return ", ".join(repr(name) for name in names)


def check_feature_names(features: Mapping[str, object], model_features: list[str], limit_basis: str) -> None:
    """The one rule for a request's feature names, whichever way it came (gRPC, HTTP): every model feature's
    key, and no other but the limit basis. A misspelt name is both unknown and missing: both are named."""
    missing = [name for name in model_features if name not in features]
    unknown = sorted(set(features) - set(model_features) - {limit_basis})
    plural = "s" if len(missing) > 1 else ""
    needs = f"(needs {', '.join(model_features)})"
    if missing and unknown:
        raise DataError(f"the request has {_names(unknown)}, which the model does not use; it lacks {_names(missing)} {needs}")
    if missing:
        raise DataError(f"the request lacks the card center's feature{plural} {_names(missing)} {needs}")
    if unknown:
        raise DataError(f"the request has feature{'s' if len(unknown) > 1 else ''} the model does not use: {_names(unknown)}")


class CardCenterScorer:
    """The card center's side of scoring one model."""

    def __init__(self, model: PartyModel, policy: ScoringPolicy, partners: Mapping[str, PartnerScorerHandle],
                 consent: ConsentPolicy, secrets: ScoringSecrets, facts: ScoringFacts, journal: Journal,
                 timeout: float = 0.5, on_chain: Callable[[str], bool] = lambda request_id: False,
                 uses: ConsentUses | None = None, scoring_log: ScoringLog | None = None, max_batch: int = 300):
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
        self.max_batch = max_batch   # applicants per score_batch call
        self.scoring_log = scoring_log   # the card center's own record for monitoring (fedscore.monitoring)
        self.partner_wording: dict[str, str] = {}   # each partner's own words for its reason line, when it opens
        self.pending: list[dict] = []
        self._lock = threading.Lock()
        for entry in journal.load():
            if not on_chain(entry_id(entry)):
                facts.answered.setdefault(entry_id(entry), entry_digest(entry))
                self.pending.append(entry)

    def own_values(self, features: Mapping[str, object]) -> tuple[list[object], float]:
        """The model's columns from the request, in model order, and the credit limit's base amount
        (checked before any partner is asked). Every column's key must be there and no other but the
        limit basis. A binned model takes a number, text or null (all data: an unseen or missing
        value scores in its documented bin); a standardised one a finite number. The limit basis,
        when sent, must be a finite number."""
        check_feature_names(features, self.model.features, self.policy.limit_basis)
        for name in self.model.features:
            if not (_is_raw_value(features[name]) if self.model.binned else _is_number(features[name])):
                kind = "a number, text or null" if self.model.binned else "a finite number"
                raise DataError(f"feature {name!r} must be {kind}")
        basis = self.policy.limit_basis
        if basis in features and not _is_number(features[basis]):
            raise DataError(f"feature {basis!r} must be a finite number: the credit limit scales it")
        base = float(features.get(basis, 0.0))   # zero or less: no limit is suggested
        values = [features[name] for name in self.model.features]
        return (values if self.model.binned else [float(v) for v in values]), base

    def ask_partners(self, request_id: str, tags: Mapping[str, str], digest: bytes, consent: str,
                     replies: dict[str, PartnerReply] | None = None) -> dict[str, float | None]:
        """Every partner at once, each under its own tag; one that does not know the applicant, refuses,
        fails, is late or answers something that is not a finite number gives None. ``replies``, when
        given, gets each partner's own reply time (None: no reply within the wait) for the scoring log."""
        deadline = time.monotonic() + self.timeout
        asked: dict[str, float] = {}
        replied: dict[str, float] = {}
        futures = {}
        for name, handle in self.partners.items():
            asked[name] = time.monotonic()
            futures[name] = handle.ask_partial_score(tags[name], digest, consent, self.timeout)
            futures[name].add_done_callback(lambda _, name=name: replied.setdefault(name, time.monotonic()))
        scores: dict[str, float | None] = {}
        for name, future in futures.items():
            scores[name], late = self._wait(request_id, name, future, deadline)
            if replies is not None:   # a reply's callback may run just after its waiter wakes: then it is now
                ms = None if late else (replied.get(name) or time.monotonic()) - asked[name]
                replies[name] = PartnerReply(scores[name] is not None, None if ms is None else 1000 * ms)
        return scores

    def ask_partners_batch(self, batch: Sequence[_Admitted]) -> list[tuple[dict[str, float | None], dict[str, PartnerReply]]]:
        """`ask_partners` for a batch: every partner at once, each in one call about every applicant of the
        batch (under that partner's tag for each); each applicant's scores and reply times, in order.

        A partner checks a batch's applicants one after another, so the wait grows with the batch: the
        single call's timeout plus BATCH_SECONDS_PER_APPLICANT for each (several times a partner's measured
        cost), lest the tail of a large batch come back as partners missing."""
        timeout = self.timeout + BATCH_SECONDS_PER_APPLICANT * len(batch)
        deadline = time.monotonic() + timeout
        asked: dict[str, float] = {}
        replied: dict[tuple[str, int], float] = {}
        futures = {}
        for name, handle in self.partners.items():
            asked[name] = time.monotonic()
            items = [(admitted.tags[name], admitted.digest, admitted.consent) for admitted in batch]
            futures[name] = handle.ask_partial_scores(items, timeout)
            for k, future in enumerate(futures[name]):
                future.add_done_callback(lambda _, key=(name, k): replied.setdefault(key, time.monotonic()))
        answers: list[tuple[dict[str, float | None], dict[str, PartnerReply]]] = []
        for k, admitted in enumerate(batch):
            scores: dict[str, float | None] = {}
            replies: dict[str, PartnerReply] = {}
            for name in self.partners:
                scores[name], late = self._wait(admitted.request_id, name, futures[name][k], deadline)
                ms = None if late else (replied.get((name, k)) or time.monotonic()) - asked[name]
                replies[name] = PartnerReply(scores[name] is not None, None if ms is None else 1000 * ms)
            answers.append((scores, replies))
        return answers

    def _wait(self, request_id: str, name: str, future: Future, deadline: float) -> tuple[float | None, bool]:
        """One partner's partial score for one request, None if it gave none usable; and whether it was late."""
        try:
            value = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            log.warning("request %s: partner %s did not answer within %.0f ms", request_id, name, self.timeout * 1000)
            return None, True
        except FedscoreError as error:
            log.warning("request %s: partner %s: %s", request_id, name, error)
            return None, False
        if value is not None and not (isinstance(value, float) and math.isfinite(value)):
            log.warning("request %s: partner %s answered %r, not a finite number; left out", request_id, name, value)
            return None, False
        return value, False

    def score(self, applicant_id: str, features: Mapping[str, object], consent: str) -> Scored:
        """The whole answer for one applicant, recorded for the chain before it is returned."""
        admitted = self._admit(applicant_id, features, consent)
        replies: dict[str, PartnerReply] = {}
        scores = self.ask_partners(admitted.request_id, admitted.tags, admitted.digest, admitted.consent, replies)
        return self._answer(admitted, scores, replies)

    def score_batch(self, batch: Sequence[Applicant | FedscoreError]) -> list[Scored | FedscoreError]:
        """Each applicant's answer, or the error that kept it from being scored (an item may arrive already
        refused, e.g. malformed on the wire), in order; every answer recorded for the chain before any is
        returned. Too large or empty a batch is refused whole."""
        if not batch:
            raise DataError("the batch holds no applicants")
        if len(batch) > self.max_batch:
            raise DataError(f"a batch may hold at most {self.max_batch} applicants (max_batch_applicants); "
                            f"this one holds {len(batch)}: send it in parts")
        results: list[Scored | FedscoreError | None] = [None] * len(batch)
        admitted: list[tuple[int, _Admitted]] = []
        for i, item in enumerate(batch):
            try:
                if isinstance(item, FedscoreError):
                    raise item
                admitted.append((i, self._admit(item.applicant_id, item.features, item.consent)))
            except FedscoreError as error:   # this applicant only: the rest of the batch goes on
                results[i] = error
        if admitted:
            answers = self.ask_partners_batch([a for _, a in admitted])
            made = [self._result(one, scores) for (_, one), (scores, _) in zip(admitted, answers)]
            try:
                self._journal([entry for _, entry in made])   # the batch's entries at once: one write
            except FedscoreError as error:   # not recorded (the model is closing): not answered either
                for i, _ in admitted:
                    results[i] = error
                return results   # type: ignore[return-value]
            for (i, one), (scores, replies), (result, _) in zip(admitted, answers, made):
                if self.scoring_log is not None:
                    self.scoring_log.record(one.request_id, result, one.values, replies)
                results[i] = Scored(one.request_id, result, scores)
        return results   # type: ignore[return-value]  # every slot is filled above

    def _admit(self, applicant_id: str, features: Mapping[str, object], consent: str) -> _Admitted:
        """The card center's own checks, before any partner is asked: the applicant id, the features, the
        consent (counted as used); then the request's id and each partner's tag."""
        if not normalise_id(applicant_id):
            raise DataError("the request has no applicant id")
        values, base = self.own_values(features)
        digest = applicant_digest(applicant_id)
        token = ConsentToken.from_text(consent)
        self.consent.check(token, digest, self.facts.member)   # refused here before any partner is asked
        self.uses.admit(token, f"card center {self.facts.member!r}")
        request_id = uuid.uuid4().hex
        tags = {name: self.secrets.tag(request_id, name) for name in self.partners}
        return _Admitted(applicant_id, values, base, digest, token, consent, request_id, tags)

    def _answer(self, admitted: _Admitted, scores: dict[str, float | None], replies: dict[str, PartnerReply]) -> Scored:
        """The answer from the partners' scores, its entry journalled for the chain before it is returned."""
        result, entry = self._result(admitted, scores)
        self._journal([entry])
        if self.scoring_log is not None:
            self.scoring_log.record(admitted.request_id, result, admitted.values, replies)
        return Scored(admitted.request_id, result, scores)

    def _result(self, admitted: _Admitted, scores: dict[str, float | None]) -> tuple[Answer, dict]:
        """The answer from the partners' scores, and the request's chain entry."""
        result = center_answer(self.model, admitted.values, scores, admitted.base, self.policy, self.partner_wording)
        marks = {
            name: {"tag": tag, "mark": mark(self.facts.pair_keys[name], tag, scores[name] is not None)}
            for name, tag in admitted.tags.items()
        }
        entry = scoring_entry(
            admitted.request_id, now_ms(), self.secrets.salted_applicant(admitted.applicant_id),
            self.secrets.seal_consent(admitted.token.to_text()), admitted.token.digest(), marks,
        )
        return result, entry

    def record_verification(self, entry: dict) -> None:
        """Journal a `verification` entry (fedscore.protocol.scoring.verification) before it is acknowledged;
        the batcher puts it on the chain with the scoring entries."""
        self._journal([entry])

    def _journal(self, entries: list[dict]) -> None:
        """Entries this card center made, on disk before they are answered for, then pending for the chain and
        known as its own (it signs only entries it made)."""
        digests = [(entry_id(entry), entry_digest(entry)) for entry in entries]

        def remember() -> None:
            with self._lock:
                self.facts.answered.update(digests)
                self.pending.extend(entries)

        self.journal.append_many(entries, before=remember)

    def take_pending(self, limit: int) -> list[dict]:
        with self._lock:
            taken, self.pending = self.pending[:limit], self.pending[limit:]
        return taken

    def put_back(self, entries: list[dict]) -> None:
        with self._lock:
            self.pending = entries + self.pending

    def drop_pending(self, request_ids: set[str]) -> None:
        """Forget pending entries (by request or verification id) that are already in a proposed block."""
        with self._lock:
            self.pending = [e for e in self.pending if entry_id(e) not in request_ids]

    def pending_count(self) -> int:
        with self._lock:
            return len(self.pending)
