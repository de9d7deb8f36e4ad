"""A party's file read in chunks: the same table and the same errors as a whole-file read, for a CSV and for
Parquet, whatever the chunk size; memory bounded by the budget; a model trained from Parquet equals its CSV's."""
from __future__ import annotations

import io
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import breast_parties, write_job
from fedscore.errors import ConfigError, DataError
from fedscore.model.data import MISSING, Origin, check_party_rows, load_party_table
from fedscore.model.reader import read_party_file, table_bytes

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

CHUNKS = [1, 2, 3, 7, 64, 10_000]   # rows per chunk: every row alone, odd splits, one chunk for the whole file


def whole_file_table(path: Path, ids: list[str], label: str | None, lenient: bool):
    """The reader fedscore had before chunks: the whole text parsed at once, then check_party_rows."""
    text = path.read_text()
    frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, usecols=[*ids, *([label] if label else [])])
    header = text.split("\n", 1)[0].split(",")
    names = [c for c in header if c not in ids and c != label]
    numbers = pd.read_csv(io.StringIO(text), usecols=names, na_values=MISSING, keep_default_na=False)[names]
    return check_party_rows([frame[c].astype(str) for c in ids], ids, frame[label] if label else None, label, numbers,
                            Origin(str(path)), lenient)


def assert_same_table(ours, theirs) -> None:
    assert ours.ids.tolist() == theirs.ids.tolist()
    assert ours.feature_names == theirs.feature_names
    np.testing.assert_array_equal(ours.features, theirs.features)   # NaN where NaN: missing cells, text columns
    assert (ours.labels is None) == (theirs.labels is None)
    if ours.labels is not None:
        assert ours.labels.tolist() == theirs.labels.tolist()
    assert sorted(ours.text) == sorted(theirs.text)
    for name in ours.text:
        assert ours.text[name].tolist() == theirs.text[name].tolist()


def mixed_frame(rows: int = 41, seed: int = 3) -> pd.DataFrame:
    """Ids with spaces and capitals, labels, numbers, a column with gaps, one whose text lies in the last rows
    only (numbers in early chunks, text in late ones), and a categorical column."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "id": [f" Id{i:03d} " if i % 5 == 0 else f"id{i:03d}" for i in rng.permutation(rows)],
        "y": rng.integers(0, 2, rows).astype(str),
        "income": np.round(rng.normal(50_000, 9_000, rows), 2).astype(str),
        "gaps": [("" if i % 4 == 0 else f"{v:.3f}") for i, v in enumerate(rng.normal(size=rows))],
        "late": [f"{v:.1f}" for v in rng.normal(size=rows)],
        "job": rng.choice(["clerk", "nurse", "pilot", ""], rows),
    })
    frame.loc[rows - 3:, "late"] = ["n/a", "unknown", "?"]   # text in the last chunk only
    return frame


def write_csv(folder: Path, frame: pd.DataFrame, name: str = "party.csv") -> Path:
    path = folder / name
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("rows_per_chunk", CHUNKS)
def test_a_csv_read_in_chunks_is_the_whole_file_read(tmp_path, rows_per_chunk):
    path = write_csv(tmp_path, mixed_frame())
    chunked = read_party_file(path, ["id"], "y", str(path), lenient=True, rows_per_chunk=rows_per_chunk)
    assert_same_table(chunked, whole_file_table(path, ["id"], "y", lenient=True))
    assert "job" in chunked.text and "late" not in chunked.text   # categorical vs numbers with the odd text cell
    assert np.isnan(chunked.column("late")).sum() == 3             # ... read as missing, as the whole file read them


@pytest.mark.parametrize("rows_per_chunk", CHUNKS)
def test_strict_numbers_read_in_chunks_are_the_whole_file_read(tmp_path, rows_per_chunk):
    frame = mixed_frame().drop(columns=["gaps", "job"])
    frame["late"] = [f"{v:.2f}" for v in np.linspace(-3, 3, len(frame))]
    path = write_csv(tmp_path, frame)
    chunked = read_party_file(path, ["id"], "y", str(path), rows_per_chunk=rows_per_chunk)
    assert_same_table(chunked, whole_file_table(path, ["id"], "y", lenient=False))
    assert chunked.features.dtype == np.float64 and chunked.features.flags.f_contiguous


def write_parquet(folder: Path, frame: pd.DataFrame, name: str = "party.parquet", row_group_size: int = 5) -> Path:
    path = folder / name
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=row_group_size)
    return path


@pytest.mark.parametrize("rows_per_chunk", CHUNKS)
def test_a_parquet_file_reads_as_its_csv(tmp_path, rows_per_chunk):
    rng = np.random.default_rng(9)
    rows = 30
    frame = pd.DataFrame({"id": rng.permutation(rows) * 7 + 1, "y": rng.integers(0, 2, rows),
                          "amount": np.round(rng.normal(size=rows), 4), "count": rng.integers(0, 9, rows),
                          "city": rng.choice(["Lyon", "Nice", "Metz"], rows)})
    frame.loc[[4, 17], "amount"] = np.nan
    csv = read_party_file(write_csv(tmp_path, frame), ["id"], "y", "csv", lenient=True)
    parquet = read_party_file(write_parquet(tmp_path, frame), ["id"], "y", "parquet", lenient=True,
                              rows_per_chunk=rows_per_chunk)
    assert_same_table(parquet, csv)
    assert parquet.text["city"].tolist() == csv.text["city"].tolist()


LATE_ERRORS = [
    ("income", 37, "abc", "column 'income' is not numeric on 1 row (first at {row})"),
    ("income", 38, "", "column 'income' has 1 missing or infinite value (first at {row})"),
    ("y", 39, "2", "label column 'y' must hold 0 or 1; 1 row does not (first at {row})"),
    ("id", 40, " ", "id column 'id' is empty on 1 row (first at {row})"),
]


@pytest.mark.parametrize("rows_per_chunk", [1, 3, 7, 64])
@pytest.mark.parametrize("column, position, value, message", LATE_ERRORS)
def test_an_error_in_a_late_chunk_names_its_row(tmp_path, rows_per_chunk, column, position, value, message):
    frame = mixed_frame().drop(columns=["gaps", "late", "job"])
    frame[column] = frame[column].astype(object)
    frame.loc[position, column] = value
    path = write_csv(tmp_path, frame)
    with pytest.raises(DataError) as whole:
        whole_file_table(path, ["id"], "y", lenient=False)
    with pytest.raises(DataError) as chunked:
        read_party_file(path, ["id"], "y", str(path), rows_per_chunk=rows_per_chunk)
    assert str(chunked.value) == str(whole.value)
    assert message.format(row=f"line {position + 2}") in str(chunked.value)
    with pytest.raises(DataError, match=message.format(row=f"row {position + 1}").replace("(", r"\(").replace(")", r"\)")):
        read_party_file(write_parquet(tmp_path, frame), ["id"], "y", "party.parquet", rows_per_chunk=rows_per_chunk)


def test_duplicate_ids_in_distant_chunks_and_a_late_decimal_comma_are_found(tmp_path):
    frame = mixed_frame().drop(columns=["gaps", "late", "job"])
    frame.loc[35, "id"] = frame.loc[2, "id"]
    path = write_csv(tmp_path, frame)
    with pytest.raises(DataError, match=r"2 rows share an id with another row \(first at lines 4 and 37\)"):
        read_party_file(path, ["id"], "y", str(path), rows_per_chunk=4)
    semicolons = tmp_path / "semi.csv"
    text = mixed_frame().drop(columns=["gaps", "late", "job"]).to_csv(index=False, sep=";")
    lines = text.splitlines()
    lines[39] = lines[39].rsplit(";", 1)[0] + ";2,5"
    semicolons.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"column 'income' writes numbers with a decimal comma on 1 rows \(first at line 40\)"):
        read_party_file(semicolons, ["id"], "y", str(semicolons), rows_per_chunk=3)


def test_a_ragged_row_and_bad_utf8_past_the_first_chunk_are_named(tmp_path):
    good = "id,y,a\n" + "".join(f"{i},{i % 2},{i}.5\n" for i in range(30))
    ragged = tmp_path / "ragged.csv"
    ragged.write_text(good + "31,1\n")
    with pytest.raises(DataError, match="line 32 has 2 fields, the header has 3"):
        read_party_file(ragged, ["id"], "y", "ragged.csv", rows_per_chunk=2)
    broken = tmp_path / "broken.csv"
    broken.write_bytes(good.encode() + b"31,1\n" + b"32,0,\xff\n")   # a ragged line, then a line not UTF-8
    with pytest.raises(DataError, match="line 33 is not UTF-8 text"):
        read_party_file(broken, ["id"], "y", "broken.csv", rows_per_chunk=2)


def big_csv(folder: Path, rows: int = 20_000, columns: int = 40) -> Path:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(np.round(rng.normal(size=(rows, columns)), 5), columns=[f"x{j}" for j in range(columns)])
    frame.insert(0, "y", rng.integers(0, 2, rows))
    frame.insert(0, "id", rng.permutation(rows))
    path = folder / "big.csv"
    frame.to_csv(path, index=False)
    return path


def traced_peak(read) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = read()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_loading_in_chunks_stays_near_the_table_far_below_a_whole_file_read(tmp_path):
    path = big_csv(tmp_path)
    rows, columns = 20_000, 40
    chunked, chunked_peak = traced_peak(lambda: read_party_file(path, ["id"], "y", "big.csv", memory_mib=64))
    whole, whole_peak = traced_peak(lambda: whole_file_table(path, ["id"], "y", lenient=False))
    assert_same_table(chunked, whole)
    held = table_bytes(rows, columns, binned=False)     # what the table itself takes
    budget_share = 64 * 2**20 // 16                     # a chunk being parsed: 1/16 of the budget
    assert chunked_peak < held + budget_share, (chunked_peak, held)
    assert chunked_peak < whole_peak / 2, (chunked_peak, whole_peak)


def test_a_table_that_cannot_fit_the_budget_is_refused_with_what_it_needs(tmp_path):
    path = big_csv(tmp_path, rows=20_000, columns=40)
    with pytest.raises(DataError, match=r"big.csv: 20000 rows × 40 feature columns need about \d+ MiB in memory .* "
                                        r"more than this party's memory budget of 4 MiB"):
        load_party_table(path, ["id"], "y", memory_mib=4, shown="big.csv")
    assert load_party_table(path, ["id"], "y", memory_mib=0).rows == 20_000   # 0: no budget


def test_the_budget_is_a_party_setting(tmp_path):
    from fedscore.daemons.config import load_party_config

    (tmp_path / "data").mkdir()
    path = tmp_path / "party.toml"
    path.write_text('[party]\nname = "bureau"\nmemory_mib = 2048\n')
    assert load_party_config(path).memory_mib == 2048
    path.write_text('[party]\nname = "bureau"\nmemory_mib = 100\n')
    with pytest.raises(ConfigError, match="memory_mib must be 0 \\(no budget\\) or between 256 and"):
        load_party_config(path)


def test_parquet_without_pyarrow_says_how_to_install_it(tmp_path, monkeypatch):
    path = write_parquet(tmp_path, mixed_frame().drop(columns=["gaps", "late", "job"]))
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DataError, match=r"needs pyarrow: pip install 'fedscore\[parquet\]'"):
        load_party_table(path, ["id"], "y")


def test_a_model_trained_from_parquet_equals_the_one_from_csv(breast_folder, keypair, inline_pool, monkeypatch):
    import fedscore.protocol.training.card_center as card_center
    from fedscore.job_file import load_job
    from fedscore.protocol.training.simulation import build_consortium, load_tables, simulate
    from fedscore.protocol.training.start import secret_start

    # the card center's start is secret and random: the same one for both runs, so the weights must be equal
    monkeypatch.setattr(card_center, "secret_start", lambda rows: secret_start(rows, rng=np.random.default_rng(4)))
    weights = {}
    for suffix in (".csv", ".parquet"):
        parties = breast_parties()
        for party in parties:
            if suffix == ".parquet":
                frame = pd.read_csv(breast_folder / party["data"])
                party["data"] = party["data"].replace(".csv", suffix)
                write_parquet(breast_folder, frame, party["data"], row_group_size=100)
        spec, base = load_job(write_job(breast_folder, parties, epochs=2, validation=0.25, batch_size=150))
        consortium = build_consortium(spec, load_tables(spec, base), inline_pool, keypair)
        simulate(consortium)
        weights[suffix] = {s.party: s.weights for s in (consortium.card_center, *consortium.partners.values())}
    for party in weights[".csv"]:
        np.testing.assert_array_equal(weights[".parquet"][party], weights[".csv"][party])
        assert np.abs(weights[".csv"][party]).sum() > 0


def test_a_partner_trains_on_its_bin_codes_once_its_values_are_let_go(breast_folder, keypair, inline_pool):
    from fedscore.job_file import load_job
    from fedscore.protocol.training.encoding import encode_table
    from fedscore.protocol.training.simulation import build_consortium, load_tables

    spec, base = load_job(write_job(breast_folder, breast_parties(), validation=0.25, batch_size=150))
    host = build_consortium(spec, load_tables(spec, base), inline_pool, keypair).partners["host"]
    every = list(host.features)
    keep = every[::2]
    refit = encode_table(host.table, keep, host.train_rows, spec.binning, False, "host")   # from the values
    host.table.release_features()
    assert host.table.features.size == 0
    with pytest.raises(ValueError, match="released"):
        host.table.column(host.features[0])
    assert host.select_features(keep) == every[1::2]
    assert host.features == keep and host.binner.to_json() == refit.binner.to_json()
    np.testing.assert_array_equal(host.train_matrix, refit.block(refit.train))
    np.testing.assert_array_equal(host.encoding.codes, refit.codes)
