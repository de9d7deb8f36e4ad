"""Recompute a chain and name the first block that is not what it claims to be.

Checked for every block: its height follows the previous one, its previous
hash is the previous block's hash, its time does not go backwards, its
Merkle root is that of its entries, and it carries a valid signature from
every member listed in the genesis block, and from nobody else.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from fedscore.errors import LedgerError   # defined with the other errors; imported from here too
from fedscore.lifeline import process_pool
from fedscore.ledger import merkle
from fedscore.ledger.block import GENESIS_PREVIOUS, Block, decode_entry, signature_valid
from fedscore.plural import plural


GENESIS_KINDS = ("job_start", "scoring_start", "audience_start")


@dataclass(frozen=True)
class ChainSummary:
    blocks: int
    entries: int
    head: bytes
    members: dict[str, bytes]

    genesis: bytes = b""

    def line(self) -> str:
        return f"ok: {plural(self.blocks, 'block')}, {plural(self.entries, 'entry', 'entries')}, head {self.head.hex()}"


def genesis_members(block: Block) -> dict[str, bytes]:
    """{member: Ed25519 public key} from the genesis block's first entry (a job's, a model's scoring or a pair's audience start)."""
    try:
        start = decode_entry(block.entries[0])
        members = {name: bytes.fromhex(info["key"]) for name, info in start["members"].items()}
    except (IndexError, KeyError, ValueError, TypeError, AttributeError):
        raise LedgerError(block.height, "the genesis block has no readable job_start entry listing the members") from None
    if start.get("kind") not in GENESIS_KINDS or not members:
        raise LedgerError(block.height, "the genesis block does not start a job with members")
    return members


def signature_problems(items: list[tuple[int, bytes, dict[str, bytes], dict[str, bytes]]]) -> list[tuple[int, str]]:
    """(height, reason) for each block whose signatures are not exactly one valid signature per member."""
    bad = []
    for height, block_hash, signatures, members in items:
        missing = sorted(set(members) - set(signatures))
        strangers = sorted(set(signatures) - set(members))
        if missing:
            bad.append((height, f"no signature from member {missing[0]!r}"))
        elif strangers:
            bad.append((height, f"signed by {strangers[0]!r}, who is not a member in the genesis block"))
        else:
            for member in sorted(members):
                if not signature_valid(block_hash, signatures[member], members[member]):
                    bad.append((height, f"the signature of member {member!r} does not verify"))
                    break
    return bad


def check_link(block: Block, previous: Block | None) -> None:
    """Height, previous hash, time and Merkle root of one block against its predecessor."""
    expected_height = 0 if previous is None else previous.height + 1
    if block.height != expected_height:
        raise LedgerError(block.height, f"height {block.height} where {expected_height} was expected (a gap or a reordering)")
    expected_previous = GENESIS_PREVIOUS if previous is None else previous.hash()
    if block.previous != expected_previous:
        raise LedgerError(block.height, "previous-block hash does not match the block before it")
    if previous is not None and block.timestamp_ns < previous.timestamp_ns:
        raise LedgerError(block.height, "its time is earlier than the block before it")
    if merkle.root(block.entries) != block.merkle_root:
        raise LedgerError(block.height, "Merkle root does not match its entries")


def verify_chain(blocks: Iterable[Block], workers: int = 0) -> ChainSummary:
    """Check every block; raise LedgerError naming the first bad one. Signatures checked on ``workers`` processes."""
    chain = list(blocks)
    if not chain:
        raise LedgerError(0, "the ledger holds no blocks")
    members = genesis_members(chain[0])
    broken: LedgerError | None = None
    first_broken = len(chain)
    previous = None
    for position, block in enumerate(chain):
        try:
            check_link(block, previous)
            for entry in block.entries:
                try:
                    decode_entry(entry)
                except (UnicodeDecodeError, ValueError):
                    raise LedgerError(block.height, "an entry is not valid JSON") from None
        except LedgerError as error:
            broken, first_broken = error, position
            break
        previous = block
    # signatures of the blocks before the first broken link: the earliest problem is named
    checked = chain[:first_broken]
    items = [(b.height, b.hash(), b.signatures, members) for b in checked]
    workers = workers or min(os.cpu_count() or 1, 8)
    if workers > 1 and len(items) > 500:
        size = -(-len(items) // workers)
        with process_pool(workers) as pool:
            parts = pool.map(signature_problems, [items[i : i + size] for i in range(0, len(items), size)])
            bad = [problem for part in parts for problem in part]
    else:
        bad = signature_problems(items)
    if bad:
        raise LedgerError(*min(bad))
    if broken is not None:
        raise broken
    return ChainSummary(len(chain), sum(len(b.entries) for b in chain), chain[-1].hash(), members, chain[0].hash())
