"""Refusing a query whose cut-off is near an earlier one's on the same model.

Two answers on one model whose cut-offs are close reveal, by subtraction,
about the few users between them: "at least 620 points" and "at least 621
points" differ by the users scoring 620. The refusal is decided on the
queries alone, never on the users: a refusal that looked at who is between
two cut-offs would itself say whether anyone is (bisecting the cut-off with
tiny ε would read off users' exact scores, for free). So it reveals nothing
the card center did not already know. What any pair of answers reveals is
bounded by the noise and the budget (`budget`: each query spends at least
the policy's ``min_epsilon``); this refusal keeps the obvious subtraction
from being asked at all. A new query on a model, with the same
``unseen_only``, must ask for the same cut-off as each earlier one in the
budget window (a repeat, which the budget pays for) or one at least the
policy's ``min_points_gap`` points away. The partner applies it to its own
answers; the audience chain's rules apply it to the chain's query entries.
"""
from __future__ import annotations

from collections.abc import Iterable


def nearby_cutoff(model: str, unseen_only: bool, min_points: float, earlier: Iterable[tuple[str, str, bool, float]],
                  gap: float) -> str | None:
    """Why a query of ``min_points`` on ``model`` may not be answered (None: it may). ``earlier``: (query id, model,
    unseen_only, min_points) of the earlier queries in the window."""
    for query_id, then_model, then_unseen_only, then_points in earlier:
        if then_model != model or bool(then_unseen_only) != bool(unseen_only):
            continue
        if 0 < abs(min_points - then_points) < gap:
            return (f"its cut-off {min_points:g} is within {gap:g} points of query {query_id}'s ({then_points:g}) on "
                    f"the same model: the users between the two would be counted by subtraction; ask for the same "
                    f"cut-off or one at least {gap:g} points away")
    return None
