"""Checking a document that arrived from a peer, field by field: DataError naming where and the field.

A document must have exactly its fields (none missing, none extra), each of
its type; bool is never taken for a number.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable

from fedscore.errors import DataError

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def exact_keys(document: object, keys: Iterable[str], where: str) -> dict:
    keys = list(keys)
    if not isinstance(document, dict):
        raise DataError(f"{where}: must be an object with the fields {', '.join(keys)}, got {type(document).__name__}")
    missing = [k for k in keys if k not in document]
    if missing:
        raise DataError(f"{where}: field {missing[0]!r} is missing")
    extra = sorted(str(k) for k in document if k not in keys)
    if extra:
        raise DataError(f"{where}: unknown field {extra[0]!r}")
    return document


def number(document: dict, key: str, where: str, positive: bool = False) -> float:
    value = document[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{where}: field {key!r} must be a finite number")
    if positive and value <= 0:
        raise DataError(f"{where}: field {key!r} must be positive")
    return float(value)


def whole(document: dict, key: str, where: str, low: int = 0) -> int:
    value = document[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise DataError(f"{where}: field {key!r} must be a whole number of at least {low}")
    return value


def text(document: dict, key: str, where: str, pattern: re.Pattern[str], what: str) -> str:
    value = document[key]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise DataError(f"{where}: field {key!r} must be {what}")
    return value


def flag(document: dict, key: str, where: str) -> bool:
    value = document[key]
    if not isinstance(value, bool):
        raise DataError(f"{where}: field {key!r} must be true or false")
    return value


def names(value: object, key: str, where: str, unique: bool = True) -> tuple[str, ...]:
    """A list of non-empty strings (column names, segment values)."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise DataError(f"{where}: field {key!r} must be a list of non-empty strings")
    if unique and len(set(value)) != len(value):
        raise DataError(f"{where}: field {key!r} names a value twice")
    return tuple(value)
