"""Where the card center's weights start: secret random values, so the first residuals hide the labels.

With every weight at zero the first residual of row i is exactly 1/2 − y_i, and a partner's first gradient
Σ_i x_ij·(1/2 − y_i) is a subset sum of its own columns that lattice reduction solves for every label of a
batch. The card center therefore starts its own weights (and the intercept) at values drawn from the
operating system's randomness, known to it alone: its starting score per row then varies by about
START_LOGITS, which a partner cannot tell from the labels. Training from there is still exact gradient
descent (fedscore.model.taylor takes the same start), and the start is kept in the card center's
checkpoint and model file. Partners start at zero: their own start hides nothing from themselves.
"""
from __future__ import annotations

import numpy as np

START_LOGITS = 1.0   # root-mean-square of the card center's starting score per row, in logits


def secret_start(train_matrix: np.ndarray, logits: float = START_LOGITS,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """Weights w ~ N(0, s²) with s chosen so that the mean over training rows of E[(x_i·w)²] is ``logits``²
    (with 0/1 attributes: one weight per feature and the intercept add up in each row's score).
    ``rng`` defaults to a generator seeded from the operating system, never from the job."""
    rng = rng or np.random.default_rng()
    columns = train_matrix.shape[1]
    if not columns or not len(train_matrix):
        return np.zeros(columns)
    mean_square = float(np.mean(np.sum(np.square(train_matrix), axis=1)))
    scale = logits / np.sqrt(mean_square) if mean_square > 0 else 0.0
    return rng.normal(0.0, scale, columns)
