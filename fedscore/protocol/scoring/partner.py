"""A partner's side of online scoring: one applicant's partial score, one request at a time.

A partner answers `partial_score` for one applicant: it checks the consent,
looks the applicant up by digest in its own data and returns u_k, its part of
the log-odds, or None when it does not know the applicant. Each answer is
journalled (tag, consent digest, when, and the request's deadline) before it
is returned, so the partner can check, when the card center proposes a
block, that every entry marking it as a contributor names a request it
answered, and that none marks as not contributing a request it answered
before the deadline. A request without a deadline is not answered. Answers
recorded as not contributing (given late) or never recorded are logged as
unbilled (`scoring-unbilled.jsonl`) and counted in the model's status.

What crosses the partner's boundary: the card center sends it the
applicant's digest, the consent token and the partner's tag for the request;
the partner returns one number. A partner learns that the applicant, if it
holds them, applied (the applicant consented to exactly that), and nothing
of the other partners' answers.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable

from fedscore.errors import DataError, ProtocolError
from fedscore.ledger.scoring_rules import TAG, ScoringFacts
from fedscore.model.model_file import PartyModel
from fedscore.protocol.scoring.consent import ConsentError, ConsentPolicy, ConsentToken, ConsentUses
from fedscore.files import cut_torn_tail, read_json_lines
from fedscore.protocol.scoring.journal import Journal, json_line, now_ms
from fedscore.protocol.scoring.offline import partial_score
from fedscore.protocol.scoring.sources import ApplicantSource

log = logging.getLogger("fedscore.scoring")
ANSWER_LIFETIME_MS = 2 * 86_400_000   # a partner's answer no block recorded within this is given up (and counted)


class PartnerScorer:
    """A partner's side of scoring one model."""

    def __init__(self, model: PartyModel, source: ApplicantSource, card_center: str, consent: ConsentPolicy,
                 facts: ScoringFacts, journal: Journal, on_chain: Callable[[str], bool] = lambda tag: False,
                 uses: ConsentUses | None = None):
        self.model = model
        self.source = source
        self.card_center = card_center
        self.consent = consent
        self.facts = facts
        self.journal = journal
        self.uses = uses or ConsentUses(journal.path.with_name("consent-uses.jsonl"), consent)
        self.unbilled_path = journal.path.with_name("scoring-unbilled.jsonl")
        cut_torn_tail(self.unbilled_path)
        self.unbilled = len(read_json_lines(self.unbilled_path))   # answers given up or recorded as not contributing
        self._answered_at: dict[str, tuple[int, int]] = {}         # tag -> (answered, deadline), unix ms
        for record in journal.load():
            if not on_chain(record["tag"]):
                stamp, deadline = record.get("time_ms", now_ms()), record.get("deadline_ms", 0)
                facts.answered.setdefault(record["tag"], record["consent_digest"])
                self._answered_at[record["tag"]] = (stamp, deadline)
                if 0 < stamp <= deadline:
                    facts.on_time[record["tag"]] = deadline

    def partial_score(self, tag: str, digest: bytes, consent: str, deadline_ms: int) -> float | None:
        """u_k for the applicant ``digest`` (None: not known here), once the consent checks out; only before
        ``deadline_ms`` (unix ms), which every request must carry: an answer journalled by then is billed."""
        me = self.facts.member
        if not isinstance(tag, str) or not TAG.match(tag):
            raise DataError(f"partner {me!r}: request tag {tag!r} is not one fedscore issues")
        if len(digest) != 32:
            raise DataError(f"partner {me!r}: the applicant digest must be 32 bytes, got {len(digest)}")
        if isinstance(deadline_ms, bool) or not isinstance(deadline_ms, int) or deadline_ms <= 0:
            raise DataError(f"partner {me!r}: request {tag} carries no deadline (deadline_ms); not answered")
        if now_ms() > deadline_ms:
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
            self._answered_at[tag] = (stamp, deadline_ms)
            if stamp <= deadline_ms:   # in time: the chain must bill it
                self.facts.on_time[tag] = deadline_ms

        record = {"tag": tag, "consent_digest": token_digest, "time_ms": stamp, "deadline_ms": deadline_ms}
        self.journal.append(record, before=remember)
        return score

    def forget_committed(self) -> None:
        """Drop from the journal the answers a committed block now records, and give up on answers
        no block recorded for ANSWER_LIFETIME_MS; both the late answers the chain recorded as not
        contributing and those given up are logged as unbilled, on disk, before the journal forgets them."""
        answered, cutoff = self.facts.answered, now_ms() - ANSWER_LIFETIME_MS
        with self.journal.lock:   # answers arriving meanwhile change these maps under the same lock
            stale = [tag for tag, (at, _) in self._answered_at.items() if at < cutoff and tag in answered]
            for tag in stale:
                answered.pop(tag, None)
                self.facts.on_time.pop(tag, None)
            late = [self.facts.unbilled.pop(0) for _ in range(len(self.facts.unbilled))]
            unbilled = [self._unbilled_record(tag, "marked as not contributing") for tag in late]
            unbilled += [self._unbilled_record(tag, "never recorded on the chain") for tag in stale]
            for tag in [t for t in self._answered_at if t not in answered]:
                del self._answered_at[tag]
        if unbilled:
            with self.unbilled_path.open("a", encoding="utf-8") as handle:
                handle.write("".join(json_line(r) for r in unbilled))
            self.unbilled += len(unbilled)
            if late:
                log.warning("%d answers given after their deadline are recorded as not contributing; unbilled "
                            "(%d in all for model %s)", len(late), self.unbilled, self.model.job_id)
            if stale:
                log.warning("%d answers were never recorded on the scoring chain; unbilled (%d in all for model %s)",
                            len(stale), self.unbilled, self.model.job_id)
        self.journal.keep_only(lambda record: record["tag"] in answered)

    def _unbilled_record(self, tag: str, reason: str) -> dict:
        answered_at, deadline = self._answered_at.get(tag, (0, 0))
        return {"tag": tag, "time_ms": answered_at, "deadline_ms": deadline, "reason": reason}
