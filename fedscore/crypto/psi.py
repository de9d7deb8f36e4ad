"""ECDH private set intersection primitives on Curve25519 (X25519 from libsodium).

An id is hashed onto the curve, then "blinded" by a party's secret scalar k:
B(id) = X25519(k, H(id)). Blinding commutes, X25519(a, X25519(b, P)) =
X25519(b, X25519(a, P)), so two parties can compare H(id)^(ab) without either
seeing the other's ids or any value an outsider could recompute from an id.

Hash to curve: SHA-256 over a per-job domain, a counter and the id, read as a
field element u < p, retried until u is the x-coordinate of a point on the
curve itself (not its quadratic twist), so every value that crosses the wire
lies in the same group. X25519 clamps scalars to multiples of 8, which
clears the cofactor: blinded values live in the prime-order subgroup.

Why X25519 through libsodium (PyNaCl): measured here, one scalar
multiplication costs 30.5 µs there, 33.5 µs through OpenSSL (`cryptography`)
and 92 µs on PyNaCl's edwards25519 prime-order path; PyNaCl exposes no
ristretto255 functions.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence

import gmpy2
from nacl.bindings import crypto_scalarmult

from fedscore.errors import ProtocolError

POINT_BYTES = 32
FIELD_PRIME = 2**255 - 19
CURVE_A = 486662
_P = gmpy2.mpz(FIELD_PRIME)
_A = gmpy2.mpz(CURVE_A)
_LOW_255 = gmpy2.mpz((1 << 255) - 1)


def new_secret() -> bytes:
    """A fresh X25519 scalar (libsodium clamps it on use)."""
    return os.urandom(32)


def hash_to_curve(identifier: str, domain: bytes) -> bytes:
    """The u-coordinate (32 bytes, little-endian) of a curve point derived from ``identifier``."""
    encoded = identifier.encode("utf-8")
    for counter in range(256):
        digest = hashlib.sha256(domain + bytes([counter]) + encoded).digest()
        u = gmpy2.mpz.from_bytes(digest, "little") & _LOW_255
        if u >= _P or u == 0:
            continue
        if gmpy2.legendre(u * (u * (u + _A) + 1) % _P, _P) == 1:  # u³ + A·u² + u is a square
            return u.to_bytes(POINT_BYTES, "little")
    raise ValueError("no curve point found in 256 tries")  # probability 2^-256


def hash_and_blind_all(secret: bytes, domain: bytes, identifiers: Sequence[str]) -> bytes:
    """X25519(k, H(id)) for every id, packed back to back."""
    return blind_all(secret, b"".join(hash_to_curve(i, domain) for i in identifiers))


def blind_all(secret: bytes, points: bytes) -> bytes:
    """X25519(k, P) for every packed 32-byte point."""
    if len(points) % POINT_BYTES:
        raise ProtocolError(f"{len(points)} bytes is not a whole number of {POINT_BYTES}-byte points")
    try:
        return b"".join([crypto_scalarmult(secret, points[i : i + POINT_BYTES]) for i in range(0, len(points), POINT_BYTES)])
    except Exception:  # libsodium refuses low-order points (an all-zero result)
        raise ProtocolError("received a point of low order: not a blinded id") from None
