"""The notebook estimator: the same protocol as the daemons, DataFrames in and out, scikit-learn's conventions."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

import fedscore
from fedscore import FederatedLogisticRegression, Party
from fedscore.job import JobSpec
from fedscore.job_file import parse_job
from fedscore.errors import ConfigError, DataError
from fedscore.model.data import load_party_table, table_from_frame
from fedscore.model.model_file import PartyModel
from fedscore.model.rows import split_rows
from fedscore.cli.runner import run_job_file

from conftest import DATA, TEST_KEY_BITS, split_three_ways, write_job
from faults import count

SETTINGS = dict(epochs=3, batch_size=128, l2=0.01, learning_rate=0.3, validation=0.25, seed=11, momentum=0.0)


@pytest.fixture
def pinned_start(monkeypatch):
    """The card center's start drawn from a fixed seed, for tests comparing two fits (a job's start is secret
    and new in every job: fedscore.protocol.training.start)."""
    from fedscore.protocol.training import card_center
    from fedscore.protocol.training.start import secret_start

    monkeypatch.setattr(card_center, "secret_start", lambda matrix: secret_start(matrix, rng=np.random.default_rng(0)))


def frames(folder: Path, parties: list[dict]) -> dict[str, pd.DataFrame]:
    """Each party's CSV as a data scientist would load it: plain pd.read_csv."""
    return {p["name"]: pd.read_csv(folder / p["data"]) for p in parties}


def breast() -> dict[str, pd.DataFrame]:
    return {"guest": pd.read_csv(DATA / "breast_hetero_guest.csv"), "host": pd.read_csv(DATA / "breast_hetero_host.csv")}


def sigmoid(u: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-u))


def test_weights_equal_those_of_a_daemon_run_with_the_same_seed(breast_folder, monkeypatch):
    """Three parties, one of them with shuffled rows and ids in other case and spacing; mini-batches, L2, held-out rows.
    The card center's start is secret and new in every job: the estimator here starts where the daemon run's model
    file says its card center started, and everything else follows exactly."""
    from fedscore.protocol.training import card_center

    parties = split_three_ways(breast_folder)
    job_file = write_job(breast_folder, parties, **SETTINGS)
    job_file.write_text(job_file.read_text() + '\n[binning]\nmethod = "none"\n')
    report = run_job_file(job_file, local=True, workers=1)
    daemon_models = {p["name"]: PartyModel.from_json(Path(p["model"]).read_text()) for p in report["parties"]}
    daemon_start = np.array(daemon_models["guest"].start)
    assert np.any(daemon_start != 0) and all(daemon_models[name].start is None for name in ("partner_a", "partner_b"))
    monkeypatch.setattr(card_center, "secret_start", lambda matrix: daemon_start.copy())

    model = FederatedLogisticRegression(key_bits=TEST_KEY_BITS, binning="none", **SETTINGS)
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
    assert model.models_["guest"].calibration == pytest.approx(daemon_models["guest"].calibration, abs=1e-12)
    assert model.calibration_.slope == pytest.approx(daemon_models["guest"].calibration["slope"], abs=1e-12)
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
        assert_close(model.report_[key], report[key], key)
    assert model.report_["local_only_ks"] is not None


def assert_close(ours: object, theirs: object, where: str) -> None:
    """Equal to 1e-12 wherever numbers, through lists and dicts (the report's tables)."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and set(ours) == set(theirs), where
        for key in theirs:
            assert_close(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), where
        for index, (a, b) in enumerate(zip(ours, theirs)):
            assert_close(a, b, f"{where}[{index}]")
    else:
        assert ours == pytest.approx(theirs, abs=1e-12), where


def test_raw_columns_predict_the_calibrated_sigmoid_of_the_federated_linear_score():
    data = breast()
    model = FederatedLogisticRegression(key_bits=TEST_KEY_BITS, epochs=3, learning_rate=0.3, validation=0.0, seed=5,
                                        binning="none")
    model.fit(data, card_center="guest", label="y")
    assert not model.models_["guest"].binned and model.coef_["guest"].index.name == "feature"

    # numpy on the raw frames: each party standardises its own columns (population std) and adds w·x̂
    guest, host = (frame.set_index("id").sort_index() for frame in (data["guest"], data["host"]))
    labels = guest.pop("y")
    u = np.full(len(guest), model.intercept_)
    for frame, name in ((guest, "guest"), (host, "host")):
        x = frame[model.coef_[name].index].to_numpy()
        u += ((x - x.mean(axis=0)) / x.std(axis=0)) @ model.coef_[name].to_numpy()
    slope, shift = model.models_["guest"].calibration["slope"], model.models_["guest"].calibration["intercept"]
    assert slope > 0 and (slope, shift) != (1.0, 0.0)
    u = slope * u + shift
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


def test_the_key_size_changes_timings_not_results(pinned_start):
    """The masks cancel exactly, so a small prototyping key trains the model a 2048-bit deployment trains."""
    small, large = (
        FederatedLogisticRegression(key_bits=bits, epochs=2, batch_size=100, l2=0.02, min_rows_per_column=0).fit(
            breast(), card_center="guest", label="y")
        for bits in (TEST_KEY_BITS, 768)
    )
    assert small.report_["key_bits"] != large.report_["key_bits"]
    for name in small.coef_:
        assert small.coef_[name].to_numpy().tolist() == large.coef_[name].to_numpy().tolist()
    assert small.intercept_ == large.intercept_ and small.losses_ == large.losses_


def test_rows_a_partner_lacks_are_left_out_with_a_warning_and_ids_may_be_the_index():
    data = breast()
    model = FederatedLogisticRegression(key_bits=TEST_KEY_BITS, epochs=2, validation=0.0, min_rows_per_column=0).fit(
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
    assert model.score({"guest": shuffled, "host": lacking}) == pytest.approx(   # warned once already
        roc_auc_score(shuffled.loc[kept, "y"], full.loc[kept, "p_bad"]), abs=1e-12)


def test_the_rows_left_out_warning_comes_once_per_model_and_cause():
    """A notebook calls predict_proba, predict and score on the same frames: one warning, not one per call;
    frames lacking other rows warn again, and so does a new fit."""
    data = breast()
    model = FederatedLogisticRegression(key_bits=TEST_KEY_BITS, epochs=1, min_rows_per_column=0, binning="none")
    model.fit(data, card_center="guest", label="y")
    lacking = {"guest": data["guest"], "host": data["host"].iloc[40:]}
    other = {"guest": data["guest"], "host": data["host"].iloc[:500]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")   # no filter hides a repeat: any repeat is the estimator's own
        for _ in range(2):
            model.predict_proba(lacking), model.predict(lacking), model.decision_function(lacking), model.score(lacking)
        model.predict_proba(other), model.score(other)
        model.predict_proba(data)                                 # every row held: nothing to say
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert messages == [
        "40 of 569 card center rows are not held by every party (host lacks 40); they are left out",
        "69 of 569 card center rows are not held by every party (host lacks 69); they are left out",
    ]
    assert all(w.filename == __file__ for w in caught)           # pointed at the caller's line
    model.fit(data, card_center="guest", label="y")
    with pytest.warns(UserWarning, match="40 of 569"):
        model.predict_proba(lacking)


def test_fit_trains_on_every_row_it_is_given_unless_told_to_hold_out():
    """scikit-learn's habit: validation is 0 in the estimator (a job file's default stays 0.3)."""
    data = breast()
    settings = dict(key_bits=TEST_KEY_BITS, epochs=1, min_rows_per_column=0, binning="none")
    model = FederatedLogisticRegression(**settings).fit(data, card_center="guest", label="y")
    assert model.validation == 0.0 and JobSpec.validation == 0.3
    assert model.report_["train_rows"] == model.aligned_rows_ == 569 and model.report_["test_rows"] == 0
    assert model.report_["test_auc"] is None
    held = FederatedLogisticRegression(**settings, validation=0.3).fit(data, card_center="guest", label="y")
    assert (held.report_["train_rows"], held.report_["test_rows"]) == (398, 171) and held.report_["test_auc"] > 0.9


def test_several_id_columns_index_the_predictions_by_all_of_them(pinned_start):
    """Ids split over two columns (as "phone" and "national_id" might be): same rows, same full-batch model."""
    def split(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(block=frame["id"] // 100, item=frame["id"] % 100).drop(columns=["id"])

    data = breast()
    settings = dict(key_bits=TEST_KEY_BITS, epochs=2, validation=0.0, batch_size=0, min_rows_per_column=0)
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
        load_party_table(path, ["id"], label, party=party, shown=path.name)   # as a job names it
    return str(caught.value)


def as_frame_error(csv_error: str, party: str) -> str:
    """The CSV message with the file named as a DataFrame and file lines as .iloc positions (header = line 1)."""
    text = csv_error.replace(f"party {party!r}: {party}.csv:", f"party {party!r}: DataFrame:")
    text = text.replace("read as comma-separated, the header has", "the frame has")
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
    ("host", _nan, "column 'x3' has 1 missing or infinite value (first at .iloc[7])"),
    ("host", _inf, "column 'x0' has 1 missing or infinite value (first at .iloc[9])"),
    ("host", _text, "column 'x2' is not numeric on 1 row (first at .iloc[40])"),
    ("host", _duplicate, "2 rows share an id with another row (first at .iloc[3] and .iloc[12])"),
    ("host", _no_id, "id column 'id' not found (the frame has 21 columns: 'key', 'x0', 'x1'"),
    ("host", _empty_id, "id column 'id' is empty on 1 row (first at .iloc[20])"),
    ("guest", _bad_label, "label column 'y' must hold 0 or 1; 1 row does not (first at .iloc[30])"),
    ("guest", _one_class, "label column 'y' holds only 1s"),
]


@pytest.mark.parametrize("party, spoil, fragment", BAD, ids=[b[1].__name__.strip("_") for b in BAD])
def test_bad_frames_give_the_csv_loaders_error(tmp_path, party, spoil, fragment):
    data = breast()
    spoil(data[party])
    expected = as_frame_error(error_of_csv(data[party], tmp_path, party, "y" if party == "guest" else None), party)
    model = FederatedLogisticRegression(key_bits=TEST_KEY_BITS, epochs=1, binning="none")   # raw: every cell a number
    with pytest.raises(DataError) as caught:
        model.fit(data, card_center="guest", label="y")
    assert str(caught.value) == expected
    assert str(caught.value).startswith(f"party {party!r}: DataFrame: ") and fragment in str(caught.value)
    count("bad files tried")


def test_scoring_frames_are_checked_too():
    data = breast()
    model = FederatedLogisticRegression(key_bits=TEST_KEY_BITS, epochs=1, validation=0.0, binning="none")
    with pytest.raises(NotFittedError):
        model.predict_proba(data)
    model.fit(data, card_center="guest", label="y")
    with pytest.raises(ConfigError, match="party 'host' is missing: the model was trained with guest, host"):
        model.predict_proba({"guest": data["guest"]})
    with pytest.raises(DataError, match="party 'host': DataFrame: feature column 'x4' of the model not found"):
        model.predict_proba({"guest": data["guest"], "host": data["host"].drop(columns=["x4"])})
    spoiled = data["host"].copy()
    spoiled.loc[3, "x1"] = np.nan
    with pytest.raises(DataError, match=re.escape("party 'host': DataFrame: column 'x1' has 1 missing or infinite value (first at .iloc[3])")):
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
        if name not in ("n_jobs", "verbose", "validation"):
            assert getattr(spec, name) == value, name
    assert (params["validation"], spec.validation) == (0.0, 0.3)   # fit trains on all it is given; a job holds out

    tuned = FederatedLogisticRegression(epochs=4, key_bits=1024, l2=0.1, batch_size=256, n_jobs=2)
    copy = clone(tuned)
    assert copy is not tuned and copy.get_params() == tuned.get_params()
    assert FederatedLogisticRegression(**tuned.get_params()).get_params() == tuned.get_params()
    assert tuned.set_params(epochs=2, seed=3) is tuned and (tuned.epochs, tuned.seed) == (2, 3)
    assert "epochs=2" in repr(tuned)

    fitted = FederatedLogisticRegression(key_bits=TEST_KEY_BITS, epochs=1, min_rows_per_column=0).fit(
        breast(), card_center="guest", label="y")
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


# -- binned scorecards --------------------------------------------------------

BINNED = dict(key_bits=TEST_KEY_BITS, epochs=20, batch_size=0, learning_rate=1.0, momentum=0.8, validation=0.25, seed=3)


def synthetic(rows: int = 1000, seed: int = 0) -> dict[str, pd.DataFrame]:
    """A card center with a skewed income (some missing) and a text region; a bureau with a debt ratio (some
    missing) and late-payment counts, rows in another order. Ids all have 4 digits, so text order is number order."""
    rng = np.random.default_rng(seed)
    income = rng.lognormal(10, 0.5, rows)
    region = rng.choice(["north", "south", "east", "west"], rows, p=[0.4, 0.3, 0.2, 0.1])
    debt = rng.normal(0, 1, rows)
    late = rng.poisson(1.0, rows).astype(float)
    u = -1.5 - 1.6 * (np.log(income) - 10) + 0.9 * debt + 0.5 * late + np.where(region == "west", 0.8, 0.0)
    y = (rng.random(rows) < 1 / (1 + np.exp(-u))).astype(int)
    ids = rng.permutation(rows) + 1000
    center = pd.DataFrame({"id": ids, "income": income, "region": region, "y": y})
    center.loc[rng.random(rows) < 0.08, "income"] = np.nan
    bureau = pd.DataFrame({"id": ids, "debt": debt, "late": late}).sample(frac=1.0, random_state=1)
    bureau.loc[rng.random(rows) < 0.1, "debt"] = np.nan
    return {"bank": center, "bureau": bureau}


def bins_by_hand(document: dict, values: pd.Series) -> np.ndarray:
    """A feature's bin for each value, read off the model file's bins with pandas and numpy alone."""
    if document["kind"] == "categorical":
        lookup = dict(document["categories"])
        texts = values.astype(object)
        return np.array([document["missing"] if pd.isna(t) else lookup.get(str(t), document["other"]) for t in texts])
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    found = np.asarray(document["range_bins"])[np.searchsorted(np.asarray(document["edges"]), numbers, side="right")]
    for value, index in document.get("specials", []):
        found[numbers == value] = index
    found[np.isnan(numbers)] = document["missing"]
    return found


def log_odds_by_hand(model: FederatedLogisticRegression, data: dict[str, pd.DataFrame]) -> pd.Series:
    """u = intercept + Σ over parties and features of the weight of the row's bin, by the card center's ids."""
    frames = {name: frame.set_index("id") for name, frame in data.items()}
    index = frames["bank"].index
    u = pd.Series(model.models_["bank"].intercept, index=index)
    for name, party in model.models_.items():
        offset = 0
        for document in party.bins:
            weights = np.asarray(party.weights[offset: offset + len(document["labels"])])
            offset += len(document["labels"])
            column = frames[name][document["feature"]].reindex(index)
            u += weights[bins_by_hand(document, column)]
        assert offset == len(party.weights)
    return u


def training_ids(frame: pd.DataFrame, validation: float, seed: int) -> np.ndarray:
    """The ids the job trains on: the aligned rows are in id order, split by the job's seed."""
    ids = np.sort(frame["id"].to_numpy())
    return ids[split_rows(len(ids), validation, seed)[0]]


def test_a_binned_fit_takes_text_columns_and_missing_values():
    data = synthetic()
    model = FederatedLogisticRegression(**BINNED).fit(data, card_center="bank", label="y")

    bank, bureau = model.models_["bank"], model.models_["bureau"]
    assert bank.binned and bureau.binned and bank.features == ["income", "region"] and bureau.features == ["debt", "late"]
    assert {"income: missing", "region: west"} <= set(model.coef_["bank"].index)   # 8% missing: a bin of its own
    assert "debt: missing" in model.coef_["bureau"].index
    assert model.coef_["bank"].index.tolist() == bank.binner.columns and model.coef_["bank"].abs().max() > 0.05
    assert len(model.losses_) == BINNED["epochs"] and model.losses_[-1] < model.losses_[0]
    assert 0.7 < model.report_["test_auc"] <= 1.0

    # the scorecard: every card-center attribute, its weight, and points = −slope·w·20/ln 2
    card = model.scorecard_
    assert card.columns.tolist()[:4] == ["characteristic", "bin", "weight", "points"]
    assert list(zip(card["characteristic"], card["bin"])) == [
        (d["feature"], label) for d in bank.bins for label in d["labels"]]
    np.testing.assert_allclose(card["weight"], bank.weights, rtol=0, atol=1e-12)
    np.testing.assert_allclose(card["points"], -model.calibration_.slope * np.asarray(bank.weights) * 20 / np.log(2),
                               rtol=1e-9, atol=1e-9)
    region = card[card["characteristic"] == "region"]
    assert region["bin"].str.startswith("west").tolist() == (region["points"] == region["points"].min()).tolist()

    # information value of the card center's columns on its training rows, by hand from its bins
    train = data["bank"].set_index("id").loc[training_ids(data["bank"], BINNED["validation"], BINNED["seed"])]
    for document in bank.bins:
        rows = pd.crosstab(bins_by_hand(document, train[document["feature"]]), train["y"])
        goods, bads = rows[0] / rows[0].sum(), rows[1] / rows[1].sum()
        iv = float(((goods - bads) * np.log(goods / bads)).sum())
        assert model.iv_[("bank", document["feature"])] == pytest.approx(iv, rel=1e-9)
    assert model.iv_[("bank", "income")] > model.iv_[("bank", "region")] > 0
    assert model.iv_.index.names == ["party", "feature"]


def test_binned_predict_proba_is_the_calibrated_sigmoid_of_the_bin_weights():
    data = synthetic()
    model = FederatedLogisticRegression(**BINNED).fit(data, card_center="bank", label="y")
    u = log_odds_by_hand(model, data)

    # the calibration is the exact logistic fit of the label on u over the training rows (scikit-learn, no penalty)
    train = training_ids(data["bank"], BINNED["validation"], BINNED["seed"])
    labels = data["bank"].set_index("id")["y"]
    reference = LogisticRegression(C=np.inf, tol=1e-12, max_iter=1000).fit(u.loc[train].to_frame(), labels.loc[train])
    slope, shift = model.models_["bank"].calibration["slope"], model.models_["bank"].calibration["intercept"]
    assert slope == pytest.approx(reference.coef_[0, 0], rel=1e-5) and shift == pytest.approx(reference.intercept_[0], abs=1e-5)
    assert abs(slope - 1.0) > 0.05   # the Taylor-trained score's level is off; calibration moves it

    proba = model.predict_proba(data)
    assert proba.index.tolist() == data["bank"]["id"].tolist()
    expected = sigmoid(slope * u + shift).loc[proba.index]
    np.testing.assert_allclose(proba["p_bad"], expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.decision_function(data), (slope * u + shift).loc[proba.index], rtol=0, atol=1e-9)
    assert (model.predict(data) == (expected > 0.5).astype(int)).all()

    # calibrated: the mean PD on the training rows is the training default rate
    assert proba["p_bad"].loc[train].mean() == pytest.approx(labels.loc[train].mean(), abs=0.005)
    uncalibrated = sigmoid(u.loc[train]).mean()
    assert abs(uncalibrated - labels.loc[train].mean()) > abs(proba["p_bad"].loc[train].mean() - labels.loc[train].mean())

    # scoring frames may hold missing values and categories never seen in training: they score in their bins
    unseen = {"bank": data["bank"].assign(region="atlantis", income=np.nan), "bureau": data["bureau"]}
    changed = model.predict_proba(unseen)
    np.testing.assert_allclose(changed["p_bad"], sigmoid(slope * log_odds_by_hand(model, unseen) + shift).loc[changed.index],
                               rtol=0, atol=1e-12)


def test_bool_labels_train_the_model_zero_one_labels_train(pinned_start):
    data = synthetic(rows=600, seed=4)
    settings = {**BINNED, "epochs": 3}
    numbers = FederatedLogisticRegression(**settings).fit(data, card_center="bank", label="y")
    flags = {"bank": data["bank"].assign(y=data["bank"]["y"].astype(bool)), "bureau": data["bureau"]}
    assert flags["bank"]["y"].dtype == bool
    booleans = FederatedLogisticRegression(**settings).fit(flags, card_center="bank", label="y")
    for name in numbers.models_:
        assert booleans.models_[name].bins == numbers.models_[name].bins
        np.testing.assert_array_equal(booleans.coef_[name], numbers.coef_[name])
    assert booleans.calibration_ == numbers.calibration_ and booleans.losses_ == numbers.losses_
    pd.testing.assert_frame_equal(booleans.predict_proba(flags), numbers.predict_proba(data))
    assert booleans.score(flags) == pytest.approx(numbers.score(data), abs=1e-12)


def test_true_and_false_label_cells_read_as_one_and_zero_in_a_csv_and_in_a_frame(tmp_path):
    """A label column written by pandas from booleans, pandas' nullable booleans or Python objects; other words
    stay errors."""
    path = tmp_path / "bank.csv"
    path.write_text("id,y,x\n1,True,0.5\n2,False,1.5\n3,true,2.0\n4,false,0.1\n5,1,3.0\n")
    assert load_party_table(path, ["id"], "y").labels.tolist() == [1, 0, 1, 0, 1]
    frame = pd.DataFrame({"id": [1, 2, 3, 4], "y": [True, False, True, False], "x": [0.5, 1.5, 2.0, 0.1]})
    for labels in (frame["y"], frame["y"].astype("boolean"), frame["y"].astype(object), frame["y"].astype(np.bool_)):
        assert table_from_frame(frame.assign(y=labels), ["id"], "y").labels.tolist() == [1, 0, 1, 0]
    path.write_text("id,y,x\n1,yes,0.5\n2,no,1.5\n")
    with pytest.raises(DataError, match="label column 'y' must hold 0 or 1; 2 rows do not"):
        load_party_table(path, ["id"], "y")


def test_binning_is_given_as_settings_a_dict_or_a_method_and_raw_columns_stay_raw():
    from fedscore.estimator_inputs import as_binning
    from fedscore.job import Binning

    assert as_binning("none") == Binning(method="none") and not as_binning("none").enabled
    assert as_binning({"max_bins": 4, "special_values": {"PAY_0": [-2, -1]}}) == Binning(
        max_bins=4, special_values=(("PAY_0", (-2.0, -1.0)),))
    assert FederatedLogisticRegression().binning == Binning()
    with pytest.raises(ConfigError, match="unknown setting 'bins'"):
        as_binning({"bins": 3})
    with pytest.raises(ConfigError, match="method must be one of quantile, none"):
        FederatedLogisticRegression(binning="woe", key_bits=TEST_KEY_BITS).fit(breast(), card_center="guest", label="y")

    data = synthetic(rows=600, seed=5)
    raw = FederatedLogisticRegression(**{**BINNED, "epochs": 2}, binning={"method": "none"}, protected=["region"])
    raw.fit({"bank": data["bank"].assign(region=(data["bank"]["region"] == "west").astype(float)).fillna(0.0),
             "bureau": data["bureau"].fillna(0.0)}, card_center="bank", label="y")
    assert raw.models_["bank"].features == ["income"] and raw.models_["bank"].protected == ["region"]
    assert raw.scorecard_["bin"].tolist() == ["per standard deviation"]
    assert raw.iv_.index.tolist() == [("bank", "income")] and raw.iv_.iloc[0] > 0
