"""Scoring records kept on disk, one JSON line each, written before a request is answered.

The card center journals each request's chain entry and a partner each
answer it gave, until a block on the chain holds them; every party journals
each use of a consent for as long as the consent can be valid
(fedscore.protocol.scoring.consent). A daemon that crashes mid-write leaves
at most its last line cut short: `fedscore.files.read_json_lines`, the one reader of these
files, skips a line it cannot read, with a warning, rather than refusing the
whole file.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fedscore.errors import ProtocolError
from fedscore.files import cut_torn_tail, read_json_lines, temporary_copy

log = logging.getLogger("fedscore.scoring")


ANSWER_TRANSIT_MS = 100   # at most this much of the card center's wait is kept for answers to travel back


def now_ms() -> int:
    """The clock scoring records are stamped with: unix milliseconds."""
    return time.time_ns() // 1_000_000


def answer_deadline_ms(timeout: float) -> int:
    """The deadline a partner is given when the card center waits ``timeout`` seconds: the end of the wait, less
    the time an answer needs to reach it (a fifth of the wait, at most ANSWER_TRANSIT_MS). A partner bills every
    answer it journalled by then, so an answer given in time must also arrive in time."""
    wait_ms = int(timeout * 1000)
    return now_ms() + wait_ms - min(ANSWER_TRANSIT_MS, wait_ms // 5)


def json_line(record: dict) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"


def _records(data: bytes, name: str) -> list[dict]:
    """The records of whole JSON lines, as `read_json_lines` reads a file: one that is not a JSON object is
    skipped with a warning."""
    records = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        elif line.strip():
            log.warning("%s: a line is not readable; skipped", name)
    return records


class Journal:
    """Records a daemon must not lose, one JSON line each, written before the request is answered.

    Each line is flushed to the operating system before the answer goes out,
    so it survives the daemon crashing (not the machine losing power). A line
    cut short by a crash is cut off when the journal is opened again, so the
    next record starts on a line of its own.
    """

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self._rewriting = threading.Lock()   # one rewrite at a time
        cut_torn_tail(path)
        self._handle = path.open("a", encoding="utf-8")

    def load(self) -> list[dict]:
        return read_json_lines(self.path)

    def append(self, record: dict, before: Callable[[], None] | None = None) -> None:
        """Write one record; ``before`` runs under the journal's lock first (so a pruning never misses it)."""
        line = json_line(record)
        with self.lock:
            if self._handle.closed:
                raise ProtocolError(f"{self.path.name}: the model is closing; request not recorded")
            if before is not None:
                before()
            self._handle.write(line)
            self._handle.flush()

    def append_many(self, records: list[dict], before: Callable[[], None] | None = None) -> None:
        """`append` for several records (a batch's), written and flushed at once."""
        lines = "".join(json_line(record) for record in records)
        with self.lock:
            if self._handle.closed:
                raise ProtocolError(f"{self.path.name}: the model is closing; requests not recorded")
            if before is not None:
                before()
            self._handle.write(lines)
            self._handle.flush()

    def keep_only(self, keep: Callable[[dict], bool]) -> list[dict]:
        """Rewrite the journal with only the records ``keep`` accepts (those not on the chain yet); returns them.

        The rewrite is flushed to disk, which takes milliseconds: it is done without the lock, so requests
        are not kept waiting for the disk. Records journalled meanwhile are kept, whatever ``keep`` says:
        they are copied to the new file, under the lock, just before it replaces the old one."""
        with self._rewriting:
            with self.lock:
                if not self._handle.closed:
                    self._handle.flush()
                end = self.path.stat().st_size
            with self.path.open("rb") as source:
                kept = [record for record in _records(source.read(end), self.path.name) if keep(record)]
            temporary = self._temporary("".join(json_line(r) for r in kept).encode("utf-8"))
            try:
                with self.lock:
                    if not self._handle.closed:
                        self._handle.flush()
                    with self.path.open("rb") as source:
                        source.seek(end)
                        meanwhile = source.read()
                    if meanwhile:
                        with open(temporary, "ab") as out:
                            out.write(meanwhile)
                    os.replace(temporary, self.path)
                    if not self._handle.closed:
                        self._handle.close()
                        self._handle = self.path.open("a", encoding="utf-8")
            except BaseException:   # the journal stays as it was, and open for the next request
                Path(temporary).unlink(missing_ok=True)
                raise
        return kept + _records(meanwhile, self.path.name)

    def _temporary(self, data: bytes) -> str:
        """``data`` in a new owner-only file beside the journal, on disk; returns its name."""
        return temporary_copy(self.path, data)

    def close(self) -> None:
        with self.lock:
            self._handle.close()
