"""Ranking metrics of a credit score: AUC and the Kolmogorov–Smirnov statistic."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(labels, scores))


def ks(labels: np.ndarray, scores: np.ndarray) -> float:
    """max |TPR − FPR| over thresholds: the largest gap between bads' and goods' score CDFs."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(np.max(np.abs(tpr - fpr)))
