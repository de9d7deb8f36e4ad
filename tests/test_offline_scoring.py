"""The trained model files score an applicant exactly as the federated model scored it in training; binned,
calibrated scorecards score raw values (text, missing, unseen) in their documented bins."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedscore.job import Binning
from fedscore.model.attributes import attribute_wording, base_points, bin_wording, partner_points, scorecard_rows
from fedscore.model.binning import CATEGORICAL, NUMERIC, FeatureBins, fit_binner
from fedscore.model.data import load_party_table
from fedscore.model.model_file import PartyModel
from fedscore.model.woe import bin_counts
from fedscore.protocol.scoring.offline import (
    contribution_matrix,
    feature_contributions,
    log_odds,
    offline_answer,
    partial_score,
    partial_scores,
    probabilities,
)
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


# -- binned, calibrated scorecards built directly from small synthetic data ------------------

SLOPE, SHIFT = 0.8, -0.25          # the card center's calibration
BINNING = Binning(max_bins=5, min_bin_share=0.05, special_values=(("PAY_0", (-2.0, -1.0)),))
CENTER_FEATURES = ["PAY_0", "LIMIT_BAL", "AGE", "EDUCATION", "SEX"]
BUREAU_FEATURES = ["INQUIRIES", "SEGMENT"]


@dataclass
class Scorecards:
    center: PartyModel
    bureau: PartyModel
    guest: pd.DataFrame          # the card center's rows as read by pandas (NaN: empty cell)
    held: pd.DataFrame           # the bureau's rows, indexed by id
    guest_csv: Path
    bureau_csv: Path


def scorecard_data(folder: Path, rows: int = 400) -> Scorecards:
    """A card center (with a text column, missing values, special values and a protected column) and a
    partner (missing values and text), each binned on its own rows, with random weights per bin."""
    rng = np.random.default_rng(11)
    ids = [f"A{i:04d}" for i in range(rows)]
    pay = rng.choice([-2, -1, 0, 1, 2, 3], rows, p=[0.15, 0.2, 0.35, 0.15, 0.1, 0.05])
    age = rng.integers(21, 70, rows).astype(float)
    age[rng.random(rows) < 0.1] = np.nan
    education = rng.choice(["graduate school", "university", "high school", "others"], rows, p=[0.35, 0.4, 0.23, 0.02]).astype(object)
    education[rng.random(rows) < 0.07] = ""
    guest = pd.DataFrame({
        "id": ids, "PAY_0": pay, "LIMIT_BAL": rng.integers(1, 50, rows) * 10_000, "AGE": age,
        "EDUCATION": education, "SEX": rng.choice(["F", "M"], rows),
    })
    risk = 0.6 * pay - 0.00002 * guest["LIMIT_BAL"] + rng.normal(0, 1, rows)
    guest["default"] = (risk > np.quantile(risk, 0.75)).astype(int)
    inquiries = rng.integers(0, 7, rows).astype(float)
    inquiries[rng.random(rows) < 0.1] = np.nan
    segment = rng.choice(["A", "B", "C"], rows).astype(object)
    segment[rng.random(rows) < 0.08] = ""
    bureau = pd.DataFrame({"id": ids, "INQUIRIES": inquiries, "SEGMENT": segment}).iloc[rows // 5:]   # holds 80%
    guest_csv, bureau_csv = folder / "guest.csv", folder / "bureau.csv"
    guest.to_csv(guest_csv, index=False)
    bureau.to_csv(bureau_csv, index=False)

    def model(name, role, path, label, features, intercept=None, calibration=None, protected=()):
        table = load_party_table(path, ["id"], label, party=name, lenient=True)
        binner = fit_binner(table.columns(features), features, BINNING, table.labels)
        assert binner.names == features and not binner.dropped
        weights = rng.normal(0, 0.7, len(binner.columns))
        if "SEX" in features:   # a protected column that would otherwise be the first reason
            sex = binner.offsets[features.index("SEX")]
            weights[sex: sex + 2] = [-1.5, 1.5]
        return PartyModel("job-b", "scorecard", name, role, ["id"], features, [], [], weights.tolist(), intercept,
                          bins=binner.to_json(), calibration=calibration, protected=list(protected))

    center = model("guest", "card_center", guest_csv, "default", CENTER_FEATURES, intercept=-1.1,
                   calibration={"slope": SLOPE, "intercept": SHIFT}, protected=["SEX"])
    partner = model("bureau", "partner", bureau_csv, None, BUREAU_FEATURES)
    return Scorecards(center, partner, guest, pd.read_csv(bureau_csv).set_index("id"), guest_csv, bureau_csv)


def raw(value: object) -> object:
    """A pandas cell as a request would carry it: NaN as null, numbers as floats, text as it is."""
    if isinstance(value, str):
        return value
    return None if pd.isna(value) else float(value)


def center_values(cards: Scorecards, row: int) -> list[object]:
    return [raw(cards.guest[c].iloc[row]) for c in CENTER_FEATURES]


def bureau_values(cards: Scorecards, applicant: str) -> list[object] | None:
    if applicant not in cards.held.index:
        return None
    return [raw(cards.held.loc[applicant, c]) for c in BUREAU_FEATURES]


def reference_u(model: PartyModel, values: list[object]) -> float:
    """The plain indicator-matrix reference: one 0/1 per bin, times the weights (no scoring code)."""
    indicators = model.binner.indicators([[v] for v in values])[0]
    return float(indicators @ np.asarray(model.weights)) + (model.intercept or 0.0)


@pytest.fixture
def cards(tmp_path) -> Scorecards:
    return scorecard_data(tmp_path)


WIDE = ScoringPolicy(limit_basis="LIMIT_BAL", min_score=-1e9, max_score=1e9)


def test_binned_calibrated_answers_match_the_plain_reference(cards):
    for row in range(0, len(cards.guest), 7):
        applicant, values = cards.guest["id"].iloc[row], center_values(cards, row)
        partner = bureau_values(cards, applicant)
        result = offline_answer(cards.center, values, {"bureau": (cards.bureau, partner)}, WIDE)
        u = reference_u(cards.center, values) + (0.0 if partner is None else reference_u(cards.bureau, partner))
        z = SLOPE * u + SHIFT
        assert result.probability == pytest.approx(1 / (1 + math.exp(-z)), abs=1e-12)
        assert result.score == pytest.approx(600 - 20 * z / math.log(2), abs=1e-9)
        assert result.partners_missing == (() if partner is not None else ("bureau",))
        if partner is not None:
            assert partial_score(cards.bureau, partner) == pytest.approx(reference_u(cards.bureau, partner), abs=1e-12)


def test_binned_many_rows_equal_the_one_row_answers_to_the_bit(cards):
    held = [i for i, a in enumerate(cards.guest["id"]) if a in cards.held.index]
    center_matrix = np.array([center_values(cards, i) for i in held], dtype=object)
    bureau_matrix = np.array([bureau_values(cards, cards.guest["id"].iloc[i]) for i in held], dtype=object)
    u = log_odds(cards.center, center_matrix, {"bureau": (cards.bureau, bureau_matrix)})
    p = probabilities(u, cards.center.calibrated)
    policy = ScoringPolicy(limit_basis="LIMIT_BAL")
    for k, i in enumerate(held):
        one = offline_answer(cards.center, center_matrix[k], {"bureau": (cards.bureau, bureau_matrix[k])}, policy)
        assert p[k] == one.probability and points(SLOPE * u[k] + SHIFT, policy) == one.score
    assert partial_scores(cards.bureau, bureau_matrix).tolist() == [partial_score(cards.bureau, r) for r in bureau_matrix]
    parts = contribution_matrix(cards.bureau, bureau_matrix)   # each cell: the weight of the row's bin
    np.testing.assert_allclose(parts.sum(axis=1), cards.bureau.binner.indicators(bureau_matrix.T) @ np.asarray(cards.bureau.weights),
                               rtol=0, atol=1e-12)
    # the party's table as training reads it (text columns, NaN) scores the same as the request's values
    table = load_party_table(cards.bureau_csv, ["id"], None, lenient=True)
    by_table = partial_scores(cards.bureau, table.raw_rows(BUREAU_FEATURES))
    assert by_table.tolist() == [partial_score(cards.bureau, bureau_values(cards, a.upper())) for a in table.ids.tolist()]


def _bins(model: PartyModel, feature: str) -> tuple[FeatureBins, np.ndarray]:
    binner = model.binner
    j = binner.names.index(feature)
    return binner.features[j], binner.weight_blocks(model.weights)[j]


def test_unseen_and_missing_values_score_in_their_documented_bin(cards):
    education, education_w = _bins(cards.center, "EDUCATION")
    age, age_w = _bins(cards.center, "AGE")
    pay, pay_w = _bins(cards.center, "PAY_0")
    assert education.kind == CATEGORICAL and age.kind == NUMERIC
    base = dict(zip(CENTER_FEATURES, center_values(cards, 0)))
    cases = [
        ("EDUCATION", "a school never seen", education_w[education.other]),
        ("EDUCATION", None, education_w[education.missing]),
        ("EDUCATION", "", education_w[education.missing]),
        ("AGE", None, age_w[age.missing]),
        ("AGE", float("nan"), age_w[age.missing]),
        ("AGE", "n/a", age_w[age.missing]),            # text in a numeric column: missing
        ("PAY_0", -1.0, pay_w[dict(pay.specials)[-1.0]]),
        ("PAY_0", "-2", pay_w[dict(pay.specials)[-2.0]]),   # a number sent as text is the number
        ("PAY_0", 40.0, pay_w[pay.range_bins[-1]]),      # beyond anything seen: the top range
    ]
    for feature, value, weight in cases:
        values = {**base, feature: value}
        parts = feature_contributions(cards.center, [values[c] for c in CENTER_FEATURES])
        assert parts[feature] == weight, (feature, value)
    # the documented places: too few rare categories for a bin of their own, so "other" joins the largest
    assert education.labels[education.other] == "university or other" and education.labels[education.missing] == "missing"
    assert age.labels[age.missing] == "missing"
    assert bin_wording(education, education.other) == "university or other"


def expected_reasons(cards: Scorecards, values: list[object], partner: float | None, policy: ScoringPolicy) -> tuple[str, ...]:
    """The industry's rule written out: each unprotected characteristic's points lost against its lowest weight."""
    binner = cards.center.binner
    lost = []
    for bins, block, value in zip(binner.features, binner.weight_blocks(cards.center.weights), values):
        index = int(bins.assign([value])[0])
        cost = SLOPE * (block[index] - block.min()) * policy.pdo / math.log(2)
        if bins.feature != "SEX" and cost >= 0.5:
            lost.append((-cost, bins.feature, attribute_wording(bins, index)))
    lines = [wording for _, _, wording in sorted(lost)[:4]]
    if partner is not None and SLOPE * partner * policy.pdo / math.log(2) >= 0.5:
        lines.append("information held by partner bureau")
    return tuple(lines)


def test_reasons_are_worded_from_bins_sorted_by_points_lost_and_never_protected(cards):
    sex, sex_w = _bins(cards.center, "SEX")
    policy = ScoringPolicy(limit_basis="LIMIT_BAL")
    seen_partner_line = seen_costly_sex = False
    for row in range(len(cards.guest)):
        applicant, values = cards.guest["id"].iloc[row], center_values(cards, row)
        partner = bureau_values(cards, applicant)
        result = offline_answer(cards.center, values, {"bureau": (cards.bureau, partner)}, policy)
        u_k = None if partner is None else partial_score(cards.bureau, partner)
        assert result.reasons == expected_reasons(cards, values, u_k, policy)
        assert not any(line.startswith("SEX") for line in result.reasons)
        assert not any("points" in line for line in result.reasons)
        seen_partner_line |= "information held by partner bureau" in result.reasons
        seen_costly_sex |= sex_w[int(sex.assign([values[-1]])[0])] == 1.5
    assert seen_partner_line and seen_costly_sex   # the rule was exercised both ways


def test_scorecard_rows_and_base_points_add_up_to_the_served_score(cards):
    table = scorecard_rows(cards.center, WIDE)
    assert len(table) == len(cards.center.weights)
    assert all(r["count"] is None and r["bad_rate"] is None and r["woe"] is None for r in table)
    assert all(r["points"] == round(-SLOPE * r["weight"] * 20 / math.log(2), 1) for r in table)
    points_of = {(r["characteristic"], r["bin"]): r["points"] for r in table}
    base = base_points(cards.center, WIDE)
    assert base == pytest.approx(600 - 20 / math.log(2) * (SLOPE * -1.1 + SHIFT), abs=1e-9)
    binner = cards.center.binner
    for row in range(0, len(cards.guest), 5):
        applicant, values = cards.guest["id"].iloc[row], center_values(cards, row)
        partner = bureau_values(cards, applicant)
        served = offline_answer(cards.center, values, {"bureau": (cards.bureau, partner)}, WIDE).score
        attributes = sum(points_of[(b.feature, b.labels[int(b.assign([v])[0])])] for b, v in zip(binner.features, values))
        partners = 0.0 if partner is None else partner_points(partial_score(cards.bureau, partner), WIDE, cards.center.calibrated)
        assert served == pytest.approx(base + attributes + partners, abs=0.05 * len(CENTER_FEATURES) + 1e-9)
    # with the training rows' counts: count, bad rate and WOE per bin; a partner's points use slope 1
    center_table = load_party_table(cards.guest_csv, ["id"], "default", lenient=True)
    indices = binner.bin_indices(center_table.columns(CENTER_FEATURES))
    counts = [bin_counts(indices[:, j], center_table.labels, f.size) for j, f in enumerate(binner.features)]
    rows = np.concatenate([c[0] for c in counts])
    bads = np.concatenate([c[1] for c in counts])
    counted = scorecard_rows(cards.center, WIDE, rows, bads)
    assert [r["count"] for r in counted] == rows.tolist()
    assert sum(r["count"] for r in counted) == len(CENTER_FEATURES) * center_table.rows
    for r, n, b in zip(counted, rows, bads):
        assert r["bad_rate"] == pytest.approx(b / n) and math.isfinite(r["woe"])
    partner_table = scorecard_rows(cards.bureau, WIDE)
    assert all(r["points"] == round(-r["weight"] * 20 / math.log(2), 1) for r in partner_table)
    with pytest.raises(ValueError, match="base points are the card center's"):
        base_points(cards.bureau, WIDE)


@pytest.mark.parametrize("bins, index, words", [
    (FeatureBins("LIMIT_BAL", NUMERIC, ("< 50000 or missing", "[50000, 120000)", ">= 120000"), 0, 0, (5e4, 1.2e5), (0, 1, 2)),
     0, "LIMIT_BAL: below 50000 or missing"),
    (FeatureBins("LIMIT_BAL", NUMERIC, ("< 50000", "[50000, 120000)", ">= 120000", "missing"), 3, 3, (5e4, 1.2e5), (0, 1, 2)),
     1, "LIMIT_BAL: 50000 to below 120000"),
    (FeatureBins("PAY_0", NUMERIC, ("< 2", ">= 2", "= -1"), 0, 0, (2.0,), (0, 1), ((-1.0, 2),)), 1, "PAY_0: 2 or more"),
    (FeatureBins("PAY_0", NUMERIC, ("< 2", ">= 2", "= -1"), 0, 0, (2.0,), (0, 1), ((-1.0, 2),)), 2, "PAY_0: exactly -1"),
    (FeatureBins("AGE", NUMERIC, ("< 30", ">= 30", "missing"), 2, 2, (30.0,), (0, 1)), 2, "AGE: missing"),
    (FeatureBins("EDUCATION", CATEGORICAL, ("university", "graduate school", "other", "missing"), 3, 2,
                 categories=(("university", 0), ("graduate school", 1))), 2, "EDUCATION: other"),
    (FeatureBins("EDUCATION", CATEGORICAL, ("university or other or missing", "graduate school"), 0, 0,
                 categories=(("university", 0), ("graduate school", 1))), 0, "EDUCATION: university, other or missing"),
])
def test_bins_are_worded_for_an_applicant(bins, index, words):
    assert attribute_wording(bins, index) == words
    assert bin_wording(bins, index) == words.split(": ", 1)[1]
