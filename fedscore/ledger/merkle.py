"""Merkle trees as Certificate Transparency hashes them (RFC 9162, section 2.1).

Leaves are SHA-256(0x00 ‖ entry), inner nodes SHA-256(0x01 ‖ left ‖ right),
and a tree of n leaves splits at the largest power of two below n. An
inclusion proof is the list of sibling hashes from a leaf up to the root.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _root(leaves: Sequence[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(_root(leaves[:k]), _root(leaves[k:]))


def root(entries: Sequence[bytes]) -> bytes:
    """The Merkle tree hash of the entries."""
    return _root([leaf_hash(e) for e in entries]) if entries else EMPTY_ROOT


def _path(leaves: Sequence[bytes], index: int) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return _path(leaves[:k], index) + [_root(leaves[k:])]
    return _path(leaves[k:], index - k) + [_root(leaves[:k])]


def inclusion_path(entries: Sequence[bytes], index: int) -> list[bytes]:
    if not 0 <= index < len(entries):
        raise IndexError(f"entry {index} of a block of {len(entries)}")
    return _path([leaf_hash(e) for e in entries], index)


def root_from_path(entry: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes | None:
    """The root an inclusion path leads to (RFC 9162, 2.1.3.2), or None if the path has the wrong shape."""
    if not 0 <= index < size:
        return None
    fn, sn = index, size - 1
    value = leaf_hash(entry)
    for sibling in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            value = node_hash(sibling, value)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            value = node_hash(value, sibling)
        fn >>= 1
        sn >>= 1
    return value if sn == 0 else None
