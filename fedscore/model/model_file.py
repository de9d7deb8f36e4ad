"""A party's trained model on disk: its own columns, scaling and weights, nothing else."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

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
    intercept: float | None = None   # the card center's only

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "PartyModel":
        document = json.loads(text)
        if document.pop("format", None) != FORMAT:
            raise ValueError(f"not a {FORMAT} model file")
        return cls(**document)
