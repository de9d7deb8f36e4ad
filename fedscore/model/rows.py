"""Which rows train, which are held out, and which form each mini-batch.

Every party derives these from the job's seed and the row count alone, so all
of them pick the same rows without exchanging anything.
"""
from __future__ import annotations

import numpy as np


def split_rows(rows: int, validation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows), both sorted, from a seeded permutation."""
    permutation = np.random.default_rng(seed).permutation(rows)
    held_out = int(round(rows * validation))
    return np.sort(permutation[held_out:]), np.sort(permutation[:held_out])


def batches(train_rows: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Positions within the training rows for each step of ``epoch``.

    ``batch_size`` 0 (or at least the row count) means one step over every row.
    A remainder shorter than half a batch joins the last full batch: a tiny
    batch would hand every party a gradient over a handful of applicants.
    """
    if batch_size <= 0 or batch_size >= train_rows:
        return [np.arange(train_rows)]
    order = np.random.default_rng([seed, epoch]).permutation(train_rows)
    starts = list(range(0, train_rows, batch_size))
    if len(starts) > 1 and train_rows - starts[-1] < batch_size / 2:
        starts.pop()
    ends = starts[1:] + [train_rows]
    return [np.sort(order[a:b]) for a, b in zip(starts, ends)]
