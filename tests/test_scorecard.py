"""Scorecard maths: points, decisions, limits and reasons, against hand-computed values."""
from __future__ import annotations

import math

import pytest

from fedscore.protocol.scoring.scorecard import LimitBand, ScoringPolicy, answer, credit_limit, decision, points, probability

POLICY = ScoringPolicy()


def test_points_follow_offset_and_points_to_double_odds():
    assert points(0.0, POLICY) == pytest.approx(600.0)                 # odds 1:1
    assert points(-math.log(2), POLICY) == pytest.approx(620.0)        # odds doubled: +20 points
    assert points(math.log(4), POLICY) == pytest.approx(560.0)         # odds quartered: -40
    assert points(-100.0, POLICY) == 850.0 and points(100.0, POLICY) == 300.0   # clipped
    assert probability(1000.0) == 1.0 and probability(-1000.0) == 0.0 and probability(0.0) == 0.5


def test_decisions_by_cut_offs():
    assert [decision(s, POLICY) for s in (620, 619.9, 580, 579.9)] == ["approve", "review", "review", "decline"]


def test_credit_limit_by_band_rounded_down_and_capped():
    assert credit_limit(705, 123_456, POLICY) == 148_000      # 1.2 × 123 456 = 148 147.2 -> step 1 000
    assert credit_limit(661, 50_000, POLICY) == 50_000
    assert credit_limit(600, 50_000, POLICY) == 25_000        # review band: half
    assert credit_limit(560, 50_000, POLICY) == 0             # declined
    assert credit_limit(800, 10_000_000, POLICY) == 1_000_000 # cap
    custom = ScoringPolicy(limit_bands=(LimitBand(600, 2.0),), limit_step=500)
    assert credit_limit(640, 1_234, custom) == 2_000


def test_answer_combines_parts_and_flags_missing_partners():
    own = {"AGE": -0.1, "LIMIT_BAL": 0.3, "SEX": 0.05, "EDUCATION": 0.2, "MARRIAGE": 0.01}
    result = answer(own, intercept=-1.2, partners={"bureau": 0.9, "ecommerce": None}, base_amount=80_000, policy=POLICY)
    log_odds = -1.2 + sum(own.values()) + 0.9
    assert result.probability == pytest.approx(1 / (1 + math.exp(-log_odds)))
    assert result.score == pytest.approx(600 - 20 * log_odds / math.log(2))
    assert result.partners_missing == ("ecommerce",)
    assert result.reasons == (
        "LIMIT_BAL: -9 points", "EDUCATION: -6 points", "SEX: -1 points", "partner bureau: -26 points",
    )
    assert result.decision == decision(result.score, POLICY)


def test_calibration_moves_probability_points_decision_and_limit_together():
    from fedscore.model.calibration import Calibration

    own = {"AGE": -0.1, "LIMIT_BAL": 0.3}
    calibration = Calibration(slope=0.7, intercept=1.0)
    plain = answer(own, intercept=-1.2, partners={"bureau": -0.4}, base_amount=80_000, policy=POLICY)
    result = answer(own, intercept=-1.2, partners={"bureau": -0.4}, base_amount=80_000, policy=POLICY, calibration=calibration)
    u = -1.2 + 0.3 - 0.1 - 0.4
    z = 0.7 * u + 1.0
    assert plain.probability == pytest.approx(1 / (1 + math.exp(-u)), abs=1e-15)   # identity by default
    assert result.probability == pytest.approx(1 / (1 + math.exp(-z)), abs=1e-12)
    assert result.score == pytest.approx(600 - 20 * z / math.log(2), abs=1e-9)
    assert (plain.decision, result.decision) == ("approve", "review") == (decision(plain.score, POLICY), decision(result.score, POLICY))
    assert (plain.credit_limit, result.credit_limit) == (64_000, 40_000)
    # reasons scale with the slope: 0.3 raw log-odds are 0.7·0.3·20/ln2 ≈ 6 points
    assert result.reasons == ("LIMIT_BAL: -6 points",)


def test_binned_reasons_are_worded_sorted_by_points_lost_and_skip_protected_and_small_ones():
    from fedscore.model.calibration import Calibration
    from fedscore.protocol.scoring.scorecard import Shortfall

    per_point = 0.5 * 20 / math.log(2)   # slope 0.5
    shortfalls = (
        Shortfall("AGE", 0.2, "AGE: missing"),                    # 2.9 points
        Shortfall("PAY_0", 1.0, "PAY_0: 2 or more"),              # 14.4
        Shortfall("SEX", 3.0, "SEX: F"),                          # protected: never
        Shortfall("LIMIT_BAL", 0.5, "LIMIT_BAL: below 50000"),    # 7.2
        Shortfall("MARRIAGE", 0.6 / per_point, "MARRIAGE: other"),   # 0.6 points: still a reason
        Shortfall("EDUCATION", 0.4 / per_point, "EDUCATION: other"),  # 0.4 points: not a reason
        Shortfall("BILL_AMT1", 0.0, "BILL_AMT1: below 100"),      # the best attribute: nothing lost
    )
    own = {s.characteristic: 0.0 for s in shortfalls}
    result = answer(own, intercept=-1.0, partners={"bureau": 0.2, "shop": -0.3, "telco": None}, base_amount=0,
                    policy=POLICY, calibration=Calibration(0.5, 0.1), shortfalls=shortfalls, protected=("SEX",))
    assert result.reasons == (
        "PAY_0: 2 or more", "LIMIT_BAL: below 50000", "AGE: missing", "MARRIAGE: other",
        "information held by partner bureau",
    )
    assert result.partners_missing == ("telco",)


def test_a_partner_that_lowered_the_score_is_named_in_its_own_words_when_it_gave_them():
    policy = ScoringPolicy()
    partners = {"bureau": 0.8, "shop": 0.5, "telco": -0.4}    # telco raised the score: no line for it
    wording = {"bureau": "late payments reported by your credit bureau"}
    given = answer({}, -1.0, partners, 0.0, policy, shortfalls=(), partner_wording=wording)
    assert given.reasons == ("late payments reported by your credit bureau", "information held by partner shop")
    plain = answer({}, -1.0, partners, 0.0, policy, shortfalls=())
    assert plain.reasons == ("information held by partner bureau", "information held by partner shop")
    assert (given.probability, given.score) == (plain.probability, plain.score)   # words change nothing else
