"""Process pools whose workers end when the process that made the pool ends, however it ends (SIGKILL too).

A standard pool worker waits for tasks on a pipe it holds both ends of, so a worker whose parent was
killed waits for ever; each worker also holds the forkserver's "alive" pipe and the resource tracker's
pipe, so those two stay as long as any worker does. Here every worker also gets the read end of a pipe
whose write end only the pool's maker holds (its lifeline): a thread in the worker reads it and the read
returns, at end of file, the moment the maker is gone; the worker then exits at once. With the workers
gone, the forkserver and the resource tracker see their own pipes close and exit as the standard library
has them do. Nothing here is Linux-only, and no one must poll: the kernel closes the pipe.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.connection import Connection

ORPHANED_EXIT_CODE = 70   # a worker whose maker is gone

_lifeline: tuple[int, Connection, Connection] | None = None   # (maker's pid, read end, write end)
_lifeline_lock = threading.Lock()


def _read_end() -> Connection:
    """This process's lifeline, made once per process (a forked child makes its own)."""
    global _lifeline
    with _lifeline_lock:
        if _lifeline is None or _lifeline[0] != os.getpid():
            reader, writer = multiprocessing.Pipe(duplex=False)
            _lifeline = (os.getpid(), reader, writer)
        return _lifeline[1]


def _exit_when_closed(reader: Connection) -> None:
    try:
        reader.recv_bytes()   # nothing is ever sent: this returns only at end of file
    except (EOFError, OSError):
        pass
    os._exit(ORPHANED_EXIT_CODE)


def watch_lifeline(reader: Connection) -> None:
    """Worker initializer: exit as soon as the pool's maker is gone."""
    global _lifeline
    if _lifeline is not None and _lifeline[0] != os.getpid():
        _lifeline[2].close()   # forked: the maker's write end came along and would keep the pipe open
        _lifeline = None
    threading.Thread(target=_exit_when_closed, args=(reader,), name="lifeline", daemon=True).start()


def process_pool(max_workers: int, start_method: str | None = None) -> ProcessPoolExecutor:
    """A ProcessPoolExecutor (``start_method``: 'forkserver', 'fork', ...; None: the platform's default)
    whose workers exit when this process does."""
    return ProcessPoolExecutor(
        max_workers=max_workers, mp_context=multiprocessing.get_context(start_method),
        initializer=watch_lifeline, initargs=(_read_end(),),
    )
