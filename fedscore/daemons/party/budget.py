"""A partner's journal of the jobs it accepted: its budget per card center (fedscore.protocol.budget), on disk.

One JSON file in the party's state folder, rewritten whole and atomically on
every change, so a restarted daemon counts every job it took before, and an
operator can read it: per job, the card center, the time, the job's digest,
a digest of this party's aligned rows and the chain's digest of the card
center's labels.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from fedscore.errors import ConfigError
from fedscore.files import write_atomically
from fedscore.protocol.budget import BudgetPolicy, BudgetUse, JobRecord, admit, same_rows_other_labels

log = logging.getLogger("fedscore.party")
JOURNAL_FILE = "budget.json"


class BudgetJournal:
    """The jobs this partner accepted; ``clock`` (seconds since the epoch) is injectable for tests."""

    def __init__(self, state_dir: Path, policy: BudgetPolicy, party: str, clock: Callable[[], float] = time.time):
        self.path = state_dir / JOURNAL_FILE
        self.policy = policy
        self.party = party
        self.clock = clock
        self._lock = threading.Lock()

    def records(self) -> list[JobRecord]:
        if not self.path.exists():
            return []
        try:
            return [JobRecord.from_dict(item) for item in json.loads(self.path.read_text())["jobs"]]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"party {self.party!r}: its job journal {self.path} is unreadable ({error}); "
                              "restore it from a backup: without it no job budget can be counted") from None

    def _save(self, records: list[JobRecord]) -> None:
        write_atomically(self.path, json.dumps({"jobs": [r.to_dict() for r in records]}, indent=1) + "\n", 0o600)

    def admit(self, card_center: str, job_id: str, job_digest: str) -> BudgetUse:
        """Count a job from ``card_center`` against its budget, or AccessError if the budget is spent."""
        with self._lock:
            records = self.records()
            record, use = admit(records, card_center, job_id, job_digest, self.clock(), self.policy, self.party)
            self._save([*records, record])
        log.info("job %s from card center %s: job %d of %d it may run over this party's rows in %d days",
                 job_id, card_center, use.jobs, use.max_jobs, use.window_days)
        return use

    def note(self, job_id: str, rows_digest: str = "", label_digest: str = "") -> None:
        """Add the aligned rows' digest or the labels' digest to a job's record; warn when the same rows were
        trained before on other labels (a card center probing this party's scores)."""
        with self._lock:
            records = self.records()
            record = next((r for r in records if r.job_id == job_id), None)
            if record is None:
                return
            record.rows_digest = rows_digest or record.rows_digest
            record.label_digest = label_digest or record.label_digest
            self._save(records)
        earlier = same_rows_other_labels(records, job_id)
        if earlier:
            log.warning(
                "job %s from card center %s aligns the same rows as earlier job(s) %s with different labels: "
                "repeated jobs on the same rows show the card center more of this party's scores",
                job_id, record.card_center, ", ".join(r.job_id for r in earlier),
            )
