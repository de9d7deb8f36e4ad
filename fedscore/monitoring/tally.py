"""Counting the scoring log per period in one pass: the only step that touches every line.

A period is a UTC day, or with ``per`` N requests each (in log order). Per
period it keeps counts only: requests per score bin of the baseline, per bin
of each own feature, per decision, and per partner the requests asked,
answered and late, with the reply times (for the median and 95th percentile).
"""
from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from fedscore.monitoring.scoring_log import day_of


@dataclass
class PartnerTally:
    asked: int = 0
    answered: int = 0
    late: int = 0                                       # no reply within the wait
    reply_ms: list[float] = field(default_factory=list)


@dataclass
class Period:
    label: str
    first_ms: int
    last_ms: int = 0
    requests: int = 0
    score_counts: list[int] = field(default_factory=list)
    feature_counts: dict[str, dict[int, int]] = field(default_factory=dict)
    decisions: dict[str, int] = field(default_factory=dict)
    partners: dict[str, PartnerTally] = field(default_factory=dict)


def tally(records: Iterable[dict], score_edges: Sequence[float], per: int = 0) -> list[Period]:
    """Periods in log order: one per UTC day, or (``per`` > 0) one per ``per`` requests."""
    edges = [float(e) for e in score_edges]
    periods: list[Period] = []
    current: Period | None = None
    for number, record in enumerate(records):
        time_ms = int(record["time_ms"])
        label = f"#{number + 1}" if per else day_of(time_ms)
        if current is None or (number % per == 0 if per else label != current.label):
            current = Period(label, time_ms, score_counts=[0] * (len(edges) + 1))
            periods.append(current)
        current.last_ms = time_ms
        current.requests += 1
        current.score_counts[bisect.bisect_right(edges, float(record["probability"]))] += 1
        decision = record["decision"]
        current.decisions[decision] = current.decisions.get(decision, 0) + 1
        for name, index in record.get("bins", {}).items():
            counts = current.feature_counts.get(name)
            if counts is None:
                counts = current.feature_counts[name] = {}
            counts[index] = counts.get(index, 0) + 1
        for name, reply in record.get("partners", {}).items():
            partner = current.partners.get(name)
            if partner is None:
                partner = current.partners[name] = PartnerTally()
            partner.asked += 1
            partner.answered += bool(reply["answered"])
            ms = reply["ms"]
            if ms is None:
                partner.late += 1
            else:
                partner.reply_ms.append(ms)
    if per:
        for period in periods:
            period.label = f"{period.label}–{int(period.label[1:]) + period.requests - 1}"
    return periods
