"""Paillier arithmetic on integers, DJN obfuscators and the bucket multi-exponentiation."""
from __future__ import annotations

import random
import secrets

import gmpy2
import numpy as np
import pytest
from gmpy2 import mpz

from fedscore.crypto import paillier
from fedscore.crypto.multiexp import signed_multiexp_parts, unsigned_multiexp
from fedscore.crypto.obfuscation import Obfuscator, exponent_bits
from fedscore.crypto.pool import CryptoPool, pack, unpack


def test_signed_round_trip_and_homomorphism(keypair, inline_pool):
    public, private = keypair
    values = [0, 1, -1, 2**60, -(2**200), 123456789]
    encrypted = inline_pool.encrypt(public, values)
    assert [private.decrypt_signed(c) for c in encrypted] == values
    total = paillier.add_all(public, encrypted)
    assert private.decrypt_signed(total) == sum(values)
    assert private.decrypt_signed(paillier.add_plain(public, encrypted[1], -5)) == -4
    assert private.decrypt_signed(paillier.negate(public, encrypted[5])) == -123456789


def test_named_operations_match_python_paillier(keypair, inline_pool):
    """Each operation gives the very ciphertext python-paillier's arithmetic gives, and decrypts as plain maths."""
    from phe import paillier as phe

    public, private = keypair
    phe_public = phe.PaillierPublicKey(int(public.n))
    xs, ys = [7, -3, 2**100, 0], [-9, 11, -(2**90), 5]
    ex, ey = inline_pool.encrypt(public, xs), inline_pool.encrypt(public, ys)

    def theirs(c: mpz) -> phe.EncryptedNumber:
        return phe.EncryptedNumber(phe_public, int(c), 0)

    def same(ours: mpz, other: phe.EncryptedNumber) -> bool:
        return ours == other.ciphertext(be_secure=False)

    for a, b, x, y in zip(ex, ey, xs, ys):
        assert same(paillier.add(public, a, b), theirs(a) + theirs(b))
        assert same(paillier.add_plain(public, a, y), theirs(a) + y)
        assert same(paillier.negate(public, a), theirs(a) * -1)
        assert private.decrypt_signed(paillier.add(public, a, paillier.negate(public, b))) == x - y
    assert [private.decrypt_signed(c) for c in paillier.add_plains(public, ex, ys)] == [x + y for x, y in zip(xs, ys)]
    assert paillier.add_plains(public, ex, ys) == [paillier.add_plain(public, a, y) for a, y in zip(ex, ys)]
    assert same(paillier.add_all(public, ex), sum(map(theirs, ex[1:]), theirs(ex[0])))
    assert private.decrypt_signed(paillier.add_all(public, [])) == 0
    summed = paillier.add_elementwise(public, [ex, ey, ex])
    assert [private.decrypt_signed(c) for c in summed] == [2 * x + y for x, y in zip(xs, ys)]
    assert paillier.add_elementwise(public, [ex]) == ex


def test_rerandomise_keeps_the_plaintext_and_changes_the_ciphertext(keypair):
    from phe import paillier as phe

    public, private = keypair
    phe_public = phe.PaillierPublicKey(int(public.n))
    values = [42, -42, 0]
    rs = [secrets.randbelow(int(public.n) - 2) + 2 for _ in values]
    obfuscators = [gmpy2.powmod(r, public.n, public.nsquare) for r in rs]
    encrypted = [paillier.encrypt(public, v, mpz(1)) for v in values]   # no randomness yet
    fresh = paillier.rerandomise_each(public, encrypted, obfuscators)
    # the same as python-paillier encrypting each value with that r
    assert fresh == [phe_public.raw_encrypt(v % int(public.n), r) for v, r in zip(values, rs)]
    assert all(f != c for f, c in zip(fresh, encrypted))
    assert [private.decrypt_signed(c) for c in fresh] == values
    assert paillier.rerandomise(public, encrypted[1], obfuscators[1]) == fresh[1]


def test_python_paillier_decrypts_our_ciphertexts(keypair, inline_pool):
    """Our integer ciphertexts are standard Paillier (g = n + 1): phe reads them."""
    from phe import paillier as phe

    public, private = keypair
    c = inline_pool.encrypt(public, [4242])[0]
    phe_public = phe.PaillierPublicKey(int(public.n))
    assert private._key.decrypt(phe.EncryptedNumber(phe_public, int(c), 0)) == 4242


def test_table_obfuscator_equals_plain_power(keypair):
    public, _ = keypair
    obfuscator = Obfuscator(public, window_bits=5)
    for _ in range(20):
        exponent = secrets.randbits(exponent_bits(public))
        assert obfuscator.power(exponent) == gmpy2.powmod(obfuscator.base, exponent, public.nsquare)


def test_obfuscators_are_fresh_n_th_residues(keypair):
    public, private = keypair
    obfuscator = Obfuscator(public, window_bits=6)
    drawn = [obfuscator.draw() for _ in range(200)]
    assert len(set(drawn)) == len(drawn)
    # an n-th residue decrypts to 0, and none is the trivial 1 (= no randomness)
    assert all(private.decrypt(r) == 0 for r in drawn[:20])
    assert all(r % public.n != 1 for r in drawn)


@pytest.mark.parametrize("rows", [1, 7, 300])
def test_multiexp_matches_naive_powers(keypair, rows):
    public, _ = keypair
    nsquare = public.nsquare
    rng = random.Random(rows)
    ciphertexts = [mpz(rng.randrange(1, int(nsquare))) for _ in range(rows)]
    exponents = [rng.choice([0, 1, -1, 32767, -32767, rng.randrange(-40000, 40000)]) for _ in range(rows)]
    positive, negative = signed_multiexp_parts(ciphertexts, exponents, nsquare)
    expected_pos = expected_neg = mpz(1)
    for c, e in zip(ciphertexts, exponents):
        if e > 0:
            expected_pos = expected_pos * gmpy2.powmod(c, e, nsquare) % nsquare
        elif e < 0:
            expected_neg = expected_neg * gmpy2.powmod(c, -e, nsquare) % nsquare
    assert (positive, negative) == (expected_pos, expected_neg)
    assert unsigned_multiexp(ciphertexts, [0] * rows, nsquare) == 1


@pytest.mark.parametrize("values", [[3], [1, 2], [5, 9, 700, 32767], list(range(1, 40000, 97))])
def test_grouped_and_windowed_multiexp_agree_with_naive_powers(keypair, values):
    from fedscore.crypto.multiexp import grouped_cost, grouped_multiexp, windowed_cost

    nsquare = keypair[0].nsquare
    rng = random.Random(len(values))
    pairs = [(mpz(rng.randrange(1, int(nsquare))), rng.choice(values)) for _ in range(1500)]
    expected = mpz(1)
    for c, e in pairs:
        expected = expected * gmpy2.powmod(c, e, nsquare) % nsquare
    assert grouped_multiexp(pairs, nsquare) == expected
    assert unsigned_multiexp([c for c, _ in pairs], [e for _, e in pairs], nsquare) == expected
    few = len(values) < 10   # a categorical column: grouping is the cheaper path, and the one taken
    distinct = len({e for _, e in pairs})
    assert (grouped_cost(1500, distinct, max(values)) < windowed_cost(1500, max(values).bit_length())) == few


def test_weighted_sums_decrypt_to_integer_products(keypair, inline_pool):
    public, private = keypair
    rng = np.random.default_rng(0)
    residual = rng.integers(-(10**12), 10**12, 250).tolist()
    matrix = rng.integers(-32767, 32768, (250, 5))
    matrix[:, 3] = 0
    encrypted = inline_pool.encrypt(public, residual)
    sums = inline_pool.weighted_sums(public, encrypted, matrix)
    expected = [sum(int(x) * d for x, d in zip(matrix[:, j], residual)) for j in range(5)]
    assert [private.decrypt_signed(c) for c in sums] == expected


def test_process_pool_agrees_with_inline(keypair):
    public, private = keypair
    rng = np.random.default_rng(1)
    values = rng.integers(-(2**40), 2**40, 400).tolist()
    matrix = rng.integers(-32767, 32768, (400, 3))
    with CryptoPool(2, window_bits=6) as pool:
        encrypted = pool.encrypt(public, values)
        sums = pool.weighted_sums(public, encrypted, matrix)
    assert [private.decrypt_signed(c) for c in encrypted] == values
    assert [private.decrypt_signed(c) for c in sums] == [int(matrix[:, j] @ np.array(values, dtype=object)) for j in range(3)]


def test_pack_round_trip_and_bad_width():
    values = [mpz(0), mpz(1), mpz(2**100 + 7)]
    assert unpack(pack(values, 16), 16) == values
    with pytest.raises(ValueError):
        unpack(b"\x00" * 17, 16)
