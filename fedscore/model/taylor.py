"""Logistic regression under the second-order Taylor expansion of the loss at 0.

With labels y ∈ {0, 1} and linear score u = x·w,
    log(1 + e^u) − y·u  ≈  log 2 + u/2 + u²/8 − y·u,
whose gradient in u is the residual
    d = u/4 + 1/2 − y            (≈ σ(u) − y near 0),
and whose mean over a batch is log 2 − 1/2 + (2/|B|)·Σ d². The protocol
computes exactly these quantities under encryption; this module computes them
in plain numpy, as the reference the federated run is tested against.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedscore.model.rows import batches

LOG2_MINUS_HALF = float(np.log(2.0) - 0.5)


def residual(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return 0.25 * scores + 0.5 - labels


def loss(scores: np.ndarray, labels: np.ndarray, l2: float = 0.0, penalised: np.ndarray | None = None) -> float:
    d = residual(scores, labels)
    value = LOG2_MINUS_HALF + 2.0 * float(np.mean(d * d))
    if l2 and penalised is not None:
        value += 0.5 * l2 * float(penalised @ penalised)
    return value


def fit_gradient_descent(
    blocks: Sequence[np.ndarray],
    labels: np.ndarray,
    *,
    epochs: int,
    learning_rate: float,
    l2: float = 0.0,
    batch_size: int = 0,
    seed: int = 0,
    unpenalised: Sequence[np.ndarray] | None = None,
    gradient_blocks: Sequence[np.ndarray] | None = None,
    momentum: float = 0.0,
    start: Sequence[np.ndarray] | None = None,
) -> tuple[list[np.ndarray], list[float]]:
    """Mini-batch gradient descent on the Taylor loss, one weight block per party (heavy ball with ``momentum``:
    v ← μ·v − lr·g, w ← w + v; 0 is plain gradient descent).

    ``unpenalised[p]`` flags columns of block p left out of the L2 term (the
    intercept). ``gradient_blocks`` replaces the matrices used in Xᵀd, e.g.
    by their fixed-point quantisation. ``start[p]`` is where block p's weights
    start (zero if None; the card center's are secret random values). Returns the weights and the mean loss
    of each epoch (each batch's loss taken before its update).
    """
    gradient_blocks = gradient_blocks or blocks
    weights = [np.zeros(block.shape[1]) if start is None else np.array(start[p], dtype=float)
               for p, block in enumerate(blocks)]
    velocities = [np.zeros(block.shape[1]) for block in blocks]
    penalty = [
        np.ones(block.shape[1]) if unpenalised is None else (~np.asarray(unpenalised[p], bool)).astype(float)
        for p, block in enumerate(blocks)
    ]
    losses: list[float] = []
    for epoch in range(epochs):
        total, count = 0.0, 0
        for rows in batches(len(labels), batch_size, seed, epoch):
            scores = sum(block[rows] @ w for block, w in zip(blocks, weights))
            d = residual(scores, labels[rows])
            penalised = np.concatenate([w * m for w, m in zip(weights, penalty)])
            total += loss(scores, labels[rows], l2, penalised) * len(rows)
            count += len(rows)
            for p, grad_block in enumerate(gradient_blocks):
                gradient = grad_block[rows].T @ d / len(rows) + l2 * weights[p] * penalty[p]
                velocities[p] = momentum * velocities[p] - learning_rate * gradient
                weights[p] = weights[p] + velocities[p]
        losses.append(total / count)
    return weights, losses


def taylor_optimum(matrix: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The unregularised minimiser: least squares of 4(y − 1/2) on the features."""
    return np.linalg.lstsq(matrix, 4.0 * (labels - 0.5), rcond=None)[0]
