"""A card center bringing labels only (an id and a label column, no features) and a partner bringing every
feature: the model an audience query runs at the partner alone (fedscore.protocol.audience). Trained in one
process and compared with plaintext numpy and scikit-learn on the same rows."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from fedscore.job_file import load_job
from fedscore.model import metrics
from fedscore.model.model_file import PartyModel
from fedscore.protocol.scoring.offline import partial_scores
from fedscore.protocol.training.simulation import build_consortium, load_tables, simulate
from fedscore.protocol.training.start import START_LOGITS, secret_start

from conftest import DATA, write_job
from test_protocol import reference

# binning off: standardised columns (learning rate 0.3: 1.0 overshoots them); on: 0/1 attribute columns
ENCODINGS = {
    "standardised": ({"method": "none"}, {"epochs": 40, "learning_rate": 0.3}),
    "binned": ({"method": "quantile", "max_bins": 5}, {"epochs": 20, "learning_rate": 1.0}),
}


def labels_only_parties(folder: Path) -> list[dict]:
    """The breast split's labels alone at the card center (id, y); every one of the host's 20 columns at the partner."""
    guest = pd.read_csv(folder / "breast_hetero_guest.csv")
    guest[["id", "y"]].to_csv(folder / "labels.csv", index=False)
    return [
        {"name": "card_center", "data": "labels.csv", "id": "id", "label": "y"},
        {"name": "ecommerce", "data": "breast_hetero_host.csv", "id": "id"},
    ]


@pytest.fixture(scope="module", params=list(ENCODINGS), ids=list(ENCODINGS))
def trained(request, tmp_path_factory, keypair, inline_pool):
    """One training per encoding, shared by this module's tests (they only read it)."""
    binning, job = ENCODINGS[request.param]
    folder = tmp_path_factory.mktemp(f"labels-only-{request.param}")
    for name in ("breast_hetero_guest.csv", "breast_hetero_host.csv"):
        (folder / name).write_bytes((DATA / name).read_bytes())
    spec, base = load_job(write_job(folder, labels_only_parties(folder), binning=binning,
                                    validation=0.3, batch_size=0, **job))
    consortium = build_consortium(spec, load_tables(spec, base), inline_pool, keypair)
    return consortium, simulate(consortium)


def test_the_model_is_plaintext_gradient_descent_from_the_same_start(trained):
    consortium, result = trained
    center, partner = consortium.card_center, consortium.partners["ecommerce"]
    assert center.train_matrix.shape[1] == 1 and np.all(center.train_matrix == 1.0)   # the intercept column alone
    assert partner.train_matrix.shape[1] >= 20
    expected, losses = reference(consortium, quantised=True)
    for session, want in zip((center, partner), expected):
        np.testing.assert_allclose(session.weights, want, rtol=0, atol=1e-9)
    np.testing.assert_allclose(result.losses, losses, rtol=0, atol=1e-6)
    assert not np.allclose(partner.weights, 0.0)   # the partner's columns did the learning


def test_held_out_auc_is_close_to_scikit_learn_on_the_partners_columns(trained):
    consortium, result = trained
    center, partner = consortium.card_center, consortium.partners["ecommerce"]
    train, test, labels = center.train_rows, center.test_rows, center.labels
    # the same held-out rows, scored by the federated model: the intercept plus the partner's part
    scores = center.weights[-1] + partner.matrix @ partner.weights
    assert result.metrics["test_auc"] == pytest.approx(metrics.auc(labels[test], scores[test]), abs=1e-9)
    plain = LogisticRegression(max_iter=5000).fit(partner.matrix[train], labels[train])
    plain_auc = metrics.auc(labels[test], plain.decision_function(partner.matrix[test]))
    assert plain_auc > 0.95
    assert result.metrics["test_auc"] > plain_auc - 0.02


def test_the_card_centers_model_file_holds_an_intercept_and_no_features(trained):
    consortium, _ = trained
    center, partner = consortium.card_center, consortium.partners["ecommerce"]
    model = PartyModel.from_json(center.model().to_json())
    assert model.role == "card_center" and model.features == [] and model.weights == []
    assert model.mean == [] and model.scale == [] and model.bins is None
    assert model.intercept == pytest.approx(float(center.weights[-1]), abs=0) and np.isfinite(model.intercept)
    assert model.calibration is not None and len(model.start) == 1
    # the partner's file holds every column, so with the card center's intercept it scores any of its rows alone
    partner_model = PartyModel.from_json(partner.model().to_json())
    assert partner_model.intercept is None and len(partner_model.features) == 20
    raw = np.column_stack(partner.table.columns(partner_model.features))
    alone = model.intercept + partial_scores(partner_model, raw)
    np.testing.assert_allclose(alone, center.weights[-1] + partner.matrix @ partner.weights, rtol=0, atol=1e-9)


def test_the_card_center_alone_is_the_base_rate(trained):
    consortium, result = trained
    center = consortium.card_center
    rate = center.labels[center.train_rows].mean()
    own = center.own_model_scores(center.train_rows)
    np.testing.assert_allclose(own, np.log(rate / (1 - rate)), rtol=0, atol=1e-12)
    assert result.metrics["local_only_auc"] == result.metrics["local_only_test_auc"] == 0.5
    assert result.metrics["local_only_ks"] == result.metrics["local_only_test_ks"] == 0.0
    assert result.metrics["test_auc"] > 0.9


def test_the_secret_start_of_an_intercept_alone_is_modest(trained):
    """One column of ones gives every row the same starting score, so the spread the start is scaled by is zero
    or rounding error (about 1e-16): dividing by it made starts of 1e15. It is then a draw of START_LOGITS."""
    consortium, _ = trained
    start = consortium.card_center.start
    assert start.shape == (1,) and np.isfinite(start[0]) and abs(start[0]) < 8 * START_LOGITS
    for rows in (427, 1000, 11_000):
        column = np.ones((rows, 1))
        drawn = np.array([secret_start(column, rng=np.random.default_rng(seed))[0] for seed in range(300)])
        assert np.all(np.isfinite(drawn)) and np.max(np.abs(drawn)) < 8 * START_LOGITS
        assert 0.7 < np.std(drawn) / START_LOGITS < 1.3   # still a random draw, not a fixed value


def test_a_labels_only_card_center_refuses_steps_over_part_of_its_rows(tmp_path, keypair, inline_pool):
    """With the intercept alone, each mini-batch gradient is a label-weighted sum of the partner's columns: enough
    of them solve for the labels. The card center refuses the job before any step."""
    from fedscore.errors import ConfigError

    for name in ("breast_hetero_guest.csv", "breast_hetero_host.csv"):
        (tmp_path / name).write_bytes((DATA / name).read_bytes())
    spec, base = load_job(write_job(tmp_path, labels_only_parties(tmp_path), validation=0.3, batch_size=200,
                                    min_rows_per_column=0))
    with pytest.raises(ConfigError, match=r"party 'card_center': brings labels only .* batch_size = 0"):
        build_consortium(spec, load_tables(spec, base), inline_pool, keypair)
    # the same job at whole-set steps is taken
    spec, base = load_job(write_job(tmp_path, labels_only_parties(tmp_path), validation=0.3, batch_size=0))
    assert build_consortium(spec, load_tables(spec, base), inline_pool, keypair).card_center.weights.size == 1
