"""Scoring from the parties' model files directly: the reference the online service must match.

Each party's model file holds its own columns' scaling and weights; a
party's contribution to the log-odds is w·(x − mean)/scale over its columns,
plus the intercept at the card center. Offline, with every party's file and
row at hand (as in a test, or an audit with the partners' consent), the
answer is computed exactly as online, where each partner computes its own part.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedscore.errors import DataError
from fedscore.model.model_file import PartyModel
from fedscore.protocol.scoring.scorecard import Answer, ScoringPolicy, answer, probability


def contribution_matrix(model: PartyModel, matrix: np.ndarray) -> np.ndarray:
    """w·(x − mean)/scale for every row and feature: the one place a model file's scaling is applied."""
    return np.asarray(model.weights) * (matrix - np.asarray(model.mean)) / np.asarray(model.scale)


def feature_contributions(model: PartyModel, values: Sequence[float]) -> dict[str, float]:
    """{feature: w·standardised value}: this party's part of the log-odds, feature by feature."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(model.features),) or not np.all(np.isfinite(values)):
        raise DataError(f"party {model.party!r}: needs {len(model.features)} finite values ({', '.join(model.features)})")
    return dict(zip(model.features, contribution_matrix(model, values[np.newaxis, :])[0].tolist()))


def partial_score(model: PartyModel, values: Sequence[float]) -> float:
    """A partner's partial score u_k: the only thing it returns when asked about an applicant."""
    return float(sum(feature_contributions(model, values).values()))


def offline_answer(
    center: PartyModel,
    center_values: Sequence[float],
    partners: Mapping[str, tuple[PartyModel, Sequence[float] | None]],
    policy: ScoringPolicy,
) -> Answer:
    """The answer for one applicant; a partner's values None means it does not know the applicant."""
    if center.intercept is None:
        raise DataError(f"party {center.party!r}: its model has no intercept; is it the card center's?")
    own = feature_contributions(center, center_values)
    base = dict(zip(center.features, center_values)).get(policy.limit_basis, 0.0)
    scores = {name: None if values is None else partial_score(model, values) for name, (model, values) in partners.items()}
    return answer(own, center.intercept, scores, float(base), policy)


def partial_scores(model: PartyModel, matrix: np.ndarray) -> np.ndarray:
    """partial_score for many rows at once, added feature by feature in the model's order as
    partial_score adds them, so each equals the one-row answer to the bit."""
    parts = contribution_matrix(model, np.asarray(matrix, dtype=np.float64))
    total = np.zeros(parts.shape[0])
    for j in range(parts.shape[1]):
        total = total + parts[:, j]
    return total


def log_odds(
    center: PartyModel, center_matrix: np.ndarray, partners: Mapping[str, tuple[PartyModel, np.ndarray]]
) -> np.ndarray:
    """u for rows every party holds: the intercept, the card center's part, then the partners' parts
    in name order, the order answer() adds them in, so each equals the served log-odds to the bit."""
    if center.intercept is None:
        raise DataError(f"party {center.party!r}: its model has no intercept; is it the card center's?")
    own = partial_scores(center, center_matrix)
    rest = np.zeros(len(own))
    for name in sorted(partners):
        model, matrix = partners[name]
        rest = rest + partial_scores(model, matrix)
    return center.intercept + own + rest


def probabilities(log_odds: np.ndarray) -> np.ndarray:
    """σ(u) per row, by the scorecard's own function (the served probability, to the bit)."""
    return np.array([probability(u) for u in np.asarray(log_odds, dtype=np.float64).tolist()], dtype=np.float64)
