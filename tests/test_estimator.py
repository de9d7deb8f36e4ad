"""The notebook estimator: the same protocol as the daemons, DataFrames in and out, scikit-learn's conventions."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score

import fedscore
from fedscore import FederatedLogisticRegression, Party
from fedscore.job_file import parse_job
from fedscore.errors import ConfigError, DataError
from fedscore.model.data import load_party_table
from fedscore.model.model_file import PartyModel
from fedscore.model.rows import split_rows
from fedscore.cli.runner import run_job_file

from conftest import DATA, TEST_KEY_BITS, split_three_ways, write_job
from faults import count

SETTINGS = dict(epochs=3, batch_size=128, l2=0.01, learning_rate=0.3, validation=0.25, seed=11)


def frames(folder: Path, parties: list[dict]) -> dict[str, pd.DataFrame]:
    """Each party's CSV as a data scientist would load it: plain pd.read_csv."""
    return {p["name"]: pd.read_csv(folder / p["data"]) for p in parties}


def breast() -> dict[str, pd.DataFrame]:
    return {"guest": pd.read_csv(DATA / "breast_hetero_guest.csv"), "host": pd.read_csv(DATA / "breast_hetero_host.csv")}


def sigmoid(u: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-u))


def test_weights_equal_those_of_a_daemon_run_with_the_same_seed(breast_folder):
    """Three parties, one of them with shuffled rows and ids in other case and spacing; mini-batches, L2, held-out rows."""
    parties = split_three_ways(breast_folder)
    report = run_job_file(write_job(breast_folder, parties, **SETTINGS), local=True, workers=1)
    daemon_models = {p["name"]: PartyModel.from_json(Path(p["model"]).read_text()) for p in report["parties"]}

    model = FederatedLogisticRegression(key_bits=TEST_KEY_BITS, **SETTINGS)
    assert model.fit(frames(breast_folder, parties), card_center="guest", label="y") is model

    assert set(model.coef_) == set(daemon_models) == {"guest", "partner_a", "partner_b"}
    for name, written in daemon_models.items():
        ours = model.models_[name]
        assert ours.features == written.features == model.coef_[name].index.tolist()
        np.testing.assert_allclose(ours.mean, written.mean, rtol=0, atol=1e-12)
        np.testing.assert_allclose(ours.scale, written.scale, rtol=0, atol=1e-12)
        np.testing.assert_allclose(model.coef_[name].to_numpy(), written.weights, rtol=0, atol=1e-12)
        assert model.coef_[name].abs().max() > 1e-3   # trained, not left at zero
    assert model.intercept_ == pytest.approx(daemon_models["guest"].intercept, abs=1e-12)
    assert daemon_models["partner_a"].intercept is None
    np.testing.assert_allclose(model.losses_, report["loss"], rtol=0, atol=1e-12)
    assert model.aligned_rows_ == report["aligned_rows"] == 569
    assert model.overlaps_ == report["overlaps"]
    # one builder for both: the same keys, and the same values wherever no deployment is needed
    assert set(model.report_) == set(report)
    deployment_only = {"ledgers", "ledger_head", "ledger_blocks", "settlement"}
    assert all(model.report_[key] is None for key in deployment_only) and report["settlement"]["lines"]
    timings = {"seconds", "alignment_seconds", "obfuscation_seconds", "epoch_seconds"}
    different = {"job", "job_id", "public_key_fingerprint", "parties", "coordinator", "evaluation"}
    for key in sorted(set(report) - deployment_only - timings - different):
        assert model.report_[key] == pytest.approx(report[key], abs=1e-12), key
    assert model.report_["local_only_ks"] is not None


def test_predictions_are_the_sigmoid_of_the_federated_linear_score():
    data = breast()
    model = FederatedLogisticRegression(key_bits=TEST_KEY_BITS, epochs=3, learning_rate=0.3, validation=0.0, seed=5)
    model.fit(data, card_center="guest", label="y")

    # numpy on the raw frames: each party standardises its own columns (population std) and adds w·x̂
    guest, host = (frame.set_index("id").sort_index() for frame in (data["guest"], data["host"]))
    labels = guest.pop("y")
    u = np.full(len(guest), model.intercept_)
    for frame, name in ((guest, "guest"), (host, "host")):
        x = frame[model.coef_[name].index].to_numpy()
        u += ((x - x.mean(axis=0)) / x.std(axis=0)) @ model.coef_[name].to_numpy()
    expected = pd.Series(sigmoid(u), index=guest.index)

    proba = model.predict_proba(data)
    assert proba.columns.tolist() == ["p_good", "p_bad"] and proba.index.name == "id"
    assert proba.index.tolist() == data["guest"]["id"].tolist()   # the card center's row order
    np.testing.assert_allclose(proba["p_bad"], expected.loc[proba.index], rtol=0, atol=1e-12)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    decision = model.decision_function(data)
    np.testing.assert_allclose(decision, pd.Series(u, index=guest.index).loc[decision.index], rtol=0, atol=1e-9)
    assert (model.predict(data) == (decision > 0).astype(int)).all()

    auc = model.score(data)
    assert auc == pytest.approx(roc_auc_score(labels.loc[proba.index], expected.loc[proba.index]), abs=1e-12)
    assert auc == pytest.approx(model.report_["auc"], abs=1e-9)   # the protocol's own masked evaluation, every row
    assert 0.9 < auc <= 1.0


def test_the_key_size_changes_timings_not_results():
    """The masks cancel exactly, so a small prototyping key trains the model a 2048-bit deployment trains."""
    small, large = (
        FederatedLogisticRegression(key_bits=bits, epochs=2, batch_size=100, l2=0.02).fit(breast(), card_center="guest", label="y")
        for bits in (TEST_KEY_BITS, 768)
    )
    assert small.report_["key_bits"] != large.report_["key_bits"]
    for name in small.coef_:
        assert small.coef_[name].to_numpy().tolist() == large.coef_[name].to_numpy().tolist()
    assert small.intercept_ == large.intercept_ and small.losses_ == large.losses_


def test_rows_a_partner_lacks_are_left_out_with_a_warning_and_ids_may_be_the_index():
    data = breast()
    model = FederatedLogisticRegression(key_bits=TEST_KEY_BITS, epochs=2, validation=0.0).fit(
        {"guest": Party(data["guest"], label="y"), "host": data["host"]}
    )
    full = model.predict_proba(data)
    shuffled = data["guest"].sample(frac=1.0, random_state=1).set_index("id")   # ids as the index, new row order
    lacking = data["host"].iloc[40:]                                           # the host lacks 40 applicants
    with pytest.warns(UserWarning, match=r"40 of 569 card center rows are not held by every party \(host lacks 40\)"):
        proba = model.predict_proba({"guest": shuffled, "host": lacking})
    kept = [i for i in shuffled.index if i in set(lacking["id"])]
    assert proba.index.tolist() == kept
    pd.testing.assert_frame_equal(proba, full.loc[kept], check_exact=True)
    with pytest.warns(UserWarning):
        assert model.score({"guest": shuffled, "host": lacking}) == pytest.approx(
            roc_auc_score(shuffled.loc[kept, "y"], full.loc[kept, "p_bad"]), abs=1e-12)


def test_several_id_columns_index_the_predictions_by_all_of_them():
    """Ids split over two columns (as "phone" and "national_id" might be): same rows, same full-batch model."""
    def split(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(block=frame["id"] // 100, item=frame["id"] % 100).drop(columns=["id"])

    data = breast()
    settings = dict(key_bits=TEST_KEY_BITS, epochs=2, validation=0.0, batch_size=0)
    single = FederatedLogisticRegression(**settings).fit(data, card_center="guest", label="y")
    double = FederatedLogisticRegression(**settings).fit(
        {name: split(frame) for name, frame in data.items()}, card_center="guest", label="y", id_columns=["block", "item"])
    for name in single.coef_:
        np.testing.assert_allclose(double.coef_[name], single.coef_[name], rtol=0, atol=1e-12)
    proba = double.predict_proba({name: split(frame) for name, frame in data.items()})
    assert proba.index.names == ["block", "item"]
    ids = [block * 100 + item for block, item in proba.index]
    assert ids == data["guest"]["id"].tolist()
    np.testing.assert_allclose(proba["p_bad"], single.predict_proba(data)["p_bad"].loc[ids], rtol=0, atol=1e-12)
    with pytest.raises(DataError, match="no applicant of the card center's frame is held by every party"):
        double.predict_proba({"guest": split(data["guest"]).iloc[:5], "host": split(data["host"]).iloc[5:]})


def error_of_csv(frame: pd.DataFrame, folder: Path, party: str, label: str | None) -> str:
    path = folder / f"{party}.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError) as caught:
        load_party_table(path, ["id"], label, party=party)
    return str(caught.value)


def as_frame_error(csv_error: str, party: str) -> str:
    """The CSV message with the file named as a DataFrame and file lines as .iloc positions (header = line 1)."""
    text = csv_error.replace(f"party {party!r}: {party}.csv:", f"party {party!r}: DataFrame:")
    text = re.sub(r"lines (\d+) and (\d+)", lambda m: f".iloc[{int(m[1]) - 2}] and .iloc[{int(m[2]) - 2}]", text)
    return re.sub(r"line (\d+)", lambda m: f".iloc[{int(m[1]) - 2}]", text)


def _nan(frame):
    frame.loc[7, "x3"] = np.nan


def _inf(frame):
    frame.loc[9, "x0"] = np.inf


def _text(frame):
    frame["x2"] = frame["x2"].astype(object)
    frame.loc[40, "x2"] = "n/a?"


def _duplicate(frame):
    frame.loc[12, "id"] = frame.loc[3, "id"]


def _no_id(frame):
    frame.columns = ["key" if c == "id" else c for c in frame.columns]


def _empty_id(frame):
    frame["id"] = frame["id"].astype(object)
    frame.loc[20, "id"] = None


def _bad_label(frame):
    frame.loc[30, "y"] = 2


def _one_class(frame):
    frame["y"] = 1


BAD = [
    ("host", _nan, "column 'x3' has 1 missing or infinite values (first at .iloc[7])"),
    ("host", _inf, "column 'x0' has 1 missing or infinite values (first at .iloc[9])"),
    ("host", _text, "column 'x2' is not numeric on 1 rows (first at .iloc[40])"),
    ("host", _duplicate, "2 rows share an id with another row (first at .iloc[3] and .iloc[12])"),
    ("host", _no_id, "id column 'id' not found (columns: key, x0, x1"),
    ("host", _empty_id, "id column 'id' is empty on 1 rows (first at .iloc[20])"),
    ("guest", _bad_label, "label column 'y' must hold 0 or 1; 1 rows do not (first at .iloc[30])"),
    ("guest", _one_class, "label column 'y' holds only 1s"),
]


@pytest.mark.parametrize("party, spoil, fragment", BAD, ids=[b[1].__name__.strip("_") for b in BAD])
def test_bad_frames_give_the_csv_loaders_error(tmp_path, party, spoil, fragment):
    data = breast()
    spoil(data[party])
    expected = as_frame_error(error_of_csv(data[party], tmp_path, party, "y" if party == "guest" else None), party)
    model = FederatedLogisticRegression(key_bits=TEST_KEY_BITS, epochs=1)
    with pytest.raises(DataError) as caught:
        model.fit(data, card_center="guest", label="y")
    assert str(caught.value) == expected
    assert str(caught.value).startswith(f"party {party!r}: DataFrame: ") and fragment in str(caught.value)
    count("bad files tried")


def test_scoring_frames_are_checked_too():
    data = breast()
    model = FederatedLogisticRegression(key_bits=TEST_KEY_BITS, epochs=1, validation=0.0)
    with pytest.raises(NotFittedError):
        model.predict_proba(data)
    model.fit(data, card_center="guest", label="y")
    with pytest.raises(ConfigError, match="party 'host' is missing: the model was trained with guest, host"):
        model.predict_proba({"guest": data["guest"]})
    with pytest.raises(DataError, match="party 'host': DataFrame: feature column 'x4' of the model not found"):
        model.predict_proba({"guest": data["guest"], "host": data["host"].drop(columns=["x4"])})
    spoiled = data["host"].copy()
    spoiled.loc[3, "x1"] = np.nan
    with pytest.raises(DataError, match=re.escape("party 'host': DataFrame: column 'x1' has 1 missing or infinite values (first at .iloc[3])")):
        model.predict_proba({"guest": data["guest"], "host": spoiled})
    with pytest.raises(DataError, match="label column 'y' not found"):
        model.score({"guest": data["guest"].drop(columns=["y"]), "host": data["host"]})
    # the label is not a feature: scoring frames need not carry it, and extra columns are ignored
    plain = model.predict_proba({"guest": data["guest"].drop(columns=["y"]), "host": data["host"].assign(extra=1.0)})
    pd.testing.assert_frame_equal(plain, model.predict_proba(data))
    floats = data["host"].astype({"id": float})
    with pytest.raises(DataError, match="id column 'id' holds floating-point numbers"):
        model.predict_proba({"guest": data["guest"], "host": floats})


def test_which_party_is_the_card_center_must_be_clear():
    data = breast()
    model = FederatedLogisticRegression(key_bits=TEST_KEY_BITS, epochs=1)
    with pytest.raises(ConfigError, match="say which party is the card center"):
        model.fit(data)
    with pytest.raises(ConfigError, match="needs its label column"):
        model.fit(data, card_center="guest")
    with pytest.raises(ConfigError, match="card_center 'bank' is not one of the parties"):
        model.fit(data, card_center="bank", label="y")
    with pytest.raises(ConfigError, match="at least one partner"):
        model.fit({"guest": data["guest"]}, card_center="guest", label="y")
    with pytest.raises(ConfigError, match="learning_rate must be a positive number"):
        model.set_params(learning_rate=-1.0).fit(data, card_center="guest", label="y")


def test_parameters_are_the_job_files_and_clone_round_trips():
    model = FederatedLogisticRegression()
    params = model.get_params()
    # the same names and defaults as a job file's [job] table
    spec = parse_job({"job": {"name": "defaults"}, "parties": [
        {"name": "bank", "data": "a.csv", "id": "id", "label": "y"}, {"name": "bureau", "data": "b.csv", "id": "id"}]})
    for name, value in params.items():
        if name not in ("n_jobs", "verbose"):
            assert getattr(spec, name) == value, name

    tuned = FederatedLogisticRegression(epochs=4, key_bits=1024, l2=0.1, batch_size=256, n_jobs=2)
    copy = clone(tuned)
    assert copy is not tuned and copy.get_params() == tuned.get_params()
    assert FederatedLogisticRegression(**tuned.get_params()).get_params() == tuned.get_params()
    assert tuned.set_params(epochs=2, seed=3) is tuned and (tuned.epochs, tuned.seed) == (2, 3)
    assert "epochs=2" in repr(tuned)

    fitted = FederatedLogisticRegression(key_bits=TEST_KEY_BITS, epochs=1).fit(breast(), card_center="guest", label="y")
    unfitted = clone(fitted)
    assert unfitted.get_params() == fitted.get_params() and not hasattr(unfitted, "coef_")
    with pytest.raises(NotFittedError):
        unfitted.decision_function(breast())


def test_the_package_exports_the_estimator_without_importing_scikit_learn_up_front():
    import subprocess
    import sys

    probe = "import sys, fedscore; assert 'sklearn' not in sys.modules; fedscore.FederatedLogisticRegression; print('ok')"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout == "ok\n"
    assert fedscore.Party is Party
