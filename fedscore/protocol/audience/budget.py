"""The card center's privacy budget at a partner: the ε its queries spent in a sliding window.

Every answered query spends its ε (sequential composition: the answers
together are differentially private with the sum of their ε). A card center
may spend at most the partner's ``budget`` in any window of ``window_days``
days, at most ``max_epsilon`` on one query and at least ``min_epsilon`` (so a
budget buys at most budget / min_epsilon queries in a window: tiny ε cannot
buy unlimited questions). The spend is recomputed from the audience chain's
query entries by every member, so both sides agree on it; the partner takes
the larger of that and the spend of its own record (every answer it gave, by
its own answer time), so neither an entry the chain does not hold yet nor
one dated outside the window lets the budget be spent twice.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

from fedscore.protocol.audience.noise import MIN_EPSILON
from fedscore.protocol.audience.policy import AudiencePolicy

DAY_MS = 86_400_000
SLACK = 1e-9   # ε added up in floating point: 30 × 0.1 is a budget of 3.0, not over it


def spent(queries: Iterable[tuple[int, float]], now_ms: int, window_days: int) -> float:
    """The ε of the (time_ms, ε) queries in the window of ``window_days`` days ending at ``now_ms``; a query stamped
    later than ``now_ms`` (a clock ahead of this one) counts too."""
    start = now_ms - window_days * DAY_MS
    return math.fsum(epsilon for time_ms, epsilon in queries if time_ms > start)


def budget_refusal(spent_so_far: float, epsilon: float, policy: AudiencePolicy) -> str | None:
    """Why a query of ``epsilon`` may not be answered with ``spent_so_far`` spent in the window (None: it may)."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not math.isfinite(epsilon) \
            or epsilon < MIN_EPSILON:
        return f"ε must be a positive number (at least {MIN_EPSILON}), got {epsilon!r}"
    if epsilon < policy.min_epsilon:
        return (f"ε {epsilon:g} is less than the {policy.min_epsilon:g} one query must spend "
                "(the budget buys a bounded number of queries)")
    if epsilon > policy.max_epsilon + SLACK:
        return f"ε {epsilon:g} is more than the {policy.max_epsilon:g} one query may spend"
    if spent_so_far + epsilon > policy.budget + SLACK:
        return (f"ε {epsilon:g} would bring the spend of the last {policy.window_days} days to "
                f"{spent_so_far + epsilon:g}, over the budget of {policy.budget:g} ({spent_so_far:g} spent)")
    return None
