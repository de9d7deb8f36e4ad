"""Job files: what a data scientist gets wrong, and the message that says so."""
from __future__ import annotations


import pytest

from fedscore.errors import ConfigError
from fedscore.job_file import load_job

from conftest import write_job

CENTER = {"name": "card_center", "data": "c.csv", "id": "id", "label": "y"}
BUREAU = {"name": "bureau", "data": "b.csv", "id": "id"}


def test_good_job_and_defaults(tmp_path):
    spec, base = load_job(write_job(tmp_path, [CENTER, BUREAU], batch_size=0))
    assert base == tmp_path.resolve()
    assert spec.card_center.name == "card_center"
    assert [p.name for p in spec.partners] == ["bureau"]
    assert spec.validation == 0.0 and spec.l2 == 0.0 and spec.early_stop_tol == 0.0


def test_multiple_id_columns(tmp_path):
    spec, _ = load_job(write_job(tmp_path, [CENTER, {**BUREAU, "id": ["phone", "nid"]}]))
    assert spec.party("bureau").id_columns == ("phone", "nid")


@pytest.mark.parametrize(
    "parties, job, fragment",
    [
        ([CENTER, {**BUREAU, "label": "y"}], {}, "exactly one party must carry the label; 2 do (card_center, bureau)"),
        ([{**CENTER, "label": ""}, BUREAU], {}, "exactly one party must carry the label; none does"),
        ([CENTER], {}, "at least one partner"),
        ([CENTER, {**BUREAU, "name": "card_center"}], {}, "party 'card_center' is listed twice"),
        ([CENTER, BUREAU], {"epochs": 0}, "epochs must be between 1 and 100000"),
        ([CENTER, BUREAU], {"learning_rate": -1.0}, "learning_rate must be a positive number"),
        ([CENTER, BUREAU], {"validation": 1.0}, "validation must be in [0, 1)"),
        ([CENTER, BUREAU], {"key_bits": 1000}, "key_bits must be one of"),
        ([CENTER, BUREAU], {"epochs": "ten"}, "epochs must be an integer"),
        ([CENTER, BUREAU], {"epoch": 3}, "unknown setting 'epoch'"),
        ([CENTER, {**BUREAU, "colour": "red"}], {}, "unknown setting 'colour'"),
        ([CENTER, {"name": "bureau", "data": "b.csv"}], {}, "party 'bureau': id must name a column"),
    ],
)
def test_bad_jobs(tmp_path, parties, job, fragment):
    with pytest.raises(ConfigError) as caught:
        load_job(write_job(tmp_path, parties, **job))
    assert fragment in str(caught.value)


def test_unreadable_job_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_job(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[job\nname=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_job(bad)
