"""Fresh randomness for ciphertexts: Damgård–Jurik–Nielsen obfuscators.

Plain Paillier multiplies each ciphertext by r^n mod n² for a random r: a
full-length exponentiation (about 9 ms at 2048 bits). DJN instead fixes a
random n-th residue h_s = (-x²)^n mod n² once and draws h_s^a for a random
exponent a of ⌈k/2⌉ bits (k = bits of n), as in the DJN paper and the
SecretFlow HEU implementation. With h_s fixed, h_s^a is a product of one
table entry per W-bit window of a, so an obfuscator costs ⌈k/(2W)⌉
multiplications modulo n² and no squarings.

Each process that encrypts draws its own x, so nobody else knows its base.

The short exponent rests on an assumption beyond Paillier's own (that h_s^a
for a ⌈k/2⌉-bit a is indistinguishable from a uniform n-th residue). The
standard variant, r^n mod n² for r uniform in Z_n*, needs none and costs a
full exponentiation; a job chooses (`obfuscation` in the job file).
"""
from __future__ import annotations

import secrets

import gmpy2
from gmpy2 import mpz

from fedscore.crypto.paillier import PublicKey

DEFAULT_WINDOW_BITS = 12
SHORT_EXPONENT = "short-exponent"
STANDARD = "standard"
VARIANTS = (SHORT_EXPONENT, STANDARD)


def standard_obfuscator(public_key: PublicKey) -> mpz:
    """r^n mod n² for r uniform in Z_n* (plain Paillier randomness)."""
    n = public_key.n
    while True:
        r = mpz(secrets.randbelow(int(n) - 1) + 1)
        if gmpy2.gcd(r, n) == 1:
            return gmpy2.powmod(r, n, public_key.nsquare)


def exponent_bits(public_key: PublicKey) -> int:
    """⌈k/2⌉ for a k-bit modulus."""
    return (public_key.bits + 1) // 2


class Obfuscator:
    """Draws random n-th residues h_s^a mod n²; ``window_bits=0`` skips the table."""

    def __init__(self, public_key: PublicKey, window_bits: int = DEFAULT_WINDOW_BITS):
        self.public_key = public_key
        n, nsquare = public_key.n, public_key.nsquare
        while True:
            x = mpz(secrets.randbelow(int(n) - 2) + 2)
            if gmpy2.gcd(x, n) == 1:
                break
        self.base = gmpy2.powmod((-x * x) % n, n, nsquare)
        self.bits = exponent_bits(public_key)
        self.window_bits = window_bits
        self._table: list[list[mpz]] | None = self._build_table() if window_bits else None

    def _build_table(self) -> list[list[mpz]]:
        """table[w][d] = base^(d·2^(W·w)) for every window w and digit d."""
        nsquare, width = self.public_key.nsquare, self.window_bits
        table: list[list[mpz]] = []
        window_base = self.base
        for _ in range(-(-self.bits // width)):
            row = [mpz(1), window_base]
            for _ in range(2, 1 << width):
                row.append(row[-1] * window_base % nsquare)
            table.append(row)
            window_base = row[-1] * window_base % nsquare
        return table

    def draw(self) -> mpz:
        """One fresh obfuscator: base^a for a uniformly random ⌈k/2⌉-bit a."""
        return self.power(secrets.randbits(self.bits))

    def power(self, exponent: int) -> mpz:
        """base^exponent mod n², from the table when there is one."""
        if self._table is None:
            return gmpy2.powmod(self.base, exponent, self.public_key.nsquare)
        nsquare, mask, width = self.public_key.nsquare, (1 << self.window_bits) - 1, self.window_bits
        rows = iter(self._table)
        acc = next(rows)[exponent & mask]
        for row in rows:
            exponent >>= width
            acc = acc * row[exponent & mask] % nsquare
        return acc
