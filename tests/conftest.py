"""Shared fixtures: small keys and small data unless a test says otherwise."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedscore.crypto.paillier import generate_keypair
from fedscore.crypto.pool import CryptoPool

HERE = Path(__file__).resolve().parent
FAULT_KINDS = ["peer kills and hangs survived", "malformed messages tried", "bad files tried", "leak needles looked for",
               "leaks found", "attacks tried", "attacks succeeded"]


def pytest_terminal_summary(terminalreporter) -> None:
    """One line for a security review: what the fault tests tried in this run, and what they found."""
    from faults import COUNTS

    if COUNTS:
        shown = ", ".join(f"{kind}: {COUNTS.get(kind, 0)}" for kind in FAULT_KINDS)
        terminalreporter.write_line(f"fault tests: {shown}")
DATA = HERE / "data"
SHARED_DATA = HERE.parent.parent / "shared" / "data"
TEST_KEY_BITS = 512  # unit tests only; demos and benchmarks use 2048


@pytest.fixture(scope="session")
def keypair():
    return generate_keypair(TEST_KEY_BITS)


@pytest.fixture(scope="session")
def inline_pool():
    pool = CryptoPool(0, window_bits=8)
    yield pool
    pool.close()


def toml_value(value: object) -> str:
    """A TOML literal for the strings, numbers, booleans and lists test files hold."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def write_job(folder: Path, parties: list[dict], binning: dict | None = None, **job) -> Path:
    """A job file in ``folder``; ``parties`` entries are written as [[parties]] tables, ``binning`` as [binning]."""
    settings = {"name": "test-job", "epochs": 3, "learning_rate": 0.15, "momentum": 0.0, "validation": 0.0,
                "seed": 7, "key_bits": TEST_KEY_BITS,
                # tiny data on purpose: the breast split's 569 rows, up to 200 bins a party
                "min_overlap": 100, "min_rows_per_column": 0, **job}
    lines = ["[job]"] + [f"{k} = {toml_value(v)}" for k, v in settings.items()]
    if binning:
        lines += ["", "[binning]"] + [f"{k} = {toml_value(v)}" for k, v in binning.items()]
    for party in parties:
        lines += ["", "[[parties]]"] + [f"{k} = {toml_value(v)}" for k, v in party.items()]
    path = folder / "job.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def breast_parties() -> list[dict]:
    return [
        {"name": "guest", "data": "breast_hetero_guest.csv", "id": "id", "label": "y"},
        {"name": "host", "data": "breast_hetero_host.csv", "id": "id"},
    ]


@pytest.fixture
def breast_folder(tmp_path: Path) -> Path:
    """The breast split copied into a temporary folder (tests may add files beside it)."""
    for name in ("breast_hetero_guest.csv", "breast_hetero_host.csv"):
        (tmp_path / name).write_bytes((DATA / name).read_bytes())
    return tmp_path


def split_three_ways(folder: Path) -> list[dict]:
    """Split the breast host's 20 columns between two partners: three parties in all."""
    host = pd.read_csv(DATA / "breast_hetero_host.csv")
    host[["id"] + [f"x{i}" for i in range(0, 8)]].to_csv(folder / "partner_a.csv", index=False)
    # shuffled rows and ids with spaces and upper case: the id rule must still align them
    other = host[["id"] + [f"x{i}" for i in range(8, 20)]].sample(frac=1.0, random_state=3)
    other["id"] = [f"  {v} " for v in other["id"]]
    other.to_csv(folder / "partner_b.csv", index=False)
    return [
        {"name": "guest", "data": "breast_hetero_guest.csv", "id": "id", "label": "y"},
        {"name": "partner_a", "data": "partner_a.csv", "id": "id"},
        {"name": "partner_b", "data": "partner_b.csv", "id": "id"},
    ]


def trained_weights(report: dict) -> dict[str, np.ndarray]:
    """Each party's weights as its model file holds them, the intercept last for the card center."""
    from fedscore.model.model_file import PartyModel

    weights = {}
    for party in report["parties"]:
        model = PartyModel.from_json(Path(party["model"]).read_text())
        extra = [] if model.intercept is None else [model.intercept]
        weights[party["name"]] = np.array(model.weights + extra)
    return weights


def descent_from_recorded_start(spec, base: Path, report: dict) -> tuple[dict[str, np.ndarray], list[float]]:
    """Plaintext gradient descent on a job's matrices (built in this process from the same files) from where each
    party's model file in ``report`` says it started (the card center's start is secret and new in every job):
    (weights by party, intercept last; the loss of each epoch). A run's weights are these to 1e-9."""
    from fedscore.model.model_file import PartyModel
    from fedscore.model.taylor import fit_gradient_descent
    from fedscore.protocol.training.simulation import build_consortium, load_tables

    built = build_consortium(spec, load_tables(spec, base), CryptoPool(0), generate_keypair(TEST_KEY_BITS))
    sessions = {s.party: s for s in (built.card_center, *built.partners.values())}
    models = {p["name"]: PartyModel.from_json(Path(p["model"]).read_text()) for p in report["parties"]}
    starts = [np.zeros(s.weights.size) if models[name].start is None else np.array(models[name].start)
              for name, s in sessions.items()]
    weights, losses = fit_gradient_descent(
        [s.train_matrix for s in sessions.values()], built.card_center.train_labels,
        epochs=spec.epochs, learning_rate=spec.learning_rate, l2=spec.l2, momentum=spec.momentum,
        batch_size=spec.batch_size, seed=spec.seed, unpenalised=[s.penalised == 0 for s in sessions.values()],
        gradient_blocks=[s.quantised / s.quantisation for s in sessions.values()], start=starts,
    )
    return dict(zip(sessions, weights)), losses


def assert_descent_from_recorded_start(spec, base: Path, report: dict) -> None:
    """The run's model is exactly gradient descent from its own start (its losses too)."""
    expected, losses = descent_from_recorded_start(spec, base, report)
    for name, weights in trained_weights(report).items():
        np.testing.assert_allclose(weights, expected[name], rtol=0, atol=1e-9)
    # the loss goes through fixed point (and the chain) as a float: equal to 1e-5 on raw columns
    np.testing.assert_allclose(report["loss"][: len(losses)], losses[: len(report["loss"])], rtol=0, atol=1e-5)


def needs_shared_data():
    return pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="the shared data folder is not beside the repository")


def job_naming_the_daemons(running, path):
    """A job file with the running daemons' addresses, as `status` and `run` without --local read it."""
    lines = [f'[coordinator]\naddress = "{running.coordinator_address}"\n', "[job]", 'name = "test-job"', ""]
    for party in running.spec.parties:
        lines += ["[[parties]]", f'name = "{party.name}"', f'data = "{party.data}"', 'id = "id"',
                  f'address = "{party.address}"'] + (['label = "y"'] if party.is_card_center else []) + [""]
    path.write_text("\n".join(lines))
    return path
