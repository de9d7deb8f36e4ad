"""One monitoring run: the log counted per period, each period judged, the alerts and the document.

Periods with fewer than ``min_requests`` requests are shown but not judged
(a PSI over a handful of requests is noise). Moderate shifts (at or above a
watch threshold, below the alert threshold) are listed as notes; only alerts
make `fedscore monitor` exit 4.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from fedscore.monitoring.alerts import Alert, Thresholds
from fedscore.monitoring.baseline import expected_decisions
from fedscore.monitoring.decisions import decision_shares, decision_shifts
from fedscore.monitoring.partners import PartnerHealth, answer_rate_fall, partner_health, reference_rate
from fedscore.monitoring.stability import feature_csi, reading, score_psi
from fedscore.monitoring.tally import Period, tally
from fedscore.protocol.scoring.scorecard import ScoringPolicy


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 6)


def review(records: Iterable[dict], baseline: dict, policy: ScoringPolicy, thresholds: Thresholds,
           per: int = 0) -> dict:
    """The monitoring document: per period its counts and readings, the alerts, the notes."""
    periods = tally(records, baseline["score"]["edges"], per)
    expected = {d: _round(s) for d, s in expected_decisions(baseline, policy).items()}
    expected_rates = baseline.get("partners", {})
    alerts: list[Alert] = []
    notes: list[Alert] = []
    rows = []
    healthy_rates: dict[str, list[float]] = {}   # per partner, its judged rates that were not flagged
    for period in periods:
        row, health = _period_row(period, baseline, expected, thresholds)
        if row["judged"]:
            _judge(period, row, health, healthy_rates, expected, expected_rates, thresholds, alerts, notes)
        rows.append(row)
    total_counts = np.sum([p.score_counts for p in periods], axis=0) if periods else np.zeros(len(baseline["score"]["shares"]))
    requests = int(sum(p.requests for p in periods))
    return {
        "job_id": baseline.get("job_id", ""),
        "per": f"{per} requests" if per else "day",
        "requests": requests,
        "thresholds": thresholds.to_json(),
        "expected": {"decisions": expected, "answer_rates": dict(expected_rates)},
        "score_bins": {
            "edges": baseline["score"]["edges"],
            "training": baseline["score"]["shares"],
            "scored": [_round(c / requests) for c in total_counts] if requests else [],
        },
        "periods": rows,
        "alerts": [a.to_json() for a in alerts],
        "notes": [n.to_json() for n in notes],
    }


def _period_row(period: Period, baseline: dict, expected: dict, thresholds: Thresholds) -> tuple[dict, dict]:
    psi = score_psi(period, baseline)
    csi = feature_csi(period, baseline)
    worst = max(csi, key=csi.get) if csi else None
    health = partner_health(period)
    row = {
        "period": period.label,
        "first_ms": period.first_ms,
        "last_ms": period.last_ms,
        "requests": period.requests,
        "judged": period.requests >= thresholds.min_requests,
        "psi": _round(psi),
        "psi_reading": reading(psi, thresholds.psi_watch, thresholds.psi_alert),
        "csi": {name: _round(value) for name, value in csi.items()},
        "worst_feature": worst,
        "partners": {name: h.to_json() for name, h in health.items()},
        "decisions": {d: _round(s) for d, s in decision_shares(period).items()},
    }
    return row, health


def _judge(period: Period, row: dict, health: dict[str, PartnerHealth], healthy_rates: dict[str, list[float]], expected: dict,
           expected_rates: dict, thresholds: Thresholds, alerts: list[Alert], notes: list[Alert]) -> None:
    label = period.label

    def crossed(kind: str, subject: str, value: float, watch: float, alert: float, what: str) -> None:
        if value >= alert:
            alerts.append(Alert(label, kind, subject, _round(value), alert,
                                f"{label}: {what} {value:.3f}, a significant shift (alert at {alert})"))
        elif value >= watch:
            notes.append(Alert(label, kind, subject, _round(value), watch,
                               f"{label}: {what} {value:.3f}, a moderate shift (watch from {watch})"))

    crossed("psi", "score", row["psi"], thresholds.psi_watch, thresholds.psi_alert, "score PSI")
    for name, value in row["csi"].items():
        crossed("csi", name, value, thresholds.csi_watch, thresholds.csi_alert, f"CSI of {name}")
    for name, partner in health.items():
        reference = reference_rate(name, healthy_rates, expected_rates)
        if not answer_rate_fall(partner.rate, reference, thresholds.answer_rate_fall):
            healthy_rates.setdefault(name, []).append(partner.rate)
        else:
            alerts.append(Alert(label, "answer_rate", name, _round(partner.rate), _round(reference),
                                f"{label}: partner {name} answered {partner.answered} of {partner.asked} requests "
                                f"({partner.rate:.1%}, {partner.late} late) against {reference:.1%} before: "
                                "its data feed or service may be down"))
        if thresholds.latency_p95_ms and partner.p95_ms is not None and partner.p95_ms > thresholds.latency_p95_ms:
            alerts.append(Alert(label, "latency", name, partner.p95_ms, thresholds.latency_p95_ms,
                                f"{label}: partner {name} replied in {partner.p95_ms:.0f} ms at the 95th percentile "
                                f"(alert above {thresholds.latency_p95_ms:.0f} ms)"))
    shares = row["decisions"]
    for decision, move in decision_shifts(shares, expected, thresholds.decision_shift).items():
        alerts.append(Alert(label, "decisions", decision, _round(shares[decision]), thresholds.decision_shift,
                            f"{label}: {decision} {shares[decision]:.1%} of requests against {expected[decision]:.1%} "
                            f"expected ({move:+.1%}; alert beyond ±{thresholds.decision_shift:.0%})"))
