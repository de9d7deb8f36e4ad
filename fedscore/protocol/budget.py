"""A partner's budget of jobs per card center, and what it remembers of each job it took.

Why: every job ends with its card center holding, for each aligned row,
the sum of the partners' partial scores; with one partner, that partner's
own score uₖ = xₖ·wₖ. Scores of T jobs over the same rows span at most T
dimensions, so a card center that runs, with labels of its choosing, as
many jobs as a partner has columns can solve for the columns (an affine
map of the scores, fixed by a few applicants it knows). A partner bounds T:
it takes at most ``max_jobs`` jobs from each card center in any
``window_days``. With binned attributes (the default) scores are functions
of bin memberships, so even a span of full rank gives bins, not values.

Each accepted job is recorded with its time, the job's digest, a digest of
the partner's aligned rows (local only) and the chain's digest of the card
center's labels, so an operator sees the same rows trained again on other
labels. This module is pure: records in, decisions out; the daemon keeps
them on disk (fedscore.daemons.party.budget).
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import numpy as np

from fedscore.errors import AccessError

DAY_SECONDS = 86_400.0
LABEL_DOMAIN = b"fedscore/labels/v1/"
ROWS_DOMAIN = b"fedscore/aligned-rows/v1/"


@dataclass(frozen=True)
class BudgetPolicy:
    """A partner's limits: jobs per card center in a sliding window of days."""

    max_jobs: int = 4
    window_days: int = 30

    @property
    def window_seconds(self) -> float:
        return self.window_days * DAY_SECONDS


@dataclass
class JobRecord:
    """One job a partner accepted."""

    card_center: str
    job_id: str
    at: float                 # seconds since the epoch, when the partner accepted PrepareJob
    job_digest: str
    rows_digest: str = ""     # of this partner's aligned rows: never leaves it
    label_digest: str = ""    # of the card center's training labels, from the chain's alignment entry

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "JobRecord":
        return cls(str(data["card_center"]), str(data["job_id"]), float(data["at"]), str(data["job_digest"]),
                   str(data.get("rows_digest", "")), str(data.get("label_digest", "")))


@dataclass(frozen=True)
class BudgetUse:
    """What a partner's budget shows for one card center once a job is accepted: recorded on the chain."""

    card_center: str
    jobs: int                 # in the window, this job included
    max_jobs: int
    window_days: int

    def to_dict(self) -> dict:
        return asdict(self)


def jobs_in_window(records: list[JobRecord], card_center: str, now: float, policy: BudgetPolicy) -> list[JobRecord]:
    """The jobs from ``card_center`` accepted in the ``window_days`` before ``now``."""
    since = now - policy.window_seconds
    return [r for r in records if r.card_center == card_center and since < r.at <= now]


def admit(records: list[JobRecord], card_center: str, job_id: str, job_digest: str, now: float,
          policy: BudgetPolicy, party: str) -> tuple[JobRecord, BudgetUse]:
    """The record of a new job and the budget it leaves, or AccessError naming the spent budget."""
    used = jobs_in_window(records, card_center, now, policy)
    if len(used) >= policy.max_jobs:
        frees = datetime.fromtimestamp(min(r.at for r in used) + policy.window_seconds, timezone.utc)
        raise AccessError(
            f"party {party!r}: refused a job from card center {card_center!r}: its job budget is spent, "
            f"{len(used)} jobs over this party's rows in the last {policy.window_days} days and max_jobs = "
            f"{policy.max_jobs} (each job shows the card center this party's scores; enough of them rebuild its "
            f"columns). A slot frees at {frees:%Y-%m-%d %H:%M} UTC; to take more, raise max_jobs or shorten "
            f"window_days in [party]"
        )
    record = JobRecord(card_center, job_id, now, job_digest)
    return record, BudgetUse(card_center, len(used) + 1, policy.max_jobs, policy.window_days)


def same_rows_other_labels(records: list[JobRecord], job_id: str) -> list[JobRecord]:
    """Earlier jobs that aligned the same rows as job ``job_id`` but trained on other labels."""
    mine = next((r for r in records if r.job_id == job_id), None)
    if mine is None or not mine.rows_digest or not mine.label_digest:
        return []
    return [r for r in records if r.job_id != job_id and r.at <= mine.at and r.rows_digest == mine.rows_digest
            and r.label_digest and r.label_digest != mine.label_digest]


def label_digest(labels: np.ndarray) -> str:
    """SHA-256 of a 0/1 label vector in the aligned order: equal labels on equal rows give equal digests."""
    return hashlib.sha256(LABEL_DOMAIN + np.asarray(labels, dtype=np.uint8).tobytes()).hexdigest()


def rows_digest(ids: np.ndarray) -> str:
    """SHA-256 of a party's aligned ids (sorted, normalised): the same rows in two jobs give the same digest."""
    joined = "\n".join(sorted(str(i) for i in ids)).encode("utf-8")
    return hashlib.sha256(ROWS_DOMAIN + joined).hexdigest()
