"""Weight of evidence and information value of a feature's bins, from its per-bin row and bad counts.

Kept apart from fitting bins (fedscore.model.binning) because these statistics need the labels: the card center
computes them from its own labels and, for a partner's bins, from counts learnt under encryption
(fedscore.protocol.training.bin_statistics); feature selection and the scorecard's WOE column read them.
"""
from __future__ import annotations

import numpy as np


def bin_counts(indices: np.ndarray, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows per bin, bads per bin) for one feature's bin indices."""
    rows = np.bincount(indices, minlength=size)
    bads = np.bincount(indices, weights=np.asarray(labels, dtype=np.float64), minlength=size)
    return rows.astype(np.int64), np.rint(bads).astype(np.int64)


def woe_iv(rows: np.ndarray, bads: np.ndarray) -> tuple[np.ndarray, float]:
    """(weight of evidence per bin, information value) from per-bin row and bad counts.

    WOE_b = ln(share of goods in b / share of bads in b), so a riskier bin has a lower WOE; IV =
    Σ (good share − bad share)·WOE. Half a count is added to an empty cell so a bin without
    goods or bads keeps a finite WOE (the usual adjustment).
    """
    rows = np.asarray(rows, dtype=np.float64)
    bads = np.asarray(bads, dtype=np.float64)
    goods = rows - bads
    total_goods, total_bads = goods.sum(), bads.sum()
    if total_goods <= 0 or total_bads <= 0:
        return np.zeros(len(rows)), 0.0
    good_share = np.where(goods > 0, goods, 0.5) / total_goods
    bad_share = np.where(bads > 0, bads, 0.5) / total_bads
    woe = np.log(good_share / bad_share)
    iv = float(np.sum((good_share - bad_share) * woe))
    return woe, iv
