"""Typed values out of TOML tables, with messages that name the file, the table and the key.

Shared by the job file (fedscore.job_file) and the daemon configs
(fedscore.daemons.config), so both refuse a wrong type or an unknown key in
the same words.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from fedscore.errors import ConfigError

Kind = type | tuple[type, ...]


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The parsed document, or a ConfigError naming ``what`` the file is and why it cannot be read."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{what} {path} is not valid TOML: {error}") from None


def take(table: dict[str, Any], key: str, kind: Kind, default: Any, where: str) -> Any:
    """``table[key]`` if present and of ``kind`` (true/false never passes for a number), else ``default``."""
    if key not in table:
        return default
    value = table[key]
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        raise ConfigError(f"{where}: {key} must be {_kind_name(kind)}, got {value!r}")
    return value


def _kind_name(kind: Kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {int: "an integer", float: "a number", str: "a string", list: "a list", bool: "true or false",
             dict: "a table"}
    return " or ".join(names[k] for k in kinds)


def refuse_unknown(table: dict[str, Any], known: set[str], where: str) -> None:
    """A misspelt key is an error, not a silently ignored setting."""
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting {unknown[0]!r} (known: {', '.join(sorted(known))})")


def table_of(document: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    """An optional sub-table (empty when absent); anything but a table is an error."""
    table = document.get(key, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [{key}] must be a table")
    return table
