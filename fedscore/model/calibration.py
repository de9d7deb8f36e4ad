"""Recalibration of the total score: a 1-D logistic regression of the label on the model's log-odds.

The Taylor-approximated loss the protocol trains fits ranking well but not
the level of the probability (on the demo's data every probability came out
about 20% too high). The card center, which holds the labels and already
learns the total score of its training rows at evaluation, fits
p = σ(slope·u + intercept) on those rows with the exact logistic loss, so
nothing new is revealed; every probability, score, decision and limit then
uses the calibrated log-odds.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedscore.errors import TrainingError


@dataclass(frozen=True)
class Calibration:
    slope: float = 1.0
    intercept: float = 0.0

    def log_odds(self, scores: np.ndarray | float) -> np.ndarray | float:
        """The calibrated log-odds of default for the model's raw log-odds."""
        return self.slope * scores + self.intercept

    def probability(self, scores: np.ndarray) -> np.ndarray:
        return sigmoid(self.log_odds(np.asarray(scores, dtype=np.float64)))

    def to_json(self) -> dict:
        return {"slope": self.slope, "intercept": self.intercept}

    @classmethod
    def from_json(cls, document: dict | None) -> "Calibration":
        return cls() if not document else cls(float(document["slope"]), float(document["intercept"]))


IDENTITY = Calibration()


def sigmoid(u: np.ndarray) -> np.ndarray:
    """σ(u) without overflow for large |u|."""
    u = np.asarray(u, dtype=np.float64)
    e = np.exp(-np.abs(u))
    return np.where(u >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def fit_calibration(scores: np.ndarray, labels: np.ndarray, iterations: int = 100) -> Calibration:
    """The maximum-likelihood (slope, intercept), by Newton's method to machine precision.

    Exact logistic loss, no penalty: the 1-D problem is well conditioned once the
    scores are centred, and Newton converges in a handful of steps.
    """
    u = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if u.size < 2 or y.min() == y.max():
        raise TrainingError("calibration needs training rows of both classes")
    centre, spread = float(u.mean()), float(u.std()) or 1.0
    z = (u - centre) / spread
    design = np.column_stack([z, np.ones_like(z)])
    beta = np.array([1.0, float(np.log(y.mean() / (1 - y.mean())))])
    for _ in range(iterations):
        p = sigmoid(design @ beta)
        gradient = design.T @ (p - y)
        hessian = design.T @ (design * (p * (1 - p))[:, None])
        step = np.linalg.solve(hessian + 1e-12 * np.eye(2), gradient)
        beta = beta - step
        if np.max(np.abs(step)) < 1e-13:
            break
    slope = float(beta[0] / spread)
    return Calibration(slope=slope, intercept=float(beta[1] - slope * centre))
