"""Inclusion proofs: one entry, the audit path to its block's Merkle root, the signed header.

A proof is checked offline: the entry's path must lead to the header's root,
and every member listed must have signed the header's hash with the key
listed. The member keys come from the genesis block, whose hash the proof
carries so a reader can compare it with the one they trust.
"""
from __future__ import annotations

import base64

from fedscore.errors import FedscoreError
from fedscore.ledger import merkle
from fedscore.ledger.block import Block, signature_valid
from fedscore.ledger.verify import genesis_members, verify_chain


def prove(blocks: list[Block], height: int, index: int) -> dict:
    """The inclusion proof of entry ``index`` of block ``height`` (the chain is verified first)."""
    verify_chain(blocks)
    if not 0 <= height < len(blocks):
        raise FedscoreError(f"there is no block {height} (the chain has {len(blocks)})")
    block = blocks[height]
    if not 0 <= index < len(block.entries):
        raise FedscoreError(f"block {height} has no entry {index} (it has {len(block.entries)})")
    return {
        "format": "fedscore.inclusion-proof/1",
        "entry": block.entries[index].decode("utf-8"),
        "index": index,
        "block": {
            "height": block.height, "previous": block.previous.hex(), "timestamp_ns": block.timestamp_ns,
            "merkle_root": block.merkle_root.hex(), "entries": len(block.entries),
        },
        "block_hash": block.hash().hex(),
        "audit_path": [h.hex() for h in merkle.inclusion_path(block.entries, index)],
        "signatures": {m: base64.b64encode(s).decode() for m, s in sorted(block.signatures.items())},
        "members": {m: k.hex() for m, k in sorted(genesis_members(blocks[0]).items())},
        "genesis_hash": blocks[0].hash().hex(),
    }


def check_proof(proof: dict) -> str:
    """A one-line description of what the proof shows; FedscoreError if it shows nothing."""
    try:
        header = proof["block"]
        block = Block(
            height=header["height"], previous=bytes.fromhex(header["previous"]), timestamp_ns=header["timestamp_ns"],
            merkle_root=bytes.fromhex(header["merkle_root"]), entries=tuple([b""] * header["entries"]),
        )
        entry = proof["entry"].encode("utf-8")
        path = [bytes.fromhex(h) for h in proof["audit_path"]]
        signatures = {m: base64.b64decode(s) for m, s in proof["signatures"].items()}
        members = {m: bytes.fromhex(k) for m, k in proof["members"].items()}
        index = proof["index"]
    except (KeyError, TypeError, ValueError) as error:
        raise FedscoreError(f"not a readable inclusion proof ({error})") from None
    if merkle.root_from_path(entry, index, header["entries"], path) != block.merkle_root:
        raise FedscoreError(f"the entry's audit path does not lead to block {block.height}'s Merkle root")
    block_hash = block.hash()
    if proof.get("block_hash") != block_hash.hex():
        raise FedscoreError(f"the header of block {block.height} does not hash to the stated block hash")
    for member, key in sorted(members.items()):
        if member not in signatures or not signature_valid(block_hash, signatures[member], key):
            raise FedscoreError(f"block {block.height} lacks a valid signature from member {member!r}")
    return (
        f"ok: entry {index} is in block {block.height} ({block_hash.hex()}), signed by "
        f"{', '.join(sorted(members))}; genesis {proof.get('genesis_hash', '?')}"
    )
