"""A party's own data file: read, checked and put in canonical row order.

Errors name the file, the column and the line (1 = header) but never a raw
value or an id: the message travels to the coordinator and the job's owner,
outside the party.

A file's text, delimiter and header are fedscore.model.csv_file's concern, reading
it in chunks fedscore.model.reader's (a CSV, or a Parquet file); a file not
separated by commas that writes a number with a decimal comma (2,5) has it
refused, not read as text.

Id rule (every party applies the same one): each id column is read as text,
stripped of surrounding whitespace and case-folded; several id columns are
joined with U+001F. So " 00123" and "00123" are one id, 123 and "123" too,
but "123" and "0123" are not. Private set intersection
(fedscore.protocol.alignment) matches these strings.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fedscore.errors import DataError
from fedscore.model.csv_file import found_columns, require_columns
from fedscore.plural import plural

ID_SEPARATOR = "\x1f"
LABEL_VALUES = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "False": 0, "True": 1, "false": 0, "true": 1}


@dataclass(frozen=True)
class PartyTable:
    """One party's rows in canonical id order."""

    ids: np.ndarray               # normalised id strings, sorted
    features: np.ndarray          # float64, rows × columns (NaN: missing, or a text column's cell); a file's
                                  # table is stored column by column (Fortran order)
    feature_names: list[str]
    labels: np.ndarray | None     # int8 0/1, or None for a partner
    text: dict[str, np.ndarray] = field(default_factory=dict)   # text columns (binning on): stripped cells

    @property
    def rows(self) -> int:
        return len(self.ids)

    def column(self, name: str) -> np.ndarray:
        """A feature's raw values: text for a text column, else float64 (NaN: missing)."""
        if name not in self.text and self.features.shape[1] != len(self.feature_names):
            raise ValueError(f"the table's feature values were released; column {name!r} is no longer held")
        return self.text[name] if name in self.text else self.features[:, self.feature_names.index(name)]

    def release_features(self) -> None:
        """Let go of the feature values (8 bytes each) once a training encoding holds all that training reads
        (a partner's bin codes): every holder of this table sees it. Ids, labels and names stay."""
        object.__setattr__(self, "features", np.empty((self.rows, 0)))
        object.__setattr__(self, "text", {})

    def columns(self, names: list[str] | None = None) -> list[np.ndarray]:
        return [self.column(n) for n in (self.feature_names if names is None else names)]

    def raw_rows(self, names: list[str]) -> np.ndarray:
        """rows × names as an object matrix of raw values (floats, NaN, text): what scoring looks up."""
        matrix = np.empty((self.rows, len(names)), dtype=object)
        for j, name in enumerate(names):
            matrix[:, j] = self.column(name)
        return matrix

    def subset(self, rows: np.ndarray) -> "PartyTable":
        """The given rows, in the given order (e.g. the consortium's aligned order): the table itself when that
        is every row in order (no copy), else a copy made a column at a time."""
        rows = np.asarray(rows)
        if len(rows) == self.rows and np.array_equal(rows, np.arange(self.rows)):
            return self
        features = np.empty((len(rows), self.features.shape[1]), dtype=self.features.dtype, order="F")
        for j in range(self.features.shape[1]):
            features[:, j] = self.features[rows, j]
        return PartyTable(
            ids=self.ids[rows],
            features=features,
            feature_names=self.feature_names,
            labels=None if self.labels is None else self.labels[rows],
            text={name: values[rows] for name, values in self.text.items()},
        )


def normalise_id(*parts: object) -> str:
    """One applicant's id under the same rule as normalise_ids (a look-up at scoring time)."""
    return ID_SEPARATOR.join(str(p).strip().casefold() for p in parts)


def normalise_ids(columns: list[pd.Series]) -> np.ndarray:
    parts = [column.str.strip().str.casefold() for column in columns]
    joined = parts[0]
    for part in parts[1:]:
        joined = joined + ID_SEPARATOR + part
    return joined.to_numpy(dtype=object)


MISSING = ["", "nan", "NaN", "NA", "null", "None"]


@dataclass(frozen=True)
class Origin:
    """Where a party's rows come from, so that every error points at a row the user can find.

    A CSV file names rows by file line (the header is line 1); a DataFrame by
    position, as ``.iloc`` does (its index may hold ids, which errors never show).
    """

    where: str            # "party 'bureau': bureau.csv", or "party 'bureau': DataFrame"
    file: bool = True
    records: bool = False  # a Parquet file: rows are records counted from 1, it has no lines

    def row(self, position: int) -> str:
        if self.records:
            return f"row {position + 1}"
        return f"line {position + 2}" if self.file else f".iloc[{position}]"

    def rows(self, first: int, second: int) -> str:
        if self.records:
            return f"rows {first + 1} and {second + 1}"
        if self.file:
            return f"lines {first + 2} and {second + 2}"
        return f".iloc[{first}] and .iloc[{second}]"


def _positions(mask: np.ndarray) -> list[int]:
    return [int(i) for i in np.flatnonzero(mask)]


def _missing(column: pd.Series) -> np.ndarray:
    return (column.isna() | column.isin(MISSING)).to_numpy()


def _numeric_from_text(column: pd.Series, name: str, origin: Origin) -> np.ndarray:
    raw = column.astype(str).str.strip()
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    not_numeric = np.isnan(values) & ~_missing(raw)
    if not_numeric.any():
        rows = _positions(not_numeric)
        raise DataError(
            f"{origin.where}: column {name!r} is not numeric on {plural(len(rows), 'row')} (first at {origin.row(rows[0])})"
        )
    return values


def _lenient_features(columns: pd.DataFrame, names: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Binning on: empty cells and text are data. A column whose values are mostly text is kept as text
    (a categorical column); in any other, a cell that is not a finite number is missing (NaN)."""
    from fedscore.model.binning import is_categorical, numeric_values

    features = np.full((len(columns), len(names)), np.nan)
    text: dict[str, np.ndarray] = {}
    for j, name in enumerate(names):
        column = columns.iloc[:, j]
        if column.dtype.kind in "fiu":
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)
            features[:, j] = np.where(np.isfinite(values), values, np.nan)
            continue
        cells = column.astype(object).where(column.notna(), "").map(lambda v: str(v).strip()).to_numpy(dtype=object)
        if is_categorical(cells):
            text[name] = cells
        else:
            features[:, j] = numeric_values(cells)
    return features, text


def _feature_matrix(columns: pd.DataFrame, names: list[str], origin: Origin) -> np.ndarray:
    """The feature columns as float64: a numeric column as it is, any other read as text (as a CSV's
    would be), so that the first row which is not a number, missing or infinite can be named."""
    features = np.empty((len(columns), len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        column = columns.iloc[:, j]
        if column.dtype.kind in "fiu":
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            values = _numeric_from_text(column, name, origin)
        bad = ~np.isfinite(values)
        if bad.any():
            rows = _positions(bad)
            raise DataError(
                f"{origin.where}: column {name!r} has {plural(len(rows), 'missing or infinite value')} (first at {origin.row(rows[0])}); "
                "fill or drop them before training"
            )
        features[:, j] = values
    return features


def check_party_rows(
    id_parts: list[pd.Series],
    id_columns: list[str],
    label_text: pd.Series | None,
    label: str | None,
    features: pd.DataFrame,
    origin: Origin,
    lenient: bool = False,
) -> PartyTable:
    """The one checker behind every way a party's rows arrive (a CSV file, a DataFrame).

    ``id_parts`` and ``label_text`` hold text (missing values as NaN or "");
    ``features`` holds the feature columns as parsed, numbers or text.
    Ids must be present and unique, the label 0/1 with both classes, every
    feature a finite number, unless ``lenient`` (binning on: empty cells and
    text are data, fedscore.model.binning). Rows come back sorted by normalised id.
    """
    where = origin.where
    for column, values in zip(id_columns, id_parts):
        empty = (values.isna() | (values.str.strip() == "")).to_numpy()
        if empty.any():
            rows = _positions(empty)
            raise DataError(f"{where}: id column {column!r} is empty on {plural(len(rows), 'row')} (first at {origin.row(rows[0])})")
    ids = normalise_ids(id_parts)
    duplicated = pd.Series(ids).duplicated(keep=False).to_numpy()
    if duplicated.any():
        rows = _positions(duplicated)
        raise DataError(
            f"{where}: {int(duplicated.sum())} rows share an id with another row (first at {origin.rows(rows[0], rows[1])})"
        )

    labels = None
    if label is not None and label_text is not None:
        mapped = label_text.str.strip().map(LABEL_VALUES)
        bad = mapped.isna().to_numpy()
        if bad.any():
            rows = _positions(bad)
            raise DataError(
                f"{where}: label column {label!r} must hold 0 or 1; {plural(len(rows), 'row')} {'does' if len(rows) == 1 else 'do'} not (first at {origin.row(rows[0])})"
            )
        labels = mapped.to_numpy(dtype=np.int8)
        if labels.min() == labels.max():
            raise DataError(f"{where}: label column {label!r} holds only {int(labels[0])}s; both classes are needed")

    names = [str(c) for c in features.columns]
    if not names and label is None:   # a card center may bring labels only (an audience model: fedscore.protocol.audience)
        raise DataError(f"{where}: no feature columns besides the id and label columns")
    text: dict[str, np.ndarray] = {}
    if lenient:
        matrix, text = _lenient_features(features, names)
    else:
        matrix = _feature_matrix(features, names, origin)
    order = np.argsort(ids, kind="stable")
    return PartyTable(
        ids=ids[order],
        features=matrix[order],
        feature_names=names,
        labels=None if labels is None else labels[order],
        text={name: values[order] for name, values in text.items()},
    )


DECIMAL_COMMA = r"^\s*[-+]?\d+,\d+\s*$"


def load_party_table(
    path: Path | str, id_columns: list[str], label: str | None = None, party: str = "", lenient: bool = False,
    shown: str = "", memory_mib: int | None = None,
) -> PartyTable:
    """Read and check one party's data file, a CSV (or a Parquet file, by its name), in chunks
    (fedscore.model.reader); every column but the ids and the label is a feature. ``lenient``: empty cells
    and text are data (binning on), not errors. ``shown``: the file as its user named it (a job's ``data``),
    for errors; by default the path as given. ``memory_mib``: the party's memory budget (default
    fedscore.model.reader.DEFAULT_MEMORY_MIB; 0: none)."""
    from fedscore.model.reader import DEFAULT_MEMORY_MIB, read_party_file

    path = Path(path)
    shown = shown or str(path)
    where = f"party {party!r}: {shown}" if party else shown
    budget = DEFAULT_MEMORY_MIB if memory_mib is None else memory_mib
    return read_party_file(path, id_columns, label, where, lenient, budget)


def _ids_as_columns(frame: pd.DataFrame, id_columns: list[str]) -> pd.DataFrame:
    """An id kept as an index level (df.set_index("id")) counts as a column."""
    in_index = [c for c in id_columns if c not in frame.columns and c in frame.index.names]
    return frame.reset_index(level=in_index) if in_index else frame


def frame_ids(frame: pd.DataFrame, id_columns: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """(the id columns as given, the normalised ids), in the frame's own row order; for a frame
    table_from_frame accepted, to map its sorted rows back to the caller's."""
    given = _ids_as_columns(frame, id_columns).rename(columns=lambda c: c.strip() if isinstance(c, str) else c)
    given = given.loc[:, id_columns]
    return given, normalise_ids([_frame_text(given[c]) for c in id_columns])


def _frame_text(column: pd.Series) -> pd.Series:
    """A column as the text a CSV would hold (missing values as "")."""
    return column.astype(str).where(column.notna().to_numpy(), "")


def table_from_frame(
    frame: pd.DataFrame,
    id_columns: list[str],
    label: str | None = None,
    party: str = "",
    features: list[str] | None = None,
    lenient: bool = False,
) -> PartyTable:
    """A party's rows from a pandas DataFrame, checked exactly as its CSV file would be.

    Every column but the ids and the label is a feature, unless ``features``
    names them (scoring a trained model: other columns are then ignored). An id
    column may also be an index level. Ids are text under the same rule as a
    file's, so a column of floats (133.0) is refused rather than matched as
    "133.0"; errors name rows by ``.iloc`` position.
    """
    where = f"party {party!r}: DataFrame" if party else "DataFrame"
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"{where}: expected a pandas DataFrame, got {type(frame).__name__}")
    frame = _ids_as_columns(frame, id_columns)
    header = []
    for position, name in enumerate(frame.columns):
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"{where}: column {position} is named {name!r}; column names must be non-empty text")
        if name.strip() in header:
            raise DataError(f"{where}: column {name.strip()!r} appears twice")
        header.append(name.strip())
    frame = frame.set_axis(header, axis=1)
    require_columns(header, id_columns, label, where)
    if features is None:
        features = [c for c in header if c not in id_columns and c != label]
    else:
        absent = [c for c in features if c not in header]
        if absent:
            raise DataError(f"{where}: feature column {absent[0]!r} of the model not found ({found_columns(header)})")
    if len(frame) == 0:
        raise DataError(f"{where}: has no rows")
    origin = Origin(where, file=False)
    id_parts = []
    for column in id_columns:
        values = frame[column]
        if values.dtype.kind == "f" and values.notna().all():
            raise DataError(
                f"{where}: id column {column!r} holds floating-point numbers; ids are matched as text, so give it "
                f"as integers or text (e.g. pd.read_csv(..., dtype={{{column!r}: str}}))"
            )
        id_parts.append(_frame_text(values))
    label_text = _frame_text(frame[label]) if label is not None else None
    return check_party_rows(id_parts, id_columns, label_text, label, frame[features], origin, lenient)
