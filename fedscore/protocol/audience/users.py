"""The partner's user base: every user it may count, read from its own file and never sent anywhere.

The file is read and checked as the partner's scoring source reads it
(fedscore.protocol.scoring.sources.CsvSource for a binned model): the id
rule of training (stripped, case-folded), ids present and unique, numbers
as floats, empty cells as NaN, a text column as text. Segment columns are
read as text, stripped; an empty cell is the segment "(missing)". Errors
name the file by its name (never the folder it is in), the column and the
line, never a value.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedscore.errors import DataError
from fedscore.model.csv_file import found_columns, read_csv_header, require_columns
from fedscore.model.data import load_party_table, normalise_ids

MISSING_SEGMENT = "(missing)"


@dataclass(frozen=True)
class UserBase:
    ids: np.ndarray                   # normalised ids (fedscore.model.data.normalise_id), object array of str, sorted
    features: np.ndarray              # object matrix, raw values in the model's feature order (what partial_scores takes)
    segments: dict[str, np.ndarray]   # exposed segment columns, as text; an empty cell is "(missing)"
    written: np.ndarray | None = None  # each id as the file writes it (stripped, case kept): what a campaign lists

    @property
    def own_ids(self) -> np.ndarray:
        """The ids as the partner's own systems know them (the file's text), else the normalised ones."""
        return self.ids if self.written is None else self.written

    @property
    def rows(self) -> int:
        return len(self.ids)


def load_user_base(path: Path, id_column: str, features: list[str], segments: list[str], party: str) -> UserBase:
    """The users in ``path`` with the model's ``features`` and the exposed ``segments``; DataError naming the
    file, the column and the line for a missing file or column, an empty or a repeated id."""
    path = Path(path)
    where = f"party {party!r}: {path.name}" if party else path.name
    text, header, delimiter = read_csv_header(path, where)
    require_columns(header, [id_column], None, where, delimiter)
    for kind, names in (("feature", features), ("segment", segments)):
        for name in names:
            if name == id_column:
                raise DataError(f"{where}: the id column {id_column!r} cannot be a {kind} column")
            if name not in header:
                raise DataError(f"{where}: {kind} column {name!r} not found ({found_columns(header, delimiter)})")
    table = load_party_table(path, [id_column], None, party=party, lenient=True, shown=path.name,
                             memory_mib=0)   # a user base is scored whole; the budget bounds training data
    matrix = table.raw_rows(list(features))
    frame = pd.read_csv(io.StringIO(text), sep=delimiter, usecols=[header.index(c) for c in [id_column, *segments]],
                        dtype=str, keep_default_na=False, skip_blank_lines=True)
    frame.columns = [str(c).strip() for c in frame.columns]
    given = frame[id_column].astype(str)
    order = np.argsort(normalise_ids([given]), kind="stable")   # the table's own order
    columns = {}
    for name in segments:
        values = frame[name].astype(str).str.strip()
        columns[name] = values.where(values != "", MISSING_SEGMENT).to_numpy(dtype=object)[order]
    return UserBase(ids=table.ids, features=matrix, segments=columns,
                    written=given.str.strip().to_numpy(dtype=object)[order])
