"""The trained model files score an applicant exactly as the federated model scored it in training."""
from __future__ import annotations

import numpy as np
import pytest

from fedscore.protocol.scoring.offline import log_odds, offline_answer, partial_score, partial_scores, probabilities
from fedscore.protocol.scoring.scorecard import ScoringPolicy, points
from fedscore.protocol.training.simulation import simulate

from conftest import breast_parties, split_three_ways
from test_protocol import consortium_for


def test_model_files_reproduce_the_federated_scores(breast_folder, keypair, inline_pool):
    consortium = consortium_for(breast_folder, breast_parties(), keypair, inline_pool, epochs=3, validation=0.3)
    simulate(consortium)
    center, host = consortium.card_center, consortium.partners["host"]
    center_model, host_model = center.model(), host.model()
    federated = center.matrix @ center.weights + host.matrix @ host.weights   # log-odds per row
    slope, intercept = center_model.calibrated.slope, center_model.calibrated.intercept
    served = slope * federated + intercept                                    # the card center's recalibration
    policy = ScoringPolicy(limit_basis="x0")
    for row in range(0, center.table.rows, 37):
        result = offline_answer(
            center_model, center.table.features[row], {"host": (host_model, host.table.features[row])}, policy
        )
        assert result.score == pytest.approx(points(served[row], policy), abs=1e-9)
        assert result.probability == pytest.approx(1 / (1 + np.exp(-served[row])), abs=1e-12)
        assert partial_score(host_model, host.table.features[row]) == pytest.approx(host.matrix[row] @ host.weights, abs=1e-12)
    unknown = offline_answer(center_model, center.table.features[0], {"host": (host_model, None)}, policy)
    assert unknown.partners_missing == ("host",)
    assert unknown.score == pytest.approx(points(slope * (center.matrix[0] @ center.weights) + intercept, policy), abs=1e-9)


def test_many_rows_at_once_equal_the_one_row_answers_to_the_bit(breast_folder, keypair, inline_pool):
    """The vectorised path (the Python estimator's predictions) adds in the served order: no ulp may differ."""
    consortium = consortium_for(breast_folder, split_three_ways(breast_folder), keypair, inline_pool, epochs=2)
    simulate(consortium)
    center = consortium.card_center
    models = {name: s.model() for name, s in consortium.partners.items()}
    partners = {name: (models[name], s.table.features) for name, s in consortium.partners.items()}
    u = log_odds(center.model(), center.table.features, partners)
    p = probabilities(u, center.model().calibrated)
    policy = ScoringPolicy(limit_basis="x0")
    for row in range(center.table.rows):
        one = offline_answer(
            center.model(), center.table.features[row],
            {name: (models[name], s.table.features[row]) for name, s in consortium.partners.items()}, policy,
        )
        assert p[row] == one.probability
        assert u[row] == pytest.approx(center.matrix[row] @ center.weights
                                      + sum(s.matrix[row] @ s.weights for s in consortium.partners.values()), abs=1e-9)
    for name, (model, features) in partners.items():
        assert partial_scores(model, features).tolist() == [partial_score(model, row) for row in features]
