"""From a model's log-odds to what an approval system acts on.

The model gives u, the log-odds of default (p = σ(u)). The industry's
scorecard convention maps the odds of being good, (1 − p)/p = e^(−u), to
points: score = offset + pdo · log2(odds), so every `pdo` points double the
odds (defaults 600 and 20), clipped to [min_score, max_score]. Cut-offs turn
the score into approve / review / decline; a policy table turns score bands
and a base amount (stated income, or the card center's own limit field)
into a suggested credit limit, rounded down to the policy's step.

The card center's recalibration (fedscore.model.calibration: slope a,
intercept c) applies before anything is derived: the probability, the
points, the decision and the limit all come from the calibrated log-odds
a·u + c; a model without one uses the identity (a = 1, c = 0).

Reasons follow the adverse-action convention, at most four from the card
center's own columns (never a protected one), largest first, at least half
a point each, plus one line for each partner whose partial score lowered
the score against an average applicant's (0):

- binned models: what each characteristic cost against its best attribute,
  a·(w_bin − min_b w)·pdo/ln2 points, worded from the applicant's bin
  ("PAY_0: 2 or more"; fedscore.model.attributes.attribute_wording), and
  "information held by partner bureau";
- standardised models: what each feature cost against an average applicant
  (standardised value 0), "LIMIT_BAL: -9 points", and "partner bureau: -26 points".
"""
from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from fedscore.model.calibration import IDENTITY, Calibration

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


@dataclass(frozen=True)
class Shortfall:
    """What one of the card center's characteristics cost a binned model's applicant: the weight of their
    bin less the best attribute's, in raw log-odds, and their bin in words (a reason's wording)."""

    characteristic: str
    log_odds: float
    wording: str


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


def reasons(
    own: dict[str, float],
    partners: dict[str, float],
    policy: ScoringPolicy,
    calibration: Calibration = IDENTITY,
    shortfalls: Sequence[Shortfall] | None = None,
    protected: Collection[str] = (),
    partner_wording: Mapping[str, str] | None = None,
) -> tuple[str, ...]:
    """Lines naming what lowered the score, from raw log-odds costs scaled to points by a·pdo/ln2.

    ``shortfalls`` (binned models): each characteristic against its best attribute, worded from the bin.
    Otherwise ``own``: each feature's contribution against an average applicant, in points.
    ``partners``: each partner's partial score against an average applicant's (0); its line is in the
    partner's own words when its config gives them (``partner_wording``).
    """
    per_point = calibration.slope * policy.pdo / LN2
    enough = 0.5   # below half a point is not a reason
    if shortfalls is not None:
        costs = [(s.log_odds * per_point, s.characteristic, s.wording) for s in shortfalls]
    else:
        costs = [(c * per_point, name, f"{name}: -{c * per_point:.0f} points") for name, c in own.items()]
    costs = [c for c in costs if c[0] >= enough and c[1] not in protected]
    lowering = sorted(costs, key=lambda c: (-c[0], c[1]))[:MAX_REASONS]
    lines = [wording for _, _, wording in lowering]
    for name, u in sorted(partners.items()):
        if u * per_point >= enough:
            own_words = (partner_wording or {}).get(name)
            lines.append(own_words or (f"information held by partner {name}" if shortfalls is not None
                                       else f"partner {name}: -{u * per_point:.0f} points"))
    return tuple(lines)


def answer(
    own: dict[str, float],
    intercept: float,
    partners: dict[str, float | None],
    base_amount: float,
    policy: ScoringPolicy,
    calibration: Calibration = IDENTITY,
    shortfalls: Sequence[Shortfall] | None = None,
    protected: Collection[str] = (),
    partner_wording: Mapping[str, str] | None = None,
) -> Answer:
    """The full answer from per-feature log-odds contributions (own), the intercept and each
    partner's partial score (None: the partner does not know the applicant or did not answer;
    its contribution is then taken as an average applicant's, 0, and the partner is listed).

    The model's log-odds u are recalibrated (a·u + c) before the probability, points, decision
    and limit; ``shortfalls`` (binned models) word the reasons from bins; ``protected`` columns
    are never a reason."""
    present = {name: partners[name] for name in sorted(partners) if partners[name] is not None}
    log_odds = intercept + sum(own.values()) + sum(present.values())   # one order everywhere: equal to the bit
    calibrated = calibration.log_odds(log_odds)
    score = points(calibrated, policy)
    return Answer(
        probability=probability(calibrated),
        score=score,
        decision=decision(score, policy),
        credit_limit=credit_limit(score, base_amount, policy),
        reasons=reasons(own, present, policy, calibration, shortfalls, protected, partner_wording),
        partners_missing=tuple(sorted(name for name, u in partners.items() if u is None)),
    )
