"""Job files, party daemon configs and the coordinator config (TOML), checked on load.

A job file names the training parameters and the parties; exactly one party
carries the label (the card center), every other party is a partner. Paths in
a job file are relative to the job file; paths in a daemon config are relative
to that config file.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedscore.crypto.obfuscation import SHORT_EXPONENT, VARIANTS
from fedscore.errors import ConfigError, DataError
from fedscore.ledger.settlement import FeeContract
from fedscore.protocol.scoring.scorecard import LimitBand, ScoringPolicy

if TYPE_CHECKING:
    from fedscore.transport.tls import TlsIdentity

NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,62}$")   # a DNS label: names go into certificates
JOB_ID_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}-[0-9a-f]{8}$")   # a job name, then 8 random hex digits


def check_job_id(job_id: str, where: str) -> str:
    """A job id as fedscore makes them; anything else (a path, a very long string) is refused before use."""
    if not isinstance(job_id, str) or not JOB_ID_PATTERN.fullmatch(job_id):
        shown = job_id if len(job_id) <= 80 else job_id[:77] + "..."
        raise DataError(f"{where}: {shown!r} is not a job id (a job name, '-', then 8 hex digits)")
    return job_id
KEY_BITS = (512, 768, 1024, 1536, 2048, 3072, 4096)


@dataclass(frozen=True)
class PartySpec:
    name: str
    data: str
    id_columns: tuple[str, ...]
    label: str | None = None
    address: str = ""

    @property
    def is_card_center(self) -> bool:
        return self.label is not None


@dataclass(frozen=True)
class JobSpec:
    name: str
    parties: tuple[PartySpec, ...]
    epochs: int = 10
    batch_size: int = 0
    learning_rate: float = 0.15
    l2: float = 0.0
    validation: float = 0.3
    seed: int = 42
    key_bits: int = 2048
    early_stop_tol: float = 0.0
    min_overlap: int = 100
    fees: FeeContract = FeeContract()
    rpc_timeout: float = 1800.0       # seconds a party may take to answer one call before the job stops
    obfuscation: str = SHORT_EXPONENT # or STANDARD: r^n with a full exponent, no extra assumption
    precompute_epochs: int = 0        # obfuscators each party makes before training, in epochs' worth
    refill_obfuscators: bool = False  # keep making them in the background while training (max(1, precompute) epochs ahead)
    restart_timeout: float = 120.0    # seconds a member may stay down mid-job (restarting) before the job fails
    coordinator_address: str = ""

    @property
    def card_center(self) -> PartySpec:
        return next(p for p in self.parties if p.is_card_center)

    @property
    def partners(self) -> tuple[PartySpec, ...]:
        return tuple(p for p in self.parties if not p.is_card_center)

    def digest(self) -> str:
        """SHA-256 of the job's content (not of where its daemons happen to listen)."""
        content = asdict(self)
        content.pop("coordinator_address")
        content.pop("rpc_timeout")
        content.pop("precompute_epochs")
        content.pop("refill_obfuscators")
        content.pop("restart_timeout")
        for party in content["parties"]:
            party.pop("address")
        return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def party(self, name: str) -> PartySpec:
        for spec in self.parties:
            if spec.name == name:
                return spec
        raise ConfigError(f"job {self.name!r} has no party named {name!r}")

    def validate(self) -> "JobSpec":
        where = f"job {self.name!r}"
        if not NAME_PATTERN.fullmatch(self.name):
            raise ConfigError(f"job name {self.name!r}: use letters, digits, '-' and '_' (at most 63)")
        if not 1 <= self.epochs <= 100_000:
            raise ConfigError(f"{where}: epochs must be between 1 and 100000, got {self.epochs}")
        if self.batch_size < 0:
            raise ConfigError(f"{where}: batch_size must be 0 (whole set) or positive, got {self.batch_size}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"{where}: learning_rate must be a positive number, got {self.learning_rate}")
        if not (math.isfinite(self.l2) and self.l2 >= 0):
            raise ConfigError(f"{where}: l2 must be zero or positive, got {self.l2}")
        if not (math.isfinite(self.validation) and 0 <= self.validation < 1):
            raise ConfigError(f"{where}: validation must be in [0, 1), got {self.validation}")
        if not (math.isfinite(self.early_stop_tol) and self.early_stop_tol >= 0):
            raise ConfigError(f"{where}: early_stop_tol must be zero (off) or positive, got {self.early_stop_tol}")
        if self.key_bits not in KEY_BITS:
            raise ConfigError(f"{where}: key_bits must be one of {', '.join(map(str, KEY_BITS))}, got {self.key_bits}")
        if not (math.isfinite(self.rpc_timeout) and 1 <= self.rpc_timeout <= 86_400):
            raise ConfigError(f"{where}: rpc_timeout must be between 1 and 86400 seconds, got {self.rpc_timeout}")
        if not (math.isfinite(self.restart_timeout) and 1 <= self.restart_timeout <= 86_400):
            raise ConfigError(f"{where}: restart_timeout must be between 1 and 86400 seconds, got {self.restart_timeout}")
        if self.obfuscation not in VARIANTS:
            raise ConfigError(f"{where}: obfuscation must be one of {', '.join(VARIANTS)}, got {self.obfuscation!r}")
        if not 0 <= self.precompute_epochs <= 1000:
            raise ConfigError(f"{where}: precompute_epochs must be between 0 and 1000, got {self.precompute_epochs}")
        if self.min_overlap < 0:
            raise ConfigError(f"{where}: min_overlap must be zero or positive, got {self.min_overlap}")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"{where}: seed must be a non-negative integer below 2^63, got {self.seed}")
        names = [p.name for p in self.parties]
        for name in names:
            if not NAME_PATTERN.fullmatch(name):
                raise ConfigError(f"{where}: party name {name!r}: use letters, digits, '-' and '_' (at most 63)")
            if name == "coordinator":
                raise ConfigError(f"{where}: a party cannot be named 'coordinator' (the coordinator's member name)")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"{where}: party {duplicates[0]!r} is listed twice")
        labelled = [p.name for p in self.parties if p.is_card_center]
        if len(labelled) != 1:
            detail = f"{len(labelled)} do ({', '.join(labelled)})" if labelled else "none does"
            raise ConfigError(f"{where}: exactly one party must carry the label; {detail}")
        if not self.partners:
            raise ConfigError(f"{where}: at least one partner (a party without a label) is needed")
        for p in self.parties:
            if not p.data:
                raise ConfigError(f"{where}: party {p.name!r} has no data file")
            if not p.id_columns or any(not c for c in p.id_columns):
                raise ConfigError(f"{where}: party {p.name!r} needs an id column")
            if p.label is not None and p.label in p.id_columns:
                raise ConfigError(f"{where}: party {p.name!r} uses {p.label!r} as both id and label")
        return self


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{what} {path} is not valid TOML: {error}") from None


def _take(table: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any, where: str) -> Any:
    if key not in table:
        return default
    value = table[key]
    if isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"{where}: {key} must be {_kind_name(kind)}, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: {key} must be {_kind_name(kind)}, got {value!r}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({int: "an integer", float: "a number", str: "a string", list: "a list", bool: "true or false"}[k] for k in kinds)


def _unknown_keys(table: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting {unknown[0]!r} (known: {', '.join(sorted(known))})")


def parse_job(document: dict[str, Any], where: str = "job file") -> JobSpec:
    """A JobSpec from a parsed job TOML document (paths left as written)."""
    _unknown_keys(document, {"job", "parties", "coordinator", "fees", "scoring"}, where)
    parse_scoring(document, where)   # checked with the job, used when the model serves
    job = document.get("job")
    if not isinstance(job, dict):
        raise ConfigError(f"{where}: missing [job] table")
    _unknown_keys(
        job,
        {"name", "epochs", "batch_size", "learning_rate", "l2", "validation", "seed", "key_bits",
         "early_stop_tol", "min_overlap", "rpc_timeout", "obfuscation", "precompute_epochs", "refill_obfuscators",
         "restart_timeout"},
        f"{where} [job]",
    )
    parties_doc = document.get("parties")
    if not isinstance(parties_doc, list) or not parties_doc:
        raise ConfigError(f"{where}: no [[parties]] entries")
    parties = []
    for index, entry in enumerate(parties_doc, start=1):
        at = f"{where} [[parties]] #{index}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{at}: must be a table")
        _unknown_keys(entry, {"name", "data", "id", "label", "address"}, at)
        name = _take(entry, "name", str, "", at)
        if not name:
            raise ConfigError(f"{at}: missing name")
        at = f"{where} party {name!r}"
        ids = _take(entry, "id", (str, list), "", at)
        id_columns = (ids,) if isinstance(ids, str) else tuple(ids)
        if not id_columns or not all(isinstance(c, str) and c for c in id_columns):
            raise ConfigError(f"{at}: id must name a column, or a list of columns")
        label = _take(entry, "label", str, None, at)
        parties.append(
            PartySpec(
                name=name,
                data=_take(entry, "data", str, "", at),
                id_columns=id_columns,
                label=label if label else None,
                address=_take(entry, "address", str, "", at),
            )
        )
    coordinator = document.get("coordinator", {})
    if not isinstance(coordinator, dict):
        raise ConfigError(f"{where}: [coordinator] must be a table")
    _unknown_keys(coordinator, {"address"}, f"{where} [coordinator]")
    fees = document.get("fees", {})
    if not isinstance(fees, dict):
        raise ConfigError(f"{where}: [fees] must be a table")
    at = f"{where} [job]"
    spec = JobSpec(
        name=_take(job, "name", str, "", at),
        parties=tuple(parties),
        epochs=_take(job, "epochs", int, 10, at),
        batch_size=_take(job, "batch_size", int, 0, at),
        learning_rate=float(_take(job, "learning_rate", (int, float), 0.15, at)),
        l2=float(_take(job, "l2", (int, float), 0.0, at)),
        validation=float(_take(job, "validation", (int, float), 0.3, at)),
        seed=_take(job, "seed", int, 42, at),
        key_bits=_take(job, "key_bits", int, 2048, at),
        early_stop_tol=float(_take(job, "early_stop_tol", (int, float), 0.0, at)),
        min_overlap=_take(job, "min_overlap", int, 100, at),
        fees=FeeContract.from_dict(fees, f"{where} [fees]"),
        rpc_timeout=float(_take(job, "rpc_timeout", (int, float), 1800.0, at)),
        restart_timeout=float(_take(job, "restart_timeout", (int, float), 120.0, at)),
        obfuscation=_take(job, "obfuscation", str, SHORT_EXPONENT, at),
        precompute_epochs=_take(job, "precompute_epochs", int, 0, at),
        refill_obfuscators=_take(job, "refill_obfuscators", bool, False, at),
        coordinator_address=_take(coordinator, "address", str, "", f"{where} [coordinator]"),
    )
    return spec.validate()


@dataclass(frozen=True)
class ScoringSettings:
    """The card center's scoring: its policy, how long it waits for partners, how it batches chain entries."""

    policy: ScoringPolicy = ScoringPolicy()
    timeout_ms: float = 500.0          # a partner later than this is listed in partners_missing
    batch_entries: int = 500           # a scoring block when this many requests wait ...
    batch_seconds: float = 1.0         # ... or the oldest waited this long
    consent_issuers: tuple[str, ...] = ()   # hex Ed25519 keys; a local consortium's parties all trust these

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ScoringSettings":
        document = json.loads(text)
        policy = document.pop("policy")
        bands = tuple(LimitBand(**band) for band in policy.pop("limit_bands"))
        return cls(policy=ScoringPolicy(**policy, limit_bands=bands), **{**document, "consent_issuers": tuple(document["consent_issuers"])})


POLICY_NUMBERS = ("offset", "pdo", "min_score", "max_score", "approve_at", "review_at")


def parse_scoring(document: dict[str, Any], where: str = "job file") -> ScoringSettings:
    """The job file's optional [scoring] table."""
    table = document.get("scoring", {})
    at = f"{where} [scoring]"
    if not isinstance(table, dict):
        raise ConfigError(f"{at}: must be a table")
    _unknown_keys(
        table, {*POLICY_NUMBERS, "limit_basis", "limit_bands", "limit_step", "limit_cap", "timeout_ms",
                "batch_entries", "batch_seconds", "consent_issuers"}, at,
    )
    defaults = ScoringPolicy()
    numbers = {name: float(_take(table, name, (int, float), getattr(defaults, name), at)) for name in POLICY_NUMBERS}
    bands = defaults.limit_bands
    if "limit_bands" in table:
        raw = _take(table, "limit_bands", list, [], at)
        try:
            bands = tuple(LimitBand(float(b["min_score"]), float(b["multiple"])) for b in raw)
        except (TypeError, KeyError, ValueError):
            raise ConfigError(f"{at}: each [[scoring.limit_bands]] needs min_score and multiple (numbers)") from None
        if any(not math.isfinite(b.multiple) or b.multiple < 0 for b in bands):
            raise ConfigError(f"{at}: a limit band's multiple must be zero or positive")
    try:
        policy = ScoringPolicy(
            **numbers, limit_basis=_take(table, "limit_basis", str, defaults.limit_basis, at), limit_bands=bands,
            limit_step=_take(table, "limit_step", int, defaults.limit_step, at),
            limit_cap=_take(table, "limit_cap", int, defaults.limit_cap, at),
        )
    except ValueError as error:
        raise ConfigError(f"{at}: {error}") from None
    issuers = _take(table, "consent_issuers", list, [], at)
    for issuer in issuers:
        if not (isinstance(issuer, str) and re.fullmatch(r"[0-9a-fA-F]{64}", issuer)):
            raise ConfigError(f"{at}: consent_issuers must be hex Ed25519 public keys (64 hex digits), got {issuer!r}")
    settings = ScoringSettings(
        policy=policy,
        timeout_ms=float(_take(table, "timeout_ms", (int, float), 500.0, at)),
        batch_entries=_take(table, "batch_entries", int, 500, at),
        batch_seconds=float(_take(table, "batch_seconds", (int, float), 1.0, at)),
        consent_issuers=tuple(i.lower() for i in issuers),
    )
    if not 1 <= settings.timeout_ms <= 60_000:
        raise ConfigError(f"{at}: timeout_ms must be between 1 and 60000, got {settings.timeout_ms}")
    if not 1 <= settings.batch_entries <= 2_000 or not 0.01 <= settings.batch_seconds <= 3600:
        # a block of 2 000 entries is about 2.5 MB: within any daemon's message limit (at least 4 MiB)
        raise ConfigError(f"{at}: batch_entries must be 1..2000 and batch_seconds 0.01..3600")
    return settings


def load_scoring(path: Path | str) -> ScoringSettings:
    path = Path(path)
    return parse_scoring(_read_toml(path, "job file"), where=f"job file {path.name}")


def load_job(path: Path | str) -> tuple[JobSpec, Path]:
    """(spec, folder the job's relative paths start from)."""
    path = Path(path)
    return parse_job(_read_toml(path, "job file"), where=f"job file {path.name}"), path.resolve().parent


@dataclass(frozen=True)
class DaemonConfig:
    """Settings of a coordinator or party daemon."""

    name: str
    listen: str
    state_dir: Path
    data_dir: Path | None = None
    workers: int = 0          # 0 = every core
    max_message_mib: int = 64 # the largest message this daemon accepts (vectors are streamed in smaller blocks)
    min_key_bits: int = 2048  # a party refuses jobs with smaller Paillier keys
    min_batch_rows: int = 64  # ... and jobs whose steps cover fewer rows
    consent_issuers: tuple[str, ...] = ()   # hex keys of the identity providers whose consents this party accepts
    consent_max_age_days: int = 30
    consent_max_uses: int = 3                # checks one consent allows (an application, a retry or two)
    http_listen: str = ""     # the card center's HTTP/JSON scoring endpoint ("" = none)
    scoring_database: Path | None = None    # look applicants up in this SQLite file instead of the job's CSV
    scoring_table: str = "applicants"
    scoring_id: str = "id"
    card_centers: tuple[str, ...] = ()       # members this party takes jobs from as card center (empty: any member)
    tls_dir: Path | None = None             # this member's certificate, key and the consortium CA (`fedscore certs init`)
    tls: TlsIdentity | None = None          # loaded from tls_dir when the daemon starts; None only with --insecure


def _daemon_config(path: Path, section: str, needs_data: bool) -> DaemonConfig:
    document = _read_toml(path, f"{section} config")
    where = f"{section} config {path.name}"
    table = document.get(section)
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: missing [{section}] table")
    known = {"name", "listen", "state_dir", "workers", "max_message_mib", "tls_dir"} | (
        {"data_dir", "min_key_bits", "min_batch_rows", "consent_issuers", "card_centers", "consent_max_age_days", "consent_max_uses", "http_listen",
         "scoring_database", "scoring_table", "scoring_id"} if needs_data else set()
    )
    _unknown_keys(table, known, f"{where} [{section}]")
    base = path.resolve().parent
    name = _take(table, "name", str, "coordinator" if section == "coordinator" else "", where)
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"{where}: name {name!r}: use letters, digits, '-' and '_'")
    listen = _take(table, "listen", str, "127.0.0.1:0", where)
    workers = _take(table, "workers", int, 0, where)
    if workers < 0:
        raise ConfigError(f"{where}: workers must be 0 (every core) or positive")
    max_message_mib = _take(table, "max_message_mib", int, 64, where)
    if not 4 <= max_message_mib <= 1024:   # streamed blocks are 2 MiB; PSI positions go as 8 bytes per aligned row
        raise ConfigError(f"{where}: max_message_mib must be between 4 and 1024")
    state_dir = base / _take(table, "state_dir", str, "state", where)
    data_dir = None
    if needs_data:
        data_dir = base / _take(table, "data_dir", str, "data", where)
    min_key_bits = _take(table, "min_key_bits", int, 2048, where)
    min_batch_rows = _take(table, "min_batch_rows", int, 64, where)
    if min_batch_rows < 1:
        raise ConfigError(f"{where}: min_batch_rows must be at least 1")
    issuers = _take(table, "consent_issuers", list, [], where)
    if not all(isinstance(i, str) and re.fullmatch(r"[0-9a-fA-F]{64}", i) for i in issuers):
        raise ConfigError(f"{where}: consent_issuers must be hex Ed25519 public keys (64 hex digits)")
    max_age = _take(table, "consent_max_age_days", int, 30, where)
    if not 0 < max_age <= 3650:
        raise ConfigError(f"{where}: consent_max_age_days must be between 1 and 3650")
    max_uses = _take(table, "consent_max_uses", int, 3, where)
    if not 0 < max_uses <= 1_000_000:
        raise ConfigError(f"{where}: consent_max_uses must be between 1 and 1000000")
    database = _take(table, "scoring_database", str, "", where)
    tls_dir = _take(table, "tls_dir", str, "", where)
    card_centers = _take(table, "card_centers", list, [], where)
    if not all(isinstance(c, str) and NAME_PATTERN.fullmatch(c) for c in card_centers):
        raise ConfigError(f"{where}: card_centers must be a list of member names")
    return DaemonConfig(
        name=name, listen=listen, state_dir=state_dir, data_dir=data_dir, workers=workers,
        max_message_mib=max_message_mib, min_key_bits=min_key_bits, min_batch_rows=min_batch_rows, consent_issuers=tuple(i.lower() for i in issuers),
        consent_max_age_days=max_age, consent_max_uses=max_uses, http_listen=_take(table, "http_listen", str, "", where),
        scoring_database=base / database if database else None,
        scoring_table=_take(table, "scoring_table", str, "applicants", where),
        scoring_id=_take(table, "scoring_id", str, "id", where),
        tls_dir=base / tls_dir if tls_dir else None,
        card_centers=tuple(card_centers),
    )


def load_party_config(path: Path | str) -> DaemonConfig:
    return _daemon_config(Path(path), "party", needs_data=True)


def load_coordinator_config(path: Path | str) -> DaemonConfig:
    return _daemon_config(Path(path), "coordinator", needs_data=False)


def resolve_data_file(data_dir: Path, name: str, party: str) -> Path:
    """The file a job names for this party, which must lie inside the party's data folder."""
    root = data_dir.resolve()
    candidate = (root / name).resolve()
    if Path(name).is_absolute() or not candidate.is_relative_to(root):
        raise ConfigError(f"party {party!r}: data file {name!r} is outside its data folder; jobs may only name files inside it")
    return candidate
