"""A CSV file's text as fedscore reads it: UTF-8, its delimiter found from the header, every row as wide as the header.

Delimiter rule: a file may separate its fields by comma, semicolon, tab or
pipe (a bank's export where ',' is the decimal mark uses ';'); the header line
decides, as the one of these that splits it into the most columns (comma on a
tie). Errors name the file and the line (1 = header), and when a column is
not found, how the header was split and what it holds.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from pathlib import Path

from fedscore.errors import DataError


def read_text(path: Path, where: str) -> str:
    with _open(path, where) as file:
        raw = file.read()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataError(f"{where}: line {line} is not UTF-8 text") from None


DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


def sniff_delimiter(text: str) -> str:
    """Of comma, semicolon, tab and pipe, the one that splits the header line into the most columns (comma on a tie)."""
    first = text.split("\n", 1)[0].rstrip("\r")
    best, columns = ",", 1
    for delimiter in DELIMITERS:
        try:
            count = len(next(csv.reader([first], delimiter=delimiter), []))
        except csv.Error:
            continue
        if count > columns:
            best, columns = delimiter, count
    return best


def check_shape(text: str, where: str, delimiter: str = ",") -> list[str]:
    """The header, after checking every row has as many fields as the header."""
    header, _ = check_lines(io.StringIO(text), where, delimiter)
    return header


def check_lines(lines: Iterable[str], where: str, delimiter: str = ",") -> tuple[list[str], int]:
    """(the header, the rows that are not blank), after checking every row has as many fields as the header;
    ``lines`` is read once, so a file streamed line by line is never held whole."""
    reader = csv.reader(lines, delimiter=delimiter)
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
                    + ("" if delimiter == "," else f" (read as {DELIMITERS[delimiter]}-separated)")
                )
    except csv.Error as error:
        raise DataError(f"{where}: line {reader.line_num} is not valid CSV ({error})") from None
    if rows == 0:
        raise DataError(f"{where}: has a header but no rows")
    return header, rows


SHOWN_COLUMNS = 8   # a header named in an error: its first columns, not all 300


def found_columns(header: list[str], delimiter: str | None = None) -> str:
    """What a header holds, for an error: how a file's was split, how many columns, the first few."""
    shown = ", ".join(repr(c) for c in header[:SHOWN_COLUMNS])
    more = f", ... ({len(header)} in all)" if len(header) > SHOWN_COLUMNS else ""
    count = f"{len(header)} column" + ("s" if len(header) != 1 else "")
    if delimiter is None:
        return f"the frame has {count}: {shown}{more}"
    return f"read as {DELIMITERS[delimiter]}-separated, the header has {count}: {shown}{more}"


def require_columns(header: list[str], id_columns: list[str], label: str | None, where: str,
                    delimiter: str | None = None) -> None:
    """``delimiter``: the file's (None for a DataFrame), named in the error with the columns it found."""
    for column in id_columns:
        if column not in header:
            raise DataError(f"{where}: id column {column!r} not found ({found_columns(header, delimiter)})")
    if label is not None and label not in header:
        raise DataError(f"{where}: label column {label!r} not found ({found_columns(header, delimiter)})")


def read_csv_header(path: Path, where: str) -> tuple[str, list[str], str]:
    """A CSV file's text, its header (every row checked to have as many fields) and its delimiter."""
    text = read_text(path, where)
    delimiter = sniff_delimiter(text)
    return text, check_shape(text, where, delimiter), delimiter


def _open(path: Path, where: str):
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise DataError(f"{where}: file does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{where}: is a folder, not a CSV file") from None
    except PermissionError:
        raise DataError(f"{where}: cannot be read (permission denied)") from None


def _decoded(handle, where: str) -> Iterator[str]:
    """The file's lines as text, one at a time; the first without its byte-order mark."""
    for number, raw in enumerate(handle, start=1):
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{where}: line {number} is not UTF-8 text") from None


def scan_csv(path: Path, where: str) -> tuple[list[str], str, int]:
    """(header, delimiter, rows) of a CSV file read line by line, never whole: the same checks and errors as
    read_csv_header. A line that is not UTF-8 is named before any shape error, as when the file is decoded whole."""
    with _open(path, where) as handle:
        lines = _decoded(handle, where)
        first = next(lines, "")
        delimiter = sniff_delimiter(first)
        try:
            header, rows = check_lines(_chain(first, lines), where, delimiter)
        except DataError as shape_error:
            for _ in lines:   # decode the rest: a line that is not UTF-8 is the first thing to fix
                pass
            raise shape_error
    return header, delimiter, rows


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    if first:
        yield first
    yield from rest
