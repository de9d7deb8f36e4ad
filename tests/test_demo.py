"""The one real end-to-end run: the bundled demo consortium with 2048-bit keys, through daemons."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedscore.job_file import load_job
from fedscore.model.model_file import PartyModel
from fedscore.protocol.training.simulation import build_consortium, load_tables

from conftest import trained_weights
from test_protocol import reference


@pytest.mark.slow
def test_demo_trains_three_parties_with_2048_bit_keys(tmp_path, keypair, inline_pool):
    workdir = tmp_path / "demo"
    done = subprocess.run(
        # five epochs: the card center's secret start (one logit per row) has mostly washed out by then
        [sys.executable, "-m", "fedscore", "demo", "--workdir", str(workdir), "--epochs", "5"],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "epoch 5/5" in done.stderr     # progress on stderr, the results on stdout
    assert "card center alone" in done.stdout and "federated (3 parties)" in done.stdout

    report = json.loads((workdir / "report.json").read_text())
    page = (workdir / "report.html").read_text()
    # ROC, KS, loss, P(default) histogram, stability, weights, variance shares, reliability, points histogram
    assert "fedscore report: default-credit" in page and page.count('src="data:image/png;base64,') == 9
    assert report["scorecard"] and report["calibration"] and abs(report["mean_pd"] - report["observed_default_rate"]) < 0.03
    assert all(Path(p["report"]).is_file() for p in report["parties"])   # each party's own page
    ids = {
        name: set(pd.read_csv(workdir / f"{name}.csv")[column])
        for name, column in [("card_center", "id"), ("bureau", "customer_id"), ("ecommerce", "id")]
    }
    common = ids["card_center"] & ids["bureau"] & ids["ecommerce"]
    assert report["aligned_rows"] == report["rows"] == len(common)
    assert report["overlaps"] == {p: len(ids["card_center"] & ids[p]) for p in ("bureau", "ecommerce")}
    assert 0.85 < report["overlaps"]["bureau"] / len(ids["card_center"]) < 0.95
    assert len(ids["bureau"] - ids["card_center"]) > 1000  # partners know people the card center never saw
    assert report["key_bits"] == 2048 and report["test_rows"] == round(len(common) * 0.3)
    assert "aligned by private set intersection" in done.stdout
    assert [p["name"] for p in report["parties"]] == ["card_center", "bureau", "ecommerce"]
    # the partners' columns are worth having: well above the card center alone
    assert report["test_auc"] > report["local_only_test_auc"] + 0.04
    assert 0.55 < report["local_only_test_auc"] < 0.68

    # it ends by scoring its new applicants online, consents checked, fees settled on the scoring chain
    scored = pd.read_csv(workdir / "scored.csv", keep_default_na=False)
    assert len(scored) == 10 and (scored["error"] == "").all()
    assert scored["partners_missing"].tolist()[-2:] == ["ecommerce", "bureau;ecommerce"]
    assert "scoring settlement #1: card_center owes bureau" in done.stdout

    # the same five epochs in plaintext numpy, from the card center's secret start its model file records, give
    # the same weights
    spec, base = load_job(workdir / "job.toml")
    sessions = build_consortium(spec, load_tables(spec, base), inline_pool, keypair)
    sessions.card_center.start = np.array(PartyModel.from_json(Path(report["parties"][0]["model"]).read_text()).start)
    expected, _ = reference(sessions, quantised=True)
    weights = trained_weights(report)
    for name, want in zip(["card_center", "bureau", "ecommerce"], expected):
        np.testing.assert_allclose(weights[name], want, rtol=0, atol=1e-9)
