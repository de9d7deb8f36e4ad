"""Intersecting two lists of doubly-blinded ids on disk, in memory that does not grow with either list.

The card center's list and a partner's list of doubly-blinded values arrive
in chunks. Each value is kept with its side and its position in its side's
list; every ``run_rows`` records are sorted (numpy) and written as one
sorted run to a temporary folder. A k-way merge of the runs, reading a
bounded buffer from each, then yields every record in value order: two
equal neighbours from different sides are one shared id, two from the same
side (or three in a row) a repeated value. More runs than ``FAN_IN`` are
first merged into longer runs, so the buffers stay bounded whatever the
lists' lengths.

Memory: one run being filled and sorted (about 2.5 × 41 bytes a record) plus
the merge's buffers (at most about ``run_rows`` records in all, FAN_IN runs read at once). Disk: 41
bytes a record, twice that while a merge pass writes longer runs.
"""
from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from fedscore.crypto.psi import POINT_BYTES
from fedscore.errors import ProtocolError

MINE, THEIRS = 0, 1          # the card center's list, the partner's list
RECORD = np.dtype([("value", f"S{POINT_BYTES}"), ("side", "u1"), ("position", "<i8")])
DEFAULT_RUN_ROWS = 1_000_000   # 41 MB a run: a sort of this size takes well under a second
FAN_IN = 64                    # runs merged at once; more are merged in passes
MIN_BUFFER_ROWS = 16           # a run's read buffer never shrinks below this
REPEATED = "a blinded id repeats: the partner's answer is not a set of distinct ids"


class SpillFolder:
    """A private temporary folder under ``parent`` (the system's temporary folder if None), removed on exit,
    also after an error."""

    def __init__(self, parent: Path | None = None):
        self.parent = parent

    def __enter__(self) -> Path:
        if self.parent is not None:
            self.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix="psi-spill-", dir=self.parent))
        return self.path

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class RunWriter:
    """Collects one side's values with their positions, writing a sorted run every ``run_rows`` records."""

    def __init__(self, folder: Path, side: int, run_rows: int):
        if run_rows < 1:
            raise ValueError(f"run_rows must be at least 1, got {run_rows}")
        self.folder, self.side, self.run_rows = folder, side, run_rows
        self.runs: list[Path] = []
        self.count = 0                       # values added so far: the next one's position
        self._buffer = np.empty(0, dtype=RECORD)
        self._filled = 0

    def add(self, packed: bytes) -> None:
        """The next values of this side's list, packed back to back."""
        if len(packed) % POINT_BYTES:
            raise ProtocolError(f"{len(packed)} bytes is not a whole number of {POINT_BYTES}-byte points")
        values = np.frombuffer(packed, dtype=f"S{POINT_BYTES}")
        taken = 0
        while taken < len(values):
            room = min(self.run_rows - self._filled, len(values) - taken)
            self._grow(self._filled + room)
            block = self._buffer[self._filled : self._filled + room]
            block["value"] = values[taken : taken + room]
            block["position"] = np.arange(self.count, self.count + room)
            self._filled += room
            self.count += room
            taken += room
            if self._filled == self.run_rows:
                self._write()

    def _grow(self, rows: int) -> None:
        """Room for ``rows`` records: the buffer doubles up to a run, so a short list takes little memory."""
        if len(self._buffer) >= rows:
            return
        grown = np.empty(min(self.run_rows, max(rows, 2 * len(self._buffer))), dtype=RECORD)
        grown[: self._filled] = self._buffer[: self._filled]
        grown["side"] = self.side
        self._buffer = grown

    def close(self) -> list[Path]:
        """Write what is left; the runs written, each sorted by value."""
        if self._filled:
            self._write()
        self._buffer = np.empty(0, dtype=RECORD)
        return self.runs

    def _write(self) -> None:
        records = self._buffer[: self._filled]
        ordered = records[np.argsort(records["value"], kind="stable")]
        if np.any(ordered["value"][1:] == ordered["value"][:-1]):
            raise ProtocolError(REPEATED)
        path = self.folder / f"run-{self.side}-{len(self.runs):06d}.bin"
        ordered.tofile(path)
        self.runs.append(path)
        self._filled = 0
        self._buffer = np.empty(0, dtype=RECORD)


class _RunReader:
    """One sorted run, read ``buffer_rows`` records at a time."""

    def __init__(self, path: Path, buffer_rows: int):
        self.path = path
        self.buffer_rows = buffer_rows
        self.left = path.stat().st_size // RECORD.itemsize
        self.read_at = 0
        self.buffer = np.empty(0, dtype=RECORD)

    def fill(self) -> bool:
        """Read the next buffer if the last one is used up; False once the run is exhausted."""
        if not len(self.buffer) and self.left:
            count = min(self.buffer_rows, self.left)
            with open(self.path, "rb") as file:
                file.seek(self.read_at * RECORD.itemsize)
                self.buffer = np.fromfile(file, dtype=RECORD, count=count)
            if len(self.buffer) != count:
                raise ProtocolError(f"a sorted run ended early: {self.path.name}")
            self.read_at += count
            self.left -= count
        return bool(len(self.buffer))

    def take_through(self, bound: bytes) -> np.ndarray:
        """The buffered records with values up to ``bound``, removed from the buffer."""
        end = int(np.searchsorted(self.buffer["value"], bound, side="right"))
        taken, self.buffer = self.buffer[:end], self.buffer[end:]
        return taken


def merged(runs: list[Path], buffer_rows: int) -> Iterator[np.ndarray]:
    """Every record of ``runs`` (at most FAN_IN, each sorted by value) in value order, in blocks; the merge
    holds at most about ``buffer_rows`` records read ahead (never under MIN_BUFFER_ROWS a run)."""
    readers = [_RunReader(path, max(MIN_BUFFER_ROWS, buffer_rows // FAN_IN)) for path in runs]
    while True:
        live = [reader for reader in readers if reader.fill()]
        if not live:
            return
        # every record up to the smallest last buffered value is final: no unread record can sort before it
        bound = min(reader.buffer["value"][-1] for reader in live)
        block = np.concatenate([reader.take_through(bound) for reader in live])
        yield block[np.argsort(block["value"], kind="stable")]


def merge_passes(runs: list[Path], folder: Path, buffer_rows: int) -> list[Path]:
    """Merge ``runs`` FAN_IN at a time into longer runs until at most FAN_IN are left (inputs removed)."""
    generation = 0
    while len(runs) > FAN_IN:
        longer: list[Path] = []
        for group_number, start in enumerate(range(0, len(runs), FAN_IN)):
            group = runs[start : start + FAN_IN]
            path = folder / f"merged-{generation:03d}-{group_number:06d}.bin"
            with open(path, "wb") as out:
                for block in merged(group, buffer_rows):
                    block.tofile(out)
            for done in group:
                done.unlink()
            longer.append(path)
        runs, generation = longer, generation + 1
    return runs


def matched_positions(runs: list[Path], folder: Path, buffer_rows: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(positions in my list, positions in theirs) of the values both lists hold, block by block, refusing a
    value either list holds twice."""
    carry = np.empty(0, dtype=RECORD)   # the last record seen, and whether it was matched already
    carry_matched = False
    for block in merged(merge_passes(runs, folder, buffer_rows), buffer_rows):
        records = np.concatenate([carry, block])
        equal = np.flatnonzero(records["value"][1:] == records["value"][:-1])
        if len(equal):
            left, right = records[equal], records[equal + 1]
            three_in_a_row = np.any(np.diff(equal) == 1) or (carry_matched and equal[0] == 0)
            if three_in_a_row or np.any(left["side"] == right["side"]):
                raise ProtocolError(REPEATED)
            mine_first = left["side"] == MINE
            yield (np.where(mine_first, left["position"], right["position"]),
                   np.where(mine_first, right["position"], left["position"]))
        carry_matched = bool(len(equal)) and equal[-1] == len(records) - 2
        carry = records[-1:].copy()


def intersect_runs(runs: list[Path], folder: Path, mine_count: int, buffer_rows: int) -> np.ndarray:
    """For each position in my list, the position in theirs of the same value, or -1."""
    positions = np.full(mine_count, -1, dtype=np.int64)
    for mine, theirs in matched_positions(runs, folder, buffer_rows):
        positions[mine] = theirs
    return positions


class GrowingFile:
    """Packed points written to disk as they arrive and read back, while still being written, by any number of
    readers: a peer's stream is drained at once (it never waits in a buffer of the sender's or of gRPC's) and
    is worked on at the reader's own pace."""

    def __init__(self, path: Path):
        self.path = path
        self._out = open(path, "wb")
        self._written = 0
        self._finished = False
        self._error: BaseException | None = None
        self._changed = threading.Condition()

    def append(self, packed: bytes) -> None:
        self._out.write(packed)
        self._out.flush()
        with self._changed:
            self._written += len(packed)
            self._changed.notify_all()

    def finish(self, error: BaseException | None = None) -> None:
        """No more points (``error``: the writer failed, and every reader raises it)."""
        self._out.close()
        with self._changed:
            self._finished, self._error = True, error
            self._changed.notify_all()

    def fill_from(self, chunks: Iterable[bytes], stop: threading.Event) -> int:
        """Every chunk of ``chunks`` appended (until ``stop``), then finished; the count of points."""
        try:
            for chunk in chunks:
                if stop.is_set():
                    break
                self.append(chunk)
        except BaseException as error:
            self.finish(error)
            raise
        self.finish()
        return self._written // POINT_BYTES

    def wait(self, stop: threading.Event) -> bool:
        """Until every point is written (True), or ``stop`` (False); the writer's error, raised here."""
        with self._changed:
            while not (self._finished or stop.is_set()):
                self._changed.wait(timeout=1.0)
            error = self._error
        if error is not None:
            raise error
        return not stop.is_set()

    def chunks(self, rows: int, stop: threading.Event) -> Iterator[bytes]:
        """The points, ``rows`` at a time (the last chunk may be shorter), as soon as they are written."""
        size, read = rows * POINT_BYTES, 0
        with open(self.path, "rb") as file:
            while not stop.is_set():
                with self._changed:
                    self._changed.wait_for(
                        lambda: self._written - read >= size or self._finished or stop.is_set(), timeout=1.0
                    )
                    available, finished, error = self._written - read, self._finished, self._error
                if error is not None:
                    raise error
                if available < size and not finished:
                    continue
                if not available:
                    return
                file.seek(read)
                chunk = file.read(min(size, available))
                read += len(chunk)
                yield chunk
