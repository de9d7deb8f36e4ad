"""Where the card center's weights start: secret random values, so the first residuals hide the labels.

With every weight at zero the first residual of row i is exactly 1/2 − y_i, and a partner's first gradient
Σ_i x_ij·(1/2 − y_i) is a subset sum of its own columns that lattice reduction solves for every label of a
batch. The card center therefore starts its own weights (and the intercept) at values drawn from the
operating system's randomness, known to it alone: its starting scores then vary from row to row with a
standard deviation of START_LOGITS, which a partner cannot tell from the labels. Training from there is
still exact gradient descent (fedscore.model.taylor takes the same start), and the start is kept in the
card center's checkpoint and model file. Partners start at zero: their own start hides nothing from themselves.
"""
from __future__ import annotations

import numpy as np

START_LOGITS = 1.0   # standard deviation over training rows of the card center's starting score, in logits


def secret_start(train_matrix: np.ndarray, logits: float = START_LOGITS,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """Weights drawn at random, scaled so that the starting scores x_i·w of the training rows have standard
    deviation ``logits`` (what varies from row to row is what hides a row's label; the intercept's share is
    drawn with the rest). ``rng`` defaults to a generator seeded from the operating system, never the job."""
    rng = rng or np.random.default_rng()
    start = rng.standard_normal(train_matrix.shape[1])
    spread = float(np.std(train_matrix @ start)) if len(train_matrix) else 0.0
    # an intercept alone (a card center bringing labels only) gives the same score to every row: its spread is
    # rounding error, not a scale to divide by
    return start * (logits / spread) if spread > 1e-9 else start * logits
