"""`fedscore audit ...`: read a ledger replica, verify it, prove an entry, show balances.

Each action has a text form (for people) and a document form (``--json``, for
scripts) built from the same values.
"""
from __future__ import annotations

import datetime
import json
from pathlib import Path

from fedscore.errors import FedscoreError, UnverifiedError
from fedscore.ledger.block import Block
from fedscore.ledger.observation import recorded_alarms
from fedscore.ledger.proofs import check_proof, prove
from fedscore.ledger.settlement import balances
from fedscore.ledger.store import LedgerStore
from fedscore.ledger.verify import LedgerError, verify_chain
from fedscore.plural import plural

HEAD_PREFIX_DIGITS = 16   # the shortest head prefix `verify --head` takes (64 bits: no two blocks share one)


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


class ProofError(UnverifiedError):
    """An inclusion proof that was read but does not check out: like a ledger that does not verify (exit 3)."""


def check_head(blocks: list[Block], expected: str) -> None:
    """The chain must end at the block ``expected`` names: its hash, or a prefix of it no other block shares.

    A prefix two blocks share is a usage error (exit 2); a chain that ends elsewhere does not verify (exit 3).
    """
    expected = expected.lower()
    hashes = [block.hash().hex() for block in blocks]
    matching = [height for height, found in enumerate(hashes) if found.startswith(expected)]
    if len(matching) > 1:
        raise FedscoreError(f"--head {expected} is ambiguous: the hashes of blocks "
                            f"{', '.join(map(str, matching))} start with it; give more digits")
    head, last = hashes[-1], len(hashes) - 1
    if head.startswith(expected):
        return
    past = f": the chain goes on {plural(last - matching[0], 'block')} past block {matching[0]}" if matching else ""
    raise LedgerError(last, f"the head is {head}, not the expected {expected}{past}")


class AlarmRecorded(UnverifiedError):
    """An observer's replica that records an equivocation: it verifies, but the consortium's chain does not hold."""


def _replica_alarms(path: Path) -> None:
    """AlarmRecorded naming the first equivocation an observer's replica records (a member's records none)."""
    chain = "scoring" if path.name == "scoring.sqlite" else "training"
    alarms = recorded_alarms(path, path.parent.name, chain)
    if alarms:
        more = f" (and {plural(len(alarms) - 1, 'more alarm')})" if len(alarms) > 1 else ""
        raise AlarmRecorded(f"{path}: {alarms[0].line()}{more}")


def verify_observer_state(state_dir: Path) -> dict:
    """Every replica in an observer's state folder verified, and none records an alarm."""
    paths = sorted(p for p in state_dir.glob("jobs/*/*.sqlite") if p.name in ("ledger.sqlite", "scoring.sqlite"))
    if not paths:
        raise FedscoreError(f"{state_dir} holds no replica (jobs/<job id>/ledger.sqlite or scoring.sqlite)")
    found = [verify_document(path) for path in paths]
    return {"ok": True, "replicas": len(found), "blocks": sum(f["blocks"] for f in found),
            "entries": sum(f["entries"] for f in found)}


def verify_document(path: Path, expected_head: str | None = None) -> dict:
    """The chain's summary; with ``expected_head`` (from a job report, whole or its first 16 hex digits or more),
    a truncated or replaced chain fails too. An observer's replica that records an equivocation alarm fails,
    naming it; a folder is an observer's state folder, every replica in it verified."""
    if path.is_dir() and expected_head is None:
        return verify_observer_state(path)
    blocks = read_ledger(path)
    summary = verify_chain(blocks)
    if expected_head:
        check_head(blocks, expected_head)
    _replica_alarms(path)
    return {
        "ok": True, "blocks": summary.blocks, "entries": summary.entries, "head": summary.head.hex(),
        "genesis": summary.genesis.hex(), "members": sorted(summary.members),
    }


def verify(path: Path, expected_head: str | None = None) -> str:
    found = verify_document(path, expected_head)
    if "replicas" in found:
        return (f"ok: {plural(found['replicas'], 'replica')}, {plural(found['blocks'], 'block')}, "
                f"{plural(found['entries'], 'entry', 'entries')}, no alarm")
    return (f"ok: {plural(found['blocks'], 'block')}, {plural(found['entries'], 'entry', 'entries')}, "
            f"head {found['head']}, genesis {found['genesis']}")


NOT_JSON = "not_json"


def iso_time(timestamp_ns: int) -> str:
    """A block's time as ISO 8601 in UTC, to the microsecond: 2026-12-02T20:15:03.123456Z."""
    seconds, nanoseconds = divmod(timestamp_ns, 1_000_000_000)
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    return moment.replace(microsecond=nanoseconds // 1000).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _entry(raw: bytes) -> object:
    """An entry as its JSON value; one that is not JSON as {"not_json": its bytes' repr}."""
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {NOT_JSON: repr(raw)}


def show_document(path: Path) -> dict:
    """Every block and entry, and whether the chain verifies (a broken chain is still shown)."""
    blocks = read_ledger(path)
    try:
        verified, problem = verify_chain(blocks).line(), ""
    except LedgerError as error:
        verified, problem = "", str(error)
    return {
        "verifies": not problem, "summary": verified, "problem": problem,
        "blocks": [
            {
                "height": block.height, "hash": block.hash().hex(), "previous": block.previous.hex(),
                "timestamp_ns": block.timestamp_ns, "time": iso_time(block.timestamp_ns),
                "merkle_root": block.merkle_root.hex(),
                "signed_by": sorted(block.signatures),
                "entries": [_entry(raw) for raw in block.entries],
            }
            for block in blocks
        ],
    }


def show(path: Path) -> str:
    document = show_document(path)
    lines = [document["summary"] or f"DOES NOT VERIFY: {document['problem']}"]
    for block in document["blocks"]:
        lines.append(f"block {block['height']}  {block['hash']}  {block['time']}  signed by {', '.join(block['signed_by'])}")
        for index, entry in enumerate(block["entries"]):
            bad = isinstance(entry, dict) and set(entry) == {NOT_JSON}
            text = f"(not JSON) {entry[NOT_JSON]}" if bad else json.dumps(entry, sort_keys=True)
            lines.append(f"  [{index}] {text}")
    return "\n".join(lines)


def prove_document(path: Path, entry: str) -> dict:
    try:
        height, index = (int(part) for part in entry.split(":"))
    except ValueError:
        raise FedscoreError(f"name an entry as HEIGHT:INDEX (e.g. 3:0), not {entry!r}") from None
    return prove(read_ledger(path), height, index)


def prove_entry(path: Path, entry: str) -> str:
    return json.dumps(prove_document(path, entry), indent=2)


def check_proof_document(path: Path) -> dict:
    """What a proof shows; ProofError when it was read but does not check out."""
    try:
        proof = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise FedscoreError(f"proof {path} is not readable: {error}") from None
    try:
        line = check_proof(proof)
    except FedscoreError as error:
        raise ProofError(f"proof {path} does not verify: {error}") from None
    return {
        "ok": True, "summary": line, "index": proof["index"], "height": proof["block"]["height"],
        "genesis_hash": proof["genesis_hash"],
    }


def check_proof_file(path: Path) -> str:
    return check_proof_document(path)["summary"]


def balances_document(path: Path) -> dict:
    """{member: owes, owed, net} in minor units over every settlement of a chain that verifies."""
    blocks = read_ledger(path)
    verify_chain(blocks)
    entries = [e for b in blocks for e in b.decoded()]
    currency = next((e["currency"] for e in entries if e.get("kind") in ("settlement", "scoring_settlement")), "")
    totals = balances(entries)
    return {
        "currency": currency,
        "members": {
            member: {**amounts, "net": amounts["owed"] - amounts["owes"]} for member, amounts in sorted(totals.items())
        },
    }


def show_balances(path: Path) -> str:
    document = balances_document(path)
    if not document["members"]:
        return "no settlement on this ledger yet"
    lines = [f"{'member':<16}{'owes':>14}{'is owed':>14}{'net':>14}   ({document['currency']}, minor units)"]
    for member, amounts in document["members"].items():
        lines.append(f"{member:<16}{amounts['owes']:>14}{amounts['owed']:>14}{amounts['net']:>14}")
    return "\n".join(lines)
