"""An observer daemon's config (TOML), checked whole on load: who it is, and the members it reads from.

    [observer]
    name = "regulator"              # the name in its certificate from the consortium CA
    listen = "127.0.0.1:50090"      # its health and status service
    state_dir = "state"             # its replicas, one folder per job (relative to this file)
    tls_dir = "tls"                 # its cert.pem, key.pem and ca.pem from `fedscore certs init`
    poll_seconds = 5.0              # how often it asks every member for new blocks

    [observer.members]              # each member it reads: name = "host:port"
    coordinator = "10.0.0.1:50051"
    card_center = "10.0.0.2:50061"
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fedscore.daemons.config import _address, _optional_path, _path
from fedscore.errors import ConfigError
from fedscore.job import NAME_PATTERN
from fedscore.toml_tables import read_toml, refuse_unknown, take

if TYPE_CHECKING:
    from fedscore.transport.tls import TlsIdentity

KEYS = {"name", "listen", "state_dir", "tls_dir", "poll_seconds", "members", "max_message_mib"}


@dataclass(frozen=True)
class ObserverConfig:
    name: str
    listen: str
    state_dir: Path
    members: dict[str, str] = field(default_factory=dict)   # member name -> host:port
    poll_seconds: float = 5.0
    max_message_mib: int = 64
    tls_dir: Path | None = None
    tls: TlsIdentity | None = None   # loaded from tls_dir when the daemon starts; None only with --insecure


def load_observer_config(path: Path | str) -> ObserverConfig:
    path = Path(path)
    where = f"observer config {path}"
    table = read_toml(path, "observer config").get("observer")
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: missing [observer] table")
    refuse_unknown(table, KEYS, f"{where} [observer]")
    base = path.resolve().parent
    name = take(table, "name", str, "regulator", where)
    if not NAME_PATTERN.fullmatch(name) or name == "coordinator":
        raise ConfigError(f"{where}: name {name!r}: use letters, digits, '-' and '_' (at most 63), not 'coordinator'")
    poll = take(table, "poll_seconds", (int, float), ObserverConfig.poll_seconds, where)
    if not 0.05 <= poll <= 3600:
        raise ConfigError(f"{where}: poll_seconds must be between 0.05 and 3600, got {poll}")
    max_message_mib = take(table, "max_message_mib", int, ObserverConfig.max_message_mib, where)
    if not 4 <= max_message_mib <= 1024:
        raise ConfigError(f"{where}: max_message_mib must be between 4 and 1024, got {max_message_mib}")
    members = take(table, "members", dict, {}, where)
    if not members:
        raise ConfigError(f"{where}: [observer.members] names no member to read from (name = \"host:port\")")
    for member in members:
        if not NAME_PATTERN.fullmatch(member) or member == name:
            raise ConfigError(f"{where}: [observer.members] {member!r} is not another member's name")
    return ObserverConfig(
        name=name, listen=_address(table, "listen", "127.0.0.1:0", where),
        state_dir=_path(table, "state_dir", "state", base, where),
        members={member: _address(members, member, "127.0.0.1:0", f"{where} [observer.members]") for member in members},
        poll_seconds=float(poll), max_message_mib=max_message_mib, tls_dir=_optional_path(table, "tls_dir", base, where),
    )
