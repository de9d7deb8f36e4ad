"""Fixed-point encodings between floats and the integers Paillier works on.

- Scores and residuals: round(v · 2^SCORE_BITS), 2^-40 resolution. Scores
  must stay below 2^22 in magnitude so the integers fit 64 bits; a score
  that large means training diverged.
- Features in encrypted inner products: each standardised column is scaled so
  its largest magnitude on the training rows maps to 2^15 − 1 (16-bit signed
  integers), which keeps the bucket multi-exponentiation at two digit passes.
  The rounding error, at most half a step of max|x|/32767 per value, is the
  only difference from float arithmetic and averages out over rows.
"""
from __future__ import annotations

import numpy as np

from fedscore.errors import TrainingError

SCORE_BITS = 40
FEATURE_BITS = 15
EVAL_SCORE_BITS = 32  # masked scores for evaluation travel as 64-bit words


def encode_scores(values: np.ndarray, bits: int = SCORE_BITS) -> np.ndarray:
    """round(v·2^bits) as int64."""
    values = np.asarray(values, dtype=np.float64)
    limit = 2.0 ** (62 - bits)
    if values.size and not np.all(np.abs(values) < limit):
        peak = np.max(np.abs(values))
        raise TrainingError(
            f"a partial score reached {peak:.3g}, past the fixed-point range ({limit:.3g}): "
            "training diverged; lower learning_rate"
        )
    return np.rint(values * 2.0**bits).astype(np.int64)


def quantise_columns(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(integer matrix, per-column scale) with round(x·scale) in [-(2^15−1), 2^15−1]."""
    top = (1 << FEATURE_BITS) - 1
    peaks = np.max(np.abs(matrix), axis=0) if matrix.shape[0] else np.zeros(matrix.shape[1])
    scales = np.where(peaks > 0, top / np.where(peaks > 0, peaks, 1.0), 1.0)
    return np.rint(matrix * scales).astype(np.int64), scales
