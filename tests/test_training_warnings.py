"""The report warns when training stopped while the loss was still moving: in its JSON, the CLI summary and the page."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedscore import FederatedLogisticRegression
from fedscore.cli.commands import _print_report
from fedscore.cli.demo import bundled_data
from fedscore.report.build import LOSS_TOLERANCE, training_warnings
from fedscore.report.html import render_report

from conftest import TEST_KEY_BITS

# the demo's binned data at the old default learning rate 0.15 (momentum 0.8): 13% above the optimal loss at epoch 20
UNDERFIT = [1.2131, 1.0052, 0.7685, 0.6420, 0.6417, 0.6939, 0.7189, 0.6890, 0.6286, 0.5774,
            0.5566, 0.5600, 0.5680, 0.5659, 0.5526, 0.5360, 0.5245, 0.5205, 0.5210, 0.5212]
# learning rate 1.0, momentum 0.8, 40 epochs: the last 6 epochs, 0.07% above the optimal loss
CONVERGED = [0.45891, 0.45887, 0.45885, 0.45886, 0.45884, 0.45882]


def test_a_loss_still_falling_over_the_last_epochs_is_warned_with_its_pace():
    (warning,) = training_warnings(UNDERFIT)
    # means of the last 3 epochs against the 3 before: (0.52090 - 0.53770) / 0.52090 / 3 = -1.08% per epoch
    assert warning == ("loss still falling at the last epoch (-1.08% per epoch over the last 3 epochs): "
                       "train longer (epochs) or raise learning_rate")
    assert training_warnings(CONVERGED) == []
    assert training_warnings([0.69, 0.55]) == [
        "loss still falling at the last epoch (-25.45% in the last epoch): train longer (epochs) or raise learning_rate"]


def test_the_threshold_is_a_share_of_the_loss_per_epoch_and_rising_or_stopped_runs_say_so():
    just_under = [1.0, 1.0, 1.0, 1.0 - 0.9 * LOSS_TOLERANCE * 3, 1.0 - 0.9 * LOSS_TOLERANCE * 3, 1.0 - 0.9 * LOSS_TOLERANCE * 3]
    just_over = [1.0, 1.0, 1.0, 1.0 - 1.1 * LOSS_TOLERANCE * 3, 1.0 - 1.1 * LOSS_TOLERANCE * 3, 1.0 - 1.1 * LOSS_TOLERANCE * 3]
    assert training_warnings(just_under) == [] and len(training_warnings(just_over)) == 1
    (rising,) = training_warnings([0.6, 0.5, 0.45, 0.5, 0.56, 0.6])
    assert rising.startswith("loss rising at the last epoch (+") and "lower learning_rate or momentum" in rising
    assert training_warnings(UNDERFIT, stopped_early=True) == []   # early_stop_tol judged it flat enough
    assert training_warnings([0.69]) == [] and training_warnings([]) == []


def test_the_cli_summary_and_the_page_show_the_warnings(capsys):
    report = {"job": "short", "job_id": "short-0a1b2c3d", "epochs": 2, "train_rows": 400, "aligned_rows": 569,
              "auc": 0.97, "ks": 0.85, "test_auc": None, "loss": [0.69, 0.55], "parties": [],
              "warnings": training_warnings([0.69, 0.55])}
    _print_report(report)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "warning: " + report["warnings"][0]
    page = render_report(report)
    assert "<h2>Warnings</h2><ul><li>loss still falling at the last epoch (-25.45% in the last epoch)" in page
    _print_report({**report, "warnings": []})
    assert "warning" not in capsys.readouterr().out
    assert "<h2>Warnings</h2>" not in render_report({**report, "warnings": []})


def two_parties(rows: int = 1000) -> dict[str, pd.DataFrame]:
    """A sample of the bundled data: a card center with three columns, a bureau with three."""
    data = bundled_data().sample(n=rows, random_state=3)
    center = data[["ID", "LIMIT_BAL", "AGE", "PAY_AMT1"]].rename(columns={"ID": "id"})
    bureau = data[["ID", "PAY_0", "PAY_2", "BILL_AMT1"]].rename(columns={"ID": "id"})
    return {"bank": center.assign(y=data["default.payment.next.month"]), "bureau": bureau}


@pytest.mark.parametrize("binning", ["quantile", "none"])
@pytest.mark.parametrize("epochs, warned", [(2, True), (40, False)])
def test_a_real_fit_s_report_warns_only_when_cut_short(monkeypatch, epochs, warned, binning):
    """The default learning rate and momentum, binned or standardised: 2 epochs are far from done, 40 are done
    (the last 6 epochs' losses agree to 1e-4; the secret start is pinned so the run is the same every time)."""
    from fedscore.protocol.training import card_center
    from fedscore.protocol.training.start import secret_start

    monkeypatch.setattr(card_center, "secret_start", lambda matrix: secret_start(matrix, rng=np.random.default_rng(0)))
    model = FederatedLogisticRegression(key_bits=TEST_KEY_BITS, epochs=epochs, binning=binning, min_overlap=0)
    model.fit(two_parties(), card_center="bank", label="y")
    assert model.report_["warnings"] == training_warnings(model.losses_)
    assert bool(model.report_["warnings"]) is warned
    if warned:
        assert model.report_["warnings"][0].startswith("loss still falling at the last epoch (-")
    else:
        assert max(model.losses_[-6:]) - min(model.losses_[-6:]) < 1e-4


@pytest.mark.parametrize("method", ["quantile", "none"])
def test_the_default_settings_converge_on_the_demo_data_binned_and_standardised(method):
    """Plaintext gradient descent (what a run computes, to 1e-9) on the demo consortium's encoding of the bundled
    data's first 6 000 rows, from six secret starts: at the job's default epochs, learning rate and momentum the
    report never warns; at 20 epochs, binned, it always does (the loss is still falling)."""
    from fedscore.cli.demo import ID, LABEL, PROTECTED, SPLIT, party_rows
    from fedscore.crypto.paillier import generate_keypair
    from fedscore.crypto.pool import CryptoPool
    from fedscore.job import Binning, JobSpec, PartySpec
    from fedscore.model.data import table_from_frame
    from fedscore.model.taylor import fit_gradient_descent
    from fedscore.protocol.training.simulation import build_consortium
    from fedscore.protocol.training.start import secret_start

    data = bundled_data().head(6000)
    frames = {}
    for party, rows in party_rows(len(data)).items():
        held = data.iloc[rows]
        frames[party] = held[[ID, *SPLIT[party]]].rename(columns={ID: "id"}).assign(
            **({"y": held[LABEL]} if party == "card_center" else {}))
    specials = tuple((f"PAY_{i}", (-2.0, -1.0)) for i in (0, 2, 3, 4, 5, 6)) if method == "quantile" else ()
    spec = JobSpec(name="defaults", parties=tuple(
        PartySpec(name=name, data="-", id_columns=("id",), label="y" if name == "card_center" else None) for name in frames),
        key_bits=TEST_KEY_BITS, binning=Binning(method=method, special_values=specials), protected=PROTECTED,
        min_overlap=0).validate()
    tables = {name: table_from_frame(frame, ["id"], "y" if name == "card_center" else None, party=name,
                                     lenient=spec.binning.enabled) for name, frame in frames.items()}
    built = build_consortium(spec, tables, CryptoPool(0), generate_keypair(TEST_KEY_BITS))
    sessions = [built.card_center, *built.partners.values()]

    def warned(epochs: int, seed: int) -> bool:
        start = [secret_start(built.card_center.train_matrix, rng=np.random.default_rng(seed)),
                 *(np.zeros(s.weights.size) for s in sessions[1:])]
        _, losses = fit_gradient_descent(
            [s.train_matrix for s in sessions], built.card_center.train_labels, epochs=epochs,
            learning_rate=spec.learning_rate, momentum=spec.momentum, unpenalised=[s.penalised == 0 for s in sessions],
            start=start)
        return bool(training_warnings(losses))

    assert (spec.epochs, spec.learning_rate, spec.momentum) == (40, 1.0, 0.8)
    assert not any(warned(spec.epochs, seed) for seed in range(6))
    if method == "quantile":
        assert all(warned(20, seed) for seed in range(6))
