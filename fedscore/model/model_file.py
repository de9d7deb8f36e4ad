"""A party's trained model on disk: its own columns, their encoding and weights, nothing else.

Two encodings: raw columns standardised (``mean``/``scale``, one weight per
feature; binning "none"), or attributes (``bins``: fedscore.model.binning,
one weight per bin). The card center's file also holds the intercept, the
recalibration of the total score (``calibration``), its ``protected``
columns (never used as a reason) and where its weights started (``start``:
secret random values, fedscore.protocol.training.start).
"""
from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field

from fedscore.model.binning import Binner
from fedscore.model.calibration import Calibration

FORMAT = "fedscore.party-model/1"


@dataclass(frozen=True)
class PartyModel:
    job_id: str
    job_name: str
    party: str
    role: str
    id_columns: list[str]
    features: list[str]
    mean: list[float]
    scale: list[float]
    weights: list[float]
    intercept: float | None = None          # the card center's only
    bins: list[dict] | None = None          # binned attributes (fedscore.model.binning.Binner.to_json)
    calibration: dict | None = None         # the card center's recalibration {slope, intercept}
    protected: list[str] = field(default_factory=list)
    start: list[float] | None = None        # the card center's secret starting weights, its intercept last

    @property
    def binned(self) -> bool:
        return self.bins is not None

    @functools.cached_property
    def binner(self) -> Binner:
        if self.bins is None:
            raise ValueError(f"party {self.party!r}: its model is not binned")
        return Binner.from_json(self.bins)

    @property
    def calibrated(self) -> Calibration:
        return Calibration.from_json(self.calibration)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "PartyModel":
        document = json.loads(text)
        if document.pop("format", None) != FORMAT:
            raise ValueError(f"not a {FORMAT} model file")
        return cls(**document)
