"""Validation maths (calibration, gains, decision bands, fairness) against scikit-learn, numpy and pandas."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss
from sklearn.metrics import log_loss as sklearn_log_loss

from fedscore.model.validation import (
    brier, calibration_table, decision_bands, equal_count_groups, fairness_table, gains_table, iv_reading,
    log_loss, points_histogram, validation_summary,
)

APPROVE_AT, REVIEW_AT = 620.0, 580.0


def sample(n: int = 1000, seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels drawn from their PDs, and scorecard points of those PDs (600 at odds 1:1, 20 to double)."""
    rng = np.random.default_rng(seed)
    pd_ = rng.beta(2, 6, n)
    labels = (rng.uniform(size=n) < pd_).astype(int)
    points = 600 - 20 * np.log(pd_ / (1 - pd_)) / np.log(2)
    return labels, pd_, points


# -- brier and log-loss --------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_brier_and_log_loss_match_sklearn(seed):
    labels, pd_, _ = sample(seed=seed)
    assert brier(labels, pd_) == pytest.approx(brier_score_loss(labels, pd_), abs=1e-12)
    assert log_loss(labels, pd_) == pytest.approx(sklearn_log_loss(labels, pd_), abs=1e-12)
    assert log_loss(labels.astype(float), pd_) == pytest.approx(sklearn_log_loss(labels, pd_), abs=1e-12)


def test_log_loss_clips_certain_predictions_so_it_stays_finite():
    labels, pd_ = np.array([1, 0, 1, 0]), np.array([0.0, 1.0, 1.0, 0.0])
    clipped = np.array([1e-15, 1 - 1e-15, 1 - 1e-15, 1e-15])
    expected = -np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped))
    assert log_loss(labels, pd_) == pytest.approx(expected, rel=1e-12)
    assert 34 < 2 * log_loss(labels, pd_) < 36         # two sure misses: ln(1e15) ≈ 34.5 each, over 4 rows


@pytest.mark.parametrize("labels, pd_, message", [
    ([0, 1, 2], [0.1, 0.2, 0.3], "labels must be 0"),
    ([0, 1], [0.1, 0.2, 0.3], "one length"),
    ([0, 1], [0.1, 1.2], "pd must be probabilities"),
    ([0, 1], [0.1, np.nan], "pd must be finite"),
    ([], [], "no rows"),
])
def test_bad_inputs_are_named(labels, pd_, message):
    with pytest.raises(ValueError, match=message):
        brier(labels, pd_)


# -- calibration ----------------------------------------------------------------------


def test_calibration_deciles_match_numpy_on_sorted_pd():
    labels, pd_, _ = sample(n=1000, seed=3)
    order = np.argsort(pd_)
    groups_pd, groups_y = pd_[order].reshape(10, -1), labels[order].reshape(10, -1)
    table = calibration_table(labels, pd_)
    assert [row["count"] for row in table] == [100] * 10
    np.testing.assert_allclose([r["predicted"] for r in table], groups_pd.mean(axis=1), atol=1e-6)
    np.testing.assert_allclose([r["observed"] for r in table], groups_y.mean(axis=1), atol=1e-6)
    assert [r["bads"] for r in table] == groups_y.sum(axis=1).tolist()
    assert [r["predicted"] for r in table] == sorted(r["predicted"] for r in table)


def test_uneven_rows_make_contiguous_groups_differing_by_at_most_one():
    labels, pd_, _ = sample(n=1003, seed=4)
    table = calibration_table(labels, pd_, groups=7)
    counts = [row["count"] for row in table]
    assert len(table) == 7 and sum(counts) == 1003 and max(counts) - min(counts) <= 1
    assert sum(row["bads"] for row in table) == labels.sum()
    parts = equal_count_groups(pd_, 7)
    assert all(pd_[a].max() < pd_[b].min() for a, b in zip(parts, parts[1:]))
    assert sorted(np.concatenate(parts).tolist()) == list(range(1003))


def test_ties_stay_in_one_group():
    rng = np.random.default_rng(5)
    pd_ = rng.choice([0.05, 0.2, 0.4], size=500, p=[0.5, 0.3, 0.2])
    labels = (rng.uniform(size=500) < pd_).astype(int)
    table = calibration_table(labels, pd_)
    assert [row["predicted"] for row in table] == [0.05, 0.2, 0.4]
    frame = pd.DataFrame({"pd": pd_, "y": labels}).groupby("pd")["y"]
    assert [row["count"] for row in table] == frame.size().tolist()
    np.testing.assert_allclose([row["observed"] for row in table], frame.mean(), atol=1e-6)


def test_a_decile_of_one_class_reads_zero_or_one():
    pd_ = np.linspace(0.01, 0.99, 100)
    labels = np.r_[np.zeros(10), np.random.default_rng(6).integers(0, 2, 80), np.ones(10)].astype(int)
    table = calibration_table(labels, pd_)
    assert (table[0]["observed"], table[0]["bads"]) == (0.0, 0)
    assert (table[-1]["observed"], table[-1]["bads"]) == (1.0, 10)
    gains = gains_table(labels, pd_)
    assert gains[0]["bad_rate"] == 1.0 and gains[-1]["bad_rate"] == 0.0
    assert gains[-1]["lift"] == 0.0 and gains[-1]["cumulative_bads_share"] == 1.0


# -- gains -----------------------------------------------------------------------------


def test_gains_match_numpy_from_the_riskiest_decile_down():
    labels, pd_, _ = sample(n=2000, seed=8)
    order = np.argsort(-pd_)
    groups_pd, groups_y = pd_[order].reshape(10, -1), labels[order].reshape(10, -1)
    rates = groups_y.mean(axis=1)
    table = gains_table(labels, pd_)
    assert [row["decile"] for row in table] == list(range(1, 11))
    assert [row["bads"] for row in table] == groups_y.sum(axis=1).tolist()
    np.testing.assert_allclose([r["bad_rate"] for r in table], rates, atol=1e-6)
    np.testing.assert_allclose([r["cumulative_bads_share"] for r in table],
                               np.cumsum(groups_y.sum(axis=1)) / labels.sum(), atol=1e-6)
    np.testing.assert_allclose([r["lift"] for r in table], rates / labels.mean(), atol=1e-6)
    np.testing.assert_allclose([r["min_pd"] for r in table], groups_pd.min(axis=1), atol=1e-6)
    np.testing.assert_allclose([r["max_pd"] for r in table], groups_pd.max(axis=1), atol=1e-6)
    assert table[0]["lift"] > 1 > table[-1]["lift"]     # a score that ranks: riskiest decile above average


def test_gains_without_any_bad_have_no_share_or_lift():
    table = gains_table(np.zeros(50, int), np.linspace(0.1, 0.5, 50))
    assert all(row["lift"] is None and row["cumulative_bads_share"] is None for row in table)
    assert all(row["bad_rate"] == 0.0 for row in table)


# -- decision bands ------------------------------------------------------------------


def test_decision_bands_match_numpy_masks():
    labels, _, points = sample(n=3000, seed=9)
    limits = np.where(points >= APPROVE_AT, 50_000.0, np.where(points >= REVIEW_AT, 25_000.0, 0.0))
    rows = {row["decision"]: row for row in decision_bands(labels, points, limits, APPROVE_AT, REVIEW_AT)}
    masks = {"approve": points >= APPROVE_AT, "review": (points >= REVIEW_AT) & (points < APPROVE_AT),
             "decline": points < REVIEW_AT}
    assert list(rows) == ["approve", "review", "decline"]
    for name, mask in masks.items():
        assert rows[name]["count"] == mask.sum() > 0, name
        assert rows[name]["share"] == pytest.approx(mask.mean(), abs=1e-6)
        assert rows[name]["bad_rate"] == pytest.approx(labels[mask].mean(), abs=1e-6)
        assert rows[name]["total_limit"] == pytest.approx(limits[mask].sum())
    assert rows["decline"]["total_limit"] == 0.0
    assert rows["approve"]["bad_rate"] < rows["review"]["bad_rate"] < rows["decline"]["bad_rate"]
    assert (rows["review"]["from_points"], rows["review"]["below_points"]) == (REVIEW_AT, APPROVE_AT)


def test_a_cut_off_score_is_approved_and_an_empty_band_has_no_bad_rate():
    rows = decision_bands([0, 1, 0], [620.0, 580.0, 700.0], None, APPROVE_AT, REVIEW_AT)
    assert [(r["decision"], r["count"]) for r in rows] == [("approve", 2), ("review", 1), ("decline", 0)]
    assert rows[2]["bad_rate"] is None and rows[2]["share"] == 0.0 and rows[0]["total_limit"] is None
    with pytest.raises(ValueError, match="review_at must not exceed approve_at"):
        decision_bands([0], [600.0], None, 580.0, 620.0)


# -- fairness --------------------------------------------------------------------------


def fairness_sample(n: int = 4000, seed: int = 10) -> tuple[dict, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    sex = rng.choice([1, 2], n)
    education = rng.choice(["graduate", "university", "high school"], n)
    age = rng.integers(21, 75, n)
    points = rng.normal(615, 30, n) + 8 * (sex == 2) + 0.4 * (age - 45)
    return {"SEX": sex, "EDUCATION": education, "AGE": age}, points >= APPROVE_AT, points


def test_fairness_per_group_matches_pandas():
    groups, approved, points = fairness_sample()
    table = fairness_table(groups, approved, points)
    for attribute in ("SEX", "EDUCATION"):
        frame = pd.DataFrame({"g": groups[attribute].astype(str), "a": approved, "p": points}).groupby("g")
        rows = {row["group"]: row for row in table[attribute]["groups"]}
        assert sorted(rows) == sorted(frame.groups)
        for name, row in rows.items():
            assert row["count"] == frame.size()[name]
            assert row["approval_rate"] == pytest.approx(frame["a"].mean()[name], abs=1e-6)
            assert row["mean_points"] == pytest.approx(frame["p"].mean()[name], abs=1e-6)
            assert row["small"] is False
        rates = frame["a"].mean()
        assert table[attribute]["adverse_impact_ratio"] == pytest.approx(rates.min() / rates.max(), abs=1e-6)
        assert table[attribute]["passes_four_fifths"] == (rates.min() / rates.max() >= 0.8)
        assert table[attribute]["banded"] is False
    json.dumps(table)


def test_a_many_valued_number_is_cut_into_at_most_five_ordered_bands():
    groups, approved, points = fairness_sample()
    age = groups["AGE"]
    result = fairness_table({"AGE": age}, approved, points)["AGE"]
    bands = result["groups"]
    assert result["banded"] is True and 2 <= len(bands) <= 5
    bounds = [tuple(int(v) for v in row["group"].split("–")) for row in bands]
    assert bounds[0][0] == age.min() and bounds[-1][1] == age.max()
    assert all(high < next_low for (_, high), (next_low, _) in zip(bounds, bounds[1:]))   # no age in two bands
    for (low, high), row in zip(bounds, bands):
        members = (age >= low) & (age <= high)
        assert row["count"] == members.sum()
        assert row["approval_rate"] == pytest.approx(approved[members].mean(), abs=1e-6)
        assert row["mean_points"] == pytest.approx(points[members].mean(), abs=1e-6)
    assert sum(row["count"] for row in bands) == len(age)
    rates = [row["approval_rate"] for row in bands]
    assert result["adverse_impact_ratio"] == pytest.approx(min(rates) / max(rates), abs=1e-6)


def test_a_group_without_approvals_makes_the_ratio_zero():
    values = np.array(["a"] * 50 + ["b"] * 50)
    approved = np.r_[np.ones(30, bool), np.zeros(70, bool)]
    result = fairness_table({"G": values}, approved, np.arange(100.0))["G"]
    assert [row["approval_rate"] for row in result["groups"]] == [0.6, 0.0]
    assert result["adverse_impact_ratio"] == 0.0 and result["passes_four_fifths"] is False


def test_small_groups_are_flagged_and_left_out_of_the_ratio():
    # 5 000 rows: "tiny" has 15 (< 20 rows), "rare" 40 (< 1% = 50); both approve nobody
    values = np.array(["x"] * 2500 + ["y"] * 2445 + ["tiny"] * 15 + ["rare"] * 40)
    approved = np.r_[np.arange(2500) < 2000, np.arange(2445) < 1800, np.zeros(55, bool)]
    result = fairness_table({"G": values}, approved, np.zeros(5000))["G"]
    rows = {row["group"]: row for row in result["groups"]}
    assert rows["tiny"]["small"] and rows["rare"]["small"] and not rows["x"]["small"] and not rows["y"]["small"]
    assert rows["tiny"]["count"] == 15 and rows["tiny"]["approval_rate"] == 0.0
    assert result["adverse_impact_ratio"] == pytest.approx((1800 / 2445) / (2000 / 2500), abs=1e-6)
    assert result["passes_four_fifths"] is True        # counting the small groups would make it 0 and fail


def test_fewer_than_two_judged_groups_or_no_approval_give_no_ratio():
    alone = fairness_table({"G": np.array(["a"] * 100)}, np.ones(100, bool), np.zeros(100))["G"]
    nobody = fairness_table({"G": np.array(["a", "b"] * 50)}, np.zeros(100, bool), np.zeros(100))["G"]
    assert alone["adverse_impact_ratio"] is None and alone["passes_four_fifths"] is None
    assert nobody["adverse_impact_ratio"] is None


def test_missing_numbers_are_a_group_of_their_own_and_whole_floats_read_as_integers():
    values = np.r_[np.ones(40), np.full(40, 2.0), np.full(20, np.nan)]
    result = fairness_table({"SEX": values}, np.arange(100) % 2 == 0, np.zeros(100))["SEX"]
    assert [row["group"] for row in result["groups"]] == ["1", "2", "missing"]
    assert [row["count"] for row in result["groups"]] == [40, 40, 20]


def test_fairness_inputs_are_checked():
    with pytest.raises(ValueError, match="protected attribute 'SEX'"):
        fairness_table({"SEX": np.ones(3)}, np.ones(4, bool), np.zeros(4))
    with pytest.raises(ValueError, match="approved must be a vector of booleans"):
        fairness_table({"SEX": np.ones(4)}, np.full(4, 0.5), np.zeros(4))


# -- readings, histogram, summary -------------------------------------------------------------


@pytest.mark.parametrize("iv, reading", [
    (-0.01, "not useful"), (0.0, "not useful"), (0.0199, "not useful"), (0.02, "weak"), (0.099, "weak"),
    (0.1, "medium"), (0.29, "medium"), (0.3, "strong"), (0.5, "strong"), (0.5001, "check for leakage"),
    (3.0, "check for leakage"),
])
def test_iv_readings(iv, reading):
    assert iv_reading(iv) == reading


def test_points_histogram_matches_numpy():
    labels, _, points = sample(seed=11)
    histogram = points_histogram(labels, points, bins=20)
    edges = np.linspace(points.min(), points.max(), 21)
    np.testing.assert_allclose(histogram["edges"], edges, atol=1e-6)
    assert histogram["goods"] == np.histogram(points[labels == 0], edges)[0].tolist()
    assert histogram["bads"] == np.histogram(points[labels == 1], edges)[0].tolist()
    assert sum(histogram["goods"]) + sum(histogram["bads"]) == len(points)
    flat = points_histogram([0, 1, 1], [600.0, 600.0, 600.0], bins=4)
    assert (sum(flat["goods"]), sum(flat["bads"])) == (1, 2) and flat["edges"][0] < 600 < flat["edges"][-1]


def test_summary_holds_every_key_as_plain_json():
    labels, pd_, points = sample(n=2000, seed=12)
    groups, _, _ = fairness_sample(n=2000, seed=12)
    limits = np.where(points >= REVIEW_AT, 10_000.0, 0.0)
    summary = validation_summary(labels, pd_, points, limits, APPROVE_AT, REVIEW_AT, groups)
    assert set(summary) == {"brier", "log_loss", "mean_pd", "observed_default_rate", "calibration", "gains",
                            "decision_bands", "fairness"}
    assert summary["brier"] == pytest.approx(brier_score_loss(labels, pd_), abs=1e-6)
    assert summary["log_loss"] == pytest.approx(sklearn_log_loss(labels, pd_), abs=1e-6)
    assert summary["mean_pd"] == pytest.approx(pd_.mean(), abs=1e-6)
    assert summary["observed_default_rate"] == pytest.approx(labels.mean(), abs=1e-6)
    assert summary["calibration"] == calibration_table(labels, pd_)
    assert summary["decision_bands"] == decision_bands(labels, points, limits, APPROVE_AT, REVIEW_AT)
    assert summary["fairness"] == fairness_table(groups, points >= APPROVE_AT, points)
    assert json.loads(json.dumps(summary)) == summary
    assert all(type(summary[k]) is float for k in ("brier", "log_loss", "mean_pd", "observed_default_rate"))

    plain = validation_summary(labels, pd_)
    assert "decision_bands" not in plain and "fairness" not in plain


def test_text_and_object_attributes_as_a_table_holds_them():
    # a text column with missing cells, and a numeric column read as Python objects
    text = np.array(["F", "M", None, "F", " ", np.nan] * 10, dtype=object)
    ages = np.array([float(v) for v in range(20, 80)], dtype=object)
    result = fairness_table({"SEX": text, "AGE": ages}, np.arange(60) % 3 == 0, np.zeros(60))
    assert [(row["group"], row["count"]) for row in result["SEX"]["groups"]] == [("F", 20), ("M", 10), ("missing", 30)]
    assert result["AGE"]["banded"] is True
    assert [row["group"] for row in result["AGE"]["groups"]] == ["20–31", "32–43", "44–55", "56–67", "68–79"]
