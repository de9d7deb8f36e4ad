"""From a model's log-odds to what an approval system acts on.

The model gives u, the log-odds of default (p = σ(u)). The industry's
scorecard convention maps the odds of being good, (1 − p)/p = e^(−u), to
points: score = offset + pdo · log2(odds), so every `pdo` points double the
odds (defaults 600 and 20), clipped to [min_score, max_score]. Cut-offs turn
the score into approve / review / decline; a policy table turns score bands
and a base amount (stated income, or the card center's own limit field)
into a suggested credit limit, rounded down to the policy's step.

Reasons follow the adverse-action convention: the features that cost the
applicant the most points against an average applicant (standardised value
0), largest first, at most four from the card center's own columns, plus
one line for each partner whose contribution lowered the score.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

LN2 = math.log(2.0)
MAX_REASONS = 4


@dataclass(frozen=True)
class LimitBand:
    min_score: float
    multiple: float          # of the base amount


@dataclass(frozen=True)
class ScoringPolicy:
    offset: float = 600.0
    pdo: float = 20.0                      # points to double the odds
    min_score: float = 300.0
    max_score: float = 850.0
    approve_at: float = 620.0              # score >= approve_at: approve
    review_at: float = 580.0               # review_at <= score < approve_at: review; below: decline
    limit_basis: str = "LIMIT_BAL"         # the card center's column the limit scales
    limit_bands: tuple[LimitBand, ...] = field(
        default=(LimitBand(700, 1.2), LimitBand(660, 1.0), LimitBand(620, 0.8), LimitBand(580, 0.5))
    )
    limit_step: int = 1000
    limit_cap: int = 1_000_000

    def __post_init__(self) -> None:
        if not self.min_score < self.max_score:
            raise ValueError("min_score must be below max_score")
        if not self.review_at <= self.approve_at:
            raise ValueError("review_at must not exceed approve_at")
        if self.pdo <= 0 or self.limit_step <= 0:
            raise ValueError("pdo and limit_step must be positive")


@dataclass(frozen=True)
class Answer:
    probability: float
    score: float
    decision: str
    credit_limit: int
    reasons: tuple[str, ...]
    partners_missing: tuple[str, ...]


def probability(log_odds: float) -> float:
    """σ(u), computed without overflow for large |u|."""
    if log_odds >= 0:
        return 1.0 / (1.0 + math.exp(-log_odds))
    e = math.exp(log_odds)
    return e / (1.0 + e)


def points(log_odds: float, policy: ScoringPolicy) -> float:
    """offset + pdo·log2((1 − p)/p), with log((1 − p)/p) = −u; clipped to the policy's range."""
    raw = policy.offset - policy.pdo * log_odds / LN2
    return min(policy.max_score, max(policy.min_score, raw))


def decision(score: float, policy: ScoringPolicy) -> str:
    if score >= policy.approve_at:
        return "approve"
    if score >= policy.review_at:
        return "review"
    return "decline"


def credit_limit(score: float, base_amount: float, policy: ScoringPolicy) -> int:
    """The first band (highest first) the score reaches, times the base amount, rounded down to the step."""
    if decision(score, policy) == "decline" or not base_amount > 0:
        return 0
    for band in sorted(policy.limit_bands, key=lambda b: -b.min_score):
        if score >= band.min_score:
            amount = min(base_amount * band.multiple, policy.limit_cap)
            return int(amount // policy.limit_step) * policy.limit_step
    return 0


def reasons(own: dict[str, float], partners: dict[str, float], policy: ScoringPolicy) -> tuple[str, ...]:
    """Lines naming what lowered the score: ``own``/``partners`` are log-odds contributions against average."""
    per_point = policy.pdo / LN2
    costly = 0.5 / per_point  # below half a point is not a reason
    lowering = sorted(((c, name) for name, c in own.items() if c >= costly), reverse=True)[:MAX_REASONS]
    lines = [f"{name}: -{c * per_point:.0f} points" for c, name in lowering]
    lines += [f"partner {name}: -{c * per_point:.0f} points" for name, c in sorted(partners.items()) if c >= costly]
    return tuple(lines)


def answer(
    own: dict[str, float],
    intercept: float,
    partners: dict[str, float | None],
    base_amount: float,
    policy: ScoringPolicy,
) -> Answer:
    """The full answer from per-feature log-odds contributions (own), the intercept and each
    partner's partial score (None: the partner does not know the applicant or did not answer;
    its contribution is then taken as an average applicant's, 0, and the partner is listed)."""
    present = {name: partners[name] for name in sorted(partners) if partners[name] is not None}
    log_odds = intercept + sum(own.values()) + sum(present.values())   # one order everywhere: equal to the bit
    score = points(log_odds, policy)
    return Answer(
        probability=probability(log_odds),
        score=score,
        decision=decision(score, policy),
        credit_limit=credit_limit(score, base_amount, policy),
        reasons=reasons(own, present, policy),
        partners_missing=tuple(sorted(name for name, u in partners.items() if u is None)),
    )
