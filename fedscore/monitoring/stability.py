"""Score and characteristic stability of a period against the training population.

PSI (population stability index) of the served probability of default: the
period's share per decile bin of the training scores against the training
share (0.1 each), Σ (a − e)·ln(a / e), by the report's own formula
(fedscore.model.curves.psi_terms). CSI (characteristic stability index): the
same sum over the bins of one of the card center's own features. The usual
reading: below 0.1 stable, 0.1–0.25 a moderate shift, 0.25 or above a
significant shift.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedscore.model.curves import psi_terms
from fedscore.monitoring.tally import Period


def stability_index(expected_shares: Sequence[float], counts: Sequence[int]) -> float:
    """PSI (or CSI) of observed ``counts`` per bin against the expected shares of the same bins."""
    counts = np.asarray(counts, dtype=np.float64)
    if len(counts) != len(expected_shares):
        raise ValueError(f"{len(counts)} observed bins against {len(expected_shares)} expected")
    total = counts.sum()
    if total == 0:
        raise ValueError("no observations")
    return float(np.sum(psi_terms(np.asarray(expected_shares, dtype=np.float64), counts / total)))


def reading(value: float, watch: float, alert: float) -> str:
    """curves.psi_reading's words, at the configured thresholds."""
    if value < watch:
        return "stable"
    if value < alert:
        return "moderate shift"
    return "significant shift"


def score_psi(period: Period, baseline: dict) -> float:
    return stability_index(baseline["score"]["shares"], period.score_counts)


def feature_csi(period: Period, baseline: dict) -> dict[str, float]:
    """CSI of each own feature the period's lines carry buckets for, against the baseline's shares.
    A bin index the baseline does not have (a log from another model) is refused by name."""
    result = {}
    features: Mapping[str, dict] = baseline.get("features", {})
    for name, counts in sorted(period.feature_counts.items()):
        if name not in features:
            continue
        shares = features[name]["shares"]
        outside = [index for index in counts if not 0 <= int(index) < len(shares)]
        if outside:
            raise ValueError(f"feature {name!r}: the log has bin {outside[0]}, the baseline {len(shares)} bins; "
                             "is the log from another model?")
        observed = [0] * len(shares)
        for index, count in counts.items():
            observed[int(index)] += count
        result[name] = stability_index(shares, observed)
    return result
