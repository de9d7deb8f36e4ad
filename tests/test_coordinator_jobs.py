"""A running job on the coordinator cleans up exactly once, in the way its ending calls for."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import breast_parties, write_job
from fedscore.job_file import load_job
from fedscore.daemons.coordinator.checkpoint import CHECKPOINT_FILE, KEY_FILE, Checkpoint, JobFolder, checkpointed_jobs
from fedscore.daemons.coordinator.jobs import RunningJob
from fedscore.errors import FedscoreError, InternalError, PeerError
from fedscore.protocol.training.driver import TrainingResult


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
    assert job.folder.ended() == ("guest", None, "PeerError: party 'host' did not answer")


def test_a_settled_job_is_closed_everywhere_and_its_checkpoint_dropped(tmp_path):
    job, clients, ledger = opened_job(tmp_path)
    with job:
        job.settled = True
    assert [c.calls for c in clients.values()] == [["close_job", "close"]] * 2
    assert ledger.closed == 1
    assert checkpointed(job) == [False, False]
    assert job.folder.ended() is None


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
    assert job.folder.ended() is None


def test_a_job_that_only_aligned_leaves_nothing_behind(tmp_path):
    job, clients, ledger = opened_job(tmp_path)
    with job:
        pass
    assert [c.calls for c in clients.values()] == [["close"]] * 2
    assert checkpointed(job) == [False, False]
    assert job.folder.ended() is None


def test_an_ended_job_tells_its_card_center_and_its_report_or_failure(tmp_path):
    folder = JobFolder(tmp_path, "test-job-0123abcd")
    assert folder.ended() is None
    folder.record_failure("guest", PeerError("party 'host' did not answer"))
    assert folder.ended() == ("guest", None, "PeerError: party 'host' did not answer")
    report = {"parties": [{"name": "host", "role": "partner"}, {"name": "guest", "role": "card_center"}]}
    folder.write_report(report)   # a report wins over a failure recorded earlier
    center, text, error = folder.ended()
    assert (center, json.loads(text), error) == ("guest", report, None)


def test_a_checkpoint_reads_back_what_was_saved(tmp_path, keypair):
    parties = [{**party, "address": "127.0.0.1:1"} for party in breast_parties()]
    spec, _ = load_job(write_job(tmp_path, parties, epochs=4, batch_size=64))
    result = TrainingResult(losses=[0.6, 0.5], epoch_seconds=[1.0, 1.5], steps=8, metrics={"auc": 0.9})
    saved = Checkpoint("test-job-0123abcd", spec, {"guest": {"role": "card_center", "features": 10, "rows": 569}},
                       {"aligned_rows": 569, "overlaps": {"host": 569}}, 0.25, 1700000000.0, restarts=2, result=result)
    folder = JobFolder(tmp_path / "state", saved.job_id)
    folder.save(saved, keypair[1].to_json())
    read, private_key = folder.load()
    assert read == saved and folder.spec() == spec
    assert private_key.public_key == keypair[0]
    assert oct((folder.path / KEY_FILE).stat().st_mode & 0o777) == "0o600"
    assert [f.job_id for f in checkpointed_jobs(tmp_path / "state")] == [saved.job_id]
    folder.drop_checkpoint()
    assert checkpointed_jobs(tmp_path / "state") == []
