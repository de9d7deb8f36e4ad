"""Partner health per period: answer rate and reply times, and a sharp fall of the answer rate flagged.

A partner "answers" a request when it gives a partial score; it does not when
it does not hold the applicant, refuses, fails, answers nonsense or is late.
Its answer rate is compared with a reference: the median rate of the earlier
judged periods in the report that were not flagged, or, for the first one,
the rate the baseline expects (the share of the card center's applicants it held at alignment). A
fall below (1 − fall) × the reference is flagged (its data feed broke, or it
stopped answering); so is a partner that answered none of a judged period's
requests while its reference was above zero, however long ago it stopped.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedscore.monitoring.tally import Period


@dataclass(frozen=True)
class PartnerHealth:
    asked: int
    answered: int
    late: int
    rate: float
    median_ms: float | None
    p95_ms: float | None

    def to_json(self) -> dict:
        return {"asked": self.asked, "answered": self.answered, "late": self.late, "answer_rate": round(self.rate, 6),
                "median_ms": self.median_ms, "p95_ms": self.p95_ms}


def partner_health(period: Period) -> dict[str, PartnerHealth]:
    health = {}
    for name, tally in sorted(period.partners.items()):
        times = np.asarray(tally.reply_ms, dtype=np.float64)
        median, p95 = (round(float(np.percentile(times, q)), 2) for q in (50, 95)) if len(times) else (None, None)
        health[name] = PartnerHealth(tally.asked, tally.answered, tally.late, tally.answered / tally.asked, median, p95)
    return health


def reference_rate(name: str, earlier: Mapping[str, Sequence[float]], expected: Mapping[str, float]) -> float | None:
    """The rate a period's answer rate is judged against: the median of the partner's earlier judged rates that
    were not flagged (a partner down for weeks is still judged against its healthy days), else the baseline's."""
    rates = earlier.get(name, ())
    if len(rates):
        return float(np.median(rates))
    return expected.get(name)


def answer_rate_fall(rate: float, reference: float | None, fall: float) -> bool:
    """Flagged: below (1 − fall) of a reference above zero, or no answer at all against one."""
    if reference is None or reference <= 0:
        return False
    return rate < (1.0 - fall) * reference or rate == 0.0
