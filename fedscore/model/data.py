"""A party's own data file: read, checked and put in canonical row order.

Errors name the file, the column and the line (1 = header) but never a raw
value or an id: the message travels to the coordinator and the job's owner,
outside the party.

Id rule (every party applies the same one): each id column is read as text,
stripped of surrounding whitespace and case-folded; several id columns are
joined with U+001F. So " 00123" and "00123" are one id, 123 and "123" too,
but "123" and "0123" are not. Private set intersection
(fedscore.protocol.alignment) matches these strings.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedscore.errors import DataError

ID_SEPARATOR = "\x1f"
LABEL_VALUES = {"0": 0, "1": 1, "0.0": 0, "1.0": 1}


@dataclass(frozen=True)
class PartyTable:
    """One party's rows in canonical id order."""

    ids: np.ndarray               # normalised id strings, sorted
    features: np.ndarray          # float64, rows × columns
    feature_names: list[str]
    labels: np.ndarray | None     # int8 0/1, or None for a partner

    @property
    def rows(self) -> int:
        return len(self.ids)

    def subset(self, rows: np.ndarray) -> "PartyTable":
        """The given rows, in the given order (e.g. the consortium's aligned order)."""
        return PartyTable(
            ids=self.ids[rows],
            features=self.features[rows],
            feature_names=self.feature_names,
            labels=None if self.labels is None else self.labels[rows],
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


def _read_text(path: Path, where: str) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{where}: file does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{where}: is a folder, not a CSV file") from None
    except PermissionError:
        raise DataError(f"{where}: cannot be read (permission denied)") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataError(f"{where}: line {line} is not UTF-8 text") from None


def _check_shape(text: str, where: str) -> list[str]:
    """The header, after checking every row has as many fields as the header."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{where}: file is empty") from None
    except csv.Error as error:
        raise DataError(f"{where}: header is not valid CSV ({error})") from None
    header = [name.strip() for name in header]
    if not any(header):
        raise DataError(f"{where}: file is empty")
    seen: set[str] = set()
    for name in header:
        if not name:
            raise DataError(f"{where}: the header has an empty column name")
        if name in seen:
            raise DataError(f"{where}: column {name!r} appears twice in the header")
        seen.add(name)
    rows = 0
    try:
        for fields in reader:
            if not fields:
                continue
            rows += 1
            if len(fields) != len(header):
                raise DataError(
                    f"{where}: line {reader.line_num} has {len(fields)} fields, the header has {len(header)}"
                )
    except csv.Error as error:
        raise DataError(f"{where}: line {reader.line_num} is not valid CSV ({error})") from None
    if rows == 0:
        raise DataError(f"{where}: has a header but no rows")
    return header


def _line_numbers(mask: np.ndarray) -> list[int]:
    """File line numbers (header = 1) of the rows where ``mask`` holds."""
    return [int(i) + 2 for i in np.flatnonzero(mask)]


MISSING = ["", "nan", "NaN", "NA", "null", "None"]


def _numeric_columns(text: str, positions: list[int], names: list[str], rows: int, where: str) -> np.ndarray:
    """The feature columns as float64. Fast path: the CSV parser reads numbers straight into arrays (a
    300-column file never becomes millions of Python strings); a column it cannot read as numbers is read
    again as text, to name the first row that is not a number."""
    features = np.empty((rows, len(names)), dtype=np.float64)
    numbers = pd.read_csv(io.StringIO(text), usecols=positions, na_values=MISSING, keep_default_na=False,
                          skip_blank_lines=True)
    for j in range(len(positions)):
        column = numbers.iloc[:, j]   # positions ascend, as the parser returns them
        if column.dtype.kind in "fiu":
            values = column.to_numpy(dtype=np.float64)
        else:
            values = _numeric_from_text(column.astype(str), names[j], where)
        bad = ~np.isfinite(values)
        if bad.any():
            lines = _line_numbers(bad)
            raise DataError(
                f"{where}: column {names[j]!r} has {len(lines)} missing or infinite values (first at line {lines[0]}); "
                "fill or drop them before training"
            )
        features[:, j] = values
    return features


def _numeric_from_text(column: pd.Series, name: str, where: str) -> np.ndarray:
    raw = column.str.strip()
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    missing = raw.isin(MISSING).to_numpy()
    not_numeric = np.isnan(values) & ~missing
    if not_numeric.any():
        lines = _line_numbers(not_numeric)
        raise DataError(f"{where}: column {name!r} is not numeric on {len(lines)} rows (first at line {lines[0]})")
    return values


def load_party_table(
    path: Path | str, id_columns: list[str], label: str | None = None, party: str = ""
) -> PartyTable:
    """Read and check one party's CSV; every column but the ids and the label is a feature."""
    path = Path(path)
    where = f"party {party!r}: {path.name}" if party else path.name
    text = _read_text(path, where)
    header = _check_shape(text, where)
    for column in id_columns:
        if column not in header:
            raise DataError(f"{where}: id column {column!r} not found (columns: {', '.join(header)})")
    if label is not None and label not in header:
        raise DataError(f"{where}: label column {label!r} not found (columns: {', '.join(header)})")
    text_columns = [header.index(c) for c in [*id_columns, *([label] if label is not None else [])]]
    frame = pd.read_csv(io.StringIO(text), usecols=text_columns, dtype=str, keep_default_na=False, skip_blank_lines=True)
    frame.columns = [str(c).strip() for c in frame.columns]

    id_parts = [frame[column].astype(str) for column in id_columns]
    for column, values in zip(id_columns, id_parts):
        empty = (values.str.strip() == "").to_numpy()
        if empty.any():
            lines = _line_numbers(empty)
            raise DataError(f"{where}: id column {column!r} is empty on {len(lines)} rows (first at line {lines[0]})")
    ids = normalise_ids(id_parts)
    duplicated = pd.Series(ids).duplicated(keep=False).to_numpy()
    if duplicated.any():
        lines = _line_numbers(duplicated)
        raise DataError(
            f"{where}: {int(duplicated.sum())} rows share an id with another row (first at lines {lines[0]} and {lines[1]})"
        )

    labels = None
    if label is not None:
        raw = frame[label].str.strip()
        mapped = raw.map(LABEL_VALUES)
        bad = mapped.isna().to_numpy()
        if bad.any():
            lines = _line_numbers(bad)
            raise DataError(
                f"{where}: label column {label!r} must hold 0 or 1; {len(lines)} rows do not (first at line {lines[0]})"
            )
        labels = mapped.to_numpy(dtype=np.int8)
        if labels.min() == labels.max():
            raise DataError(f"{where}: label column {label!r} holds only {int(labels[0])}s; both classes are needed")

    names = [c for c in header if c not in id_columns and c != label]
    if not names:
        raise DataError(f"{where}: no feature columns besides the id and label columns")
    features = _numeric_columns(text, [header.index(n) for n in names], names, len(frame), where)
    order = np.argsort(ids, kind="stable")
    return PartyTable(
        ids=ids[order],
        features=features[order],
        feature_names=names,
        labels=None if labels is None else labels[order],
    )
