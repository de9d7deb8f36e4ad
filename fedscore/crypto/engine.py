"""Which engine does a party's bulk Paillier work: its own process pool ("local") or a Ray cluster ("ray").

Both have CryptoPool's methods and give the same results; only where the work
runs differs. Ray is imported only when a party asks for it.
"""
from __future__ import annotations

import importlib.util

from fedscore.crypto.obfuscation import DEFAULT_WINDOW_BITS
from fedscore.crypto.pool import CryptoPool
from fedscore.errors import ConfigError

LOCAL = "local"
RAY = "ray"
ENGINES = (LOCAL, RAY)


def open_engine(engine: str = LOCAL, workers: int | None = None, ray_address: str = "",
                window_bits: int = DEFAULT_WINDOW_BITS) -> CryptoPool:
    """The pool a party works with. ``workers``: processes (local) or tasks at once (ray); None: every core
    of this machine, or every CPU of the Ray cluster. ``ray_address``: host:port of the cluster's head, or "auto"."""
    if engine == LOCAL:
        return CryptoPool(workers, window_bits)
    if engine == RAY:
        if importlib.util.find_spec("ray") is None:
            raise ConfigError('engine = "ray" needs Ray installed beside fedscore: pip install fedscore[ray]')
        if not ray_address:
            raise ConfigError('engine = "ray" needs ray_address: the head node\'s host:port, or "auto"')
        from fedscore.crypto.ray_pool import RayPool

        return RayPool(ray_address, workers, window_bits)
    raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
