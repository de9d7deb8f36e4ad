"""Encrypted inner products Σ_i x_i·[[d_i]] by bucket (Pippenger) multi-exponentiation.

Homomorphically, Σ x_i·[[d_i]] is Π c_i^{x_i} mod n². Computing each power
alone costs a full exponentiation per row; the bucket method instead splits
the exponents into W-bit digits and, per digit position, multiplies every
ciphertext into the bucket of its digit once, then combines the 2^W buckets
with about 2^(W+1) multiplications. For 16-bit quantised features over tens
of thousands of rows that is roughly two multiplications per row.

Negative x_i go into a second product that is inverted once at the end, so
no exponent is ever reduced modulo n (which would make it 2048 bits long).
"""
from __future__ import annotations

from collections.abc import Sequence

import gmpy2
import numpy as np
from gmpy2 import mpz


def best_window(rows: int, exponent_bits: int) -> int:
    """The digit width that minimises (windows) × (rows + 2^(W+1)) multiplications."""
    def cost(width: int) -> int:
        return -(-exponent_bits // width) * (rows + (2 << width))

    return min(range(1, 17), key=cost)


def unsigned_multiexp(ciphertexts: Sequence[mpz], exponents: Sequence[int], nsquare: mpz) -> mpz:
    """Π c_i^{e_i} mod n² for non-negative integer exponents."""
    pairs = [(c, int(e)) for c, e in zip(ciphertexts, exponents) if e]
    if not pairs:
        return mpz(1)
    bits = max(e for _, e in pairs).bit_length()
    width = best_window(len(pairs), bits)
    mask = (1 << width) - 1
    result: mpz | None = None
    for window in reversed(range(-(-bits // width))):
        if result is not None:
            for _ in range(width):
                result = result * result % nsquare
        shift = window * width
        buckets: list[mpz | None] = [None] * (mask + 1)
        for c, e in pairs:
            digit = (e >> shift) & mask
            if digit:
                held = buckets[digit]
                buckets[digit] = c if held is None else held * c % nsquare
        # Π_d B_d^d as a running product of suffix products: 2 multiplications per bucket.
        running: mpz | None = None
        total: mpz | None = None
        for digit in range(mask, 0, -1):
            held = buckets[digit]
            if held is not None:
                running = held if running is None else running * held % nsquare
            if running is not None:
                total = running if total is None else total * running % nsquare
        if total is not None:
            result = total if result is None else result * total % nsquare
    return result if result is not None else mpz(1)


def signed_multiexp_parts(
    ciphertexts: Sequence[mpz], exponents: Sequence[int], nsquare: mpz
) -> tuple[mpz, mpz]:
    """(Π_{e>0} c^e, Π_{e<0} c^{-e}): the two halves of a signed multi-exponentiation."""
    positive = [(c, e) for c, e in zip(ciphertexts, exponents) if e > 0]
    negative = [(c, -e) for c, e in zip(ciphertexts, exponents) if e < 0]
    return (
        unsigned_multiexp([c for c, _ in positive], [e for _, e in positive], nsquare),
        unsigned_multiexp([c for c, _ in negative], [e for _, e in negative], nsquare),
    )


def combine_signed(positive: mpz, negative: mpz, nsquare: mpz) -> mpz:
    return positive * gmpy2.invert(negative, nsquare) % nsquare


def weighted_sum_parts(
    ciphertexts: Sequence[mpz], matrix: np.ndarray, nsquare: mpz
) -> list[tuple[mpz, mpz]]:
    """For each column j of the integer ``matrix``: the signed parts of Π_i c_i^{X_ij}."""
    if matrix.shape[0] != len(ciphertexts):
        raise ValueError(f"{matrix.shape[0]} matrix rows for {len(ciphertexts)} ciphertexts")
    return [
        signed_multiexp_parts(ciphertexts, matrix[:, j].tolist(), nsquare)
        for j in range(matrix.shape[1])
    ]
