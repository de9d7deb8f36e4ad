"""How a party's table becomes its training matrix, and that matrix's exact integer products.

Kept apart from the session's step protocol: the encoding is fitted once on the training rows (and
again when feature selection drops columns), while the session only reads the result each step.
Binning on: one 0/1 indicator column per bin (fedscore.model.binning), so X̂ = X exactly and the
gradient is a product of ciphertexts per bin. Off: standardised columns, quantised to 16 bits.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from fedscore.crypto.fixedpoint import quantise_columns
from fedscore.job import Binning
from fedscore.model.binning import Binner, fit_binner
from fedscore.model.data import PartyTable
from fedscore.model.scaling import Standardiser


log = logging.getLogger("fedscore.training")


@dataclass
class Encoding:
    """A party's fitted encoding of its columns and the matrices built from it."""

    features: list[str]                # the model's columns (binning may drop some asked for)
    scaler: Standardiser | None        # set when binning is off
    binner: Binner | None              # set when binning is on
    matrix: np.ndarray                 # every row, encoded
    train_matrix: np.ndarray           # the training rows, encoded
    bin_columns: np.ndarray | None     # per training row, its columns that are 1 (binning on)
    quantised: np.ndarray              # X̂: the training matrix as integers
    quantisation: np.ndarray           # per column, the scale X̂ = X · scale
    penalised: np.ndarray              # per column, 1 where L2 applies (not the intercept)


def encode_table(
    table: PartyTable,
    features: list[str],
    train: np.ndarray,
    binning: Binning,
    has_intercept: bool,
    party: str,
) -> Encoding:
    """Fit the encoding of ``features`` on the training rows ``train`` and build the matrices."""
    columns = table.columns(features)
    scaler: Standardiser | None = None
    binner: Binner | None = None
    if binning.enabled and features:
        labels = None if table.labels is None else table.labels[train]
        binner = fit_binner([c[train] for c in columns], features, binning, labels)
        for feature, why in binner.dropped:
            log.warning("party %s: column %r dropped: %s", party, feature, why)
        encoded_features = binner.names
        matrix = binner.indicators(table.columns(encoded_features))
        indices = binner.bin_indices(table.columns(encoded_features)) + np.asarray(binner.offsets, dtype=np.int64)
    else:
        encoded_features = list(features)
        raw = np.column_stack(columns) if columns else np.zeros((table.rows, 0))
        scaler = Standardiser.fit(raw[train])
        matrix = scaler.transform(raw)
        indices = None
    penalised = np.ones(matrix.shape[1])
    if has_intercept:
        if indices is not None:
            indices = np.hstack([indices, np.full((matrix.shape[0], 1), matrix.shape[1], dtype=np.int64)])
        matrix = np.hstack([matrix, np.ones((matrix.shape[0], 1))])
        penalised = np.append(penalised, 0.0)
    train_matrix = matrix[train]
    if indices is not None:
        bin_columns: np.ndarray | None = indices[train]
        quantised, quantisation = train_matrix.astype(np.int64), np.ones(matrix.shape[1])
    else:
        bin_columns = None
        quantised, quantisation = quantise_columns(train_matrix)
    return Encoding(
        features=encoded_features, scaler=scaler, binner=binner, matrix=matrix, train_matrix=train_matrix,
        bin_columns=bin_columns, quantised=quantised, quantisation=quantisation, penalised=penalised,
    )


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
