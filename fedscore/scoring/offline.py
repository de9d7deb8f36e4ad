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
from fedscore.scoring.scorecard import Answer, ScoringPolicy, answer


def feature_contributions(model: PartyModel, values: Sequence[float]) -> dict[str, float]:
    """{feature: w·standardised value}: this party's part of the log-odds, feature by feature."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(model.features),) or not np.all(np.isfinite(values)):
        raise DataError(f"party {model.party!r}: needs {len(model.features)} finite values ({', '.join(model.features)})")
    parts = np.asarray(model.weights) * (values - np.asarray(model.mean)) / np.asarray(model.scale)
    return dict(zip(model.features, parts.tolist()))


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
