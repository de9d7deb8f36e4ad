"""Paillier primitives at 2048 bits, ours against plain python-paillier, on one core.

    python bench/paillier.py [--bits 2048] [--rows 10000] [--repeat 3] [--smoke]

Prints per-operation rates and the ratio of ours to phe measured in the same
run (medians over --repeat runs). Last line: the figures for scripts, each
beside phe's (see figures.py).
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

from phe import paillier as phe

from fedscore.crypto.multiexp import combine_signed, signed_multiexp_parts
from fedscore.crypto.obfuscation import Obfuscator
from fedscore.crypto.paillier import PrivateKey, PublicKey, encrypt
from gmpy2 import mpz

from common import parse_with_smoke
from figures import Figure, print_figures


def timed(fn, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, default=2048)
    parser.add_argument("--rows", type=int, default=10000, help="length of the encrypted inner product")
    parser.add_argument("--sample", type=int, default=200, help="phe calls timed per figure")
    parser.add_argument("--repeat", type=int, default=3)
    args = parse_with_smoke(parser, "512-bit keys, small samples, once: seconds",
                            bits=512, rows=200, sample=20, repeat=1)

    phe_public, phe_private = phe.generate_paillier_keypair(n_length=args.bits)
    public = PublicKey(mpz(phe_public.n))
    private = PrivateKey(public, phe_private)
    rng = random.Random(0)

    start = time.perf_counter()
    obfuscator = Obfuscator(public)
    table_seconds = time.perf_counter() - start

    k = args.sample
    phe_encrypt = k / timed(lambda: [phe_public.encrypt(rng.randrange(2**40)) for _ in range(k)], args.repeat)
    ours_encrypt = 10 * k / timed(lambda: [encrypt(public, rng.randrange(2**40), obfuscator.draw()) for _ in range(10 * k)], args.repeat)

    ciphertexts = [encrypt(public, rng.randrange(-(2**40), 2**40), obfuscator.draw()) for _ in range(args.rows)]
    exponents = [rng.randrange(-32767, 32768) for _ in range(args.rows)]
    phe_numbers = [phe.EncryptedNumber(phe_public, int(c), 0) for c in ciphertexts[:k]]

    def phe_inner():
        total = phe_numbers[0] * exponents[0]
        for number, x in zip(phe_numbers[1:], exponents[1:k]):
            total = total + number * x
        return total

    phe_inner_rows = k / timed(phe_inner, args.repeat)
    nsquare = public.nsquare
    ours_inner_rows = args.rows / timed(lambda: combine_signed(*signed_multiexp_parts(ciphertexts, exponents, nsquare), nsquare), args.repeat)

    phe_decrypt = k / timed(lambda: [phe_private.decrypt(n) for n in phe_numbers], args.repeat)
    ours_decrypt = k / timed(lambda: [private.decrypt(c) for c in ciphertexts[:k]], args.repeat)

    print(f"key {args.bits} bits; one core; medians of {args.repeat} runs")
    print(f"obfuscator table (window 12): built in {table_seconds:.2f} s")
    print_figures([
        Figure("paillier_encrypt_per_second", ours_encrypt, phe_encrypt, "python-paillier"),
        Figure("paillier_inner_rows_per_second", ours_inner_rows, phe_inner_rows, "python-paillier"),
        Figure("paillier_decrypt_per_second", ours_decrypt, phe_decrypt, "python-paillier"),
    ])


if __name__ == "__main__":
    main()
