"""Random masks that hide values while they pass through someone else's hands.

- Gradients go to the coordinator as [[g + r]] with r uniform in Z_n: the
  decrypted value is uniform whatever g is, so the coordinator learns nothing.
- Evaluation scores go to the card center as u + m (mod 2^64) with m from a
  seeded stream whose seed only the coordinator gets; the coordinator returns
  Σ m over partners, so the card center learns Σ u and nothing per partner.
"""
from __future__ import annotations

import hashlib
import secrets

import numpy as np

SEED_BYTES = 32


def uniform_mask(modulus: int) -> int:
    return secrets.randbelow(int(modulus))


def new_seed() -> bytes:
    return secrets.token_bytes(SEED_BYTES)


def word_masks(seed: bytes, count: int) -> np.ndarray:
    """``count`` uniform 64-bit words expanded from ``seed`` with SHAKE-256."""
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a mask seed is {SEED_BYTES} bytes, got {len(seed)}")
    return np.frombuffer(hashlib.shake_256(seed).digest(8 * count), dtype="<u8").copy()
