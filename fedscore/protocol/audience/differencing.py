"""Refusing a query whose audience differs from an earlier one by a few users.

Two answers about audiences that differ by a handful of users reveal, by
subtraction, about those users: "at least 620 points" and "at least 621
points" of one model differ by the users scoring exactly 620. The noise
already bounds what any pair of answers reveals; this refusal keeps the
obvious attack from even being tried. The partner compares the audience of
each new query with each earlier one of the same card center in the budget
window, recomputed on its current users: in any cell, the users in one
audience but not the other must be none (an identical audience: a repeat,
which the budget pays for) or at least the minimum cell size. The refusal
names the earlier query but neither the cell nor how many users differ.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def differing_per_cell(cells_now: np.ndarray, cells_then: np.ndarray) -> np.ndarray:
    """Per cell index, the users in exactly one of the two audiences (−1: a user in neither)."""
    changed = cells_now != cells_then
    moved = np.concatenate([cells_now[changed], cells_then[changed]])
    moved = moved[moved >= 0]
    return np.bincount(moved) if moved.size else np.zeros(0, dtype=np.int64)


def differencing_refusal(cells_now: np.ndarray, earlier: Iterable[tuple[str, np.ndarray]], min_cell: int) -> str | None:
    """Why this query's audience may not be counted (None: it may). ``cells_now``: per user, the index of their cell
    in this query's audience (−1: not in it); ``earlier``: (query id, the same array for an earlier query with the
    same segment columns, over the same users)."""
    cells_now = np.asarray(cells_now)
    for query_id, cells_then in earlier:
        cells_then = np.asarray(cells_then)
        if cells_then.shape != cells_now.shape:
            raise ValueError(f"query {query_id}: its audience is over {cells_then.size} users, "
                             f"this one's over {cells_now.size}")
        differing = differing_per_cell(cells_now, cells_then)
        if np.any((differing > 0) & (differing < min_cell)):
            return (f"its audience differs from that of query {query_id} by fewer than {min_cell} users in a cell; "
                    "answering both would single those users out")
    return None
