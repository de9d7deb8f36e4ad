"""The report's curve maths against scikit-learn and plain numpy on the same data."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from fedscore.model import curves


def credit_like(rows: int, seed: int, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Labels with a 22% bad rate and log-odds that rank them imperfectly; optionally with many tied scores."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(rows) < 0.22).astype(float)
    scores = rng.normal(-1.3, 1.0, rows) + 0.9 * labels
    return labels, (np.round(scores * 4) / 4 if ties else scores)


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "tied"])
def test_full_rank_curve_is_sklearns_roc_curve(ties):
    labels, scores = credit_like(3000, 1, ties)
    full = curves.full_rank_curve(labels, scores)
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(full.goods, fpr, rtol=0, atol=1e-12)
    np.testing.assert_allclose(full.bads, tpr, rtol=0, atol=1e-12)
    # the population share at each threshold, counted directly
    counted = [0.0] + [float(np.mean(scores >= t)) for t in thresholds[1:]]
    np.testing.assert_allclose(full.population, counted, rtol=0, atol=1e-12)
    assert full.auc() == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert full.ks() == pytest.approx(float(np.max(tpr - fpr)), abs=1e-12)


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "tied"])
def test_rank_curve_keeps_at_most_max_points_of_the_full_curve_each_over_min_rows(ties):
    labels, scores = credit_like(5000, 2, ties)
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    curve = curves.rank_curve(labels, scores, max_points=200, min_rows=10)
    assert 20 <= len(curve.population) <= 201
    assert (curve.population[0], curve.bads[0], curve.goods[0]) == (0.0, 0.0, 0.0)
    assert (curve.population[-1], curve.bads[-1], curve.goods[-1]) == (1.0, 1.0, 1.0)
    on_full = {(round(g, 12), round(b, 12)) for g, b in zip(fpr, tpr)}
    assert all((round(g, 12), round(b, 12)) in on_full for g, b in zip(curve.goods, curve.bads))
    gaps = np.diff(curve.population) * len(scores)
    assert gaps.min() >= max(len(scores) / 200, 10) - 1e-6   # every point covers a group of rows, never one row
    auc, ks = roc_auc_score(labels, scores), float(np.max(tpr - fpr))
    assert abs(curve.auc() - auc) < 0.003
    assert ks - 0.02 < curve.ks() <= ks + 1e-12


def test_rank_curve_with_room_for_every_row_is_the_full_curve():
    labels, scores = credit_like(300, 3)
    kept = curves.rank_curve(labels, scores, max_points=1000, min_rows=1)
    assert kept.auc() == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert len(kept.population) == len(np.unique(scores)) + 1


def test_small_sets_get_fewer_points_not_single_rows():
    labels, scores = credit_like(120, 4)
    curve = curves.rank_curve(labels, scores, max_points=200, min_rows=10)
    assert len(curve.population) <= 13
    assert np.diff(curve.population).min() * 120 >= 10 - 1e-9


def test_score_histogram_is_numpys_on_fixed_probability_bins():
    labels, scores = credit_like(4000, 5)
    scores[:3] = [-50.0, 50.0, 0.0]   # P(default) 0, 1 and the middle edge: still counted
    histogram = curves.score_histogram(labels, scores)
    edges = np.linspace(0, 1, curves.PROBABILITY_BINS + 1)
    p = 1 / (1 + np.exp(-scores))
    assert histogram["goods"] == np.histogram(p[labels == 0], bins=edges)[0].tolist()
    assert histogram["bads"] == np.histogram(p[labels == 1], bins=edges)[0].tolist()
    assert sum(histogram["goods"]) + sum(histogram["bads"]) == len(scores)
    np.testing.assert_allclose(histogram["edges"], edges)


def numpy_psi(expected: np.ndarray, actual: np.ndarray, bins: int = 10, floor: float = 1e-4) -> float:
    """PSI the textbook way: decile edges of the expected scores, np.histogram, Σ (a − e) ln(a / e)."""
    inner = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)[1:-1]))
    edges = np.concatenate([[-np.inf], inner, [np.inf]])
    e = np.histogram(expected, edges)[0] / len(expected)
    a = np.histogram(actual, edges)[0] / len(actual)
    e, a = np.maximum(e, floor), np.maximum(a, floor)
    return float(np.sum((a - e) * np.log(a / e)))


@pytest.mark.parametrize("shift, reading", [(0.0, "stable"), (0.35, "moderate shift"), (1.0, "significant shift")])
def test_psi_is_the_plain_numpy_psi(shift, reading):
    rng = np.random.default_rng(6)
    expected = rng.normal(0, 1, 7000)
    actual = rng.normal(shift, 1, 3000)
    stability = curves.population_stability(expected, actual)
    assert stability["total"] == pytest.approx(numpy_psi(expected, actual), abs=1e-12)
    assert stability["total"] == pytest.approx(float(np.sum(stability["terms"])), abs=1e-12)
    np.testing.assert_allclose(stability["expected"], 0.1, atol=1e-3)   # deciles: a tenth each
    assert stability["actual"].sum() == pytest.approx(1.0)
    assert curves.psi_reading(stability["total"]) == reading


def test_psi_with_tied_scores_merges_bins_like_numpy():
    rng = np.random.default_rng(7)
    expected = np.round(rng.exponential(1.0, 5000))   # few distinct values: duplicate decile edges
    actual = np.round(rng.exponential(1.3, 2000))
    stability = curves.population_stability(expected, actual)
    assert len(stability["expected"]) < 10
    assert stability["total"] == pytest.approx(numpy_psi(expected, actual), abs=1e-12)


def test_variance_shares_are_covariances_with_the_sum_and_add_up_to_one():
    rng = np.random.default_rng(8)
    a = rng.normal(0, 1, 2000)
    b = 0.5 * a + rng.normal(0, 2, 2000)
    c = rng.normal(3, 0.3, 2000)
    shares = curves.variance_shares([a, b, c])
    total = a + b + c
    for part, share in zip([a, b, c], shares):
        assert share == pytest.approx(np.cov(part, total)[0, 1] / np.var(total, ddof=1), abs=1e-12)
    assert sum(shares) == pytest.approx(1.0, abs=1e-12)


def test_one_class_or_mismatched_input_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="both goods and bads"):
        curves.rank_curve(np.zeros(50), np.arange(50.0))
    with pytest.raises(ValueError, match="one length"):
        curves.score_histogram(np.zeros(5), np.zeros(4))
    with pytest.raises(ValueError, match="0 \\(good\\) or 1 \\(bad\\)"):
        curves.full_rank_curve(np.array([0, 2, 1.0]), np.zeros(3))
    with pytest.raises(ValueError, match="at least 10 expected rows"):
        curves.population_stability(np.zeros(5), np.zeros(5))
