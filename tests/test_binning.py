"""Binning a party's own columns: bins fitted on training rows only, every raw value placed, never an error."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from fedscore.job import Binning
from fedscore.model.binning import (
    CATEGORICAL, MISSING, OTHER, Binner, fit_binner, fit_feature,
)
from fedscore.model.calibration import fit_calibration
from fedscore.model.data import load_party_table
from fedscore.model.woe import bin_counts, woe_iv

RNG = np.random.default_rng(11)


def shares(bins, values) -> np.ndarray:
    return np.bincount(bins.assign(values), minlength=bins.size) / len(values)


def test_quantile_bins_respect_the_minimum_share_and_the_maximum_count():
    values = np.concatenate([RNG.lognormal(8, 1, 2000), np.zeros(300)])   # a lump at zero
    bins = fit_feature("amount", values, Binning(max_bins=10, min_bin_share=0.05))
    assert 2 <= bins.size <= 10
    assert shares(bins, values).min() >= 0.05
    # ranges are ordered and cover every number
    assert list(bins.edges) == sorted(bins.edges)
    assert bins.assign([-1e300, 1e300]).tolist() == [0, len(bins.edges)]


def test_a_bigger_minimum_share_leaves_fewer_bins():
    values = RNG.normal(size=1000)
    few = fit_feature("x", values, Binning(max_bins=10, min_bin_share=0.3))
    many = fit_feature("x", values, Binning(max_bins=10, min_bin_share=0.01))
    assert few.size < many.size == 10
    assert shares(few, values).min() >= 0.3


def test_special_values_get_their_own_bins_unless_too_rare():
    values = np.concatenate([np.full(200, -2.0), np.full(150, -1.0), np.full(5, -3.0), RNG.integers(0, 5, 645)])
    bins = fit_feature("PAY_0", values, Binning(special_values=(("PAY_0", (-2.0, -1.0, -3.0)),)))
    labels = dict(zip(bins.labels, range(bins.size)))
    assert "= -2" in labels and "= -1" in labels
    assert "= -3" not in labels                     # 0.5% of rows: merged into the range it falls in
    assert (bins.assign(np.full(3, -2.0)) == labels["= -2"]).all()
    assert bins.assign([-3.0])[0] == bins.assign([-2.5])[0]   # treated as the number it is
    assert shares(bins, values).min() >= 0.05


def test_missing_values_have_a_bin_or_join_the_largest_one():
    values = np.concatenate([RNG.normal(size=900), np.full(100, np.nan)])
    bins = fit_feature("x", values, Binning())
    assert bins.labels[bins.missing] == MISSING
    assert (bins.assign([None, np.nan, "n/a", "", float("inf")]) == bins.missing).all()

    rare = np.concatenate([RNG.normal(size=990), np.full(10, np.nan)])
    merged = fit_feature("x", rare, Binning())
    counts = np.bincount(merged.assign(rare[:990]), minlength=merged.size)
    assert merged.missing == int(np.argmax(counts))
    assert merged.labels[merged.missing].endswith(f"or {MISSING}")


def test_text_columns_are_categories_with_rare_ones_in_other():
    cities = np.array(["Shanghai"] * 400 + ["Beijing"] * 300 + ["Shenzhen"] * 250 + ["Lhasa"] * 20 + ["Xining"] * 20
                      + [""] * 10, dtype=object)
    bins = fit_feature("city", cities, Binning(min_bin_share=0.03))
    assert bins.kind == CATEGORICAL
    index = dict(zip(bins.labels, range(bins.size)))
    assert {"Beijing", "Shenzhen", OTHER} <= set(index)
    assert bins.assign(["Lhasa", "Xining", "Atlantis"]).tolist() == [index[OTHER]] * 3   # rare and unseen: other
    # ten missing cells (1%) are too few for a bin of their own: they score with the largest category
    assert bins.assign([None, ""]).tolist() == [bins.missing] * 2
    assert bins.labels[bins.missing] == f"Shanghai or {MISSING}"
    assert shares(bins, cities).min() >= 0.03

    # at 5%, "other" (4%) is itself too small: it joins the largest category, and so do unseen values
    merged = fit_feature("city", cities, Binning(min_bin_share=0.05))
    assert OTHER not in merged.labels and merged.labels[0] == f"Shanghai or {OTHER} or {MISSING}"
    assert merged.assign(["Atlantis", "Shanghai", None]).tolist() == [0, 0, 0]
    assert shares(merged, cities).min() >= 0.05


def test_a_numeric_column_with_the_odd_text_cell_stays_numeric():
    values = np.array([str(v) for v in RNG.integers(0, 100, 995)] + ["n/a", "?", "x", "", "12,5"], dtype=object)
    bins = fit_feature("x", values, Binning())
    assert bins.kind == "numeric"
    assert (bins.assign(["n/a", "12,5"]) == bins.missing).all()


@pytest.mark.parametrize("values, why", [
    (np.full(100, 3.0), "single bin"),
    (np.full(100, np.nan), "missing"),
    (np.array(["a"] * 100, dtype=object), "single bin"),
])
def test_a_column_without_information_is_dropped_naming_why(values, why):
    binner = fit_binner([values, RNG.normal(size=100)], ["flat", "x"], Binning())
    assert binner.names == ["x"]
    assert binner.dropped[0][0] == "flat" and why in binner.dropped[0][1]


def test_the_card_centers_bins_are_merged_until_bad_rates_are_monotonic():
    x = RNG.uniform(0, 10, 5000)
    risk = 1 / (1 + np.exp(-(x - 5))) + 0.15 * np.sin(3 * x)    # rising, with wiggles
    y = (RNG.random(5000) < np.clip(risk, 0, 1)).astype(np.int8)
    bins = fit_feature("x", x, Binning(monotonic=True), labels=y)
    rows, bads = bin_counts(bins.assign(x), y, bins.size)
    rates = bads / rows
    assert np.all(np.diff(rates) >= 0)
    free = fit_feature("x", x, Binning(monotonic=False))
    assert free.size >= bins.size


def test_indicators_have_one_one_per_feature_and_round_trip_through_json():
    frame = {"a": RNG.normal(size=500), "b": np.array(list("xyz") * 166 + ["x", "y"], dtype=object)}
    binner = fit_binner(list(frame.values()), list(frame), Binning())
    matrix = binner.indicators(list(frame.values()))
    assert matrix.shape == (500, len(binner.columns))
    assert (matrix.sum(axis=1) == 2).all()
    again = Binner.from_json(binner.to_json())
    assert np.array_equal(again.indicators(list(frame.values())), matrix)
    weights = RNG.normal(size=len(binner.columns))
    assert np.allclose(binner.contributions(weights, list(frame.values())).sum(axis=1), matrix @ weights)


def test_woe_and_iv_follow_the_textbook_formula():
    rows = np.array([100, 200, 300, 400])
    bads = np.array([40, 30, 20, 10])
    woe, iv = woe_iv(rows, bads)
    goods = rows - bads
    g, b = goods / goods.sum(), bads / bads.sum()
    assert np.allclose(woe, np.log(g / b))
    assert iv == pytest.approx(np.sum((g - b) * np.log(g / b)))
    assert woe[0] < woe[-1]   # the riskiest bin has the lowest WOE


def test_calibration_equals_scikit_learns_exact_fit():
    u = RNG.normal(-1.0, 1.5, 4000)
    y = (RNG.random(4000) < 1 / (1 + np.exp(-(0.7 * u - 0.2)))).astype(float)
    ours = fit_calibration(u, y)
    theirs = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(u[:, None], y)
    assert np.abs(ours.probability(u) - theirs.predict_proba(u[:, None])[:, 1]).max() < 1e-6


def test_with_binning_on_empty_cells_and_text_are_data(tmp_path):
    path = tmp_path / "bureau.csv"
    pd.DataFrame({
        "id": range(6), "score": ["1", "", "3", "n/a", "5", "6"], "city": ["a", "b", "", "a", "c", "b"],
    }).to_csv(path, index=False)
    table = load_party_table(path, ["id"], lenient=True)
    assert list(table.text) == ["city"]
    assert np.isnan(table.column("score")[[1, 3]]).all()
    assert table.column("city").tolist() == ["a", "b", "", "a", "c", "b"]
    with pytest.raises(Exception, match="score"):
        load_party_table(path, ["id"])   # binning off: refused, naming the column
