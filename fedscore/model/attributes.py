"""A binned party model as the industry reads a scorecard: points per attribute, the intercept as base points.

With the card center's calibration (slope a, intercept c) the served score is

    score = offset − pdo/ln2 · (a·u + c),   u = intercept + Σ own bin weights + Σ partners' partial scores

so it splits into additive parts, each the points of one attribute:

- the intercept as base points: ``base_points`` = offset − pdo/ln2 · (a·intercept + c);
- each of the card center's characteristics: the points of the applicant's attribute (bin),
  −a·w·pdo/ln2 (``scorecard_rows``, rounded to 1 decimal, as scorecards print them);
- each partner's part: −a·u_k·pdo/ln2 of its partial score u_k (``partner_points``).

score = base points + Σ attribute points + partners' points, then clipped to the policy's range
(the printed points are rounded, so their sum can differ from the served score by the rounding).
A partner knows no calibration, so its own table (``scorecard_rows`` on its model) uses slope 1.

``attribute_wording`` turns a bin into words for an applicant ("PAY_0: 2 or more",
"LIMIT_BAL: below 50000", "EDUCATION: other", "AGE: missing"): what reasons say.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedscore.model.binning import CATEGORICAL, MISSING, OTHER, FeatureBins
from fedscore.model.calibration import Calibration
from fedscore.model.model_file import PartyModel
from fedscore.model.woe import woe_iv
from fedscore.protocol.scoring.scorecard import LN2, ScoringPolicy

_OR_MISSING = f" or {MISSING}"
_OR_OTHER = f" or {OTHER}"


# -- wording -------------------------------------------------------------------


def bin_wording(bins: FeatureBins, index: int) -> str:
    """A bin's label in words for an applicant.

    Ranges: "< 50000" → "below 50000", "[50000, 120000)" → "50000 to below 120000", ">= 2" → "2 or more";
    a special value "= -1" → "exactly -1"; a category stays as it is; "missing" and "other" stay.
    A bin that also takes missing or unseen values says so: "below 50000 or missing", "2, other or missing".
    """
    label = bins.labels[index]
    extra: list[str] = []
    if index == bins.missing and label != MISSING and label.endswith(_OR_MISSING):
        label, extra = label[: -len(_OR_MISSING)], [MISSING]
    if bins.kind == CATEGORICAL and index == bins.other and label != OTHER and label.endswith(_OR_OTHER):
        label, extra = label[: -len(_OR_OTHER)], [OTHER, *extra]
    parts = [_core_wording(bins, label), *extra]
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} or {parts[-1]}"


def _core_wording(bins: FeatureBins, label: str) -> str:
    if bins.kind == CATEGORICAL or label in (MISSING, OTHER):
        return label
    if label.startswith(">= "):
        return f"{label[3:]} or more"
    if label.startswith("< "):
        return f"below {label[2:]}"
    if label.startswith("= "):
        return f"exactly {label[2:]}"
    if label.startswith("[") and label.endswith(")") and ", " in label:
        low, high = label[1:-1].split(", ", 1)
        return f"{low} to below {high}"
    return label


def attribute_wording(bins: FeatureBins, index: int) -> str:
    """"CHARACTERISTIC: words for the bin", e.g. "PAY_0: 2 or more" (a reason line for a binned model)."""
    return f"{bins.feature}: {bin_wording(bins, index)}"


# -- points ----------------------------------------------------------------------


def points_per_log_odds(policy: ScoringPolicy, calibration: Calibration) -> float:
    """Score points one unit of the model's raw log-odds costs: a·pdo/ln2."""
    return calibration.slope * policy.pdo / LN2


def attribute_points(weight: float, policy: ScoringPolicy, calibration: Calibration) -> float:
    """An attribute's points, −a·w·pdo/ln2, rounded to 1 decimal (the industry's convention)."""
    return round(-points_per_log_odds(policy, calibration) * weight, 1)


def partner_points(partial_score: float, policy: ScoringPolicy, calibration: Calibration) -> float:
    """A partner's part of the card center's score: −a·u_k·pdo/ln2 (not rounded)."""
    return -points_per_log_odds(policy, calibration) * partial_score


def base_points(model: PartyModel, policy: ScoringPolicy) -> float:
    """The intercept as base points: offset − pdo/ln2·(a·intercept + c), the card center's calibration (a, c)."""
    if model.intercept is None:
        raise ValueError(f"party {model.party!r}: base points are the card center's; its model has no intercept")
    calibration = model.calibrated
    return policy.offset - policy.pdo / LN2 * (calibration.slope * model.intercept + calibration.intercept)


def scorecard_rows(
    model: PartyModel,
    policy: ScoringPolicy,
    rows: Sequence[float] | np.ndarray | None = None,
    bads: Sequence[float] | np.ndarray | None = None,
) -> list[dict]:
    """One row per (characteristic, bin) of a binned model, in the model's order.

    ``rows``/``bads``: rows and bad rows per bin, one number per weight (the order of
    ``model.binner.columns``), e.g. from fedscore.model.woe.bin_counts; without them
    count, bad_rate and woe are None. Points use the model's calibration (a partner's: slope 1).
    """
    if not model.binned:
        raise ValueError(f"party {model.party!r}: its model is not binned; a scorecard has attributes")
    binner, calibration = model.binner, model.calibrated
    weights = np.asarray(model.weights, dtype=np.float64)
    for name, given in (("rows", rows), ("bads", bads)):
        if given is not None and len(given) != len(weights):
            raise ValueError(f"party {model.party!r}: {name} has {len(given)} numbers for {len(weights)} bins")
    table: list[dict] = []
    for offset, bins in zip(binner.offsets, binner.features):
        block = slice(offset, offset + bins.size)
        counts = None if rows is None else np.asarray(rows, dtype=np.float64)[block]
        bad_counts = None if bads is None else np.asarray(bads, dtype=np.float64)[block]
        woe = woe_iv(counts, bad_counts)[0] if counts is not None and bad_counts is not None else None
        for b, label in enumerate(bins.labels):
            count = None if counts is None else int(counts[b])
            bad_rate = None
            if count and bad_counts is not None:
                bad_rate = float(bad_counts[b] / counts[b])
            table.append({
                "characteristic": bins.feature,
                "bin": label,
                "count": count,
                "bad_rate": bad_rate,
                "woe": None if woe is None else float(woe[b]),
                "weight": float(weights[offset + b]),
                "points": attribute_points(float(weights[offset + b]), policy, calibration),
            })
    return table
