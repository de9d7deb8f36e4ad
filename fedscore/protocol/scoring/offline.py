"""Scoring from the parties' model files directly: the reference the online service must match.

A party's contribution to the log-odds is the sum of its features' parts,
added in the model's feature order, plus the intercept at the card center:

- binned models (``model.bins``): the weight of the bin each raw value falls
  in (fedscore.model.binning: a number, NaN/None for missing, or text; an
  unseen value goes to its documented bin, never an error);
- standardised models: w·(x − mean)/scale, every value a finite number.

The card center's calibration (a, c) then turns the log-odds u into a·u + c,
which every probability, score, decision and limit uses. Offline, with every
party's file and row at hand (as in a test, or an audit with the partners'
consent), the answer is computed exactly as online, where each partner
computes its own part: the one-row and many-row paths add in the same order,
so they agree to the bit.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from fedscore.errors import DataError
from fedscore.model.attributes import attribute_wording
from fedscore.model.calibration import IDENTITY, Calibration
from fedscore.model.model_file import PartyModel
from fedscore.protocol.scoring.scorecard import Answer, ScoringPolicy, Shortfall, answer, probability


def _check_bins(model: PartyModel) -> None:
    if model.binner.names != list(model.features):
        raise DataError(f"party {model.party!r}: its model's bins do not follow its feature list")


def contribution_matrix(model: PartyModel, matrix: np.ndarray) -> np.ndarray:
    """rows × features: each feature's part of the log-odds; the one place a model file's encoding is applied.

    Binned: ``matrix`` holds raw values (an object array of numbers, NaN/None and text, or floats).
    Standardised: floats, w·(x − mean)/scale."""
    if model.binned:
        _check_bins(model)
        matrix = np.asarray(matrix, dtype=object) if not isinstance(matrix, np.ndarray) else matrix
        if matrix.ndim != 2 or matrix.shape[1] != len(model.features):
            raise DataError(f"party {model.party!r}: needs {len(model.features)} columns ({', '.join(model.features)})")
        return model.binner.contributions(model.weights, [matrix[:, j] for j in range(matrix.shape[1])])
    return np.asarray(model.weights) * (np.asarray(matrix, dtype=np.float64) - np.asarray(model.mean)) / np.asarray(model.scale)


def _one_row(model: PartyModel, values: Sequence[object]) -> np.ndarray:
    """One applicant's values as a 1 × features matrix, checked for the model's kind."""
    if model.binned:
        values = list(values)
        if len(values) != len(model.features):
            raise DataError(f"party {model.party!r}: needs {len(model.features)} values ({', '.join(model.features)})")
        row = np.empty((1, len(values)), dtype=object)
        row[0, :] = values
        return row
    try:
        numbers = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        numbers = np.array([math.nan])
    if numbers.shape != (len(model.features),) or not np.all(np.isfinite(numbers)):
        raise DataError(f"party {model.party!r}: needs {len(model.features)} finite values ({', '.join(model.features)})")
    return numbers[np.newaxis, :]


def feature_contributions(model: PartyModel, values: Sequence[object]) -> dict[str, float]:
    """{feature: its part of the log-odds}: this party's contribution, feature by feature."""
    return dict(zip(model.features, contribution_matrix(model, _one_row(model, values))[0].tolist()))


def shortfalls(model: PartyModel, values: Sequence[object]) -> tuple[Shortfall, ...]:
    """A binned model's reasons material: per characteristic (never a protected one), its bin's weight less
    its best attribute's (the one with the most points under the model's calibration), and the bin in words."""
    _check_bins(model)
    binner, slope = model.binner, model.calibrated.slope
    row = _one_row(model, values)
    indices = binner.bin_indices([row[:, j] for j in range(row.shape[1])])[0]
    found = []
    for bins, block, index in zip(binner.features, binner.weight_blocks(model.weights), indices.tolist()):
        if bins.feature in model.protected:
            continue
        best = float(block.min() if slope >= 0 else block.max())
        found.append(Shortfall(bins.feature, float(block[index]) - best, attribute_wording(bins, index)))
    return tuple(found)


def partial_score(model: PartyModel, values: Sequence[object]) -> float:
    """A partner's partial score u_k: the only thing it returns when asked about an applicant."""
    return float(sum(feature_contributions(model, values).values()))


def limit_base(center: PartyModel, values: Sequence[object], policy: ScoringPolicy) -> float:
    """The credit limit's base amount from the card center's values (0 when its model lacks the column)."""
    if policy.limit_basis not in center.features:
        return 0.0
    value = list(values)[center.features.index(policy.limit_basis)]
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
        raise DataError(f"feature {policy.limit_basis!r} must be a finite number: the credit limit scales it")
    return float(value)


def center_answer(
    center: PartyModel, center_values: Sequence[object], scores: Mapping[str, float | None], base: float,
    policy: ScoringPolicy, partner_wording: Mapping[str, str] | None = None,
) -> Answer:
    """The answer from the card center's own values and the partners' partial scores (None: unknown or no
    answer): the one computation behind both the offline and the online answer. ``partner_wording``: each
    partner's own words for its reason line (its config's ``reason``), where it gave them."""
    if center.intercept is None:
        raise DataError(f"party {center.party!r}: its model has no intercept; is it the card center's?")
    own = feature_contributions(center, center_values)
    reasons_from = shortfalls(center, center_values) if center.binned else None
    return answer(own, center.intercept, dict(scores), base, policy, center.calibrated, reasons_from, center.protected,
                  partner_wording)


def offline_answer(
    center: PartyModel,
    center_values: Sequence[object],
    partners: Mapping[str, tuple[PartyModel, Sequence[object] | None]],
    policy: ScoringPolicy,
) -> Answer:
    """The answer for one applicant; a partner's values None means it does not know the applicant."""
    if center.intercept is None:
        raise DataError(f"party {center.party!r}: its model has no intercept; is it the card center's?")
    base = limit_base(center, center_values, policy)
    scores = {name: None if values is None else partial_score(model, values) for name, (model, values) in partners.items()}
    return center_answer(center, center_values, scores, base, policy)


def partial_scores(model: PartyModel, matrix: np.ndarray) -> np.ndarray:
    """partial_score for many rows at once, added feature by feature in the model's order as
    partial_score adds them, so each equals the one-row answer to the bit."""
    parts = contribution_matrix(model, matrix)
    total = np.zeros(parts.shape[0])
    for j in range(parts.shape[1]):
        total = total + parts[:, j]
    return total


def log_odds(
    center: PartyModel, center_matrix: np.ndarray, partners: Mapping[str, tuple[PartyModel, np.ndarray]]
) -> np.ndarray:
    """The model's log-odds u (before calibration) for rows every party holds: the intercept, the card
    center's part, then the partners' parts in name order, the order answer() adds them in, so each
    equals the served log-odds to the bit. ``calibrated(center, u)`` or ``probabilities(u, center.calibrated)``
    give what is served."""
    if center.intercept is None:
        raise DataError(f"party {center.party!r}: its model has no intercept; is it the card center's?")
    own = partial_scores(center, center_matrix)
    rest = np.zeros(len(own))
    for name in sorted(partners):
        model, matrix = partners[name]
        rest = rest + partial_scores(model, matrix)
    return center.intercept + own + rest


def calibrated(center: PartyModel, log_odds: np.ndarray) -> np.ndarray:
    """The card center's calibrated log-odds a·u + c per row, as the served answer computes them."""
    calibration = center.calibrated
    return np.array([calibration.log_odds(u) for u in np.asarray(log_odds, dtype=np.float64).tolist()], dtype=np.float64)


def probabilities(log_odds: np.ndarray, calibration: Calibration = IDENTITY) -> np.ndarray:
    """σ(a·u + c) per row from the model's log-odds u, by the scorecard's own function (the served
    probability, to the bit); pass the card center's ``model.calibrated``."""
    return np.array(
        [probability(calibration.log_odds(u)) for u in np.asarray(log_odds, dtype=np.float64).tolist()], dtype=np.float64
    )
