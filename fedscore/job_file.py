"""The job file (TOML): the [job] settings, the parties, [fees], [coordinator] and the optional [scoring] and
[monitoring] tables.

Paths in a job file are relative to the job file and are left as written; a
party daemon resolves its own inside its data folder. Every [job] key is a
JobSpec field and takes its default from there, so the file, the codec and
the estimator cannot disagree on one.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

from fedscore.errors import ConfigError
from fedscore.job import Binning, JobSpec, PartySpec
from fedscore.ledger.settlement import FeeContract
from fedscore.monitoring.alerts import Thresholds, parse_monitoring
from fedscore.protocol.scoring.scorecard import LimitBand, ScoringPolicy
from fedscore.toml_tables import Kind, read_toml, refuse_unknown, table_of, take

_KINDS: dict[str, Kind] = {"int": int, "float": (int, float), "str": str, "bool": bool}
# every plain JobSpec field is a [job] key, with the field's default; the coordinator's address has its own table
JOB_KEYS: dict[str, Kind] = {
    f.name: _KINDS[f.type] for f in fields(JobSpec) if f.type in _KINDS and f.name != "coordinator_address"
}


def parse_job(document: dict[str, Any], where: str = "job file") -> JobSpec:
    """A JobSpec from a parsed job TOML document (paths left as written)."""
    refuse_unknown(document, {"job", "parties", "coordinator", "fees", "scoring", "binning", "monitoring"}, where)
    parse_scoring(document, where)   # checked with the job, used when the model serves
    parse_monitoring(document, where)   # checked with the job, used by `fedscore monitor`
    job = document.get("job")
    if not isinstance(job, dict):
        raise ConfigError(f"{where}: missing [job] table")
    at = f"{where} [job]"
    refuse_unknown(job, {*JOB_KEYS, "protected"}, at)
    settings = {key: _job_setting(job, key, kind, at) for key, kind in JOB_KEYS.items()}
    parties = _parse_parties(document, where)
    protected = _names(take(job, "protected", list, [], at), "protected", at)
    protected += [c for p in parties for c in _party_protected(document, p.name) if c not in protected]
    coordinator = table_of(document, "coordinator", where)
    refuse_unknown(coordinator, {"address"}, f"{where} [coordinator]")
    spec = JobSpec(
        **settings,
        parties=parties,
        binning=parse_binning(document, where),
        protected=tuple(protected),
        fees=FeeContract.from_dict(table_of(document, "fees", where), f"{where} [fees]"),
        coordinator_address=take(coordinator, "address", str, "", f"{where} [coordinator]"),
    )
    return spec.validate()


def parse_binning(document: dict[str, Any], where: str = "job file") -> Binning:
    """The job file's optional [binning] table; every key defaults to the Binning field's default."""
    table = table_of(document, "binning", where)
    at = f"{where} [binning]"
    refuse_unknown(table, {"method", "max_bins", "min_bin_share", "min_iv", "max_features", "monotonic", "special_values"}, at)
    defaults = Binning()
    specials = table_of(table, "special_values", at)
    for column, values in specials.items():
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ConfigError(f"{at}: special_values.{column} must be a list of numbers, got {values!r}")
    return Binning(
        method=take(table, "method", str, defaults.method, at),
        max_bins=take(table, "max_bins", int, defaults.max_bins, at),
        min_bin_share=float(take(table, "min_bin_share", (int, float), defaults.min_bin_share, at)),
        min_iv=float(take(table, "min_iv", (int, float), defaults.min_iv, at)),
        max_features=take(table, "max_features", int, defaults.max_features, at),
        monotonic=take(table, "monotonic", bool, defaults.monotonic, at),
        special_values=tuple((str(c), tuple(float(v) for v in values)) for c, values in sorted(specials.items())),
    )


def _names(values: list, key: str, where: str) -> list[str]:
    if not all(isinstance(v, str) and v for v in values):
        raise ConfigError(f"{where}: {key} must be a list of column names, got {values!r}")
    return list(values)


def _party_protected(document: dict[str, Any], party: str) -> list[str]:
    """The protected columns a [[parties]] entry names (the card center's own columns)."""
    for entry in document.get("parties", []):
        if isinstance(entry, dict) and entry.get("name") == party:
            return _names(entry.get("protected", []), "protected", f"job file party {party!r}")
    return []


def _job_setting(job: dict[str, Any], key: str, kind: Kind, where: str) -> Any:
    default = JobSpec.__dataclass_fields__[key].default
    value = take(job, key, kind, "" if default is MISSING else default, where)
    return float(value) if kind == _KINDS["float"] else value


def _parse_parties(document: dict[str, Any], where: str) -> tuple[PartySpec, ...]:
    entries = document.get("parties")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: no [[parties]] entries")
    return tuple(_parse_party(entry, f"{where} [[parties]] #{index}", where) for index, entry in enumerate(entries, start=1))


def _parse_party(entry: Any, at: str, where: str) -> PartySpec:
    if not isinstance(entry, dict):
        raise ConfigError(f"{at}: must be a table")
    refuse_unknown(entry, {"name", "data", "id", "label", "address", "protected"}, at)
    name = take(entry, "name", str, "", at)
    if not name:
        raise ConfigError(f"{at}: missing name")
    at = f"{where} party {name!r}"
    ids = take(entry, "id", (str, list), "", at)
    id_columns = (ids,) if isinstance(ids, str) else tuple(ids)
    if not id_columns or not all(isinstance(c, str) and c for c in id_columns):
        raise ConfigError(f"{at}: id must name a column, or a list of columns")
    return PartySpec(
        name=name,
        data=take(entry, "data", str, "", at),
        id_columns=id_columns,
        label=take(entry, "label", str, None, at) or None,
        address=take(entry, "address", str, "", at),
    )


@dataclass(frozen=True)
class ScoringSettings:
    """The card center's scoring: its policy, how long it waits for partners, how it batches chain entries."""

    policy: ScoringPolicy = ScoringPolicy()
    timeout_ms: float = 500.0          # a partner later than this is listed in partners_missing
    batch_entries: int = 500           # a scoring block when this many requests wait ...
    batch_seconds: float = 1.0         # ... or the oldest waited this long
    max_batch_applicants: int = 300    # applicants one ScoreBatch call (or POST /v1/score/batch) may carry
    consent_issuers: tuple[str, ...] = ()   # hex Ed25519 keys; a local consortium's parties all trust these
    verifiers: tuple[tuple[str, str], ...] = ()   # (name, hex key): identity verifiers a local card center trusts

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def validate(self, where: str) -> "ScoringSettings":
        """The limits a card center serves under, wherever its settings come from (a job file, the wire).
        A wait is required: it is the deadline every partner's answer carries, and partners bill by it."""
        timeout = self.timeout_ms
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 1 <= timeout <= 60_000:
            raise ConfigError(f"{where}: timeout_ms (the partners' deadline) must be between 1 and 60000, got {timeout}")
        if not 1 <= self.batch_entries <= 2_000 or not 0.01 <= self.batch_seconds <= 3600:
            # a block of 2 000 entries is about 2.5 MB: within any daemon's message limit (at least 4 MiB)
            raise ConfigError(f"{where}: batch_entries must be 1..2000 and batch_seconds 0.01..3600")
        if isinstance(self.max_batch_applicants, bool) or not 1 <= self.max_batch_applicants <= 1_000:
            # each partner is asked about a whole batch in one call, which carries at most 1 024 applicants
            raise ConfigError(f"{where}: max_batch_applicants must be 1..1000, got {self.max_batch_applicants}")
        return self

    @classmethod
    def from_json(cls, text: str) -> "ScoringSettings":
        document = json.loads(text)
        policy = document.pop("policy")
        bands = tuple(LimitBand(**band) for band in policy.pop("limit_bands"))
        document["consent_issuers"] = tuple(document["consent_issuers"])
        document["verifiers"] = tuple(tuple(pair) for pair in document.get("verifiers", ()))
        return cls(policy=ScoringPolicy(**policy, limit_bands=bands), **document)


POLICY_NUMBERS = ("offset", "pdo", "min_score", "max_score", "approve_at", "review_at")


def parse_scoring(document: dict[str, Any], where: str = "job file") -> ScoringSettings:
    """The job file's optional [scoring] table."""
    table = table_of(document, "scoring", where)
    at = f"{where} [scoring]"
    refuse_unknown(
        table, {*POLICY_NUMBERS, "limit_basis", "limit_bands", "limit_step", "limit_cap", "timeout_ms",
                "batch_entries", "batch_seconds", "max_batch_applicants", "consent_issuers", "verifiers"}, at,
    )
    defaults = ScoringPolicy()
    numbers = {name: float(take(table, name, (int, float), getattr(defaults, name), at)) for name in POLICY_NUMBERS}
    bands = defaults.limit_bands
    if "limit_bands" in table:
        raw = take(table, "limit_bands", list, [], at)
        try:
            bands = tuple(LimitBand(float(b["min_score"]), float(b["multiple"])) for b in raw)
        except (TypeError, KeyError, ValueError):
            raise ConfigError(f"{at}: each [[scoring.limit_bands]] needs min_score and multiple (numbers)") from None
        if any(not math.isfinite(b.multiple) or b.multiple < 0 for b in bands):
            raise ConfigError(f"{at}: a limit band's multiple must be zero or positive")
    try:
        policy = ScoringPolicy(
            **numbers, limit_basis=take(table, "limit_basis", str, defaults.limit_basis, at), limit_bands=bands,
            limit_step=take(table, "limit_step", int, defaults.limit_step, at),
            limit_cap=take(table, "limit_cap", int, defaults.limit_cap, at),
        )
    except ValueError as error:
        raise ConfigError(f"{at}: {error}") from None
    issuers = take(table, "consent_issuers", list, [], at)
    for issuer in issuers:
        if not (isinstance(issuer, str) and re.fullmatch(r"[0-9a-fA-F]{64}", issuer)):
            raise ConfigError(f"{at}: consent_issuers must be hex Ed25519 public keys (64 hex digits), got {issuer!r}")
    verifiers = take(table, "verifiers", dict, {}, at)
    for verifier, key in verifiers.items():
        if not (isinstance(key, str) and re.fullmatch(r"[0-9a-fA-F]{64}", key)):
            raise ConfigError(f"{at}: verifiers must map a verifier's name to its hex Ed25519 public key "
                              f"(64 hex digits), got {verifier} = {key!r}")
    settings = ScoringSettings(
        policy=policy,
        timeout_ms=float(take(table, "timeout_ms", (int, float), ScoringSettings.timeout_ms, at)),
        batch_entries=take(table, "batch_entries", int, ScoringSettings.batch_entries, at),
        batch_seconds=float(take(table, "batch_seconds", (int, float), ScoringSettings.batch_seconds, at)),
        max_batch_applicants=take(table, "max_batch_applicants", int, ScoringSettings.max_batch_applicants, at),
        consent_issuers=tuple(i.lower() for i in issuers),
        verifiers=tuple(sorted((name, key.lower()) for name, key in verifiers.items())),
    )
    return settings.validate(at)


def load_scoring(path: Path | str) -> ScoringSettings:
    path = Path(path)
    return parse_scoring(read_toml(path, "job file"), where=f"job file {path}")


def load_monitoring(path: Path | str) -> Thresholds:
    path = Path(path)
    return parse_monitoring(read_toml(path, "job file"), where=f"job file {path}")


def load_job(path: Path | str) -> tuple[JobSpec, Path]:
    """(spec, folder the job's relative paths start from)."""
    path = Path(path)
    return parse_job(read_toml(path, "job file"), where=f"job file {path}"), path.resolve().parent
