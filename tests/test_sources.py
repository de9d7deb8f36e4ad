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
