"""Curves of a credit score as aggregates: what the report draws, with no row's value, label or id in it.

Scores are log-odds of default (higher = riskier); labels are 1 for a bad
(defaulted) applicant, 0 for a good one. Every function here returns counts
or shares over groups of rows, never a row: the ROC and KS curves are taken
at population quantiles (each point covers at least ``min_rows`` more rows
than the one before, and there are at most ``max_points``), the score
histogram uses fixed bins of default probability, and the PSI bins are the
training scores' deciles.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PROBABILITY_BINS = 20          # fixed score-distribution bins of width 0.05 on P(default)
PSI_BINS = 10                  # deciles of the training scores
PSI_FLOOR = 1e-4               # an empty bin's share, so its log stays finite
PSI_STABLE, PSI_SHIFTED = 0.1, 0.25   # the usual reading: below stable, above a significant shift


@dataclass(frozen=True)
class RankCurve:
    """Shares of rows scored at or above a sequence of falling thresholds: ROC and KS in one."""

    population: np.ndarray     # all rows
    bads: np.ndarray           # true-positive rate: bads caught
    goods: np.ndarray          # false-positive rate: goods caught

    def auc(self) -> float:
        """Area under (goods, bads) by trapezoids: exact when no point was dropped."""
        return float(np.sum(np.diff(self.goods) * (self.bads[1:] + self.bads[:-1]) / 2.0))

    def ks(self) -> float:
        """Largest gap between the bads' and goods' cumulative shares at these points."""
        return float(np.max(self.bads - self.goods))

    def to_json(self, digits: int = 6) -> dict:
        return {name: _rounded(getattr(self, name), digits) for name in ("population", "bads", "goods")}


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = np.asarray(labels, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be vectors of one length")
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 (good) or 1 (bad)")
    if labels.min(initial=1.0) == labels.max(initial=0.0):
        raise ValueError("a rank curve needs both goods and bads")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    return labels, scores


def full_rank_curve(labels: np.ndarray, scores: np.ndarray) -> RankCurve:
    """The curve at every distinct score, from (0, 0) to (1, 1): the card center's private working copy."""
    labels, scores = _check(labels, scores)
    order = np.argsort(-scores, kind="stable")
    ranked, caught = scores[order], labels[order]
    last_of_tie = np.r_[np.nonzero(np.diff(ranked))[0], len(ranked) - 1]
    bads = np.cumsum(caught)[last_of_tie]
    rows = last_of_tie + 1.0
    goods = rows - bads
    return RankCurve(
        population=np.r_[0.0, rows / len(ranked)],
        bads=np.r_[0.0, bads / bads[-1]],
        goods=np.r_[0.0, goods / goods[-1]],
    )


def rank_curve(labels: np.ndarray, scores: np.ndarray, max_points: int = 200, min_rows: int = 10) -> RankCurve:
    """At most ``max_points`` + 1 points of the full curve, spaced by population, each at least
    ``min_rows`` rows past the previous one; (0, 0) and (1, 1) always kept."""
    if max_points < 1 or min_rows < 1:
        raise ValueError("max_points and min_rows must be at least 1")
    full = full_rank_curve(labels, scores)
    rows = len(np.asarray(scores))
    step = max(rows / max_points, float(min_rows)) / rows
    kept, next_at = [0], step
    for index in range(1, len(full.population) - 1):
        if full.population[index] >= next_at - 1e-12:
            kept.append(index)
            next_at = full.population[index] + step
    if len(kept) > 1 and 1.0 - full.population[kept[-1]] < step - 1e-12:
        kept.pop()            # too close to the end: merge with (1, 1)
    kept.append(len(full.population) - 1)
    index = np.array(kept)
    return RankCurve(full.population[index], full.bads[index], full.goods[index])


def probability(scores: np.ndarray) -> np.ndarray:
    """P(default) from log-odds."""
    return 1.0 / (1.0 + np.exp(-np.asarray(scores, dtype=np.float64)))


def score_histogram(labels: np.ndarray, scores: np.ndarray, bins: int = PROBABILITY_BINS) -> dict:
    """Counts of goods and bads per fixed bin of P(default): edges do not depend on the data."""
    labels, scores = _check(labels, scores)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, probability(scores), side="right") - 1, 0, bins - 1)
    goods = np.bincount(index[labels == 0], minlength=bins)
    bads = np.bincount(index[labels == 1], minlength=bins)
    return {"edges": _rounded(edges, 6), "goods": goods.tolist(), "bads": bads.tolist()}


def psi_edges(expected: np.ndarray, bins: int = PSI_BINS) -> np.ndarray:
    """Inner bin edges: the expected scores' quantiles, ties merged (so a bin may cover more than 1/bins)."""
    expected = np.asarray(expected, dtype=np.float64)
    if len(expected) < bins:
        raise ValueError(f"PSI over {bins} bins needs at least {bins} expected rows, got {len(expected)}")
    return np.unique(np.quantile(expected, np.arange(1, bins) / bins))


def population_stability(expected: np.ndarray, actual: np.ndarray, bins: int = PSI_BINS) -> dict:
    """PSI of ``actual`` against ``expected``: Σ (a − e)·ln(a / e) over the expected scores' quantile bins.

    Bin i holds scores in [edge_{i−1}, edge_i); a share below PSI_FLOOR counts as PSI_FLOOR.
    """
    expected, actual = np.asarray(expected, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    if len(actual) == 0:
        raise ValueError("PSI needs at least one actual row")
    edges = psi_edges(expected, bins)
    count = len(edges) + 1
    shares = [np.bincount(np.searchsorted(edges, v, side="right"), minlength=count) / len(v) for v in (expected, actual)]
    terms = psi_terms(shares[0], shares[1])
    return {
        "edges": edges,
        "expected": shares[0],
        "actual": shares[1],
        "terms": terms,
        "total": float(np.sum(terms)),
    }


def psi_terms(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Each bin's (a − e)·ln(a / e) from the expected and actual shares, a share below PSI_FLOOR counted as
    PSI_FLOOR: the one formula behind the report's PSI and the monitor's PSI and CSI."""
    floored = [np.maximum(np.asarray(s, dtype=np.float64), PSI_FLOOR) for s in (expected, actual)]
    return (floored[1] - floored[0]) * np.log(floored[1] / floored[0])


def psi_reading(total: float) -> str:
    if total < PSI_STABLE:
        return "stable"
    if total < PSI_SHIFTED:
        return "moderate shift"
    return "significant shift"


def variance_shares(parts: list[np.ndarray]) -> list[float]:
    """Each part's share of the variance of their sum, cov(part, sum) / var(sum): the shares add up to 1."""
    if not parts:
        raise ValueError("no parts")
    columns = [np.asarray(v, dtype=np.float64) for v in parts]
    total = np.sum(columns, axis=0)
    centred = total - total.mean()
    variance = float(centred @ centred)
    if variance == 0.0:
        return [0.0] * len(columns)
    return [float((column - column.mean()) @ centred) / variance for column in columns]


def _rounded(values: np.ndarray, digits: int) -> list[float]:
    return [round(float(v), digits) for v in values]
