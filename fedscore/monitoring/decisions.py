"""The decision mix per period against the shares the training population would get.

Expected shares come from the baseline's calibrated log-odds quantiles under
the scoring policy's cut-offs (fedscore.monitoring.baseline.expected_decisions),
so a change of cut-offs in the job's [scoring] table moves the expectation
with it. A decision whose share moved by more than the threshold (in
absolute terms: 0.1 is ten percentage points) is flagged.
"""
from __future__ import annotations

from collections.abc import Mapping

from fedscore.model.validation import DECISIONS
from fedscore.monitoring.tally import Period


def decision_shares(period: Period) -> dict[str, float]:
    return {decision: period.decisions.get(decision, 0) / period.requests for decision in DECISIONS}


def decision_shifts(shares: Mapping[str, float], expected: Mapping[str, float], threshold: float) -> dict[str, float]:
    """Each decision whose share moved by more than ``threshold`` from the expected: the move (signed)."""
    return {decision: shares[decision] - expected[decision] for decision in DECISIONS
            if abs(shares[decision] - expected[decision]) > threshold}
