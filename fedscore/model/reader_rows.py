"""A party's rows checked and stored chunk by chunk, with the errors of the whole-file reader.

fedscore.model.reader hands each chunk of a file here, in file order; the rows go straight into arrays
sized once for the whole file (features as float64, column by column), and every check
fedscore.model.data makes on a whole table is counted across chunks instead: how many rows fail it and
the first of them. The errors are raised once the file is read, in the order check_party_rows raises
them, so a file gives the same error whichever way it is read.

A column read as numbers in one chunk and as text in another (a CSV column whose text cells all lie in
a late chunk) is marked mixed; the reader reads it again as text, as a whole-file read would have.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedscore.errors import DataError
from fedscore.model.binning import _number, category_texts
from fedscore.model.data import (
    DECIMAL_COMMA, LABEL_VALUES, MISSING, Origin, PartyTable, _missing, normalise_ids,
)
from fedscore.plural import plural

NUMBER, BOOLEAN, TEXT, EMPTY = "number", "boolean", "text", "empty"


@dataclass
class Tally:
    """Rows failing one check: how many, and the first (a position in the file's rows)."""

    count: int = 0
    first: int = -1

    def add(self, mask: np.ndarray, start: int) -> None:
        hits = np.flatnonzero(mask)
        if hits.size:
            if self.count == 0:
                self.first = start + int(hits[0])
            self.count += int(hits.size)


def chunk_kind(column: pd.Series) -> str:
    """How a parser read one column of one chunk."""
    kind = column.dtype.kind
    if kind in "fiu":
        return EMPTY if kind == "f" and bool(column.isna().all()) else NUMBER
    return BOOLEAN if kind == "b" else TEXT


class TableBuilder:
    """Rows in file order in, a checked PartyTable in canonical id order out."""

    def __init__(self, rows: int, id_columns: list[str], label: str | None, names: list[str], origin: Origin,
                 lenient: bool, decimal_commas: bool):
        self.rows, self.id_columns, self.label, self.names = rows, id_columns, label, names
        self.origin, self.lenient, self.decimal_commas = origin, lenient, decimal_commas
        self.ids = np.empty(rows, dtype=object)
        self.labels = np.zeros(rows, dtype=np.int8) if label is not None else None
        self.features = np.empty((rows, len(names)), dtype=np.float64, order="F")
        self.empty_ids = [Tally() for _ in id_columns]
        self.bad_labels = Tally()
        self.kinds: list[str] = [EMPTY] * len(names)
        self.mixed: set[int] = set()
        count = len(names)
        # per feature column: rows with a decimal comma, not a number, missing (strict); with binning on, the
        # column's text cells, and how many cells are present and how many of those are text
        self.commas, self.not_numeric, self.missing = ([Tally() for _ in range(count)] for _ in range(3))
        self.cells: dict[int, list[np.ndarray]] = {}
        self.present, self.textual = [0] * count, [0] * count

    def _reset(self, columns: list[int]) -> None:
        """Forget what was counted of ``columns``: they will be read again."""
        for j in columns:
            self.commas[j], self.not_numeric[j], self.missing[j] = Tally(), Tally(), Tally()
            self.cells.pop(j, None)
            self.present[j] = self.textual[j] = 0

    # -- chunks ------------------------------------------------------------------

    def add_keys(self, start: int, id_parts: list[pd.Series], label_text: pd.Series | None) -> None:
        """The id columns (text, "" or NaN when empty) and label column (text) of rows start, start + 1, ..."""
        stop = start + len(id_parts[0])
        for tally, values in zip(self.empty_ids, id_parts):
            tally.add((values.isna() | (values.str.strip() == "")).to_numpy(), start)
        self.ids[start:stop] = normalise_ids([values.fillna("") for values in id_parts])
        if self.labels is not None and label_text is not None:
            mapped = label_text.str.strip().map(LABEL_VALUES)
            bad = mapped.isna().to_numpy()
            self.bad_labels.add(bad, start)
            self.labels[start:stop] = mapped.fillna(0).to_numpy(dtype=np.int8)

    def add_features(self, start: int, frame: pd.DataFrame, columns: list[int] | None = None,
                     again: bool = False) -> None:
        """Feature columns of rows start, ...; ``columns``: their positions in ``names`` (default: all, in order).
        ``again``: mixed columns read a second time, as text."""
        for position, j in enumerate(range(len(self.names)) if columns is None else columns):
            if j in self.mixed and not again:
                continue
            column = frame.iloc[:, position]
            kind = TEXT if again else chunk_kind(column)
            if not again and kind != EMPTY:
                if self.kinds[j] not in (EMPTY, kind):
                    self.mixed.add(j)
                    self._reset([j])
                    continue
                if self.kinds[j] == EMPTY and kind in (TEXT, BOOLEAN) and start > 0 and self.lenient:
                    self.cells.setdefault(j, []).insert(0, np.full(start, "", dtype=object))
                self.kinds[j] = kind
            self._column(j, start, column, kind)

    def _column(self, j: int, start: int, column: pd.Series, kind: str) -> None:
        stop = start + len(column)
        if self.decimal_commas and kind == TEXT:
            self.commas[j].add(column.astype(str).str.match(DECIMAL_COMMA).to_numpy(), start)
        if self.lenient:
            self._lenient(j, start, stop, column, kind)
            return
        if kind in (NUMBER, EMPTY):
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            raw = column.astype(str).str.strip()
            values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
            self.not_numeric[j].add(np.isnan(values) & ~_missing(raw), start)
        self.missing[j].add(~np.isfinite(values), start)
        self.features[start:stop, j] = values

    def _lenient(self, j: int, start: int, stop: int, column: pd.Series, kind: str) -> None:
        """Binning on: as fedscore.model.data._lenient_features, with the column's kind (text or numbers)
        decided from counts over every chunk."""
        from fedscore.model.binning import numeric_values

        if kind == NUMBER or (kind == EMPTY and self.kinds[j] in (NUMBER, EMPTY)):
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)
            self.features[start:stop, j] = np.where(np.isfinite(values), values, np.nan)
            return
        cells = column.astype(object).where(column.notna(), "").map(lambda v: str(v).strip()).to_numpy(dtype=object)
        present = [t for t in category_texts(cells) if t is not None]
        self.present[j] += len(present)
        self.textual[j] += sum(math.isnan(_number(t)) for t in present)
        self.cells.setdefault(j, []).append(cells)
        self.features[start:stop, j] = numeric_values(cells)

    # -- the whole table -----------------------------------------------------------

    def finish(self) -> PartyTable:
        """Raise the first error a whole-file read would raise, else the table sorted by id."""
        where, origin = self.origin.where, self.origin
        for name, tally in zip(self.names, self.commas):
            if tally.count:
                raise DataError(
                    f"{where}: column {name!r} writes numbers with a decimal comma on {tally.count} rows (first at "
                    f"{origin.row(tally.first)}); save the file with '.' as the decimal mark"
                )
        for column, tally in zip(self.id_columns, self.empty_ids):
            if tally.count:
                raise DataError(f"{where}: id column {column!r} is empty on {plural(tally.count, 'row')} (first at "
                                f"{origin.row(tally.first)})")
        duplicated = pd.Series(self.ids).duplicated(keep=False).to_numpy()
        if duplicated.any():
            first, second = (int(i) for i in np.flatnonzero(duplicated)[:2])
            raise DataError(f"{where}: {int(duplicated.sum())} rows share an id with another row (first at "
                            f"{origin.rows(first, second)})")
        if self.labels is not None:
            bad = self.bad_labels
            if bad.count:
                raise DataError(
                    f"{where}: label column {self.label!r} must hold 0 or 1; {plural(bad.count, 'row')} "
                    f"{'does' if bad.count == 1 else 'do'} not (first at {origin.row(bad.first)})"
                )
            if self.labels.min() == self.labels.max():
                raise DataError(f"{where}: label column {self.label!r} holds only {int(self.labels[0])}s; both classes are needed")
        if not self.names and self.label is None:
            raise DataError(f"{where}: no feature columns besides the id and label columns")
        text = self._text_columns() if self.lenient else {}
        if not self.lenient:
            self._refuse_bad_values()
        return self._sorted(text)

    def _refuse_bad_values(self) -> None:
        where, origin = self.origin.where, self.origin
        for name, not_numeric, missing in zip(self.names, self.not_numeric, self.missing):
            if not_numeric.count:
                raise DataError(f"{where}: column {name!r} is not numeric on {plural(not_numeric.count, 'row')} "
                                f"(first at {origin.row(not_numeric.first)})")
            if missing.count:
                raise DataError(
                    f"{where}: column {name!r} has {plural(missing.count, 'missing or infinite value')} (first at "
                    f"{origin.row(missing.first)}); fill or drop them before training"
                )

    def _text_columns(self) -> dict[str, np.ndarray]:
        """Columns whose values are mostly text (fedscore.model.binning.is_categorical): kept as text, NaN in features."""
        text: dict[str, np.ndarray] = {}
        for j, parts in sorted(self.cells.items()):
            if self.textual[j] * 2 > self.present[j]:
                text[self.names[j]] = np.concatenate(parts) if len(parts) > 1 else parts[0]
                self.features[:, j] = np.nan
        self.cells.clear()
        return text

    def _sorted(self, text: dict[str, np.ndarray]) -> PartyTable:
        """Rows in canonical id order; the features permuted in place, one column at a time."""
        order = np.argsort(self.ids, kind="stable")
        for j in range(self.features.shape[1]):
            self.features[:, j] = self.features[order, j]
        return PartyTable(
            ids=self.ids[order], features=self.features, feature_names=list(self.names),
            labels=None if self.labels is None else self.labels[order],
            text={name: values[order] for name, values in text.items()},
        )

