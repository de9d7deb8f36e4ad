"""A job's events, which any number of submitters may follow, and the jobs this coordinator knows of.

A job publishes its progress and finally its report (or its error); a
follower gets the recent events replayed, then the rest as they come.
"""
from __future__ import annotations

import collections
import json
import logging
import queue
import threading

from fedscore.job import JobSpec
from fedscore.crypto.certs import COORDINATOR
from fedscore.protocol.training.driver import Progress

log = logging.getLogger("fedscore.coordinator")


class JobRun:
    """One job's thread and its events, which any number of submitters may follow.

    A job goes on while nobody follows it for up to ``grace`` seconds (the submitter lost its stream, and
    follows again); after that with nobody following, it is cancelled at its next step.
    """

    def __init__(self, job_id: str, spec: JobSpec, grace: float = 0.0, cancelled: threading.Event | None = None):
        self.job_id = job_id
        self.card_center = spec.card_center.name          # the only member who may follow it
        self.members = {COORDINATOR, *(p.name for p in spec.parties)}
        self._grace, self._cancelled = grace, cancelled
        self._lock = threading.Lock()
        self._followers: list[queue.Queue] = []
        self._recent: collections.deque = collections.deque(maxlen=50)   # replayed to whoever follows later
        self.outcome: str | BaseException | None = None   # the report JSON, or the error

    def publish(self, item) -> None:
        with self._lock:
            if isinstance(item, Progress):
                self._recent.append(item)
            else:
                self.outcome = item
            for follower in self._followers:
                follower.put(item)

    def state(self) -> tuple[str, str, Progress | None]:
        """("running" | "finished" | "failed", the last message or the failure, the last step event)."""
        with self._lock:
            outcome, recent = self.outcome, list(self._recent)
        steps = [event for event in recent if event.stage in ("step", "epoch")]
        latest = steps[-1] if steps else None
        if outcome is None:
            return "running", recent[-1].message if recent else "", latest
        if isinstance(outcome, str):
            return "finished", "", latest
        return "failed", str(outcome), latest

    def follow(self) -> queue.Queue:
        events: queue.Queue = queue.Queue()
        with self._lock:
            for item in self._recent:
                events.put(item)
            if self.outcome is not None:
                events.put(self.outcome)
            else:
                self._followers.append(events)
        return events

    def unfollow(self, events: queue.Queue) -> None:
        with self._lock:
            if events in self._followers:
                self._followers.remove(events)
            alone = not self._followers and self.outcome is None
        if alone and self._cancelled is not None:
            timer = threading.Timer(self._grace, self._cancel_if_alone)
            timer.daemon = True
            timer.start()

    def _cancel_if_alone(self) -> None:
        with self._lock:
            if not self._followers and self.outcome is None:
                log.warning("job %s: nobody has followed it for %.0f s; cancelling it", self.job_id, self._grace)
                self._cancelled.set()

    def start(self, work) -> None:
        def run() -> None:
            try:
                self.publish(json.dumps(work(self.publish)))
            except BaseException as error:   # handed to every follower
                self.publish(error)

        threading.Thread(target=run, name=f"job-{self.job_id}", daemon=True).start()


class JobRuns:
    """The jobs this daemon ran or runs since it started, by job id."""

    def __init__(self):
        self._runs: dict[str, JobRun] = {}
        self._lock = threading.Lock()

    def add(self, run: JobRun) -> JobRun:
        with self._lock:
            self._runs[run.job_id] = run
        return run

    def get(self, job_id: str) -> JobRun | None:
        with self._lock:
            return self._runs.get(job_id)

    def of_member(self, member: str | None) -> list[JobRun]:
        """The runs ``member`` takes part in (all of them for None: a daemon without TLS), by job id."""
        with self._lock:
            return [run for _, run in sorted(self._runs.items()) if member is None or member in run.members]
