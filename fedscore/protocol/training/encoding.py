"""How a party's table becomes its training matrix, and that matrix's exact integer products.

Kept apart from the session's step protocol: the encoding is fitted once on the training rows (and
again when feature selection drops columns), while the session only reads the result each step.
Binning on: one 0/1 indicator column per bin (fedscore.model.binning), so X̂ = X exactly and the
gradient is a product of ciphertexts per bin. Off: standardised columns, quantised to 16 bits.

The matrix is never held whole: with binning on, a party keeps each row's bin per feature (a byte per
value); off, it reads its table's float64 features. Blocks of rows are built from these when a step
needs them, a bounded number of cells at a time (CHUNK_CELLS), with the same values the whole matrix
would hold: each cell is computed alone, so a block's cells equal the whole matrix's.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from fedscore.crypto.fixedpoint import FEATURE_BITS
from fedscore.job import Binning
from fedscore.model.binning import Binner, fit_binner
from fedscore.model.data import PartyTable
from fedscore.model.scaling import Standardiser


log = logging.getLogger("fedscore.training")

CHUNK_CELLS = 1 << 22          # cells of a block built at once: 32 MiB as float64
SCALER_COLUMNS = 32            # columns standardised per pass when fitting the scaler


@dataclass
class Encoding:
    """A party's fitted encoding of its columns, and the blocks of its matrix built on demand."""

    features: list[str]                # the model's columns (binning may drop some asked for)
    scaler: Standardiser | None        # set when binning is off
    binner: Binner | None              # set when binning is on
    rows: int                          # every row
    train: np.ndarray                  # the training rows' positions
    width: int                         # columns of the matrix: bins or features, and the intercept
    has_intercept: bool
    quantisation: np.ndarray           # per column, the scale X̂ = X · scale
    penalised: np.ndarray              # per column, 1 where L2 applies (not the intercept)
    codes: np.ndarray | None = None    # binning on: rows × features, each row's bin (uint8, or uint16 past 255 bins)
    raw: np.ndarray | None = None      # binning off: the table's float64 features, rows × table columns
    raw_columns: tuple[int, ...] = ()  # binning off: the model's features' positions in ``raw``

    @property
    def binned(self) -> bool:
        return self.codes is not None

    @property
    def offsets(self) -> np.ndarray:
        return np.asarray(self.binner.offsets if self.binner else [], dtype=np.int64)

    def spans(self, count: int, cells_per_row: int | None = None) -> Iterator[tuple[int, int]]:
        """(start, stop) ranges over ``count`` rows, CHUNK_CELLS cells at a time."""
        step = max(1, CHUNK_CELLS // max(1, cells_per_row or self.width))
        for start in range(0, count, step):
            yield start, min(count, start + step)

    # -- blocks of the matrix ---------------------------------------------------

    def block(self, positions: np.ndarray) -> np.ndarray:
        """The matrix's rows at ``positions`` (of every row), float64: what the whole matrix holds there."""
        count = len(positions)
        if self.codes is not None:
            block = np.zeros((count, self.width))
            if self.codes.shape[1]:
                block[np.arange(count)[:, None], self.offsets[None, :] + self.codes[positions]] = 1.0
            if self.has_intercept:
                block[:, -1] = 1.0
            return block
        raw = self.raw[np.ix_(positions, self.raw_columns)] if self.raw_columns else np.zeros((count, 0))
        block = self.scaler.transform(raw)
        return np.hstack([block, np.ones((count, 1))]) if self.has_intercept else block

    def quantised(self, positions: np.ndarray) -> np.ndarray:
        """X̂ at ``positions``: the exact integers the gradient multiplies (0/1 with bins; 16-bit otherwise)."""
        block = self.block(positions)
        return block.astype(np.int64) if self.binned else np.rint(block * self.quantisation).astype(np.int64)

    def bin_columns(self, positions: np.ndarray) -> np.ndarray:
        """Per row at ``positions``, its columns that are 1 (binning on), the intercept's last."""
        columns = self.codes[positions].astype(np.int64) + self.offsets[None, :]
        if self.has_intercept:
            columns = np.hstack([columns, np.full((len(positions), 1), self.width - 1, dtype=np.int64)])
        return columns

    def scores(self, weights: np.ndarray, positions: np.ndarray | None = None) -> np.ndarray:
        """X w at ``positions`` (every row if None), a block at a time."""
        positions = np.arange(self.rows) if positions is None else positions
        parts = [self.block(positions[a:b]) @ weights for a, b in self.spans(len(positions))]
        return np.concatenate(parts) if parts else np.zeros(0)

    def feature_parts(self, weights: np.ndarray, positions: np.ndarray) -> list[np.ndarray]:
        """Each feature's contribution to X w at ``positions``: with bins, the weight of the row's bin."""
        if self.codes is not None:
            return [weights[offset + self.codes[positions, j].astype(np.int64)]
                    for j, offset in enumerate(self.offsets.tolist())]
        count = len(self.features)
        parts = [np.empty(len(positions)) for _ in range(count)]
        for a, b in self.spans(len(positions)):
            block = self.block(positions[a:b])
            for j in range(count):
                parts[j][a:b] = block[:, j] * weights[j]
        return parts

    def bin_counts(self, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(training rows, Σ labels) per bin of every feature, in the weights' order; the intercept's column
        (every training row) last when there is one."""
        rows, sums = [], []
        for j, bins in enumerate(self.binner.features):
            codes = self.codes[self.train, j]
            rows.append(np.bincount(codes, minlength=bins.size))
            sums.append(np.bincount(codes, weights=labels, minlength=bins.size) if labels is not None
                        else np.zeros(bins.size))
        if self.has_intercept:
            rows.append(np.array([len(self.train)]))
            sums.append(np.array([0.0 if labels is None else float(np.sum(labels))]))
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        return np.concatenate(rows).astype(np.int64), np.concatenate(sums)

    def keep(self, features: list[str]) -> "Encoding":
        """Binning on: the encoding of ``features`` (some of its own), from its bin codes. The bins of a feature
        are fitted on that feature's training values alone, so refitting them would give the same bins."""
        positions = [self.features.index(name) for name in features]
        binner = Binner(features=tuple(self.binner.features[j] for j in positions))
        width = int(sum(f.size for f in binner.features))
        penalised = np.ones(width)
        if self.has_intercept:
            width += 1
            penalised = np.append(penalised, 0.0)
        return Encoding(
            features=list(features), scaler=None, binner=binner, rows=self.rows, train=self.train, width=width,
            has_intercept=self.has_intercept, quantisation=np.ones(width), penalised=penalised,
            codes=np.ascontiguousarray(self.codes[:, positions]),
        )

    def training_rows(self) -> "TrainingRows":
        return TrainingRows(self)


class TrainingRows:
    """The training rows' matrix as a product needs it (``shape``, ``len``, ``@``), never built whole."""

    def __init__(self, encoding: Encoding):
        self.encoding = encoding
        self.shape = (len(encoding.train), encoding.width)

    def __len__(self) -> int:
        return self.shape[0]

    def __matmul__(self, weights: np.ndarray) -> np.ndarray:
        return self.encoding.scores(weights, self.encoding.train)


def encode_table(
    table: PartyTable,
    features: list[str],
    train: np.ndarray,
    binning: Binning,
    has_intercept: bool,
    party: str,
) -> Encoding:
    """Fit the encoding of ``features`` on the training rows ``train``; keep what builds the matrix's blocks."""
    scaler: Standardiser | None = None
    binner: Binner | None = None
    codes: np.ndarray | None = None
    raw_columns: tuple[int, ...] = ()
    if binning.enabled and features:
        labels = None if table.labels is None else table.labels[train]
        binner = fit_binner((table.column(name)[train] for name in features), features, binning, labels)
        for feature, why in binner.dropped:
            log.warning("party %s: column %r dropped: %s", party, feature, why)
        encoded_features = binner.names
        widest = max((f.size for f in binner.features), default=1)
        codes = np.empty((table.rows, len(binner.features)), dtype=np.uint8 if widest <= 256 else np.uint16)
        for j, bins in enumerate(binner.features):
            codes[:, j] = bins.assign(table.column(bins.feature))
        width = int(sum(f.size for f in binner.features))
    else:
        encoded_features = list(features)
        raw_columns = tuple(table.feature_names.index(name) for name in features)
        scaler = _fit_scaler(table.features, raw_columns, train)
        width = len(features)
    penalised = np.ones(width)
    if has_intercept:
        width += 1
        penalised = np.append(penalised, 0.0)
    encoding = Encoding(
        features=encoded_features, scaler=scaler, binner=binner, rows=table.rows, train=train, width=width,
        has_intercept=has_intercept, quantisation=np.ones(width), penalised=penalised, codes=codes,
        raw=None if codes is not None else table.features, raw_columns=raw_columns,
    )
    if codes is None:
        encoding.quantisation = _quantisation(encoding)
    return encoding


def _fit_scaler(raw: np.ndarray, columns: tuple[int, ...], train: np.ndarray) -> Standardiser:
    """Standardiser.fit on the training rows, SCALER_COLUMNS columns at a time (never the whole matrix)."""
    mean, spread = np.zeros(len(columns)), np.ones(len(columns))
    for a in range(0, len(columns), SCALER_COLUMNS):
        part = Standardiser.fit(raw[np.ix_(train, columns[a:a + SCALER_COLUMNS])])
        mean[a:a + SCALER_COLUMNS], spread[a:a + SCALER_COLUMNS] = part.mean, part.scale
    return Standardiser(mean=mean, scale=spread)


def _quantisation(encoding: Encoding) -> np.ndarray:
    """quantise_columns' scales over the training rows: round(x·scale) in [-(2^15−1), 2^15−1] per column."""
    top = (1 << FEATURE_BITS) - 1
    peaks = np.zeros(encoding.width)
    for a, b in encoding.spans(len(encoding.train)):
        peaks = np.maximum(peaks, np.max(np.abs(encoding.block(encoding.train[a:b])), axis=0))
    return np.where(peaks > 0, top / np.where(peaks > 0, peaks, 1.0), 1.0)


def integer_gradient(quantised: np.ndarray, values: list[int]) -> list[int]:
    """X̂ᵀv in exact Python integers (v can exceed 64 bits once multiplied)."""
    column = np.array(values, dtype=object)
    return [int(x) for x in quantised.T.astype(object).dot(column)] if len(values) else [0] * quantised.shape[1]


def integer_column_sums(columns: np.ndarray, values: list[int], total: int) -> list[int]:
    """X̂ᵀv for a 0/1 matrix given as each row's columns that are 1, in exact Python integers."""
    sums = [0] * total
    for value, row in zip(values, columns.tolist()):
        for column in row:
            sums[column] += value
    return sums
