"""`fedscore audit ...`: read a ledger replica, verify it, prove an entry, show balances."""
from __future__ import annotations

import json
from pathlib import Path

from fedscore.errors import FedscoreError
from fedscore.ledger.block import Block
from fedscore.ledger.proofs import check_proof, prove
from fedscore.ledger.settlement import balances
from fedscore.ledger.store import LedgerStore
from fedscore.ledger.verify import LedgerError, verify_chain


def read_ledger(path: Path) -> list[Block]:
    if not path.is_file():
        raise FedscoreError(f"ledger {path} does not exist")
    try:
        store = LedgerStore(path, read_only=True)
    except Exception as error:  # not SQLite, or not ours
        raise FedscoreError(f"ledger {path} is not readable: {error}") from None
    try:
        return list(store.blocks())
    except Exception as error:
        raise FedscoreError(f"ledger {path} is not readable: {error}") from None
    finally:
        store.close()


def verify(path: Path, expected_head: str | None = None) -> str:
    """The chain's summary; with ``expected_head`` (from a job report), a truncated or replaced chain fails too."""
    summary = verify_chain(read_ledger(path))
    if expected_head and summary.head.hex() != expected_head.lower():
        raise LedgerError(summary.blocks - 1, f"the head is {summary.head.hex()}, not the expected {expected_head}")
    return summary.line() + f", genesis {summary.genesis.hex()}"


def show(path: Path) -> str:
    blocks = read_ledger(path)
    try:
        status = verify_chain(blocks).line()
    except LedgerError as error:
        status = f"DOES NOT VERIFY: {error}"
    lines = [status]
    for block in blocks:
        signers = ", ".join(sorted(block.signatures))
        lines.append(f"block {block.height}  {block.hash().hex()}  time {block.timestamp_ns}  signed by {signers}")
        for index, raw in enumerate(block.entries):
            try:
                text = json.dumps(json.loads(raw.decode("utf-8")), sort_keys=True)
            except (UnicodeDecodeError, ValueError):
                text = f"(not JSON) {raw!r}"
            lines.append(f"  [{index}] {text}")
    return "\n".join(lines)


def prove_entry(path: Path, entry: str) -> str:
    try:
        height, index = (int(part) for part in entry.split(":"))
    except ValueError:
        raise FedscoreError(f"name an entry as HEIGHT:INDEX (e.g. 3:0), not {entry!r}") from None
    return json.dumps(prove(read_ledger(path), height, index), indent=2)


def check_proof_file(path: Path) -> str:
    try:
        proof = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise FedscoreError(f"proof {path} is not readable: {error}") from None
    return check_proof(proof)


def show_balances(path: Path) -> str:
    blocks = read_ledger(path)
    verify_chain(blocks)
    entries = [e for b in blocks for e in b.decoded()]
    currency = next((e["currency"] for e in entries if e.get("kind") in ("settlement", "scoring_settlement")), "")
    totals = balances(entries)
    if not totals:
        return "no settlement on this ledger yet"
    lines = [f"{'member':<16}{'owes':>14}{'is owed':>14}{'net':>14}   ({currency}, minor units)"]
    for member, amounts in sorted(totals.items()):
        net = amounts["owed"] - amounts["owes"]
        lines.append(f"{member:<16}{amounts['owes']:>14}{amounts['owed']:>14}{net:>14}")
    return "\n".join(lines)
