"""A party's or the coordinator's daemon config (TOML), checked whole on load.

Paths in a config are relative to the config file. Every value is checked
here, before the daemon binds a port or opens its state, and an error names
the file, the key and the value it refuses. The folders a config names are
looked at when the daemon starts (fedscore.daemons.server), so a config can
be checked before its data or certificates are in place.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedscore.errors import ConfigError
from fedscore.job import KEY_BITS, NAME_PATTERN
from fedscore.model.reader import DEFAULT_MEMORY_MIB
from fedscore.protocol.training.bin_statistics import FEATURE_NAMINGS
from fedscore.toml_tables import read_toml, refuse_unknown, take

from fedscore.protocol.audience.policy import AudiencePolicy

if TYPE_CHECKING:
    from fedscore.transport.tls import TlsIdentity

HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")   # an Ed25519 public key
ADDRESS = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>[0-9]{1,5})")
EVERY_DAEMON = {"name", "listen", "state_dir", "workers", "max_message_mib", "tls_dir", "observers"}
PARTY_ONLY = {
    "data_dir", "min_key_bits", "min_batch_rows", "consent_issuers", "card_centers", "consent_max_age_days",
    "consent_max_uses", "http_listen", "scoring_database", "scoring_table", "scoring_id", "feature_names",
    "reason", "max_jobs", "window_days", "max_set_ratio", "verifiers", "audience",
    "engine", "ray_address",
}
REASON_LIMIT = 160   # characters of a partner's reason line


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
    min_batch_rows: int = 256  # ... and jobs whose steps cover fewer rows (or fewer than 4 per column)
    consent_issuers: tuple[str, ...] = ()   # hex keys of the identity providers whose consents this party accepts
    consent_max_age_days: int = 30
    consent_max_uses: int = 3                # checks one consent allows (an application, a retry or two)
    verifiers: tuple[tuple[str, str], ...] = ()   # as a card center: identity verifiers it trusts, (name, hex key)
    http_listen: str = ""     # the card center's HTTP/JSON scoring endpoint ("" = none)
    scoring_database: Path | None = None    # look applicants up in this SQLite file instead of the job's CSV
    scoring_table: str = "applicants"
    scoring_id: str = "id"
    card_centers: tuple[str, ...] = ()       # members this party takes jobs from as card center (empty: none)
    max_jobs: int = 4                        # as a partner, jobs over its rows it takes from each card center ...
    window_days: int = 30                    # ... in any window of this many days (each shows its scores)
    max_set_ratio: float = 2.0               # as a partner, the card center's ids in alignment: at most this many
                                             # times its own (more would let it test guessed ids against its customers)
    feature_names: str = "opaque"           # as a partner, its features' names in the card center's statistics:
                                            # "opaque" ("<party>:f1", "<party>:f2"... in its columns' order) or "real"
    reason: str = ""                        # as a partner, its own words for an applicant's reason line when its
                                            # part lowered the score ("" : "information held by partner <name>")
    tls_dir: Path | None = None             # this member's certificate, key and the consortium CA (`fedscore certs init`)
    tls: TlsIdentity | None = None          # loaded from tls_dir when the daemon starts; None only with --insecure
    observers: tuple[str, ...] = ()          # members (e.g. a regulator) that may read this daemon's chains, only that
    audience: AudiencePolicy | None = None   # as a partner: its users, exposed segments, cell size and privacy budget
                                             # for audience queries ([party.audience]; None: it answers none)
    engine: str = "local"                    # where its Paillier work runs: "local" (its own processes) or "ray"
    ray_address: str = ""                    # with engine = "ray": the Ray cluster's head, host:port or "auto"
    memory_mib: int = DEFAULT_MEMORY_MIB     # a job's data held in memory at most this much (0: no budget)


def load_party_config(path: Path | str) -> DaemonConfig:
    return _load(Path(path), "party")


def load_coordinator_config(path: Path | str) -> DaemonConfig:
    return _load(Path(path), "coordinator")


def resolve_data_file(data_dir: Path, name: str, party: str) -> Path:
    """The file a job names for this party, which must lie inside the party's data folder."""
    root = data_dir.resolve()
    candidate = (root / name).resolve()
    if Path(name).is_absolute() or not candidate.is_relative_to(root):
        raise ConfigError(f"party {party!r}: data file {name!r} is outside its data folder; jobs may only name files inside it")
    return candidate


def _load(path: Path, section: str) -> DaemonConfig:
    where = f"{section} config {path}"
    table = read_toml(path, f"{section} config").get(section)
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: missing [{section}] table")
    is_party = section == "party"
    refuse_unknown(table, EVERY_DAEMON | (PARTY_ONLY if is_party else set()), f"{where} [{section}]")
    base = path.resolve().parent
    return DaemonConfig(
        **_every_daemon(table, base, "" if is_party else "coordinator", where),
        **(_party_settings(table, base, where) if is_party else {}),
    )


def _every_daemon(table: dict[str, Any], base: Path, default_name: str, where: str) -> dict[str, Any]:
    name = take(table, "name", str, default_name, where)
    if not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"{where}: name {name!r}: use letters, digits, '-' and '_' (at most 63)")
    workers = take(table, "workers", int, DaemonConfig.workers, where)
    if workers < 0:
        raise ConfigError(f"{where}: workers must be 0 (every core) or positive, got {workers}")
    max_message_mib = take(table, "max_message_mib", int, DaemonConfig.max_message_mib, where)
    if not 4 <= max_message_mib <= 1024:   # streamed blocks are 2 MiB; PSI positions go as 8 bytes per aligned row
        raise ConfigError(f"{where}: max_message_mib must be between 4 and 1024, got {max_message_mib}")
    observers = take(table, "observers", list, [], where)
    for observer in observers:
        if not (isinstance(observer, str) and NAME_PATTERN.fullmatch(observer)) or observer in (name, "coordinator"):
            raise ConfigError(f"{where}: observers must be a list of member names other than this one and the "
                              f"coordinator, got {observer!r}")
    return {
        "name": name,
        "observers": tuple(observers),
        "listen": _address(table, "listen", "127.0.0.1:0", where),
        "state_dir": _path(table, "state_dir", "state", base, where),
        "workers": workers,
        "max_message_mib": max_message_mib,
        "tls_dir": _optional_path(table, "tls_dir", base, where),   # read, and checked, when the daemon starts
    }


def _party_settings(table: dict[str, Any], base: Path, where: str) -> dict[str, Any]:
    min_key_bits = take(table, "min_key_bits", int, DaemonConfig.min_key_bits, where)
    if min_key_bits not in KEY_BITS:
        raise ConfigError(f"{where}: min_key_bits must be one of {', '.join(map(str, KEY_BITS))}, got {min_key_bits}")
    min_batch_rows = take(table, "min_batch_rows", int, DaemonConfig.min_batch_rows, where)
    if min_batch_rows < 1:
        raise ConfigError(f"{where}: min_batch_rows must be at least 1, got {min_batch_rows}")
    issuers = take(table, "consent_issuers", list, [], where)
    for issuer in issuers:
        if not (isinstance(issuer, str) and HEX_KEY.fullmatch(issuer)):
            raise ConfigError(f"{where}: consent_issuers must be hex Ed25519 public keys (64 hex digits), got {issuer!r}")
    max_age = take(table, "consent_max_age_days", int, DaemonConfig.consent_max_age_days, where)
    if not 0 < max_age <= 3650:
        raise ConfigError(f"{where}: consent_max_age_days must be between 1 and 3650, got {max_age}")
    max_uses = take(table, "consent_max_uses", int, DaemonConfig.consent_max_uses, where)
    if not 0 < max_uses <= 1_000_000:
        raise ConfigError(f"{where}: consent_max_uses must be between 1 and 1000000, got {max_uses}")
    card_centers = take(table, "card_centers", list, [], where)
    for center in card_centers:
        if not (isinstance(center, str) and NAME_PATTERN.fullmatch(center)):
            raise ConfigError(f"{where}: card_centers must be a list of member names, got {center!r}")
    max_jobs = take(table, "max_jobs", int, DaemonConfig.max_jobs, where)
    if not 1 <= max_jobs <= 10_000:
        raise ConfigError(f"{where}: max_jobs must be between 1 and 10000, got {max_jobs}")
    window_days = take(table, "window_days", int, DaemonConfig.window_days, where)
    if not 1 <= window_days <= 3650:
        raise ConfigError(f"{where}: window_days must be between 1 and 3650, got {window_days}")
    max_set_ratio = take(table, "max_set_ratio", (int, float), DaemonConfig.max_set_ratio, where)
    if not 1.0 <= max_set_ratio <= 1000.0:
        raise ConfigError(f"{where}: max_set_ratio must be between 1 and 1000, got {max_set_ratio}")
    feature_names = take(table, "feature_names", str, DaemonConfig.feature_names, where)
    if feature_names not in FEATURE_NAMINGS:
        raise ConfigError(f"{where}: feature_names must be one of {', '.join(FEATURE_NAMINGS)}, got {feature_names!r}")
    verifiers = take(table, "verifiers", dict, {}, where)
    for verifier, key in verifiers.items():
        if not NAME_PATTERN.fullmatch(verifier) or not (isinstance(key, str) and HEX_KEY.fullmatch(key)):
            raise ConfigError(f"{where}: verifiers must map a verifier's name to its hex Ed25519 public key "
                              f"(64 hex digits), got {verifier} = {key!r}")
    reason = take(table, "reason", str, DaemonConfig.reason, where).strip()
    if len(reason) > REASON_LIMIT or not reason.isprintable():
        raise ConfigError(f"{where}: reason must be one printable line of at most {REASON_LIMIT} characters")
    overlap = set(card_centers) & set(take(table, "observers", list, [], where))
    if overlap:
        raise ConfigError(f"{where}: {sorted(overlap)[0]!r} is in both card_centers and observers; an observer takes "
                          "part in no job")
    return {
        "reason": reason,
        "data_dir": _path(table, "data_dir", "data", base, where),   # must exist when the daemon starts
        "min_key_bits": min_key_bits,
        "min_batch_rows": min_batch_rows,
        "consent_issuers": tuple(i.lower() for i in issuers),
        "consent_max_age_days": max_age,
        "consent_max_uses": max_uses,
        "verifiers": tuple(sorted((name, key.lower()) for name, key in verifiers.items())),
        "http_listen": _address(table, "http_listen", "", where),
        "scoring_database": _optional_path(table, "scoring_database", base, where),
        "scoring_table": take(table, "scoring_table", str, DaemonConfig.scoring_table, where),
        "scoring_id": take(table, "scoring_id", str, DaemonConfig.scoring_id, where),
        "card_centers": tuple(card_centers),
        "max_jobs": max_jobs,
        "window_days": window_days,
        "max_set_ratio": float(max_set_ratio),
        "feature_names": feature_names,
        "audience": _audience(table, where),
        **_engine(table, where),
        **_memory(table, where),
    }


def _engine(table: dict[str, Any], where: str) -> dict[str, str]:
    """engine and ray_address: a party's Paillier work on its own processes or on its Ray cluster."""
    engine = take(table, "engine", str, DaemonConfig.engine, where)
    if engine not in ("local", "ray"):
        raise ConfigError(f"{where}: engine must be \"local\" or \"ray\", got {engine!r}")
    ray_address = take(table, "ray_address", str, DaemonConfig.ray_address, where)
    if engine == "local" and ray_address:
        raise ConfigError(f"{where}: ray_address is set but engine is \"local\"; set engine = \"ray\" to use it")
    if engine == "ray":
        if ray_address.startswith("ray://"):
            raise ConfigError(f"{where}: ray_address {ray_address!r} is a Ray Client address; give the head node's "
                              "GCS address (host:port, as `ray start --head` prints) or \"auto\"")
        match = ADDRESS.fullmatch(ray_address)
        if ray_address != "auto" and (match is None or not 0 < int(match["port"]) <= 65_535):
            raise ConfigError(f"{where}: engine = \"ray\" needs ray_address: the head node's host:port "
                              f"(e.g. 10.0.0.5:6379) or \"auto\", got {ray_address!r}")
    return {"engine": engine, "ray_address": ray_address}


def _audience(table: dict[str, Any], where: str) -> AudiencePolicy | None:
    """The optional [party.audience] table: what this partner answers audience queries with."""
    if "audience" not in table:
        return None
    settings = table["audience"]
    at = f"{where} [party.audience]"
    if not isinstance(settings, dict):
        raise ConfigError(f"{where}: audience must be a table ([party.audience])")
    defaults = AudiencePolicy()
    refuse_unknown(settings, {"users", "id_column", "segments", "min_cell", "budget", "window_days", "max_epsilon",
                              "max_segments", "min_epsilon", "min_points_gap"}, at)
    segments = take(settings, "segments", list, [], at)
    if not all(isinstance(s, str) and s for s in segments):
        raise ConfigError(f"{at}: segments must be a list of column names, got {segments!r}")
    policy = AudiencePolicy(
        users=take(settings, "users", str, defaults.users, at),
        id_column=take(settings, "id_column", str, defaults.id_column, at),
        segments=tuple(segments),
        min_cell=take(settings, "min_cell", int, defaults.min_cell, at),
        budget=float(take(settings, "budget", (int, float), defaults.budget, at)),
        window_days=take(settings, "window_days", int, defaults.window_days, at),
        max_epsilon=float(take(settings, "max_epsilon", (int, float), defaults.max_epsilon, at)),
        max_segments=take(settings, "max_segments", int, defaults.max_segments, at),
        min_epsilon=float(take(settings, "min_epsilon", (int, float), defaults.min_epsilon, at)),
        min_points_gap=float(take(settings, "min_points_gap", (int, float), defaults.min_points_gap, at)),
    )
    if not policy.users:
        raise ConfigError(f"{at}: users must name this partner's users file (inside its data folder)")
    policy.validate(at)
    return policy


def _address(table: dict[str, Any], key: str, default: str, where: str) -> str:
    """host:port (port 0 = any free one); "" only where the default is "" (the setting is off)."""
    address = take(table, key, str, default, where)
    if address == "" and default == "":
        return address
    match = ADDRESS.fullmatch(address)
    if match is None or int(match["port"]) > 65_535:
        raise ConfigError(f"{where}: {key} must be host:port (e.g. 0.0.0.0:50061), got {address!r}")
    return address


def _path(table: dict[str, Any], key: str, default: str, base: Path, where: str) -> Path:
    """A path setting, relative to the config file."""
    return base / take(table, key, str, default, where)


def _optional_path(table: dict[str, Any], key: str, base: Path, where: str) -> Path | None:
    """A path setting that may be left out or empty (None)."""
    value = take(table, key, str, "", where)
    return base / value if value else None


# -- a party's memory budget for a job's data (fedscore.model.reader) ------------------

PARTY_ONLY.add("memory_mib")
MEMORY_MIB_RANGE = (256, 1 << 20)


def _memory(table: dict[str, Any], where: str) -> dict[str, Any]:
    """``memory_mib``: what a job's data may take in this party's memory (its table and training encoding;
    chunks being read come out of it too). 0: no budget."""
    memory_mib = take(table, "memory_mib", int, DaemonConfig.memory_mib, where)
    low, high = MEMORY_MIB_RANGE
    if memory_mib != 0 and not low <= memory_mib <= high:
        raise ConfigError(f"{where}: memory_mib must be 0 (no budget) or between {low} and {high}, got {memory_mib}")
    return {"memory_mib": memory_mib}
