"""A party's own columns as scorecard attributes: bins fitted on its own training rows, one indicator each.

Every party bins only its own columns, on its own training rows (the held-out
rows never shape a bin), and never shows another party a value or a cut point:

- numeric columns: quantile cut points (at most ``max_bins`` ranges), rounded
  to two significant digits as scorecards print them (so no cut point is an
  applicant's exact value), then
  adjacent ranges merged until each holds at least ``min_bin_share`` of the
  training rows, so no bin singles out a few applicants. The card center,
  which holds the labels, also merges adjacent ranges of its own columns
  until their bad rates are monotonic;
- declared special values (e.g. the UCI PAY_x codes -2 and -1) get bins of
  their own, ahead of the ranges they would otherwise fall in;
- missing values (an empty cell, NA, or the odd text cell in a numeric
  column) get a bin of their own;
- text columns (most values not numbers) are categorical: a category per bin, rare ones (and the
  smallest beyond ``max_bins``) merged into "other".

A bin, a special value or the missing bin that would hold fewer training rows
than the minimum share is merged: a special value into the range its number
falls in, the missing bin and "other" into the feature's largest bin. So a
value never seen in training always has a documented place, never an error:
a missing or unreadable value scores in the feature's missing bin (or, if
training had too few to form one, in its largest bin); an unseen category
scores in "other" (likewise). A column whose training rows leave a single
bin (one value, or every value missing) carries no information and is
dropped, named in the warnings.

The model has one weight per bin; a party's matrix is the 0/1 indicator of
each row's bin in each feature, so its encrypted gradient is a product of
ciphertexts per bin (fedscore.crypto.pool.CryptoPool.column_sums).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from fedscore.job import Binning

MISSING = "missing"
OTHER = "other"
NUMERIC = "numeric"
CATEGORICAL = "categorical"
CUT_DIGITS = 2   # significant digits of a numeric cut point
_MISSING_TEXT = frozenset({"", "nan", "NaN", "NA", "null", "None"})


@dataclass(frozen=True)
class FeatureBins:
    """One feature's bins: how a raw value finds its bin, and what each bin is called.

    Numeric: range k holds edges[k-1] <= x < edges[k] (open at both ends),
    ``range_bins[k]`` the bin it counts in (merged ranges share one);
    ``specials[v]`` the bin of a special value. Categorical: ``categories[c]``
    the bin of category c. Both: ``missing`` the bin of a missing value,
    ``other`` the bin of anything never seen.
    """

    feature: str
    kind: str
    labels: tuple[str, ...]
    missing: int
    other: int
    edges: tuple[float, ...] = ()
    range_bins: tuple[int, ...] = ()
    specials: tuple[tuple[float, int], ...] = ()
    categories: tuple[tuple[str, int], ...] = ()

    @property
    def size(self) -> int:
        return len(self.labels)

    def assign(self, values: Sequence[object] | np.ndarray) -> np.ndarray:
        """The bin of every value (a number, NaN/None for missing, or text), never an error."""
        if self.kind == CATEGORICAL:
            lookup = dict(self.categories)
            texts = category_texts(values)
            return np.array([self.missing if t is None else lookup.get(t, self.other) for t in texts], dtype=np.int64)
        numbers = numeric_values(values)
        result = np.asarray(self.range_bins, dtype=np.int64)[np.searchsorted(np.asarray(self.edges), numbers, side="right")]
        for value, index in self.specials:
            result[numbers == value] = index
        result[np.isnan(numbers)] = self.missing
        return result

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, document: dict) -> "FeatureBins":
        return cls(
            feature=document["feature"], kind=document["kind"], labels=tuple(document["labels"]),
            missing=int(document["missing"]), other=int(document["other"]),
            edges=tuple(float(e) for e in document.get("edges", ())),
            range_bins=tuple(int(b) for b in document.get("range_bins", ())),
            specials=tuple((float(v), int(b)) for v, b in document.get("specials", ())),
            categories=tuple((str(c), int(b)) for c, b in document.get("categories", ())),
        )


@dataclass(frozen=True)
class Binner:
    """A party's fitted bins over its features, and the indicator matrix they make."""

    features: tuple[FeatureBins, ...]
    dropped: tuple[tuple[str, str], ...] = field(default=())   # (feature, why), for the party's warnings

    @property
    def names(self) -> list[str]:
        return [f.feature for f in self.features]

    @property
    def columns(self) -> list[str]:
        """One name per indicator column: "FEATURE: bin label"."""
        return [f"{f.feature}: {label}" for f in self.features for label in f.labels]

    @property
    def offsets(self) -> list[int]:
        """The first indicator column of each feature."""
        return list(np.cumsum([0] + [f.size for f in self.features[:-1]]).astype(int)) if self.features else []

    def bin_indices(self, columns: Sequence[Sequence[object]]) -> np.ndarray:
        """rows × features: the bin of each row's value, one raw column per feature (in ``names`` order)."""
        if len(columns) != len(self.features):
            raise ValueError(f"{len(columns)} columns for {len(self.features)} binned features")
        if not self.features:
            return np.zeros((0, 0), dtype=np.int64)
        return np.column_stack([f.assign(c) for f, c in zip(self.features, columns)])

    def indicators(self, columns: Sequence[Sequence[object]]) -> np.ndarray:
        """rows × bins 0/1 matrix (float64): exactly one 1 per feature per row."""
        indices = self.bin_indices(columns)
        rows = indices.shape[0] if indices.ndim == 2 and indices.size else len(columns[0]) if columns else 0
        matrix = np.zeros((rows, sum(f.size for f in self.features)))
        for offset, j in zip(self.offsets, range(len(self.features))):
            matrix[np.arange(rows), offset + indices[:, j]] = 1.0
        return matrix

    def weight_blocks(self, weights: Sequence[float]) -> list[np.ndarray]:
        """The flat weight vector cut into one block per feature (one weight per bin)."""
        weights = np.asarray(weights, dtype=np.float64)
        return [weights[o: o + f.size] for o, f in zip(self.offsets, self.features)]

    def contributions(self, weights: Sequence[float], columns: Sequence[Sequence[object]]) -> np.ndarray:
        """rows × features: the weight of the bin each row falls in, per feature (its log-odds contribution)."""
        indices = self.bin_indices(columns)
        blocks = self.weight_blocks(weights)
        if not blocks:
            return np.zeros((len(columns[0]) if columns else 0, 0))
        return np.column_stack([block[indices[:, j]] for j, block in enumerate(blocks)])

    def to_json(self) -> list[dict]:
        return [f.to_json() for f in self.features]

    @classmethod
    def from_json(cls, document: list[dict]) -> "Binner":
        return cls(features=tuple(FeatureBins.from_json(f) for f in document))


# -- raw values ----------------------------------------------------------------


def numeric_values(values: Sequence[object] | np.ndarray) -> np.ndarray:
    """float64 values; anything missing, not a number or infinite becomes NaN (scored in the missing bin)."""
    array = np.asarray(values)
    if array.dtype.kind in "fiub":
        numbers = array.astype(np.float64)
    else:
        numbers = np.array([_number(v) for v in array.tolist()], dtype=np.float64)
    numbers[~np.isfinite(numbers)] = np.nan
    return numbers


def _number(value: object) -> float:
    if value is None or isinstance(value, bool):
        return math.nan
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return math.nan


def category_texts(values: Sequence[object] | np.ndarray) -> list[str | None]:
    """Each value as its category's text (None: missing); 3 and 3.0 read as "3", as in a CSV."""
    texts: list[str | None] = []
    for value in np.asarray(values, dtype=object).tolist():
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            texts.append(None)
        elif isinstance(value, float) and value.is_integer():
            texts.append(str(int(value)))
        else:
            text = str(value).strip()
            texts.append(None if text in _MISSING_TEXT else text)
    return texts


def is_categorical(values: Sequence[object] | np.ndarray) -> bool:
    """A column is categorical when most of its values that are not missing are not numbers; in a numeric
    column the odd text cell (a typo, "n/a") is read as missing instead."""
    array = np.asarray(values)
    if array.dtype.kind in "fiub":
        return False
    present = [t for t in category_texts(array) if t is not None]
    return sum(math.isnan(_number(t)) for t in present) * 2 > len(present)


# -- fitting -------------------------------------------------------------------


def fit_binner(
    columns: Sequence[Sequence[object]],
    names: Sequence[str],
    settings: Binning,
    labels: np.ndarray | None = None,
) -> Binner:
    """Bins for every column, fitted on the rows given (a party's training rows only).

    ``labels`` (the card center's own columns) enables monotonic merging of numeric ranges.
    """
    fitted: list[FeatureBins] = []
    dropped: list[tuple[str, str]] = []
    for name, values in zip(names, columns):
        bins = fit_feature(name, values, settings, labels)
        if isinstance(bins, str):
            dropped.append((name, bins))
        else:
            fitted.append(bins)
    return Binner(features=tuple(fitted), dropped=tuple(dropped))


def fit_feature(name: str, values: Sequence[object], settings: Binning, labels: np.ndarray | None = None) -> FeatureBins | str:
    """One feature's bins, or why it is dropped (a single bin left: no information)."""
    rows = len(values)
    if rows == 0:
        return "no training rows"
    smallest = max(1, math.ceil(settings.min_bin_share * rows))
    if is_categorical(values):
        bins = _fit_categorical(name, category_texts(values), settings.max_bins, smallest)
    else:
        bins = _fit_numeric(name, numeric_values(values), settings, smallest, labels)
    if isinstance(bins, str):
        return bins
    used = np.unique(bins.assign(values))
    if len(used) < 2:
        return "a single bin on the training rows (one value, or all missing)"
    return bins


def _fit_numeric(name: str, numbers: np.ndarray, settings: Binning, smallest: int, labels: np.ndarray | None) -> FeatureBins | str:
    missing = np.isnan(numbers)
    if missing.all():
        return "every value is missing on the training rows"
    special = np.zeros(len(numbers), dtype=bool)
    kept_specials: list[float] = []
    for value in sorted(set(settings.specials(name))):
        hits = numbers == value
        if hits.sum() >= smallest:
            kept_specials.append(value)
            special |= hits
    plain = numbers[~missing & ~special]
    edges = _quantile_edges(plain, settings.max_bins)
    counts = np.bincount(np.searchsorted(edges, plain, side="right"), minlength=len(edges) + 1)
    edges = _merge_small(edges, counts, smallest)
    if labels is not None and settings.monotonic and len(edges):
        plain_labels = np.asarray(labels, dtype=np.float64)[~missing & ~special]
        edges = _merge_to_monotonic(edges, plain, plain_labels)
    ranges = len(edges) + 1
    labels_out = [_range_label(edges, k) for k in range(ranges)]
    specials = [(value, ranges + i) for i, value in enumerate(kept_specials)]
    labels_out += [f"= {_number_text(v)}" for v in kept_specials]
    range_counts = np.bincount(np.searchsorted(edges, plain, side="right"), minlength=ranges)
    largest = int(np.argmax(range_counts)) if plain.size else (ranges if kept_specials else 0)
    missing_bin = _own_bin_or_largest(labels_out, MISSING, missing.sum() >= smallest, largest)
    return FeatureBins(
        feature=name, kind=NUMERIC, labels=tuple(labels_out), missing=missing_bin, other=missing_bin,
        edges=tuple(float(e) for e in edges), range_bins=tuple(range(ranges)), specials=tuple(specials),
    )


def round_cut(values: np.ndarray, digits: int = CUT_DIGITS) -> np.ndarray:
    """Cut points rounded to ``digits`` significant digits, as scorecards print them ("< 50000", not
    "< 49873.25"): a quantile is some applicant's exact value, and the card center's cut points travel in its
    scorecard table, which the job's report carries."""
    values = np.asarray(values, dtype=np.float64)
    magnitude = np.floor(np.log10(np.where(values == 0, 1.0, np.abs(values))))
    scale = 10.0 ** (digits - 1 - magnitude)
    return np.round(values * scale) / scale


def _quantile_edges(values: np.ndarray, max_bins: int) -> np.ndarray:
    """Distinct quantile cut points splitting ``values`` into at most ``max_bins`` ranges, rounded (``round_cut``)."""
    if values.size == 0:
        return np.array([])
    cuts = np.quantile(values, np.linspace(0.0, 1.0, max_bins + 1)[1:-1], method="lower")
    cuts = np.unique(round_cut(cuts))
    # a cut at the smallest value leaves an empty first range; x < min never happens on these rows
    return cuts[cuts > values.min()]


def _merge_small(edges: np.ndarray, counts: np.ndarray, smallest: int) -> np.ndarray:
    """Drop cut points until every range holds at least ``smallest`` rows: the smallest range joins its
    smaller neighbour, repeatedly."""
    edges, counts = list(edges), list(counts)
    while len(counts) > 1 and min(counts) < smallest:
        k = int(np.argmin(counts))
        if k == 0:
            neighbour = 1
        elif k == len(counts) - 1:
            neighbour = k - 1
        else:
            neighbour = k - 1 if counts[k - 1] <= counts[k + 1] else k + 1
        low, high = min(k, neighbour), max(k, neighbour)
        counts[low] += counts[high]
        del counts[high]
        del edges[low]   # the cut between ranges low and high
    return np.asarray(edges, dtype=np.float64)


def _merge_to_monotonic(edges: np.ndarray, values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Merge adjacent ranges until bad rates rise (or fall) monotonically, in the direction of the
    overall trend (pool-adjacent-violators on the ranges)."""
    edges = list(edges)
    while edges:
        index = np.searchsorted(np.asarray(edges), values, side="right")
        counts = np.bincount(index, minlength=len(edges) + 1).astype(float)
        bads = np.bincount(index, weights=labels, minlength=len(edges) + 1)
        rates = bads / np.maximum(counts, 1.0)
        if len(rates) <= 2:
            break   # two ranges are monotonic whichever way their rates go
        trend = np.sign(np.corrcoef(np.arange(len(rates)), rates)[0, 1])
        steps = np.diff(rates) * (trend if trend != 0 else 1.0)
        violations = np.flatnonzero(steps < 0)
        if violations.size == 0:
            break
        del edges[int(violations[0])]
    return np.asarray(edges, dtype=np.float64)


def _fit_categorical(name: str, texts: list[str | None], max_bins: int, smallest: int) -> FeatureBins | str:
    present = [t for t in texts if t is not None]
    if not present:
        return "every value is missing on the training rows"
    values, counts = np.unique(np.asarray(present, dtype=object), return_counts=True)
    order = sorted(zip(counts.tolist(), values.tolist()), key=lambda cv: (-cv[0], cv[1]))
    kept = [value for count, value in order if count >= smallest][: max_bins - 1]
    rest = len(present) - sum(count for count, value in order if value in kept)
    labels = list(kept)
    categories = [(value, i) for i, value in enumerate(kept)]
    missing_count = len(texts) - len(present)
    if not kept:
        return "no category holds the minimum share of training rows"
    largest = 0   # kept is sorted by count, largest first
    other = _own_bin_or_largest(labels, OTHER, rest >= smallest, largest)
    missing = _own_bin_or_largest(labels, MISSING, missing_count >= smallest, largest)
    return FeatureBins(feature=name, kind=CATEGORICAL, labels=tuple(labels), missing=missing, other=other,
                       categories=tuple(categories))


def _own_bin_or_largest(labels: list[str], label: str, enough: bool, largest: int) -> int:
    """The bin of ``label`` (missing, other): a bin of its own when it holds enough training rows, else the
    feature's largest bin, whose label then says so. Appends to ``labels``."""
    if enough:
        labels.append(label)
        return len(labels) - 1
    labels[largest] += f" or {label}"
    return largest


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


def _range_label(edges: np.ndarray, k: int) -> str:
    if len(edges) == 0:
        return "any value"
    if k == 0:
        return f"< {_number_text(edges[0])}"
    if k == len(edges):
        return f">= {_number_text(edges[-1])}"
    return f"[{_number_text(edges[k - 1])}, {_number_text(edges[k])})"
