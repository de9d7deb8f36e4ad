"""Encrypted inner products Σ_i x_i·[[d_i]] by bucket (Pippenger) multi-exponentiation.

Homomorphically, Σ x_i·[[d_i]] is Π c_i^{x_i} mod n². Computing each power
alone costs a full exponentiation per row; the bucket method instead splits
the exponents into W-bit digits and, per digit position, multiplies every
ciphertext into the bucket of its digit once, then combines the 2^W buckets
with about 2^(W+1) multiplications. For 16-bit quantised features over tens
of thousands of rows that is roughly two multiplications per row.

Negative x_i go into a second product that is inverted once at the end, so
no exponent is ever reduced modulo n (which would make it 2048 bits long).

A column with few distinct values (a category, an age, a count of late
payments) is cheaper still by grouping: multiply each ciphertext into the
group of its exponent (one multiplication per row), then combine the k
groups by running products raised to the gaps between consecutive values,
Π_v G_v^v = Π_j (G_v1···G_vj)^(v_j − v_(j+1)), about k·(2 + log2 gap)
multiplications. Each column takes whichever of the two costs less.
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


def windowed_cost(rows: int, exponent_bits: int) -> int:
    width = best_window(rows, exponent_bits)
    return -(-exponent_bits // width) * (rows + (2 << width))


def grouped_cost(rows: int, distinct: int, largest: int) -> int:
    """Multiplications for grouping: one per row, then per group two and a power of the gap."""
    return rows + distinct * (2 + max(1, largest // max(distinct, 1)).bit_length())


def grouped_multiexp(pairs: list[tuple[mpz, int]], nsquare: mpz) -> mpz:
    """Π c^e over ``pairs`` by grouping equal exponents (see the module docstring)."""
    groups: dict[int, mpz] = {}
    for c, e in pairs:
        held = groups.get(e)
        groups[e] = c if held is None else held * c % nsquare
    values = sorted(groups, reverse=True)
    running: mpz | None = None
    total: mpz | None = None
    for position, value in enumerate(values):
        running = groups[value] if running is None else running * groups[value] % nsquare
        gap = value - (values[position + 1] if position + 1 < len(values) else 0)
        term = running if gap == 1 else gmpy2.powmod(running, gap, nsquare)
        total = term if total is None else total * term % nsquare
    return total if total is not None else mpz(1)


def unsigned_multiexp(ciphertexts: Sequence[mpz], exponents: Sequence[int], nsquare: mpz) -> mpz:
    """Π c_i^{e_i} mod n² for non-negative integer exponents."""
    pairs = [(c, int(e)) for c, e in zip(ciphertexts, exponents) if e]
    if not pairs:
        return mpz(1)
    largest = max(e for _, e in pairs)
    bits = largest.bit_length()
    distinct = len({e for _, e in pairs})
    if grouped_cost(len(pairs), distinct, largest) < windowed_cost(len(pairs), bits):
        return grouped_multiexp(pairs, nsquare)
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
