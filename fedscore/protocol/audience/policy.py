"""The partner's rules for audience queries: what it exposes, how small a cell it shows, how much ε it allows,
how near two cut-offs on one model may be.

They come from its party config ([party.audience]); the part every member
must agree on (all but where the users file is and its id column) goes on
the audience chain's first entry (`to_dict`), so both sides audit queries
against the same rules.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from fedscore.errors import ConfigError

CHAIN_KEYS = ("segments", "min_cell", "budget", "window_days", "max_epsilon", "max_segments", "min_epsilon",
              "min_points_gap")


@dataclass(frozen=True)
class AudiencePolicy:
    users: str = ""                  # its users file, inside its data folder ("" = the job's data file)
    id_column: str = "id"
    segments: tuple[str, ...] = ()   # columns it exposes as segments
    min_cell: int = 10               # noisy counts below this are suppressed
    budget: float = 3.0              # ε a card center may spend ...
    window_days: int = 30            # ... in any window of this many days
    max_epsilon: float = 1.0         # ε of one query at most
    max_segments: int = 2            # segment columns in one query at most
    min_epsilon: float = 0.1         # ε of one query at least: a budget buys at most budget / min_epsilon queries
    min_points_gap: float = 10.0     # two cut-offs on one model are the same or at least this many points apart

    def to_dict(self) -> dict:
        """What the chain states: everything but the users file and its id column (the partner's own business)."""
        return {"segments": list(self.segments), "min_cell": self.min_cell, "budget": float(self.budget),
                "window_days": self.window_days, "max_epsilon": float(self.max_epsilon), "max_segments": self.max_segments,
                "min_epsilon": float(self.min_epsilon), "min_points_gap": float(self.min_points_gap)}

    @classmethod
    def from_dict(cls, document: object, where: str = "audience policy") -> "AudiencePolicy":
        """The chain's statement of a policy (`to_dict`), checked; ConfigError naming the key."""
        if not isinstance(document, dict) or set(document) != set(CHAIN_KEYS):
            raise ConfigError(f"{where}: must have exactly the keys {', '.join(CHAIN_KEYS)}")
        segments = document["segments"]
        if not isinstance(segments, list):
            raise ConfigError(f"{where}: segments must be a list of column names")
        policy = cls(**{**document, "segments": tuple(segments)})
        policy.validate(where)
        return policy

    def validate(self, where: str) -> None:
        """ConfigError naming ``where`` and the key that is not acceptable."""
        if not isinstance(self.users, str):
            raise ConfigError(f"{where}: users must be a file name inside the data folder")
        if not isinstance(self.id_column, str) or not self.id_column.strip():
            raise ConfigError(f"{where}: id_column must be a column name")
        if not isinstance(self.segments, tuple) or not all(isinstance(s, str) and s.strip() for s in self.segments):
            raise ConfigError(f"{where}: segments must be a list of column names")
        if len(set(self.segments)) != len(self.segments):
            raise ConfigError(f"{where}: segments names a column twice")
        if self.id_column in self.segments:
            raise ConfigError(f"{where}: segments may not name the id column {self.id_column!r}")
        for name, low in (("min_cell", 1), ("window_days", 1), ("max_segments", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{where}: {name} must be a whole number of at least {low}, got {value!r}")
        for name in ("budget", "max_epsilon"):
            value = getattr(self, name)
            if not _number(value) or value <= 0:
                raise ConfigError(f"{where}: {name} must be a positive number (ε), got {value!r}")
        if not _number(self.min_epsilon) or not 0 < self.min_epsilon <= self.max_epsilon:
            raise ConfigError(f"{where}: min_epsilon must be a positive number (ε) of at most max_epsilon "
                              f"({self.max_epsilon!r}), got {self.min_epsilon!r}")
        if not _number(self.min_points_gap) or self.min_points_gap < 0:
            raise ConfigError(f"{where}: min_points_gap must be a number of points of at least 0, "
                              f"got {self.min_points_gap!r}")


def _number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
