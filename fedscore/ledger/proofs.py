"""Inclusion proofs: one entry, the audit path to its block's Merkle root, the signed header.

A proof is checked offline: the entry's path must lead to the header's root,
and every member listed must have signed the header's hash with the key
listed. The member keys come from the genesis block, whose hash the proof
carries so a reader can compare it with the one they trust.
"""
from __future__ import annotations

import base64
from dataclasses import replace

from fedscore.errors import FedscoreError
from fedscore.ledger import merkle
from fedscore.ledger.block import Block, signature_valid
from fedscore.ledger.verify import genesis_members, verify_chain


def header_document(block: Block) -> dict:
    """A block's header as JSON: what a reader needs to recompute its hash, without its entries."""
    return {
        "height": block.height, "previous": block.previous.hex(), "timestamp_ns": block.timestamp_ns,
        "merkle_root": block.merkle_root.hex(), "entries": len(block.entries),
    }


def _signed_inclusion(block: Block, index: int) -> dict:
    return {
        "entry": block.entries[index].decode("utf-8"),
        "index": index,
        "block": header_document(block),
        "audit_path": [h.hex() for h in merkle.inclusion_path(block.entries, index)],
        "signatures": {m: base64.b64encode(s).decode() for m, s in sorted(block.signatures.items())},
    }


def prove(blocks: list[Block], height: int, index: int) -> dict:
    """The inclusion proof of entry ``index`` of block ``height`` (the chain is verified first).

    It carries the genesis block's job_start entry, with its own audit path and
    signatures, so the member keys are bound to the genesis hash a reader trusts.
    """
    verify_chain(blocks)
    if not 0 <= height < len(blocks):
        raise FedscoreError(f"there is no block {height} (the chain has {len(blocks)})")
    block = blocks[height]
    if not 0 <= index < len(block.entries):
        raise FedscoreError(f"block {height} has no entry {index} (it has {len(block.entries)})")
    return {
        "format": "fedscore.inclusion-proof/2",
        **_signed_inclusion(block, index),
        "genesis": _signed_inclusion(blocks[0], 0),
        "genesis_hash": blocks[0].hash().hex(),
    }


MAX_HEADER_ENTRIES = 1 << 20   # far above any block fedscore makes (a scoring block holds at most 2 000)


def header_block(header: dict) -> Block:
    """The block a header document describes, its entries left blank (its hash is the real block's).
    ValueError for a field a block header cannot hold (a hand-edited document)."""
    height, timestamp_ns, entries = int(header["height"]), int(header["timestamp_ns"]), int(header["entries"])
    previous, merkle_root = bytes.fromhex(header["previous"]), bytes.fromhex(header["merkle_root"])
    if not (0 <= height < 1 << 64 and 0 <= timestamp_ns < 1 << 64 and 0 < entries <= MAX_HEADER_ENTRIES):
        raise ValueError(f"a header with height {height}, time {timestamp_ns} and {entries} entries is not a block's")
    if len(previous) != 32 or len(merkle_root) != 32:
        raise ValueError("a header's previous hash and Merkle root are 32 bytes each")
    return Block(height=height, previous=previous, timestamp_ns=timestamp_ns, merkle_root=merkle_root,
                 entries=tuple([b""] * entries))


def path_leads_to_root(entry: bytes, index: int, audit_path: list[str], block: Block) -> bool:
    """Whether ``entry``, at ``index``, with these sibling hashes (hex), gives ``block``'s Merkle root."""
    path = [bytes.fromhex(h) for h in audit_path]
    return merkle.root_from_path(entry, index, len(block.entries), path) == block.merkle_root


def _check_signed_inclusion(part: dict, members: dict[str, bytes] | None) -> tuple[Block, dict[str, bytes]]:
    """Check one entry's path to its header and the header's signatures; returns the header and the keys used."""
    block = header_block(part["block"])
    height, size, index = block.height, len(block.entries), int(part["index"])
    entry = part["entry"].encode("utf-8")
    if not path_leads_to_root(entry, index, part["audit_path"], block):
        raise FedscoreError(f"the entry's audit path does not lead to block {height}'s Merkle root")
    if members is None:  # the genesis part: its job_start entry lists the member keys
        members = genesis_members(replace(block, entries=(entry,) + tuple([b""] * (size - 1))))
    if not members:
        raise FedscoreError("the proof names no members")
    signatures = {m: base64.b64decode(s) for m, s in part["signatures"].items()}
    block_hash = block.hash()
    for member, key in sorted(members.items()):
        if member not in signatures or not signature_valid(block_hash, signatures[member], key):
            raise FedscoreError(f"block {height} lacks a valid signature from member {member!r}")
    return block, members


def check_proof(proof: dict) -> str:
    """A one-line description of what the proof shows; FedscoreError if it shows nothing."""
    try:
        genesis, members = _check_signed_inclusion(proof["genesis"], None)
        if genesis.height != 0 or genesis.hash().hex() != proof["genesis_hash"]:
            raise FedscoreError("the genesis part is not the genesis block named by genesis_hash")
        block, _ = _check_signed_inclusion(proof, members)
    except FedscoreError:
        raise
    except Exception as error:  # missing fields, wrong types, bad hex or base64, a non-JSON entry
        raise FedscoreError(f"not a readable inclusion proof ({type(error).__name__}: {error})") from None
    return (
        f"ok: entry {proof['index']} is in block {block.height} ({block.hash().hex()}), signed by "
        f"{', '.join(sorted(members))}, the members of genesis {proof['genesis_hash']}"
    )
