"""A party's reserve of obfuscators (random n-th residues), each handed out exactly once.

Making an obfuscator is most of an encryption's cost and does not depend on
the data, so a party makes them ahead: before training (`precompute_epochs`)
and, with `refill_obfuscators`, in the background whenever the reserve runs
below its target — which happens while the party waits for its peers, since
the refill runs only while the party's worker pool has no protocol work in
flight, in small chunks, so a foreground request waits at most for one.
"""
from __future__ import annotations

import logging
import threading

from gmpy2 import mpz

from fedscore.crypto.paillier import PublicKey
from fedscore.crypto.pool import CryptoPool

log = logging.getLogger("fedscore.reserve")
CHUNK = 32          # per worker: a foreground request waits for at most this many (~20 ms at 2048 bits)


class ObfuscatorReserve:
    def __init__(self, pool: CryptoPool, public_key: PublicKey, variant: str):
        self.pool = pool
        self.public_key = public_key
        self.variant = variant
        self._stock: list[mpz] = []
        self._lock = threading.Lock()
        self._low = threading.Event()
        self._stop = threading.Event()
        self._target = 0
        self._thread: threading.Thread | None = None
        self.made_in_background = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._stock)

    def add(self, obfuscators: list[mpz]) -> None:
        with self._lock:
            self._stock.extend(obfuscators)

    def take(self, count: int) -> list[mpz]:
        """Up to ``count`` obfuscators, removed from the reserve (never handed out twice)."""
        with self._lock:
            cut = max(0, len(self._stock) - count)
            taken, self._stock = self._stock[cut:], self._stock[:cut]
            if len(self._stock) < self._target:
                self._low.set()
        return taken

    def make(self, count: int) -> None:
        """Fill ``count`` more now, in the foreground (before training)."""
        self.add(self.pool.obfuscators(self.public_key, count, self.variant))

    def refill_in_background(self, target: int) -> None:
        """Keep about ``target`` obfuscators in reserve from now on, until stopped."""
        self._target = target
        self._low.set()
        if self._thread is None:
            self._thread = threading.Thread(target=self._refill, name="obfuscator-refill", daemon=True)
            self._thread.start()

    def _refill(self) -> None:
        while not self._stop.is_set():
            self._low.wait(timeout=1.0)
            if self._stop.is_set():
                return
            missing = self._target - len(self)
            if missing <= 0:
                self._low.clear()
                continue
            if not self.pool.idle:
                self._stop.wait(0.005)
                continue
            try:
                chunk = CHUNK * max(1, self.pool.workers)
                made = self.pool.obfuscators(self.public_key, min(chunk, missing), self.variant, background=True)
            except Exception as error:  # the pool is closing, or broke: training goes on with inline obfuscators
                log.warning("background obfuscators stopped: %s", error)
                return
            self.add(made)
            self.made_in_background += len(made)

    def stop(self) -> None:
        self._stop.set()
        self._low.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
