"""Where a replica stands, read from its file without loading the chain: blocks, head, members, last entries.

A member's status lists every chain it holds, finished ones included; reading the head, the genesis
entry and the few entries at the end keeps that fast however long the chains are. Nothing is verified
here (`fedscore audit verify` does that); a file that cannot be read says why.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from fedscore.job import Step
from fedscore.ledger.block import decode_entry
from fedscore.ledger.store import LedgerStore

UNREADABLE = (sqlite3.Error, OSError, ValueError, KeyError, TypeError, AttributeError)


@dataclass(frozen=True)
class ChainPosition:
    """One replica's position: what ``fedscore status`` compares between members."""

    blocks: int
    head: bytes                  # hash of the last block (empty: no block yet)
    members: frozenset[str]      # named by the genesis entry
    last_kind: str               # kind of the last entry ("" before the first)
    last_step: Step | None       # a training chain's last step (None before the first, or on a scoring chain)


def read_position(store: LedgerStore) -> ChainPosition:
    """``store``'s position, reading its entries from the end only as far as its last step."""
    blocks, head = store.head_summary()
    start = store.first_entry()
    members = frozenset(decode_entry(start).get("members", {})) if start is not None else frozenset()
    last_kind, last_step = "", None
    for body in store.entries_newest_first():
        entry = decode_entry(body)
        kind = str(entry.get("kind", ""))
        if kind == "verification":   # evidence beside the chain's business: a settled chain stays settled
            continue
        last_kind = last_kind or kind
        if kind == "step":
            last_step = Step(int(entry["epoch"]), int(entry["batch"]))
        if kind in ("step", "job_start") or kind.startswith("scoring"):   # nothing further back changes the answer
            break
    return ChainPosition(blocks, head, members, last_kind, last_step)


def read_position_file(path: Path) -> ChainPosition:
    """The position of the replica in ``path``, opened read-only; raises one of UNREADABLE if it cannot be read."""
    if not path.is_file():
        raise FileNotFoundError(f"{path.name} is missing")
    store = LedgerStore(path, read_only=True)
    try:
        return read_position(store)
    finally:
        store.close()
