"""Monitoring thresholds (the job file's optional [monitoring] table) and the alerts they raise.

    [monitoring]
    psi_watch = 0.1          # score PSI at or above: a moderate shift, shown but no alert
    psi_alert = 0.25         # score PSI at or above: alert
    csi_watch = 0.1          # the same for each of the card center's own features
    csi_alert = 0.25
    answer_rate_fall = 0.3   # alert when a partner answers less than (1 - 0.3) of its reference rate
    decision_shift = 0.1     # alert when a decision's share is more than 0.1 from the expected share
    latency_p95_ms = 0       # alert when a partner's 95th-percentile reply time exceeds this (0: never)
    min_requests = 100       # a period with fewer requests is shown but not judged

Only the card center reads this table; it changes nothing in the job's
digest or its training.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from fedscore.errors import ConfigError
from fedscore.model.curves import PSI_SHIFTED, PSI_STABLE
from fedscore.toml_tables import refuse_unknown, table_of, take


@dataclass(frozen=True)
class Thresholds:
    psi_watch: float = PSI_STABLE
    psi_alert: float = PSI_SHIFTED
    csi_watch: float = PSI_STABLE
    csi_alert: float = PSI_SHIFTED
    answer_rate_fall: float = 0.3
    decision_shift: float = 0.1
    latency_p95_ms: float = 0.0
    min_requests: int = 100

    def validate(self, where: str) -> "Thresholds":
        for low, high in (("psi_watch", "psi_alert"), ("csi_watch", "csi_alert")):
            if not 0 < getattr(self, low) <= getattr(self, high):
                raise ConfigError(f"{where}: {low} must be above 0 and at most {high}")
        if not 0 < self.answer_rate_fall <= 1:
            raise ConfigError(f"{where}: answer_rate_fall must be a share of the reference rate, in (0, 1]")
        if not 0 < self.decision_shift <= 1:
            raise ConfigError(f"{where}: decision_shift must be a share, in (0, 1]")
        if self.latency_p95_ms < 0 or self.min_requests < 1:
            raise ConfigError(f"{where}: latency_p95_ms must be 0 or more and min_requests at least 1")
        return self

    def to_json(self) -> dict:
        return asdict(self)


def parse_monitoring(document: dict[str, Any], where: str = "job file") -> Thresholds:
    """The job file's optional [monitoring] table; every key defaults to the Thresholds field's default."""
    table = table_of(document, "monitoring", where)
    at = f"{where} [monitoring]"
    refuse_unknown(table, {f.name for f in fields(Thresholds)}, at)
    values = {}
    for field in fields(Thresholds):
        if field.type == "int":
            values[field.name] = take(table, field.name, int, field.default, at)
        else:
            values[field.name] = float(take(table, field.name, (int, float), field.default, at))
    return Thresholds(**values).validate(at)


@dataclass(frozen=True)
class Alert:
    """One threshold crossed in one period: what, about whom, by how much."""

    period: str
    kind: str           # psi, csi, answer_rate, latency, decisions
    subject: str        # the feature, partner or decision ("score" for the PSI)
    value: float
    threshold: float
    message: str

    def to_json(self) -> dict:
        return asdict(self)
