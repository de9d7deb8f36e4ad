"""Per-party standardisation, fitted on the party's own training rows."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Standardiser:
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray) -> "Standardiser":
        mean = features.mean(axis=0)
        spread = features.std(axis=0)
        # A constant column standardises to zeros and keeps a zero weight.
        return cls(mean=mean, scale=np.where(spread > 0, spread, 1.0))

    def transform(self, features: np.ndarray) -> np.ndarray:
        return (features - self.mean) / self.scale
