"""A running job on the coordinator cleans up exactly once, in the way its ending calls for."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import breast_parties, write_job
from fedscore.config import load_job
from fedscore.daemons.coordinator.checkpoint import CHECKPOINT_FILE, KEY_FILE, JobFolder
from fedscore.daemons.coordinator.jobs import RunningJob
from fedscore.errors import FedscoreError, InternalError, PeerError


class FakeClient:
    """Records the clean-up calls a job makes to a party."""

    def __init__(self, refuses: bool = False):
        self.calls: list[str] = []
        self.refuses = refuses

    def abort_job(self) -> None:
        self.calls.append("abort_job")
        if self.refuses:
            raise PeerError("party gone")

    def close_job(self) -> None:
        self.calls.append("close_job")
        if self.refuses:
            raise PeerError("party gone")

    def close(self) -> None:
        self.calls.append("close")


class FakeLedger:
    closed = 0

    def close(self) -> None:
        self.closed += 1


def opened_job(tmp_path: Path) -> tuple[RunningJob, dict[str, FakeClient], FakeLedger]:
    parties = [{**party, "address": "127.0.0.1:1"} for party in breast_parties()]
    spec, _ = load_job(write_job(tmp_path, parties))
    job = RunningJob(JobFolder(tmp_path / "state", "test-job-0123abcd"), spec, None)
    for client in job.clients.values():
        client.close()
    clients = {"guest": FakeClient(refuses=True), "host": FakeClient()}   # one party is already gone
    job.clients, job.ledger = clients, FakeLedger()
    job.folder.path.mkdir(parents=True)
    for name in (CHECKPOINT_FILE, KEY_FILE):
        (job.folder.path / name).write_text("{}")
    return job, clients, job.ledger


def checkpointed(job: RunningJob) -> list[bool]:
    return [(job.folder.path / name).exists() for name in (CHECKPOINT_FILE, KEY_FILE)]


def test_a_job_failing_before_its_settlement_is_aborted_everywhere_and_recorded_once(tmp_path):
    job, clients, ledger = opened_job(tmp_path)
    with pytest.raises(PeerError, match="did not answer"):
        with job:
            raise PeerError("party 'host' did not answer")
    job.close(FedscoreError("a second ending"))   # cleaned up already: nothing happens
    assert [c.calls for c in clients.values()] == [["abort_job", "close"]] * 2
    assert ledger.closed == 1
    assert checkpointed(job) == [False, False]
    assert job.folder.failure() == {"card_center": "guest", "error": "PeerError: party 'host' did not answer"}


def test_a_settled_job_is_closed_everywhere_and_its_checkpoint_dropped(tmp_path):
    job, clients, ledger = opened_job(tmp_path)
    with job:
        job.settled = True
    assert [c.calls for c in clients.values()] == [["close_job", "close"]] * 2
    assert ledger.closed == 1
    assert checkpointed(job) == [False, False]
    assert job.folder.failure() is None


def test_a_job_failing_after_its_settlement_keeps_its_models_and_checkpoint(tmp_path):
    """Settled, the job is done: nothing is aborted, and a restarted coordinator can still write the report."""
    job, clients, ledger = opened_job(tmp_path)
    with pytest.raises(InternalError):
        with job:
            job.settled = True
            raise InternalError("the report could not be built")
    assert [c.calls for c in clients.values()] == [["close"]] * 2
    assert ledger.closed == 1
    assert checkpointed(job) == [True, True]
    assert job.folder.failure() is None


def test_a_job_that_only_aligned_leaves_nothing_behind(tmp_path):
    job, clients, ledger = opened_job(tmp_path)
    with job:
        pass
    assert [c.calls for c in clients.values()] == [["close"]] * 2
    assert checkpointed(job) == [False, False]
    assert job.folder.failure() is None
