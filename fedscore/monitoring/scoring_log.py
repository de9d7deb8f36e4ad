"""The card center's scoring log: one JSON line per answered request, its own record for monitoring.

A line holds what monitoring needs and nothing that identifies anyone or
belongs to a partner:

    {"time_ms": 1767225600123, "request_id": "9f...", "probability": 0.0412, "score": 671.9,
     "decision": "approve", "bins": {"PAY_0": 1, "LIMIT_BAL": 4},
     "partners": {"bureau": {"answered": true, "ms": 11.8}, "ecommerce": {"answered": false, "ms": null}}}

``bins``: the bin of each of the card center's own features (a binned model's
own bins; a standardised model's value bucket, the decile of the training
values the monitoring baseline gives, or none without a baseline).
``partners``: whether each partner gave a partial score, and how long its
reply took (null: none within the wait). No applicant id or digest and no
partial score is written: the partial score is the partner's.

The log is a folder of one file per UTC day (``scoring-log/YYYY-MM-DD.jsonl``)
beside the model; files older than ``KEEP_DAYS`` days are deleted when a new
day's file opens, so the log stays bounded (a line is about 300 bytes: 100 000
requests a day keep about 30 MB a day). Lines are buffered and flushed at most
every ``FLUSH_SECONDS``, never synced: scoring does not wait on the disk, and a
crash of the daemon or the machine may lose the last second's lines (the chain
and its journal, not this log, are the record that must not be lost). A line
cut short by a crash is skipped when read.
"""
from __future__ import annotations

import bisect
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from fedscore.errors import ConfigError
from fedscore.model.model_file import PartyModel
from fedscore.monitoring.baseline import bucket_edges, load_baseline
from fedscore.protocol.scoring.scorecard import Answer

log = logging.getLogger("fedscore.monitoring")

LOG_FOLDER = "scoring-log"   # beside the model: state/jobs/<job_id>/scoring-log/
KEEP_DAYS = 180              # day files older than this are deleted
FLUSH_SECONDS = 1.0          # lines wait in memory at most this long (a crash loses them)
BUFFER_BYTES = 1 << 16


@dataclass(frozen=True)
class PartnerReply:
    """One partner's part in one request: did it give a partial score, and how long did its reply take
    (None: no reply within the wait)."""

    answered: bool
    ms: float | None


def day_of(time_ms: int) -> str:
    """The UTC day of a unix-milliseconds time, as YYYY-MM-DD (the log's file names and the monitor's days)."""
    return dt.datetime.fromtimestamp(time_ms / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%d")


class OwnBuckets:
    """Where each of the card center's own values falls: a binned model's bin, or a standardised model's
    bucket among the monitoring baseline's decile edges of that feature's training values."""

    def __init__(self, model: PartyModel, edges: Mapping[str, Sequence[float]] | None = None):
        self.model = model
        self.edges = {name: [float(e) for e in edges[name]] for name in model.features if name in (edges or {})}

    def of(self, values: Sequence[object]) -> dict[str, int]:
        if self.model.binned:
            row = [[value] for value in values]
            indices = self.model.binner.bin_indices(row)[0]
            return dict(zip(self.model.features, (int(i) for i in indices)))
        return {name: bisect.bisect_right(self.edges[name], float(value))
                for name, value in zip(self.model.features, values) if name in self.edges}


def own_buckets(model: PartyModel, folder: Path) -> OwnBuckets:
    """The buckets a served model logs: a binned model's bins; a standardised model's decile buckets from the
    monitoring baseline beside it (without one, its lines carry no bins and the monitor shows no CSI)."""
    if model.binned:
        return OwnBuckets(model)
    try:
        return OwnBuckets(model, bucket_edges(load_baseline(folder)))
    except ConfigError as error:
        log.warning("model %s: %s; its scoring log will hold no feature buckets", model.job_id, error)
        return OwnBuckets(model, {})


def log_record(time_ms: int, request_id: str, answer: Answer, bins: Mapping[str, int],
               partners: Mapping[str, PartnerReply]) -> dict:
    """One line of the log, as the card center writes it."""
    return {
        "time_ms": int(time_ms),
        "request_id": request_id,
        "probability": float(answer.probability),
        "score": round(float(answer.score), 2),
        "decision": answer.decision,
        "bins": dict(bins),
        "partners": {name: {"answered": reply.answered, "ms": None if reply.ms is None else round(reply.ms, 2)}
                     for name, reply in sorted(partners.items())},
    }


def log_line(record: dict) -> str:
    return json.dumps(record, separators=(",", ":")) + "\n"


class ScoringLog:
    """Appends log lines to the day's file; thread-safe, buffered, never in the way of an answer."""

    def __init__(self, folder: Path, buckets: OwnBuckets | None = None, keep_days: int = KEEP_DAYS):
        self.folder = folder
        self.buckets = buckets
        self.keep_days = keep_days
        self._lock = threading.Lock()
        self._handle: IO[str] | None = None
        self._day = ""
        self._flushed = time.monotonic()
        self._failed = False
        self._closed = False

    def record(self, request_id: str, answer: Answer, values: Sequence[object],
               partners: Mapping[str, PartnerReply], time_ms: int | None = None) -> None:
        """Log one answered request. A failure (disk full, a value that finds no bucket) is logged once
        and never fails the request: the answer is already on its way."""
        try:
            stamp = int(time.time_ns() // 1_000_000 if time_ms is None else time_ms)
            bins = self.buckets.of(values) if self.buckets is not None else {}
            self.write(log_record(stamp, request_id, answer, bins, partners))
        except Exception as error:   # noqa: BLE001 - monitoring must not break scoring
            if not self._failed:
                log.warning("scoring log in %s: %s; requests are answered, but not logged until this is fixed",
                            self.folder, error)
            self._failed = True

    def write(self, record: dict) -> None:
        line = log_line(record)
        day = day_of(record["time_ms"])
        with self._lock:
            if self._closed:   # a request still in flight when its model closed: not reopened, so nothing leaks
                return
            if day != self._day or self._handle is None:
                self._open(day)
            self._handle.write(line)
            now = time.monotonic()
            if now - self._flushed >= FLUSH_SECONDS:
                self._handle.flush()
                self._flushed = now
        self._failed = False

    def _open(self, day: str) -> None:
        if self._handle is not None:
            self._handle.close()
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.folder / f"{day}.jsonl"
        self._handle = path.open("a", encoding="utf-8", buffering=BUFFER_BYTES)
        path.chmod(0o600)
        self._day = day
        self._prune(day)

    def _prune(self, today: str) -> None:
        oldest = (dt.date.fromisoformat(today) - dt.timedelta(days=self.keep_days)).isoformat()
        for path in self.folder.glob("*.jsonl"):
            if path.stem < oldest:
                path.unlink(missing_ok=True)

    def flush(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.flush()
                self._flushed = time.monotonic()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._handle is not None:
                self._handle.close()
                self._handle = None


def log_files(folder: Path, since: str | None = None) -> list[Path]:
    """The day files of a log, oldest first, from day ``since`` (YYYY-MM-DD) on."""
    files = sorted(p for p in folder.glob("*.jsonl") if _is_day(p.stem))
    return [p for p in files if since is None or p.stem >= since]


def _is_day(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10


def read_log(folder: Path, since: str | None = None) -> Iterator[dict]:
    """Every readable line of the log from day ``since`` on, in order, one at a time (a long log is never
    held in memory). A line that is not a JSON object (cut short by a crash) is skipped, and counted in
    the warning at the end."""
    skipped = 0
    for path in log_files(folder, since):
        with path.open(encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except ValueError:
                    record = None
                if isinstance(record, dict) and "time_ms" in record:
                    yield record
                else:
                    skipped += 1
    if skipped:
        log.warning("scoring log %s: %d unreadable lines skipped", folder, skipped)
