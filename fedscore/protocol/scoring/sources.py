"""Where a party looks an applicant up at scoring time: its own data, never sent anywhere.

`ApplicantSource.find(digest)` returns the model's feature values for one
applicant, in the model's column order, or None when the party does not know
the applicant. What a value may be follows the model (``raw_values``):

- a binned model (raw_values=True) scores raw values, so a source returns them
  as stored, in an object array: numbers, NaN/None for an empty cell or NULL,
  text. An incomplete row is data (it scores in the missing bins), not an
  unknown applicant;
- a standardised model needs finite numbers: the CSV must hold only those
  (checked as in training), and a database row with a NULL or a text value
  counts as not known (None).

Requests name the applicant by `applicant_digest(id)` (fedscore.protocol.scoring.consent),
never by the id itself, so each source keeps an index from digest to its own
ids; ids follow the same rule as training (stripped, case-folded).
`lookup(id)` is the same look-up for callers that hold the id.

- `CsvSource`: the party's CSV, read and checked as in training (leniently for a
  binned model: empty cells and text are data), indexed in memory.
- `SqliteSource`: a table in a SQLite database through the standard DB-API,
  queried per applicant by rowid; its index from digest to rowid applies the
  training id rule to the stored ids, so they may be padded or in another
  case. The index is read at start and read again on a miss (at most every
  `REFRESH_SECONDS`), so customers added while the daemon runs are found.
"""
from __future__ import annotations

import math
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol

import numpy as np

from fedscore.errors import DataError
from fedscore.model.data import load_party_table
from fedscore.protocol.scoring.consent import applicant_digest

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
REFRESH_SECONDS = 60.0


class ApplicantSource(Protocol):
    def find(self, digest: bytes) -> np.ndarray | None: ...
    def lookup(self, applicant_id: str) -> np.ndarray | None: ...


class CsvSource:
    def __init__(self, path: Path, id_columns: list[str], features: list[str], party: str = "", raw_values: bool = False):
        # memory_mib=0: [party] memory_mib bounds a training job's data; a scoring source is looked up whole, as it always was
        table = load_party_table(path, id_columns, None, party=party, lenient=raw_values, memory_mib=0)
        missing = [f for f in features if f not in table.feature_names]
        if missing:
            raise DataError(f"party {party!r}: {Path(path).name} lacks the model's column {missing[0]!r}")
        if raw_values:
            matrix = table.raw_rows(features)
        else:
            matrix = table.features[:, [table.feature_names.index(f) for f in features]]
        self._rows = {applicant_digest(applicant): matrix[i] for i, applicant in enumerate(table.ids)}

    def find(self, digest: bytes) -> np.ndarray | None:
        return self._rows.get(digest)

    def lookup(self, applicant_id: str) -> np.ndarray | None:
        return self.find(applicant_digest(applicant_id))


class SqliteSource:
    AMBIGUOUS = -1

    def __init__(self, path: Path, table: str, id_column: str, features: list[str], party: str = "",
                 raw_values: bool = False):
        for name in (table, id_column, *features):
            if not IDENTIFIER.match(name):
                raise DataError(f"party {party!r}: {name!r} is not a plain SQL identifier")
        if not Path(path).is_file():
            raise DataError(f"party {party!r}: database {path} does not exist")
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self._query = f"SELECT {', '.join(features)} FROM {table} WHERE rowid = ?"
        self._ids_query = f"SELECT rowid, CAST({id_column} AS TEXT) FROM {table}"
        try:
            self._db.execute(self._query, (0,)).fetchall()
        except sqlite3.Error as error:
            raise DataError(f"party {party!r}: cannot read {table} from {Path(path).name}: {error}") from None
        self.party = party
        self.raw_values = raw_values
        self._lock = threading.Lock()        # one connection, used by one thread at a time
        self._index: dict[bytes, int] = {}
        self._read_at = -math.inf
        self._refresh()

    def _refresh(self) -> None:
        """Read every id again (at most every REFRESH_SECONDS) and swap the index in whole."""
        if time.monotonic() - self._read_at < REFRESH_SECONDS:
            return
        self._read_at = time.monotonic()
        with self._lock:
            rows = self._db.execute(self._ids_query).fetchall()
        index: dict[bytes, int] = {}
        for rowid, applicant in rows:
            if applicant is None:
                continue
            digest = applicant_digest(applicant)   # the training id rule, in Python, not SQL's ASCII-only LOWER
            index[digest] = self.AMBIGUOUS if digest in index else rowid
        self._index = index

    def find(self, digest: bytes) -> np.ndarray | None:
        rowid = self._index.get(digest)
        if rowid is None:
            self._refresh()
            rowid = self._index.get(digest)
        if rowid is None or rowid == self.AMBIGUOUS:
            return None   # unknown, or ambiguous: never guess which row is the applicant
        with self._lock:
            rows = self._db.execute(self._query, (rowid,)).fetchall()
        if len(rows) != 1:
            return None
        if self.raw_values:   # NULL and text are data for a binned model
            values = np.empty(len(rows[0]), dtype=object)
            values[:] = [_raw(v) for v in rows[0]]
            return values
        try:
            values = np.array([float(v) for v in rows[0]])
        except (TypeError, ValueError):
            return None
        return values if all(math.isfinite(v) for v in values) else None

    def lookup(self, applicant_id: str) -> np.ndarray | None:
        return self.find(applicant_digest(applicant_id))

    def close(self) -> None:
        self._db.close()


def _raw(value: object) -> object:
    """A stored value as binning reads it: numbers as floats, NULL as None, text as it is, blobs as text."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
