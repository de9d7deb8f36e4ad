"""A party's data file read in chunks, never whole: a CSV streamed, or a Parquet file a row group at a time.

The file is read twice, neither time whole. First its shape: a CSV line by line (UTF-8, the delimiter, every
row as wide as the header; fedscore.model.csv_file), a Parquet file's schema and row count from its
footer; a Parquet file's columns are then decoded COLUMN_BLOCK at a time, a row group at a time. Then its rows, a chunk at a time, into arrays sized once for the whole table
(fedscore.model.reader_rows: the same checks and errors as the whole-file reader). A Parquet file is
picked by its name (.parquet, .pq) and needs pyarrow (``pip install 'fedscore[parquet]'``).

Memory: the table held is 8 bytes per feature value (float64, exact: the model's arithmetic reads these
values) plus an id string per row (ID_BYTES) and a byte per label; with binning on, the training encoding
adds a byte per value (bin codes). A chunk being parsed takes at most 1/CHUNK_SHARE of the party's budget
(``memory_mib`` in [party]); a table that cannot fit the budget is refused before its rows are read,
with how much it needs.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from fedscore.errors import DataError
from fedscore.model.csv_file import found_columns, require_columns, scan_csv
from fedscore.model.data import MISSING, Origin, PartyTable
from fedscore.model.reader_rows import TableBuilder

PARQUET_SUFFIXES = (".parquet", ".pq")
DEFAULT_MEMORY_MIB = 4096
CHUNK_SHARE = 16             # a chunk being parsed: at most this fraction of the budget
PARSE_BYTES_PER_CELL = 64    # a cell as the CSV parser holds it, text at worst
FEATURE_BYTES = 8            # float64 per feature value
CODE_BYTES = 1               # a bin code per feature value (binning on; at most 255 bins per feature)
ID_BYTES = 72                # a normalised id: a Python string of ~10 characters and its pointer
MIB = 1 << 20
COLUMN_BLOCK = 32            # Parquet columns decoded at once (a row group's whole width would take far more)


def is_parquet(path: Path | str) -> bool:
    return Path(path).suffix.lower() in PARQUET_SUFFIXES


def table_bytes(rows: int, features: int, binned: bool) -> int:
    """What a party holds for ``rows`` × ``features`` from its file to the end of training."""
    per_row = features * (FEATURE_BYTES + (CODE_BYTES if binned else 0)) + ID_BYTES + 1
    return rows * per_row


def chunk_rows(memory_mib: int, cells_per_row: int) -> int:
    """Rows per chunk so that a chunk being parsed takes at most 1/CHUNK_SHARE of the budget."""
    budget = (memory_mib or DEFAULT_MEMORY_MIB) * MIB // CHUNK_SHARE
    return max(1, budget // (max(1, cells_per_row) * PARSE_BYTES_PER_CELL))


def check_fits(rows: int, features: int, binned: bool, memory_mib: int, where: str) -> None:
    """Refuse a table that cannot fit the party's memory budget (0: none), saying how much it needs."""
    if memory_mib <= 0:
        return
    needed = table_bytes(rows, features, binned) + memory_mib * MIB // CHUNK_SHARE
    if needed > memory_mib * MIB:
        per_value = FEATURE_BYTES + (CODE_BYTES if binned else 0)
        raise DataError(
            f"{where}: {rows} rows × {features} feature columns need about {-(-needed // MIB)} MiB in memory "
            f"({per_value} bytes per value, {ID_BYTES} per id, and a chunk being read), more than this party's memory "
            f"budget of {memory_mib} MiB; raise memory_mib in the party's [party] config or split the data"
        )


def read_party_file(path: Path, id_columns: list[str], label: str | None, where: str, lenient: bool = False,
                    memory_mib: int = DEFAULT_MEMORY_MIB, rows_per_chunk: int | None = None) -> PartyTable:
    """One party's file (CSV, or Parquet by its name) read in chunks and checked as fedscore.model.data
    checks a whole table. ``rows_per_chunk``: fixed chunks (tests), else derived from ``memory_mib``."""
    if is_parquet(path):
        return _read_parquet(path, id_columns, label, where, lenient, memory_mib, rows_per_chunk)
    return _read_csv(path, id_columns, label, where, lenient, memory_mib, rows_per_chunk)


# -- CSV -------------------------------------------------------------------------


def _read_csv(path: Path, id_columns: list[str], label: str | None, where: str, lenient: bool, memory_mib: int,
              rows_per_chunk: int | None) -> PartyTable:
    header, delimiter, rows = scan_csv(path, where)
    require_columns(header, id_columns, label, where, delimiter)
    keys = [*id_columns, *([label] if label is not None else [])]
    names = [c for c in header if c not in keys]
    check_fits(rows, len(names), lenient, memory_mib, where)
    size = rows_per_chunk or chunk_rows(memory_mib, len(header))
    builder = TableBuilder(rows, id_columns, label, names, Origin(where), lenient, decimal_commas=delimiter != ",")
    key_positions = [header.index(c) for c in keys]
    feature_positions = [header.index(n) for n in names]
    for start, frame in _csv_chunks(path, delimiter, len(header), key_positions, feature_positions, size):
        builder.add_keys(start, [frame[header.index(c)] for c in id_columns],
                         frame[header.index(label)] if label is not None else None)
        builder.add_features(start, frame[feature_positions])
    if builder.mixed:   # numbers in some chunks, text in others: read again as text, as a whole read would
        mixed = sorted(builder.mixed)
        positions = [feature_positions[j] for j in mixed]
        for start, frame in _csv_chunks(path, delimiter, len(header), positions, [], size, na_positions=positions):
            builder.add_features(start, frame[positions], mixed, again=True)
    return builder.finish()


def _csv_chunks(path: Path, delimiter: str, width: int, text_positions: list[int], number_positions: list[int],
                size: int, na_positions: list[int] | None = None) -> Iterator[tuple[int, pd.DataFrame]]:
    """(first row, frame) per chunk: columns named by position; text columns as str ("" when empty), number
    columns as the parser reads them (MISSING cells as NaN). ``na_positions``: text columns whose MISSING
    cells are NaN too (a feature read again as text)."""
    missing = {p: MISSING for p in [*number_positions, *(na_positions or [])]}
    reader = pd.read_csv(
        path, sep=delimiter, header=0, names=list(range(width)), usecols=sorted([*text_positions, *number_positions]),
        dtype={p: str for p in text_positions}, na_values=missing, keep_default_na=False, skip_blank_lines=True,
        chunksize=size, encoding="utf-8-sig",
    )
    start = 0
    with reader:
        for frame in reader:
            yield start, frame
            start += len(frame)


# -- Parquet -----------------------------------------------------------------------


def _parquet_module(where: str):
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet as parquet
    except ImportError:
        raise DataError(f"{where}: reading a Parquet file needs pyarrow: pip install 'fedscore[parquet]'") from None
    return parquet


def _read_parquet(path: Path, id_columns: list[str], label: str | None, where: str, lenient: bool, memory_mib: int,
                  rows_per_chunk: int | None) -> PartyTable:
    parquet = _parquet_module(where)
    import pyarrow as pa

    if not path.exists():
        raise DataError(f"{where}: file does not exist")
    if path.is_dir():
        raise DataError(f"{where}: is a folder, not a Parquet file")
    try:
        file = parquet.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"{where}: is not a readable Parquet file ({error})") from None
    schema = file.schema_arrow
    given = list(schema.names)
    header = _parquet_header(given, where)
    require_columns(header, id_columns, label, where)
    for column in id_columns:
        if pa.types.is_floating(schema.field(header.index(column)).type):
            raise DataError(f"{where}: id column {column!r} holds floating-point numbers; ids are matched as text, so "
                            "store it as integers or text")
    rows = file.metadata.num_rows
    if rows == 0:
        raise DataError(f"{where}: has no rows")
    keys = [*id_columns, *([label] if label is not None else [])]
    names = [c for c in header if c not in keys]
    check_fits(rows, len(names), lenient, memory_mib, where)
    size = rows_per_chunk or chunk_rows(memory_mib, len(header))
    builder = TableBuilder(rows, id_columns, label, names, Origin(where, records=True), lenient, decimal_commas=False)
    start = 0
    for group in range(file.num_row_groups):   # a row group at a time, COLUMN_BLOCK columns at a time
        keys_read = file.read_row_group(group, columns=[given[header.index(c)] for c in keys], use_threads=False)
        count = keys_read.num_rows
        for at in range(0, count, size):
            part = keys_read.slice(at, size)
            columns = {name: part.column(i).combine_chunks() for i, name in enumerate(keys)}
            builder.add_keys(start + at, [_as_text(columns[c]) for c in id_columns],
                             _as_text(columns[label]) if label is not None else None)
        for first in range(0, len(names), COLUMN_BLOCK):
            block = list(range(first, min(len(names), first + COLUMN_BLOCK)))
            read = file.read_row_group(group, columns=[given[header.index(names[j])] for j in block], use_threads=False)
            for at in range(0, count, size):
                part = read.slice(at, size)
                frame = pd.DataFrame({k: _as_parsed(part.column(k).combine_chunks()) for k in range(len(block))},
                                     index=range(part.num_rows))
                builder.add_features(start + at, frame, block)
            del read
        start += count
    return builder.finish()


def _parquet_header(given: list[str], where: str) -> list[str]:
    header = [str(name).strip() for name in given]
    seen: set[str] = set()
    for name in header:
        if not name:
            raise DataError(f"{where}: a column has an empty name ({found_columns(header)})")
        if name in seen:
            raise DataError(f"{where}: column {name!r} appears twice")
        seen.add(name)
    return header


def _as_text(array) -> pd.Series:
    """A Parquet column as the text a CSV would hold ("" when null): 123 → "123"."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    text = array if pa.types.is_string(array.type) or pa.types.is_large_string(array.type) else pc.cast(array, pa.string())
    return pd.Series(text.to_pandas(), dtype=object).fillna("")


def _as_parsed(array) -> pd.Series:
    """A Parquet feature column as a CSV parser would read it: numbers as float64 (null: NaN), booleans as
    booleans, anything else as text (null: NaN)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if pa.types.is_dictionary(kind):
        array = array.dictionary_decode()
        kind = array.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return pd.Series(pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    if pa.types.is_boolean(kind) and array.null_count == 0:
        return pd.Series(array.to_numpy(zero_copy_only=False), dtype=bool)
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        array = pc.cast(array, pa.string())
    return pd.Series(array.to_pandas(), dtype=object)
