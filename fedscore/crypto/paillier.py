"""Paillier keys and the handful of operations the protocol needs, on plain integers.

The protocol sessions combine ciphertexts only through the named operations
at the end of this module (add, add_all, add_plains, negate, rerandomise,
...), so no session reduces modulo n² itself.

Ciphertexts are gmpy2 ``mpz`` values modulo n², not python-paillier objects:
bulk vectors stay cheap to build, multiply and serialise. Key generation and
CRT decryption come from python-paillier (``phe``), which uses gmpy2 inside.
The generator is g = n + 1, so g^m = 1 + m·n (mod n²) costs one multiplication.

Plaintexts live in Z_n. A signed integer m is stored as m mod n and read back
with :func:`decode_signed` (values above n/2 are negative).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import gmpy2
from gmpy2 import mpz
from phe import paillier as _phe

from fedscore.errors import ProtocolError


@dataclass(frozen=True)
class PublicKey:
    """A Paillier public key: the modulus n (the generator is n + 1)."""

    n: mpz

    @classmethod
    def from_bytes(cls, data: bytes) -> "PublicKey":
        n = mpz.from_bytes(data, "big")
        if n < 3 or n % 2 == 0:
            raise ProtocolError("public key is not an odd modulus")
        return cls(n)

    def to_bytes(self) -> bytes:
        return self.n.to_bytes(self.plaintext_bytes, "big")

    @cached_property
    def nsquare(self) -> mpz:
        return self.n * self.n

    @property
    def bits(self) -> int:
        return int(self.n.bit_length())

    @property
    def plaintext_bytes(self) -> int:
        """Byte width of a value modulo n."""
        return (self.bits + 7) // 8

    @property
    def ciphertext_bytes(self) -> int:
        """Byte width of a ciphertext (a value modulo n²)."""
        return (int(self.nsquare.bit_length()) + 7) // 8

    def fingerprint(self) -> str:
        """SHA-256 of the modulus, hex: names the key in logs and reports."""
        return hashlib.sha256(self.to_bytes()).hexdigest()


class PrivateKey:
    """The coordinator's private key; decrypts with CRT through python-paillier."""

    def __init__(self, public_key: PublicKey, phe_key: _phe.PaillierPrivateKey):
        self.public_key = public_key
        self._key = phe_key

    def decrypt(self, ciphertext: mpz) -> int:
        """The plaintext in [0, n)."""
        return int(self._key.raw_decrypt(int(ciphertext)))

    def decrypt_signed(self, ciphertext: mpz) -> int:
        return decode_signed(self.decrypt(ciphertext), self.public_key.n)

    def to_json(self) -> str:
        """The primes, for the coordinator's checkpoint (written owner-only; it resumes a job after a restart)."""
        return json.dumps({"p": str(self._key.p), "q": str(self._key.q)})

    @classmethod
    def from_json(cls, text: str) -> "PrivateKey":
        primes = json.loads(text)
        p, q = int(primes["p"]), int(primes["q"])
        phe_public = _phe.PaillierPublicKey(p * q)
        return cls(PublicKey(mpz(phe_public.n)), _phe.PaillierPrivateKey(phe_public, p, q))


def generate_keypair(bits: int) -> tuple[PublicKey, PrivateKey]:
    """A fresh key pair with an n of exactly ``bits`` bits."""
    phe_public, phe_private = _phe.generate_paillier_keypair(n_length=bits)
    public = PublicKey(mpz(phe_public.n))
    return public, PrivateKey(public, phe_private)


def decode_signed(value: int, n: int) -> int:
    """Map a value of Z_n back to a signed integer (the upper half is negative)."""
    value = int(value)
    return value - int(n) if value > int(n) // 2 else value


def plaintext_factor(public_key: PublicKey, m: int) -> mpz:
    """g^m mod n² for g = n + 1, i.e. 1 + (m mod n)·n: a ciphertext of m without randomness."""
    n = public_key.n
    return (1 + (mpz(m) % n) * n) % public_key.nsquare


def encrypt(public_key: PublicKey, m: int, obfuscator: mpz) -> mpz:
    """[[m]] with the given obfuscator (a random n-th residue, see obfuscation.py)."""
    return plaintext_factor(public_key, m) * obfuscator % public_key.nsquare


def add(public_key: PublicKey, a: mpz, b: mpz) -> mpz:
    """[[x + y]] from [[x]] and [[y]]."""
    return a * b % public_key.nsquare


def add_all(public_key: PublicKey, ciphertexts: Iterable[mpz]) -> mpz:
    """[[Σ x_i]] from [[x_i]] ([[0]] without randomness when there are none)."""
    nsquare = public_key.nsquare
    acc = mpz(1)
    for c in ciphertexts:
        acc = acc * c % nsquare
    return acc


def add_elementwise(public_key: PublicKey, vectors: Sequence[Sequence[mpz]]) -> list[mpz]:
    """[[Σ_k x_k,i]] for each position i, from equally long vectors [[x_k,i]]."""
    nsquare = public_key.nsquare
    out = list(vectors[0])
    for vector in vectors[1:]:
        out = [a * b % nsquare for a, b in zip(out, vector)]
    return out


def add_plain(public_key: PublicKey, ciphertext: mpz, m: int) -> mpz:
    """[[x + m]] from [[x]]; carries no new randomness."""
    return ciphertext * plaintext_factor(public_key, m) % public_key.nsquare


def add_plains(public_key: PublicKey, ciphertexts: Sequence[mpz], plaintexts: Sequence[int]) -> list[mpz]:
    """[[x_i + m_i]] for each position i; carries no new randomness (see :func:`rerandomise_each`)."""
    nsquare = public_key.nsquare
    return [c * plaintext_factor(public_key, m) % nsquare for c, m in zip(ciphertexts, plaintexts)]


def negate(public_key: PublicKey, ciphertext: mpz) -> mpz:
    """[[-x]] from [[x]]."""
    return gmpy2.invert(ciphertext, public_key.nsquare)


def rerandomise(public_key: PublicKey, ciphertext: mpz, obfuscator: mpz) -> mpz:
    """[[x]] again, unlinkable to the input: multiplied by a fresh obfuscator (a random n-th residue)."""
    return ciphertext * obfuscator % public_key.nsquare


def rerandomise_each(public_key: PublicKey, ciphertexts: Sequence[mpz], obfuscators: Sequence[mpz]) -> list[mpz]:
    """:func:`rerandomise` for each position, each with its own never-used obfuscator."""
    nsquare = public_key.nsquare
    return [c * r % nsquare for c, r in zip(ciphertexts, obfuscators)]
