"""Counts in messages: "1 epoch", "2 epochs", never "1 epochs"."""
from __future__ import annotations


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``count`` and ``noun``, the noun in the plural unless the count is one (``many`` when not just noun + s)."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"
