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
