"""A party's bulk Paillier work as Ray tasks, on a Ray cluster of the party's own machines.

The same chunk functions as the local pool (fedscore.crypto.pool) run as Ray
tasks over row ranges, so results are the local engine's: encryption,
obfuscators, Xᵀ[[d]] and PSI blinding. Each Ray worker process keeps its own
fixed-base obfuscator table per key (pool._obfuscator's cache), built the
first time that worker sees the key; Ray reuses its workers, so a table is
built once per worker. A worker that dies mid-task (the OOM killer, a lost
machine) has its task retried by Ray (``max_retries``); the chunk functions
are pure, so a retried chunk is as good as the first try.

At most ``workers`` tasks are in flight at once (default: every CPU the
cluster has when the pool opens), so ``workers`` means what it does locally.
Each task gets only its own rows, integer matrices in their narrowest exact
type; Ray moves arguments above its inline limit through the object store,
and an argument every task of a call shares (the same object) is put there once.

Ray is imported here only: the factory (fedscore.crypto.engine) imports this
module only for ``engine = "ray"``, so the default install never needs Ray.
"""
from __future__ import annotations

import logging
import socket
from collections.abc import Callable

import numpy as np
import ray

from fedscore.crypto.obfuscation import DEFAULT_WINDOW_BITS
from fedscore.crypto.pool import CryptoPool
from fedscore.errors import ConfigError

log = logging.getLogger("fedscore.engine")
MAX_RETRIES = 3             # tries after a worker or node dies mid-task
SHARED_MIN_BYTES = 100_000  # shared arguments from this size go to the object store once (Ray inlines smaller ones)
CONNECT_SECONDS = 5.0       # a cluster that does not answer this fast is reported, not waited for


def reachable(address: str, seconds: float = CONNECT_SECONDS) -> None:
    """Raise ConfigError unless something accepts TCP at ``address`` (host:port): Ray itself would retry for
    minutes before giving up on a wrong address."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=seconds):
            pass
    except (OSError, ValueError) as error:
        raise ConfigError(f"engine = \"ray\": no Ray cluster answers at ray_address {address!r} ({error}); "
                          "start its head node (`ray start --head`) or correct the address") from None


def connect(address: str) -> bool:
    """Connect this process to the cluster at ``address`` ("auto": the one this machine is part of); False when
    it already was (the caller then leaves the connection open on close)."""
    if ray.is_initialized():
        return False
    if address != "auto":
        reachable(address)
    try:
        ray.init(address=address, namespace="fedscore", log_to_driver=False, logging_level=logging.WARNING,
                 configure_logging=False)
    except ConnectionError as error:
        raise ConfigError(f"engine = \"ray\": cannot join the Ray cluster at ray_address {address!r}: {error}") from None
    return True


class RayPool(CryptoPool):
    """CryptoPool's methods, each call's chunks run as Ray tasks (see the module's docstring)."""

    def __init__(self, address: str, workers: int | None = None, window_bits: int = DEFAULT_WINDOW_BITS,
                 max_retries: int = MAX_RETRIES):
        super().__init__(0, window_bits)   # no local processes: the cluster's workers do the work
        self.address = address
        self.max_retries = max_retries
        self._connected_here = connect(address)
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if cpus < 1:
            self.close()
            raise ConfigError(f"engine = \"ray\": the Ray cluster at {address!r} has no CPUs for tasks")
        self.workers = workers or cpus
        self._tasks: dict[Callable, object] = {}
        log.info("Paillier work on the Ray cluster at %s: %d nodes, %d CPUs, up to %d tasks at once", address,
                 sum(node["Alive"] for node in ray.nodes()), cpus, self.workers)

    def close(self) -> None:
        if self._connected_here and ray.is_initialized():
            ray.shutdown()
        self._connected_here = False

    def _task(self, fn: Callable):
        """``fn`` as a Ray remote function (made once per function)."""
        task = self._tasks.get(fn)
        if task is None:
            task = self._tasks[fn] = ray.remote(num_cpus=1, max_retries=self.max_retries, retry_exceptions=False)(fn)
        return task

    def _run(self, fn: Callable, argument_lists: list[tuple]) -> list:
        """``fn(*args)`` for each argument list as Ray tasks, at most ``workers`` at once; results in order."""
        if not argument_lists:
            return []
        task = self._task(fn)
        argument_lists = _shared_put_once([tuple(_narrowed(value) for value in args) for args in argument_lists])
        results: list = [None] * len(argument_lists)
        waiting = iter(enumerate(argument_lists))
        running: dict = {}

        def submit_next() -> None:
            for index, args in waiting:
                running[task.remote(*args)] = index
                return

        for _ in range(self.workers):
            submit_next()
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                results[running.pop(ref)] = ray.get(ref)
                submit_next()
        return results


def _narrowed(value):
    """An integer array in the smallest integer type that holds its values exactly, anything else as it is: the
    quantised features are 16-bit, so a quarter of the bytes of their int64 reach the workers. The chunk
    functions read them as Python integers, so the results do not change."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "iu" and value.size:
        low, high = int(value.min()), int(value.max())
        for smaller in (np.int8, np.int16, np.int32) if low < 0 else (np.uint8, np.uint16, np.uint32):
            if np.dtype(smaller).itemsize >= value.dtype.itemsize:
                break
            if np.iinfo(smaller).min <= low and high <= np.iinfo(smaller).max:
                return value.astype(smaller)
    return value


def _shared_put_once(argument_lists: list[tuple]) -> list[tuple]:
    """The argument lists with each large argument that every list holds (the same object) put in the object
    store once and passed by reference."""
    if len(argument_lists) < 2:
        return argument_lists
    first = argument_lists[0]
    shared = {}
    for position, value in enumerate(first):
        size = getattr(value, "nbytes", None) or (len(value) if isinstance(value, (bytes, bytearray)) else 0)
        if size >= SHARED_MIN_BYTES and all(args[position] is value for args in argument_lists):
            shared[position] = ray.put(value)
    if not shared:
        return argument_lists
    return [tuple(shared.get(i, value) for i, value in enumerate(args)) for args in argument_lists]
