"""Bulk Paillier work spread over worker processes.

Encryption and encrypted inner products are pure CPU on big integers, and
gmpy2 holds the GIL, so every daemon runs them in a small process pool
(``workers`` processes, default: every core). Vectors cross to the workers
as packed big-endian bytes. Each worker builds its own obfuscator table the
first time it sees a key, so each worker's randomness base is its own.

With ``workers=0`` the same functions run in the calling process: tests and
the in-process simulation use that. Workers (PSI's too) end with the
process that made the pool, however it dies (see ``fedscore.lifeline``).
"""
from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
from gmpy2 import mpz

from fedscore.crypto import paillier, psi
from fedscore.crypto.multiexp import combine_signed, weighted_sum_parts
from fedscore.crypto.obfuscation import DEFAULT_WINDOW_BITS, SHORT_EXPONENT, STANDARD, Obfuscator, standard_obfuscator
from fedscore.crypto.paillier import PublicKey
from fedscore.errors import ProtocolError
from fedscore.lifeline import process_pool

_OBFUSCATORS: dict[int, dict[int, Obfuscator]] = {}
_OBFUSCATORS_LOCK = threading.Lock()
_KEYS_KEPT = 4


def _obfuscator(public_key: PublicKey, window_bits: int) -> Obfuscator:
    """This process's obfuscator for a key (by table width), built once per key."""
    n = int(public_key.n)
    with _OBFUSCATORS_LOCK:
        by_width = _OBFUSCATORS.get(n)
        if by_width is None:
            while len(_OBFUSCATORS) >= _KEYS_KEPT:  # drop the oldest job's key
                _OBFUSCATORS.pop(next(iter(_OBFUSCATORS)))
            by_width = _OBFUSCATORS[n] = {}
        if window_bits not in by_width:
            by_width[window_bits] = Obfuscator(public_key, window_bits)
        return by_width[window_bits]


def pack(values: Sequence[int], width: int) -> bytes:
    """Fixed-width big-endian bytes, back to back."""
    return b"".join(mpz(v).to_bytes(width, "big") for v in values)


def unpack(data: bytes, width: int) -> list[mpz]:
    if width <= 0 or len(data) % width:
        raise ValueError(f"{len(data)} bytes is not a whole number of {width}-byte integers")
    return [mpz.from_bytes(data[i : i + width], "big") for i in range(0, len(data), width)]


def _draw(public_key: PublicKey, window_bits: int, variant: str):
    """A function drawing fresh obfuscators of the job's variant, in this process."""
    if variant == STANDARD:
        return lambda: standard_obfuscator(public_key)
    return _obfuscator(public_key, window_bits).draw


def _encrypt_chunk(n_bytes: bytes, plaintexts: list[int], window_bits: int, variant: str = SHORT_EXPONENT) -> bytes:
    public_key = PublicKey.from_bytes(n_bytes)
    draw = _draw(public_key, window_bits, variant)
    width = public_key.ciphertext_bytes
    return pack([paillier.encrypt(public_key, m, draw()) for m in plaintexts], width)


def _obfuscator_chunk(n_bytes: bytes, count: int, window_bits: int, variant: str) -> bytes:
    public_key = PublicKey.from_bytes(n_bytes)
    draw = _draw(public_key, window_bits, variant)
    return pack([draw() for _ in range(count)], public_key.ciphertext_bytes)


def _weighted_sum_chunk(n_bytes: bytes, ciphertexts: bytes, matrix: np.ndarray) -> bytes:
    public_key = PublicKey.from_bytes(n_bytes)
    width = public_key.ciphertext_bytes
    parts = weighted_sum_parts(unpack(ciphertexts, width), matrix, public_key.nsquare)
    return pack([value for pair in parts for value in pair], width)


def _column_sum_chunk(n_bytes: bytes, ciphertexts: bytes, columns: np.ndarray, total: int) -> bytes:
    public_key = PublicKey.from_bytes(n_bytes)
    width, nsquare = public_key.ciphertext_bytes, public_key.nsquare
    sums = [mpz(1)] * total
    for value, row in zip(unpack(ciphertexts, width), columns.tolist()):
        for column in row:
            sums[column] = sums[column] * value % nsquare
    return pack(sums, width)


def _split(count: int, pieces: int) -> list[tuple[int, int]]:
    pieces = max(1, min(pieces, count))
    bounds = np.linspace(0, count, pieces + 1).astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


class CryptoPool:
    """Parallel encryption and encrypted inner products for one process."""

    def __init__(self, workers: int | None = None, window_bits: int = DEFAULT_WINDOW_BITS):
        if workers is None:
            workers = os.cpu_count() or 1
        self.workers = workers
        self.window_bits = window_bits
        self._executor: ProcessPoolExecutor | None = self._new_executor() if workers > 0 else None
        self._foreground = 0                      # protocol work in flight; background work yields to it
        self._foreground_lock = threading.Lock()

    @property
    def idle(self) -> bool:
        """No protocol work in flight: the time background work (an obfuscator refill) may use."""
        return self._foreground == 0

    def _new_executor(self) -> ProcessPoolExecutor:
        # forkserver: workers never inherit a live gRPC server's threads.
        return process_pool(self.workers, "forkserver")

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> "CryptoPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _map(self, fn, argument_lists: list[tuple], background: bool = False) -> list:
        if background:
            return self._run(fn, argument_lists)
        with self._foreground_lock:
            self._foreground += 1
        try:
            return self._run(fn, argument_lists)
        finally:
            with self._foreground_lock:
                self._foreground -= 1

    def _run(self, fn, argument_lists: list[tuple]) -> list:
        if self._executor is None:
            return [fn(*args) for args in argument_lists]
        try:
            return [f.result() for f in [self._executor.submit(fn, *args) for args in argument_lists]]
        except BrokenProcessPool:
            # A worker died (the OOM killer, a signal): start fresh workers and try once more.
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new_executor()
            return [f.result() for f in [self._executor.submit(fn, *args) for args in argument_lists]]

    def encrypt(self, public_key: PublicKey, plaintexts: Sequence[int], variant: str = SHORT_EXPONENT) -> list[mpz]:
        """[[m_i]] for signed integers m_i, each with a fresh obfuscator of the given variant."""
        if not len(plaintexts):
            return []
        n_bytes = public_key.to_bytes()
        values = [int(m) for m in plaintexts]
        spans = _split(len(values), 4 * max(1, self.workers))
        packed = self._map(
            _encrypt_chunk, [(n_bytes, values[a:b], self.window_bits, variant) for a, b in spans]
        )
        width = public_key.ciphertext_bytes
        return [c for block in packed for c in unpack(block, width)]

    def warm(self, public_key: PublicKey, variant: str = SHORT_EXPONENT) -> None:
        """Build every worker's table for this key now (a per-key set-up cost, ~2 s a worker at 2048 bits)."""
        if variant == SHORT_EXPONENT:
            self.obfuscators(public_key, 8 * max(1, self.workers), variant)

    def obfuscators(
        self, public_key: PublicKey, count: int, variant: str = SHORT_EXPONENT, background: bool = False
    ) -> list[mpz]:
        """``count`` fresh obfuscators made on the workers, to be used once each (``background``: as a refill)."""
        if count <= 0:
            return []
        spans = _split(count, (1 if background else 4) * max(1, self.workers))
        n_bytes = public_key.to_bytes()
        packed = self._map(
            _obfuscator_chunk, [(n_bytes, b - a, self.window_bits, variant) for a, b in spans], background
        )
        return [r for block in packed for r in unpack(block, public_key.ciphertext_bytes)]

    def weighted_sums(
        self, public_key: PublicKey, ciphertexts: Sequence[mpz], matrix: np.ndarray
    ) -> list[mpz]:
        """[[Σ_i X_ij·d_i]] for every column j, from [[d_i]] and an integer matrix X."""
        rows, columns = matrix.shape
        if rows != len(ciphertexts):
            raise ValueError(f"{rows} matrix rows for {len(ciphertexts)} ciphertexts")
        width, nsquare = public_key.ciphertext_bytes, public_key.nsquare
        if columns == 0:
            return []
        if rows == 0:
            return [mpz(1)] * columns
        n_bytes = public_key.to_bytes()
        spans = _split(rows, 2 * max(1, self.workers))
        packed = self._map(
            _weighted_sum_chunk,
            [(n_bytes, pack(ciphertexts[a:b], width), matrix[a:b]) for a, b in spans],
        )
        positive = [mpz(1)] * columns
        negative = [mpz(1)] * columns
        for block in packed:
            values = unpack(block, width)
            for j in range(columns):
                positive[j] = positive[j] * values[2 * j] % nsquare
                negative[j] = negative[j] * values[2 * j + 1] % nsquare
        return [combine_signed(p, q, nsquare) for p, q in zip(positive, negative)]

    def column_sums(self, public_key: PublicKey, ciphertexts: Sequence[mpz], columns: np.ndarray, total: int) -> list[mpz]:
        """[[Σ_{i: row i has column j} d_i]] for j < ``total``, from [[d_i]] and, per row, the columns
        that are 1 in a 0/1 matrix (``columns``: rows × ones-per-row indices). With binned attributes a
        party's gradient is exactly this: a product of ciphertexts per bin, no exponentiation."""
        rows = len(ciphertexts)
        if columns.shape[0] != rows:
            raise ValueError(f"{columns.shape[0]} column rows for {rows} ciphertexts")
        if rows == 0 or total == 0:
            return [mpz(1)] * total
        width, nsquare = public_key.ciphertext_bytes, public_key.nsquare
        n_bytes = public_key.to_bytes()
        spans = _split(rows, 2 * max(1, self.workers))
        packed = self._map(
            _column_sum_chunk, [(n_bytes, pack(ciphertexts[a:b], width), columns[a:b], total) for a, b in spans]
        )
        sums = [mpz(1)] * total
        for block in packed:
            for j, value in enumerate(unpack(block, width)):
                sums[j] = sums[j] * value % nsquare
        return sums

    def hash_and_blind(self, secret: bytes, domain: bytes, identifiers: Sequence[str]) -> bytes:
        """PSI: X25519(k, H(id)) for every id, packed, in the order given."""
        spans = _split(len(identifiers), 4 * max(1, self.workers))
        ids = list(identifiers)
        return b"".join(self._map(psi.hash_and_blind_all, [(secret, domain, ids[a:b]) for a, b in spans]))

    def blind(self, secret: bytes, points: bytes) -> bytes:
        """PSI: X25519(k, P) for every packed point, in the order given."""
        if len(points) % psi.POINT_BYTES:
            raise ProtocolError(f"{len(points)} bytes is not a whole number of {psi.POINT_BYTES}-byte points")
        count = len(points) // psi.POINT_BYTES
        spans = _split(count, 4 * max(1, self.workers))
        width = psi.POINT_BYTES
        return b"".join(self._map(psi.blind_all, [(secret, points[a * width : b * width]) for a, b in spans]))

    def obfuscator(self, public_key: PublicKey) -> Obfuscator:
        """An in-process obfuscator without a table, for the few ciphertexts made outside the pool."""
        return _obfuscator(public_key, 0)
