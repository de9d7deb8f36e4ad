"""Call several parties at once and name the one that failed."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import TypeVar

from fedscore.errors import FedscoreError, InternalError

Handle = TypeVar("Handle")
Result = TypeVar("Result")


def call_each(
    handles: Mapping[str, Handle], action: Callable[[str, Handle], Result], role: str = "party"
) -> dict[str, Result]:
    """``action(name, handle)`` for every handle in parallel; results by name, in order.

    fedscore's own errors already name their party and pass through; anything
    else (a bug) is wrapped in an InternalError naming the ``role`` and the party.
    """
    if not handles:
        return {}
    executor = ThreadPoolExecutor(max_workers=len(handles))
    try:
        futures = {executor.submit(action, name, handle): name for name, handle in handles.items()}
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in done:  # the first failure, without waiting for slower peers
            error = future.exception()
            if error is None:
                continue
            if isinstance(error, FedscoreError):
                raise error
            raise InternalError(f"{role} {futures[future]!r}: {type(error).__name__}: {error}") from error
        return {futures[f]: f.result() for f in futures}
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
