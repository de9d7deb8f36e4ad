"""The monitoring baseline: the training population as aggregates, written beside the card center's model.

What the scored applicants are compared with, from what the card center
computes when training ends (its evaluation of the training rows): shares
only, never a row.

- ``score``: the training rows' served probability of default (calibrated)
  cut at its deciles (fedscore.model.curves.psi_edges, as the report's PSI),
  each decile's share;
- ``log_odds_quantiles``: the training rows' calibrated log-odds every half
  percent, so the expected decision shares can be worked out under whatever
  cut-offs the scoring policy serves with (expected_decisions);
- ``features``: each own feature's share of training rows per bin (a binned
  model's own bins) or per decile bucket of its training values (a
  standardised model; edges rounded to four significant digits, so none is
  an applicant's exact value);
- ``partners``: each partner's expected answer rate, the share of the card
  center's applicants the partner held at alignment.

The training rows are the aligned applicants, whom every partner knew: a
scored population that partners know less well scores differently, which
the monitor shows as a shift (docs/monitoring.md).
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fedscore.errors import ConfigError
from fedscore.model.curves import PSI_BINS, psi_edges
from fedscore.protocol.scoring.scorecard import LN2, ScoringPolicy

BASELINE_FILE = "monitoring-baseline.json"
VERSION = 1
QUANTILE_LEVELS = np.linspace(0.0, 1.0, 201)   # every half percent
EDGE_DIGITS = 4                                 # significant digits of a standardised feature's bucket edges


def _shares(counts: np.ndarray) -> list[float]:
    total = counts.sum()
    return [round(float(c) / total, 6) if total else 0.0 for c in counts]


def _significant(value: float, digits: int = EDGE_DIGITS) -> float:
    if value == 0 or not math.isfinite(value):
        return float(value)
    return round(value, digits - 1 - int(math.floor(math.log10(abs(value)))))


def binned_feature(labels: Sequence[str], counts: Sequence[int]) -> dict:
    """A binned feature's training shares per bin, in the model's bin order."""
    return {"kind": "bins", "labels": list(labels), "shares": _shares(np.asarray(counts, dtype=np.float64))}


def valued_feature(values: np.ndarray) -> dict:
    """A standardised feature's training shares per decile bucket (bucket i: edges[i-1] <= x < edges[i])."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    edges = np.unique([_significant(float(e)) for e in psi_edges(values, PSI_BINS)]) if len(values) >= PSI_BINS else np.array([])
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return {"kind": "deciles", "edges": [float(e) for e in edges], "shares": _shares(counts.astype(np.float64))}


def training_baseline(job_id: str, log_odds: np.ndarray, features: Mapping[str, dict],
                      answer_rates: Mapping[str, float]) -> dict:
    """The baseline document from the training rows' calibrated log-odds, each own feature's shares
    (binned_feature, valued_feature) and each partner's expected answer rate."""
    log_odds = np.asarray(log_odds, dtype=np.float64)
    if len(log_odds) < PSI_BINS:
        raise ValueError(f"a monitoring baseline needs at least {PSI_BINS} training rows, got {len(log_odds)}")
    probability = 1.0 / (1.0 + np.exp(-log_odds))
    edges = psi_edges(probability, PSI_BINS)
    counts = np.bincount(np.searchsorted(edges, probability, side="right"), minlength=len(edges) + 1)
    return {
        "version": VERSION,
        "job_id": job_id,
        "rows": int(len(log_odds)),
        "score": {"edges": [float(e) for e in edges], "shares": _shares(counts.astype(np.float64))},
        "log_odds_quantiles": [round(float(q), 6) for q in np.quantile(log_odds, QUANTILE_LEVELS)],
        "features": dict(features),
        "partners": {name: round(float(rate), 6) for name, rate in sorted(answer_rates.items())},
    }


def expected_decisions(baseline: dict, policy: ScoringPolicy) -> dict[str, float]:
    """The share of the training population each decision would get under ``policy``'s cut-offs:
    score >= cut-off holds for log-odds up to the cut-off's log-odds (points fall as risk rises)."""
    quantiles = np.asarray(baseline["log_odds_quantiles"], dtype=np.float64)
    levels = np.linspace(0.0, 1.0, len(quantiles))

    def at_least(points: float) -> float:
        if points <= policy.min_score:
            return 1.0
        if points > policy.max_score:
            return 0.0
        threshold = (policy.offset - points) * LN2 / policy.pdo
        return float(np.interp(threshold, quantiles, levels, left=0.0, right=1.0))

    approve, reviewed_or_better = at_least(policy.approve_at), at_least(policy.review_at)
    return {"approve": approve, "review": max(0.0, reviewed_or_better - approve), "decline": 1.0 - reviewed_or_better}


def write_baseline(folder: Path, baseline: dict) -> Path:
    from fedscore.files import write_atomically

    path = folder / BASELINE_FILE
    write_atomically(path, json.dumps(baseline, indent=1, sort_keys=True))
    return path


def load_baseline(folder: Path) -> dict:
    """The baseline beside a model; ConfigError saying what to do when there is none or it is unreadable."""
    path = folder / BASELINE_FILE
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no monitoring baseline {path}: the card center writes it when a job's training ends; "
                          "a model trained before monitoring existed needs training again") from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"monitoring baseline {path} is not readable: {error}") from None
    if not isinstance(document, dict) or document.get("version") != VERSION or "score" not in document:
        raise ConfigError(f"monitoring baseline {path} is not a version-{VERSION} baseline")
    return document


def bucket_edges(baseline: dict) -> dict[str, list[float]]:
    """A standardised model's bucket edges per feature, for the scoring log (fedscore.monitoring.scoring_log.OwnBuckets)."""
    return {name: feature["edges"] for name, feature in baseline.get("features", {}).items() if feature["kind"] == "deciles"}
