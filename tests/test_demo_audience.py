"""The demo's audience files: the card center's labels alone, the e-commerce partner's whole user base with a
preference segment, and a two-party job that trains the model the partner can run alone."""
from __future__ import annotations

import tomllib

import pandas as pd
import pytest

from fedscore.cli.demo import write_demo
from fedscore.cli.demo_audience import AUDIENCE_FEES, PREFERENCE_SHARES, PREFERENCES
from fedscore.job_file import load_job


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    write_demo(folder, epochs=3, key_bits=1024)
    return folder


def test_the_card_center_brings_its_ids_and_labels_only(demo):
    labels = pd.read_csv(demo / "card_center_labels.csv", dtype=str)
    center = pd.read_csv(demo / "card_center.csv", dtype=str)
    assert list(labels.columns) == ["id", "y"]
    assert labels.set_index("id")["y"].sort_index().equals(center.set_index("id")["y"].sort_index())


def test_the_users_file_is_the_partners_whole_base_with_a_preference(demo):
    users = pd.read_csv(demo / "ecommerce_users.csv", dtype=str)
    partner = pd.read_csv(demo / "ecommerce.csv", dtype=str)
    center = set(pd.read_csv(demo / "card_center.csv", dtype=str)["id"])
    assert list(users.columns) == [*partner.columns, "preference"]
    # the same users and values as the partner's training file, strangers to the card center included
    assert users.drop(columns="preference").set_index("id").sort_index().equals(partner.set_index("id").sort_index())
    assert 2_400 <= len(set(users["id"]) - center) <= 2_600
    shares = users["preference"].value_counts(normalize=True)
    assert set(shares.index) == set(PREFERENCES)
    for preference, share in zip(PREFERENCES, PREFERENCE_SHARES):
        assert shares[preference] == pytest.approx(share, abs=0.02)


def test_a_user_keeps_its_preference_whatever_the_demos_size(demo, tmp_path):
    write_demo(tmp_path, epochs=1, key_bits=512, rows=3_000)
    small = pd.read_csv(tmp_path / "ecommerce_users.csv", dtype=str).set_index("id")["preference"]
    whole = pd.read_csv(demo / "ecommerce_users.csv", dtype=str).set_index("id")["preference"]
    shared = small.index.intersection(whole.index)
    assert len(shared) > 1_000 and small[shared].equals(whole[shared])


def test_the_audience_job_trains_the_labels_against_the_partners_columns(demo):
    spec, base = load_job(demo / "audience-job.toml")
    main, _ = load_job(demo / "job.toml")
    assert [(p.name, p.data, p.label) for p in spec.parties] == [
        ("card_center", "card_center_labels.csv", "y"), ("ecommerce", "ecommerce.csv", None)]
    assert spec.binning == main.binning and spec.key_bits == main.key_bits == 1024
    assert spec.batch_size == 0   # whole-batch steps: see the job file's comment
    assert spec.fees.per_step == main.fees.per_step and spec.fees.per_overlap_row == main.fees.per_overlap_row
    assert tomllib.loads((demo / "audience-job.toml").read_text())["scoring"] == {"offset": 600, "pdo": 20}


def test_the_audience_fees_are_in_the_job_files_contract(demo):
    spec, _ = load_job(demo / "audience-job.toml")
    assert {name: getattr(spec.fees, name) for name in AUDIENCE_FEES} == AUDIENCE_FEES
    assert all(value > 0 for value in AUDIENCE_FEES.values())
