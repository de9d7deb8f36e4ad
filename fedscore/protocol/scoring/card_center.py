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
from collections.abc import Callable, Mapping
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


@dataclass(frozen=True)
class Scored:
    request_id: str
    answer: Answer
    partial_scores: dict[str, float | None]


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
                 uses: ConsentUses | None = None, scoring_log: ScoringLog | None = None):
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
            late = False
            try:
                value = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout:
                log.warning("request %s: partner %s did not answer within %.0f ms", request_id, name, self.timeout * 1000)
                value, late = None, True
            except FedscoreError as error:
                log.warning("request %s: partner %s: %s", request_id, name, error)
                value = None
            if value is not None and not (isinstance(value, float) and math.isfinite(value)):
                log.warning("request %s: partner %s answered %r, not a finite number; left out", request_id, name, value)
                value = None
            scores[name] = value
            if replies is not None:   # a reply's callback may run just after its waiter wakes: then it is now
                ms = None if late else (replied.get(name) or time.monotonic()) - asked[name]
                replies[name] = PartnerReply(value is not None, None if ms is None else 1000 * ms)
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
        replies: dict[str, PartnerReply] = {}
        scores = self.ask_partners(request_id, tags, digest, consent, replies)
        result = center_answer(self.model, values, scores, base, self.policy, self.partner_wording)
        marks = {
            name: {"tag": tag, "mark": mark(self.facts.pair_keys[name], tag, scores[name] is not None)}
            for name, tag in tags.items()
        }
        entry = scoring_entry(
            request_id, now_ms(), self.secrets.salted_applicant(applicant_id),
            self.secrets.seal_consent(token.to_text()), token.digest(), marks,
        )
        self._journal(entry)
        if self.scoring_log is not None:
            self.scoring_log.record(request_id, result, values, replies)
        return Scored(request_id, result, scores)

    def record_verification(self, entry: dict) -> None:
        """Journal a `verification` entry (fedscore.protocol.scoring.verification) before it is acknowledged;
        the batcher puts it on the chain with the scoring entries."""
        self._journal(entry)

    def _journal(self, entry: dict) -> None:
        """An entry this card center made, on disk before it is answered for, then pending for the chain and
        known as its own (it signs only entries it made)."""

        def remember() -> None:
            with self._lock:
                self.facts.answered[entry_id(entry)] = entry_digest(entry)
                self.pending.append(entry)

        self.journal.append(entry, before=remember)

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
