"""The job report: what a data scientist reads after a run (JSON), the same keys however the job ran.

The coordinator daemon builds it after a deployed job; the notebook estimator
builds it from the same function, passing None for what only a deployment has
(the audit chain, the settlement, the coordinator's state folder).
"""
from __future__ import annotations

import json
from pathlib import Path

from fedscore.crypto.paillier import PublicKey
from fedscore.files import write_atomically
from fedscore.job import JobSpec
from fedscore.protocol.training.driver import TrainingResult

METRICS = (
    "auc", "ks", "test_auc", "test_ks", "local_only_auc", "local_only_ks", "local_only_test_auc", "local_only_test_ks",
)
# Validation of a credit-grade scorecard (fedscore.model.validation), copied from the card center's metrics when
# present, else None: brier, log_loss, mean_pd, observed_default_rate (floats); calibration, gains, decision_bands
# (lists of rows); fairness ({attribute: {...}}); iv ({party: {feature: value}}); scorecard (list of
# {characteristic, bin, count, bad_rate, woe, weight, points}); calibration_fit ({slope, intercept}).
VALIDATION = (
    "brier", "log_loss", "mean_pd", "observed_default_rate", "calibration", "gains", "decision_bands", "fairness",
    "iv", "scorecard", "calibration_fit",
)
NO_AUDIT = {"ledgers": None, "head": None, "blocks": None, "settlement": None}
# The loss is still moving when its mean over the last LOSS_WINDOW epochs differs from the mean over the
# LOSS_WINDOW before by more than LOSS_TOLERANCE of the loss per epoch. Means, not the last epoch alone: with
# momentum the loss zigzags from epoch to epoch. On the bundled data, runs within 0.2% of the optimal loss (test
# AUC within 0.001 of the optimum's) move at most 0.08% per epoch; runs 0.002 or more of test AUC short, 0.14% or more.
LOSS_WINDOW = 3
LOSS_TOLERANCE = 1e-3


def training_warnings(losses: list[float], stopped_early: bool = False) -> list[str]:
    """What the report warns about the training: a loss still falling (or rising) over the last epochs."""
    if stopped_early or len(losses) < 2:
        return []
    window = min(LOSS_WINDOW, len(losses) // 2)
    before = sum(losses[-2 * window: -window]) / window
    last = sum(losses[-window:]) / window
    change = (last - before) / abs(last) / window   # per epoch
    if abs(change) <= LOSS_TOLERANCE:
        return []
    span = "in the last epoch" if window == 1 else f"per epoch over the last {window} epochs"
    if change < 0:
        return [f"loss still falling at the last epoch ({100 * change:.2f}% {span}): "
                "train longer (epochs) or raise learning_rate"]
    return [f"loss rising at the last epoch (+{100 * change:.2f}% {span}): lower learning_rate or momentum"]


def build_report(
    spec: JobSpec,
    job_id: str,
    public_key: PublicKey,
    rows: int,
    train_rows: int,
    result: TrainingResult,
    parties: dict[str, dict],
    alignment: dict,
    seconds: float,
    audit: dict | None = None,
    coordinator_state: str | None = None,
    resumptions: int = 0,
) -> dict:
    """The report of one trained job.

    ``alignment``: aligned_rows, overlaps, alignment_seconds, obfuscation and
    obfuscation_seconds; ``audit``: ledgers, head, blocks and settlement (None: no chain).
    """
    metrics, audit = result.metrics, audit or NO_AUDIT
    return {
        "job": spec.name,
        "job_id": job_id,
        **{key: metrics.get(key) for key in METRICS},
        **{key: metrics.get(key) for key in VALIDATION},
        "evaluation": metrics.get("curves"),   # the HTML report's curves: aggregates only (fedscore.model.curves)
        "loss": result.losses,
        "epoch_seconds": result.epoch_seconds,
        "epochs": len(result.losses),
        "epochs_planned": spec.epochs,
        "stopped_early": result.stopped_early,
        "warnings": training_warnings(result.losses, result.stopped_early),
        "steps": result.steps,
        "rows": rows,
        "aligned_rows": alignment["aligned_rows"],
        "overlaps": alignment["overlaps"],
        "alignment_seconds": alignment["alignment_seconds"],
        "obfuscation": alignment["obfuscation"],
        "obfuscation_seconds": alignment["obfuscation_seconds"],   # made in advance; 0 when all inline
        "train_rows": train_rows,
        "test_rows": rows - train_rows,
        "key_bits": spec.key_bits,
        "binning": spec.binning.method,      # "none": standardised columns; else binned attributes
        "public_key_fingerprint": public_key.fingerprint(),
        "learning_rate": spec.learning_rate,
        "batch_size": spec.batch_size,
        "l2": spec.l2,
        "seed": spec.seed,
        "parties": [{"name": name, **info} for name, info in parties.items()],
        "coordinator": {"state_dir": coordinator_state},
        "ledgers": audit["ledgers"],
        "ledger_head": audit["head"],
        "ledger_blocks": audit["blocks"],
        "settlement": audit["settlement"],
        "seconds": seconds,
        "resumptions": resumptions,
    }


def html_path(report_path: Path) -> Path:
    """Where the HTML page of a JSON report goes: the same name with .html."""
    path = report_path.with_suffix(".html")
    return path if path != report_path else report_path.with_name(report_path.name + ".html")


def write_report(path: Path, report: dict) -> None:
    write_atomically(path, json.dumps(report, indent=2) + "\n")
