"""Applicant look-ups at scoring time: the CSV and SQLite sources agree with the training data."""
from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest

from fedscore.errors import DataError
from fedscore.protocol.scoring.sources import CsvSource, SqliteSource

from conftest import DATA


@pytest.fixture
def host_sources(tmp_path):
    frame = pd.read_csv(DATA / "breast_hetero_host.csv")
    database = tmp_path / "partner.db"
    db = sqlite3.connect(database)
    stored = frame.assign(id=[f"  {v} " for v in frame["id"]])   # padded ids in the database
    stored.to_sql("applicants", db, index=False)
    db.execute("INSERT INTO applicants (id, x0) VALUES ('duplicate', 1.0)")
    db.execute("INSERT INTO applicants (id, x0) VALUES ('duplicate', 2.0)")
    db.commit()
    db.close()
    features = ["x3", "x0", "x19"]
    csv = CsvSource(DATA / "breast_hetero_host.csv", ["id"], features, party="host")
    sql = SqliteSource(database, "applicants", "id", features, party="host")
    return frame, features, csv, sql


def test_both_sources_return_the_model_columns_in_order(host_sources):
    frame, features, csv, sql = host_sources
    for applicant in frame["id"].sample(40, random_state=0):
        expected = frame.loc[frame["id"] == applicant, features].to_numpy()[0]
        np.testing.assert_allclose(csv.lookup(str(applicant)), expected)
        np.testing.assert_allclose(sql.lookup(f" {applicant}"), expected)


def test_unknown_ambiguous_or_incomplete_applicants_are_none(host_sources):
    _, _, csv, sql = host_sources
    assert csv.lookup("no such applicant") is None and sql.lookup("no such applicant") is None
    assert sql.lookup("duplicate") is None   # two rows: never guess
    sql.close()


def test_bad_sources_are_named(tmp_path):
    with pytest.raises(DataError, match="lacks the model's column 'x99'"):
        CsvSource(DATA / "breast_hetero_host.csv", ["id"], ["x99"], party="host")
    with pytest.raises(DataError, match="not a plain SQL identifier"):
        SqliteSource(tmp_path / "x.db", "applicants; DROP TABLE x", "id", ["x0"], party="host")
    with pytest.raises(DataError, match="does not exist"):
        SqliteSource(tmp_path / "absent.db", "applicants", "id", ["x0"], party="host")


def test_sqlite_ids_follow_the_training_rule_and_new_customers_are_found(tmp_path, monkeypatch):
    from fedscore.protocol.scoring import sources

    database = tmp_path / "partner.db"
    db = sqlite3.connect(database)
    db.execute("CREATE TABLE applicants (id TEXT, x0 REAL)")
    db.executemany("INSERT INTO applicants VALUES (?, ?)", [("\tÉMILE-7 ", 1.5), ("ÅSA", 2.5)])
    db.commit()
    source = SqliteSource(database, "applicants", "id", ["x0"], party="host")
    assert source.lookup("émile-7")[0] == 1.5 and source.lookup("åsa")[0] == 2.5   # not ASCII, tab-padded
    db.execute("INSERT INTO applicants VALUES ('late-comer', 3.5)")
    db.commit()
    monkeypatch.setattr(sources, "REFRESH_SECONDS", 0.0)
    assert source.lookup("LATE-COMER")[0] == 3.5
    source.close()
    db.close()


def test_for_a_binned_model_sources_return_raw_values_and_an_incomplete_row_is_data(tmp_path):
    from fedscore.protocol.scoring.offline import partial_score
    from test_offline_scoring import BUREAU_FEATURES, bureau_values, scorecard_data

    cards = scorecard_data(tmp_path)
    database = tmp_path / "bureau.db"
    db = sqlite3.connect(database)
    db.execute("CREATE TABLE applicants (id TEXT, INQUIRIES, SEGMENT)")   # no declared types: values as given
    stored = [(a, None if pd.isna(r["INQUIRIES"]) else int(r["INQUIRIES"]), None if pd.isna(r["SEGMENT"]) else r["SEGMENT"])
              for a, r in cards.held.iterrows()]
    db.executemany("INSERT INTO applicants VALUES (?, ?, ?)", stored)
    db.execute("INSERT INTO applicants VALUES ('odd', 'three', 7)")      # text in a numeric column, a number as category
    db.commit()
    db.close()
    csv = CsvSource(cards.bureau_csv, ["id"], BUREAU_FEATURES, party="bureau", raw_values=True)
    sql = SqliteSource(database, "applicants", "id", BUREAU_FEATURES, party="bureau", raw_values=True)
    incomplete = [a for a, r in cards.held.iterrows() if r.isna().any()]
    assert len(incomplete) > 10
    for applicant in cards.held.index:
        expected = bureau_values(cards, applicant)
        reference = partial_score(cards.bureau, expected)
        for source in (csv, sql):
            found = source.lookup(applicant.lower())
            assert found is not None and found.dtype == object
            assert partial_score(cards.bureau, found) == reference   # to the bit: the same bins
    row = sql.lookup("odd")
    assert row.tolist() == ["three", 7.0]
    binner = cards.bureau.binner
    inquiries, segment = binner.features
    blocks = binner.weight_blocks(cards.bureau.weights)
    assert partial_score(cards.bureau, row) == blocks[0][inquiries.missing] + blocks[1][segment.other]
    assert csv.lookup("nobody") is None and sql.lookup("nobody") is None
    sql.close()


def test_for_a_standardised_model_a_null_or_text_row_is_not_known(tmp_path):
    database = tmp_path / "partner.db"
    db = sqlite3.connect(database)
    db.execute("CREATE TABLE applicants (id TEXT, x0, x1)")
    db.executemany("INSERT INTO applicants VALUES (?, ?, ?)", [("a", 1.0, None), ("b", "lots", 2.0), ("c", 1.0, 2.0)])
    db.commit()
    db.close()
    source = SqliteSource(database, "applicants", "id", ["x0", "x1"], party="host")
    assert source.lookup("a") is None and source.lookup("b") is None
    assert source.lookup("c").tolist() == [1.0, 2.0]
    source.close()
