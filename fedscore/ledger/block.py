"""Blocks: a header (height, previous hash, time, Merkle root, entry count) hashed and co-signed.

Entries are canonical JSON (sorted keys, no spaces, UTF-8), so every member
derives the same bytes, and therefore the same Merkle root, from the same
content. The block hash covers the whole header, the timestamp included;
each member's Ed25519 signature is over the block hash.
"""
from __future__ import annotations

import hashlib
import json
import struct
import time
from dataclasses import dataclass, field, replace

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from fedscore.ledger import merkle

GENESIS_PREVIOUS = bytes(32)
HEADER_FORMAT = ">Q32sQ32sI"   # height, previous hash, time (ns), Merkle root, entry count
DOMAIN = b"fedscore-block/1"


def encode_entry(entry: dict) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_entry(data: bytes) -> dict:
    return json.loads(data.decode("utf-8"))


@dataclass(frozen=True)
class Block:
    height: int
    previous: bytes
    timestamp_ns: int
    merkle_root: bytes
    entries: tuple[bytes, ...]
    signatures: dict[str, bytes] = field(default_factory=dict)

    def header(self) -> bytes:
        return DOMAIN + struct.pack(
            HEADER_FORMAT, self.height, self.previous, self.timestamp_ns, self.merkle_root, len(self.entries)
        )

    def hash(self) -> bytes:
        return hashlib.sha256(self.header()).digest()

    def with_signatures(self, signatures: dict[str, bytes]) -> "Block":
        return replace(self, signatures=dict(signatures))

    def decoded(self) -> list[dict]:
        return [decode_entry(e) for e in self.entries]


def make_block(previous: Block | None, entries: list[dict], timestamp_ns: int | None = None) -> Block:
    """An unsigned block following ``previous`` (None: the genesis block)."""
    encoded = tuple(encode_entry(e) for e in entries)
    return Block(
        height=0 if previous is None else previous.height + 1,
        previous=GENESIS_PREVIOUS if previous is None else previous.hash(),
        timestamp_ns=timestamp_ns if timestamp_ns is not None else time.time_ns(),
        merkle_root=merkle.root(encoded),
        entries=encoded,
    )


def sign(block: Block, key: SigningKey) -> bytes:
    return key.sign(block.hash()).signature


def signature_valid(block_hash: bytes, signature: bytes, public_key: bytes) -> bool:
    try:
        VerifyKey(public_key).verify(block_hash, signature)
        return True
    except (BadSignatureError, ValueError, TypeError):
        return False
