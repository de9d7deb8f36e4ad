"""Validation maths of a credit scorecard: calibration, gains, decision bands, fairness, on plain arrays.

What a bank's model validation reads beside AUC and KS. Inputs are vectors of
one length: ``labels`` 1 for a bad (defaulted) applicant and 0 for a good one,
``pd`` the predicted probability of default, ``points`` the scorecard points
(higher = lower risk: approve at ``points >= approve_at``). Every function
returns aggregates over groups of rows, never a row, as plain JSON values
(floats rounded to ``DIGITS`` digits).
"""
from __future__ import annotations

import numpy as np

DIGITS = 6
CLIP = 1e-15                    # log-loss clips P(default) to [CLIP, 1 - CLIP]
DECISIONS = ("approve", "review", "decline")
FOUR_FIFTHS = 0.8               # adverse-impact ratio below this fails the four-fifths rule
SMALL_SHARE, SMALL_ROWS = 0.01, 20   # a group below 1% of rows or 20 rows is too small to judge
MAX_DISTINCT = 10               # a numeric attribute with more distinct values is cut into bands
BANDS = 5                       # ... of (up to) this many quantile bands
IV_READINGS = ((0.02, "not useful"), (0.1, "weak"), (0.3, "medium"), (0.5, "strong"))


# -- checks and helpers -------------------------------------------------------------


def _vector(values: object, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a vector, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite")
    return array


def _labels_and(labels: object, values: object, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels (0/1) and one more vector of the same length, checked."""
    y, v = _vector(labels, "labels"), _vector(values, name)
    if len(y) != len(v):
        raise ValueError(f"labels ({len(y)} rows) and {name} ({len(v)} rows) must have one length")
    if len(y) == 0:
        raise ValueError("no rows")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 (good) or 1 (bad)")
    return y, v


def _labels_and_pd(labels: object, pd: object) -> tuple[np.ndarray, np.ndarray]:
    y, p = _labels_and(labels, pd, "pd")
    if ((p < 0.0) | (p > 1.0)).any():
        raise ValueError("pd must be probabilities in [0, 1]")
    return y, p


def _round(value: float) -> float:
    return round(float(value), DIGITS) + 0.0      # + 0.0: no -0.0 in the JSON


def _share(part: float, whole: float) -> float | None:
    return None if whole == 0 else _round(part / whole)


def equal_count_groups(values: np.ndarray, groups: int) -> list[np.ndarray]:
    """Row indices of (up to) ``groups`` groups of near-equal count, by ascending value.

    A cut that would split equal values moves up to the end of their run, so ties
    stay in one group; groups may then be fewer and uneven.
    """
    if groups < 1:
        raise ValueError(f"groups must be at least 1, got {groups}")
    order = np.argsort(values, kind="stable")
    ranked, n = values[order], len(values)
    starts_of_runs = np.r_[np.nonzero(np.diff(ranked))[0] + 1, n]   # first index of each new value, and n
    cuts = []
    for i in range(1, groups):
        at = int(round(i * n / groups))
        at = int(starts_of_runs[np.searchsorted(starts_of_runs, at)])   # first run start at or after the cut
        if 0 < at < n and (not cuts or at > cuts[-1]):
            cuts.append(at)
    return [part for part in np.split(order, cuts) if len(part)]


# -- scores of a probability ------------------------------------------------------


def brier(labels: np.ndarray, pd: np.ndarray) -> float:
    """Mean squared gap between predicted PD and outcome: calibration and sharpness in one number."""
    y, p = _labels_and_pd(labels, pd)
    return float(np.mean((p - y) ** 2))


def log_loss(labels: np.ndarray, pd: np.ndarray) -> float:
    """Mean negative log-likelihood of the outcomes; PD clipped to [1e-15, 1 − 1e-15] so it stays finite."""
    y, p = _labels_and_pd(labels, pd)
    p = np.clip(p, CLIP, 1.0 - CLIP)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def calibration_table(labels: np.ndarray, pd: np.ndarray, groups: int = 10) -> list[dict]:
    """Predicted against observed default rate per equal-count PD group (deciles by default), lowest PD first."""
    y, p = _labels_and_pd(labels, pd)
    rows = []
    for index in equal_count_groups(p, groups):
        bads = int(y[index].sum())
        rows.append({"predicted": _round(p[index].mean()), "observed": _round(bads / len(index)),
                     "count": len(index), "bads": bads})
    return rows


def gains_table(labels: np.ndarray, pd: np.ndarray, groups: int = 10) -> list[dict]:
    """Deciles from the riskiest (highest PD) down: bads caught so far and lift over the overall bad rate.

    With no bad at all, ``cumulative_bads_share`` and ``lift`` are None.
    """
    y, p = _labels_and_pd(labels, pd)
    total_bads, overall = float(y.sum()), float(y.mean())
    rows, caught = [], 0
    for decile, index in enumerate(equal_count_groups(-p, groups), start=1):
        bads = int(y[index].sum())
        caught += bads
        rate = bads / len(index)
        rows.append({
            "decile": decile, "count": len(index), "bads": bads, "bad_rate": _round(rate),
            "cumulative_bads_share": _share(caught, total_bads),
            "lift": _share(rate, overall),
            "min_pd": _round(p[index].min()), "max_pd": _round(p[index].max()),
        })
    return rows


# -- decisions ----------------------------------------------------------------------


def decisions(points: np.ndarray, approve_at: float, review_at: float) -> np.ndarray:
    """approve at ``points >= approve_at``, review at ``review_at <= points < approve_at``, else decline."""
    if not review_at <= approve_at:
        raise ValueError("review_at must not exceed approve_at")
    s = _vector(points, "points")
    return np.where(s >= approve_at, DECISIONS[0], np.where(s >= review_at, DECISIONS[1], DECISIONS[2]))


def decision_bands(
    labels: np.ndarray, points: np.ndarray, limits: np.ndarray | None, approve_at: float, review_at: float,
) -> list[dict]:
    """Per decision (approve, review, decline, always all three): rows, share, bad rate and total credit limit.

    ``limits`` holds each row's suggested credit limit (0 when declined); None: ``total_limit`` is None.
    An empty band has ``bad_rate`` None. ``from_points`` / ``below_points`` bound the band (None: open).
    """
    y, s = _labels_and(labels, points, "points")
    amounts = None if limits is None else _labels_and(labels, limits, "limits")[1]
    decided = decisions(s, approve_at, review_at)
    bounds = {"approve": (approve_at, None), "review": (review_at, approve_at), "decline": (None, review_at)}
    rows = []
    for name in DECISIONS:
        chosen = decided == name
        count = int(chosen.sum())
        low, high = bounds[name]
        rows.append({
            "decision": name, "count": count, "share": _round(count / len(y)),
            "bad_rate": _share(float(y[chosen].sum()), count),
            "total_limit": None if amounts is None else _round(amounts[chosen].sum()),
            "from_points": None if low is None else _round(low),
            "below_points": None if high is None else _round(high),
        })
    return rows


# -- fairness -----------------------------------------------------------------------


def _value_text(value: object) -> str:
    """A group value as text: whole numbers without '.0', text as is."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (np.generic,)):
        return str(value.item())
    return str(value)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)) or (
        isinstance(value, str) and not value.strip())


def _as_numbers(values: np.ndarray) -> np.ndarray | None:
    """float64 values (NaN: missing) when every present value is a number, else None (a text attribute)."""
    if values.dtype.kind in "iuf":
        return values.astype(np.float64)
    if values.dtype.kind != "O":
        return None
    items = values.tolist()
    if not all(_missing(v) or (isinstance(v, (int, float, np.number)) and not isinstance(v, bool)) for v in items):
        return None
    return np.array([np.nan if _missing(v) else float(v) for v in items], dtype=np.float64)


def group_labels(values: np.ndarray) -> tuple[np.ndarray, list[str], bool]:
    """Each row's group (as text), the groups in display order, and whether the values were banded.

    Text values and numbers with at most MAX_DISTINCT distinct values are their own groups. A numeric
    attribute with more (e.g. age) is cut at its quantiles into at most BANDS bands, each labelled by
    the smallest and largest value it holds ("25–34"); ties at a cut stay in one band. Missing values
    (None, NaN, blank text) are the group "missing", shown last.
    """
    values = np.asarray(values)
    numbers = _as_numbers(values)
    if numbers is None:
        text = np.array(["missing" if _missing(v) else _value_text(v) for v in values.tolist()], dtype=object)
        present = sorted(set(text.tolist()) - {"missing"})
        return text, present + (["missing"] if "missing" in set(text.tolist()) else []), False
    present = ~np.isnan(numbers)
    distinct = np.unique(numbers[present])
    labels = np.full(len(numbers), "missing", dtype=object)
    if len(distinct) <= MAX_DISTINCT:
        for value in distinct:
            labels[numbers == value] = _value_text(value)
        order = [_value_text(v) for v in distinct]
        banded = False
    else:
        order = []
        for index in equal_count_groups(numbers[present], BANDS):
            members = np.flatnonzero(present)[index]
            low, high = numbers[members].min(), numbers[members].max()
            name = f"{_number_text(low)}–{_number_text(high)}"
            labels[members] = name
            order.append(name)
        banded = True
    if not present.all():
        order.append("missing")
    return labels, order, banded


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def _attribute(values: np.ndarray, approved: np.ndarray, points: np.ndarray) -> dict:
    labels, order, banded = group_labels(values)
    n, floor = len(labels), max(SMALL_SHARE * len(labels), SMALL_ROWS)
    rows = []
    for name in order:
        members = labels == name
        count = int(members.sum())
        rows.append({
            "group": name, "count": count, "approval_rate": _round(approved[members].mean()),
            "mean_points": _round(points[members].mean()), "small": bool(count < floor),
        })
    judged = [row["approval_rate"] for row in rows if not row["small"]]
    ratio = None
    if len(judged) >= 2 and max(judged) > 0:
        ratio = _round(min(judged) / max(judged))
    return {
        "groups": rows, "banded": banded, "rows": n,
        "adverse_impact_ratio": ratio,
        "passes_four_fifths": None if ratio is None else bool(ratio >= FOUR_FIFTHS),
    }


def fairness_table(groups: dict[str, np.ndarray], approved: np.ndarray, points: np.ndarray) -> dict[str, dict]:
    """Approval rate and mean points per group of each protected attribute, and its adverse-impact ratio.

    For each attribute: ``groups`` (list of {group, count, approval_rate, mean_points, small}),
    ``banded`` (numbers cut into quantile bands, see group_labels), ``rows``, ``adverse_impact_ratio``
    = lowest / highest approval rate among groups that are not small, and ``passes_four_fifths`` =
    ratio >= 0.8. A group under 1% of rows or under 20 rows is reported with ``small`` True and left out
    of the ratio. The ratio (and verdict) is None when fewer than two groups are judged or none is approved.
    """
    yes = np.asarray(approved)
    if yes.ndim != 1 or yes.dtype.kind not in "bui" or not np.isin(yes, (0, 1)).all():
        raise ValueError("approved must be a vector of booleans")
    yes = yes.astype(bool)
    s = _vector(points, "points")
    if len(s) != len(yes):
        raise ValueError(f"approved ({len(yes)} rows) and points ({len(s)} rows) must have one length")
    table = {}
    for attribute, values in groups.items():
        values = np.asarray(values)
        if values.shape != yes.shape:
            raise ValueError(f"protected attribute {attribute!r} has {values.shape} values for {len(yes)} rows")
        table[attribute] = _attribute(values, yes, s)
    return table


# -- readings and summaries -------------------------------------------------------


def iv_reading(iv: float) -> str:
    """The usual reading of a characteristic's information value; above 0.5 it is too good to trust."""
    if not np.isfinite(iv):
        raise ValueError("information value must be a finite number")
    for below, reading in IV_READINGS:
        if iv < below:
            return reading
    return "strong" if iv <= 0.5 else "check for leakage"


def points_histogram(labels: np.ndarray, points: np.ndarray, bins: int = 20) -> dict:
    """Goods and bads per equal-width bin of points between the lowest and highest: {"edges", "goods", "bads"}."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    y, s = _labels_and(labels, points, "points")
    low, high = float(s.min()), float(s.max())
    if low == high:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    return {
        "edges": [_round(e) for e in edges],
        "goods": np.histogram(s[y == 0], edges)[0].tolist(),
        "bads": np.histogram(s[y == 1], edges)[0].tolist(),
    }


def validation_summary(
    labels: np.ndarray,
    pd: np.ndarray,
    points: np.ndarray | None = None,
    limits: np.ndarray | None = None,
    approve_at: float | None = None,
    review_at: float | None = None,
    groups: dict[str, np.ndarray] | None = None,
) -> dict:
    """The report's validation keys for one set of rows (the held-out rows, normally).

    Always: brier, log_loss, mean_pd, observed_default_rate, calibration, gains. With points,
    approve_at and review_at: decision_bands (total_limit from ``limits`` if given). With points,
    approve_at and ``groups`` (protected attribute -> values per row): fairness, where approved means
    points >= approve_at.
    """
    y, p = _labels_and_pd(labels, pd)
    summary: dict = {
        "brier": _round(brier(y, p)),
        "log_loss": _round(log_loss(y, p)),
        "mean_pd": _round(p.mean()),
        "observed_default_rate": _round(y.mean()),
        "calibration": calibration_table(y, p),
        "gains": gains_table(y, p),
    }
    if points is not None and approve_at is not None and review_at is not None:
        summary["decision_bands"] = decision_bands(y, points, limits, approve_at, review_at)
    if points is not None and approve_at is not None and groups:
        s = _labels_and(y, points, "points")[1]
        summary["fairness"] = fairness_table(groups, s >= approve_at, s)
    return summary
