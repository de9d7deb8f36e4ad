"""An audience query and its answer: what the card center asks, and all it learns.

The card center asks how many of the partner's users a model scores at or
above a cut-off (``min_points``, scorecard points), per cell of the segment
columns it names (one value per column; no column: the whole audience),
spending ε of its budget; ``unseen_only`` leaves out the users the partner
aligned with the card center in the model's job. The answer holds one noisy
count per cell (None: below the partner's minimum cell size, shown as "< k"),
their total (the suppressed cells count 0: what a campaign of this audience
bills), the 95% bound on one cell's noise and the budget after the query.
Both travel as JSON objects, checked field by field when received.
"""
from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from fedscore.errors import DataError
from fedscore.ledger.block import encode_entry
from fedscore.protocol.audience import fields
from fedscore.protocol.audience.noise import MIN_EPSILON

QUERY_ID = re.compile(r"^q[0-9a-f]{31}$")
CAMPAIGN_ID = re.compile(r"^c[0-9a-f]{31}$")
QUERY_FIELDS = ("query_id", "model", "min_points", "segments", "epsilon", "unseen_only")
ANSWER_FIELDS = ("query_id", "model", "cells", "total", "min_cell", "epsilon", "noise_bound", "spent", "budget",
                 "window_days")


def new_query_id() -> str:
    return "q" + secrets.token_hex(16)[:31]


def new_campaign_id() -> str:
    return "c" + secrets.token_hex(16)[:31]


def _epsilon(document: dict, where: str) -> float:
    epsilon = fields.number(document, "epsilon", where, positive=True)
    if epsilon < MIN_EPSILON:
        raise DataError(f"{where}: field 'epsilon' must be at least {MIN_EPSILON}")
    return epsilon


@dataclass(frozen=True)
class AudienceQuery:
    query_id: str
    model: str                        # the audience model's digest
    min_points: float                 # the audience: users scoring at least this many points
    segments: tuple[str, ...] = ()    # segment columns, counted per cell of their values
    epsilon: float = 0.5
    unseen_only: bool = False         # only users the card center did not align with in the model's job

    def to_dict(self) -> dict:
        return {"query_id": self.query_id, "model": self.model, "min_points": float(self.min_points),
                "segments": list(self.segments), "epsilon": float(self.epsilon), "unseen_only": self.unseen_only}

    @classmethod
    def from_dict(cls, document: object, where: str) -> "AudienceQuery":
        """A query received from a peer; DataError naming the field that is missing, extra or not of its type."""
        document = fields.exact_keys(document, QUERY_FIELDS, where)
        return cls(
            query_id=fields.text(document, "query_id", where, QUERY_ID, "'q' and 31 lower-case hex digits"),
            model=fields.text(document, "model", where, fields.HEX64, "a model digest (64 lower-case hex digits)"),
            min_points=fields.number(document, "min_points", where),
            segments=fields.names(document["segments"], "segments", where),
            epsilon=_epsilon(document, where),
            unseen_only=fields.flag(document, "unseen_only", where),
        )


@dataclass(frozen=True)
class Cell:
    segment: tuple[str, ...]   # one value per segment column (empty tuple: the whole audience)
    count: int | None          # the noisy count; None: suppressed ("< min_cell")


@dataclass(frozen=True)
class AudienceAnswer:
    query_id: str
    model: str
    cells: tuple[Cell, ...]
    total: int                 # the counts shown, added (a suppressed cell counts 0): what a campaign bills
    min_cell: int
    epsilon: float
    noise_bound: int           # 95% bound on one cell's noise
    spent: float               # ε spent in the window, this query included
    budget: float
    window_days: int

    def to_dict(self) -> dict:
        return {
            "query_id": self.query_id, "model": self.model,
            "cells": [{"segment": list(c.segment), "count": c.count} for c in self.cells],
            "total": self.total, "min_cell": self.min_cell, "epsilon": float(self.epsilon),
            "noise_bound": self.noise_bound, "spent": float(self.spent), "budget": float(self.budget),
            "window_days": self.window_days,
        }

    @classmethod
    def from_dict(cls, document: object, where: str) -> "AudienceAnswer":
        """An answer received from a peer; DataError naming the field that is missing, extra or not of its type."""
        document = fields.exact_keys(document, ANSWER_FIELDS, where)
        min_cell = fields.whole(document, "min_cell", where, low=1)
        raw_cells = document["cells"]
        if not isinstance(raw_cells, list) or not raw_cells:
            raise DataError(f"{where}: field 'cells' must be a non-empty list of cells")
        cells, width = [], None
        for position, raw in enumerate(raw_cells):
            at = f"{where} cells[{position}]"
            raw = fields.exact_keys(raw, ("segment", "count"), at)
            segment = fields.names(raw["segment"], "segment", at, unique=False)
            if width is not None and len(segment) != width:
                raise DataError(f"{at}: field 'segment' must have one value per segment column, as the first cell")
            width = len(segment)
            count = raw["count"]
            if count is not None:
                count = fields.whole(raw, "count", at, low=min_cell)
            cells.append(Cell(segment, count))
        if len({c.segment for c in cells}) != len(cells):
            raise DataError(f"{where}: field 'cells' names a segment twice")
        answer = cls(
            query_id=fields.text(document, "query_id", where, QUERY_ID, "'q' and 31 lower-case hex digits"),
            model=fields.text(document, "model", where, fields.HEX64, "a model digest (64 lower-case hex digits)"),
            cells=tuple(cells), total=fields.whole(document, "total", where), min_cell=min_cell,
            epsilon=_epsilon(document, where), noise_bound=fields.whole(document, "noise_bound", where),
            spent=fields.number(document, "spent", where), budget=fields.number(document, "budget", where, positive=True),
            window_days=fields.whole(document, "window_days", where, low=1),
        )
        if answer.total != sum(c.count or 0 for c in cells):
            raise DataError(f"{where}: field 'total' is not the sum of the counts shown")
        if answer.spent < answer.epsilon - 1e-9:
            raise DataError(f"{where}: field 'spent' must include the query's own ε")
        return answer

    def digest(self) -> str:
        return hashlib.sha256(encode_entry(self.to_dict())).hexdigest()
