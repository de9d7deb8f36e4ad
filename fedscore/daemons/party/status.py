"""Who a party daemon is, and what it holds: every job it has state for — the ones in memory (prepared,
aligned, training) and, read from its jobs folder, the ones that ended or that a restart left behind —
with each chain's position (the training chain, and the scoring chain once the model served), and the
models it serves. A caller sees only the jobs and models it is a member of."""
from __future__ import annotations

import logging
from pathlib import Path

import grpc

from fedscore import __version__
from fedscore.daemons.access import COORDINATOR
from fedscore.daemons.job_folders import newest_job_folders
from fedscore.daemons.party.checkpoint import CHECKPOINT_FILE
from fedscore.daemons.party.jobs import Jobs, PreparedJob
from fedscore.daemons.party.scoring import ScoringHost
from fedscore.errors import FedscoreError
from fedscore.job import Step
from fedscore.ledger.position import UNREADABLE, ChainPosition, read_position, read_position_file
from fedscore.proto import fedscore_pb2 as pb
from fedscore.transport.tls import caller_name

log = logging.getLogger("fedscore.party")
TRAINING_FILE = "ledger.sqlite"
SCORING_FILE = "scoring.sqlite"


def _job_status(job_id: str, chain: str, stage: str, position: ChainPosition, detail: str = "") -> pb.JobStatus:
    step: Step | None = position.last_step
    return pb.JobStatus(
        job_id=job_id, stage=stage, chain=chain, epoch=step.epoch + 1 if step else 0, batch=step.batch + 1 if step else 0,
        blocks=position.blocks, head=position.head.hex(), detail=detail,
    )


def ended_stage(folder: Path, position: ChainPosition) -> tuple[str, str]:
    """(stage, detail) of a training job this daemon no longer holds in memory, from its folder."""
    if position.last_kind == "settlement":
        return "finished", ""
    if (folder / CHECKPOINT_FILE).is_file():
        return "interrupted", "the daemon restarted mid-job; it resumes when the coordinator asks"
    return "aborted", f"its chain ends with {position.last_kind or 'no entry'}"


class PartyStatus:
    """The Party service: Ping and Status."""

    def __init__(self, name: str, jobs: Jobs, scoring: ScoringHost):
        self.name = name
        self.jobs = jobs
        self.scoring = scoring

    def ping(self, request: pb.PingRequest, context: grpc.ServicerContext) -> pb.PingReply:
        return pb.PingReply(name=self.name, role="party", version=__version__)

    def status(self, request: pb.PingRequest, context: grpc.ServicerContext) -> pb.StatusReply:
        """The jobs held in memory and served models first, then the newest job folders, newest first."""
        caller = caller_name(context)
        held = {job.job_id: job for job in self.jobs.listed()}
        served = {model["job_id"]: model for model in self.scoring.open_models()}
        folders, left_off = newest_job_folders(self.jobs.config.state_dir)
        listed = {folder.name for folder in folders}
        in_memory = sorted((set(held) | set(served)) - listed)
        left_off -= sum(self.jobs.job_dir(job_id).is_dir() for job_id in in_memory)   # older, yet listed
        statuses = []
        for job_id in in_memory + [folder.name for folder in folders]:
            folder = self.jobs.job_dir(job_id)
            training = self._training_status(held.get(job_id), folder, caller)
            scoring = self._scoring_status(job_id, served.get(job_id), folder, caller)
            statuses += [status for status in (training, scoring) if status is not None]
        return pb.StatusReply(name=self.name, role="party", version=__version__, jobs=statuses, jobs_left_off=left_off)

    def _training_status(self, job: PreparedJob | None, folder: Path, caller: str | None) -> pb.JobStatus | None:
        """A held job's stage is its life here; a job only on disk is finished, interrupted or aborted."""
        if job is not None:
            if caller is not None and caller not in {COORDINATOR, *(p.name for p in job.spec.parties)}:
                return None
            stage = "training" if job.session is not None else "aligned" if job.aligned_rows is not None else "prepared"
            position = read_position(job.ledger.store)
            done = job.session.last_step if job.session is not None else None   # a step applied, not yet on the chain
            status = _job_status(job.job_id, "training", stage, position)
            status.epoch, status.batch = (done.epoch + 1, done.batch + 1) if done else (0, 0)
            return status
        if not (folder / TRAINING_FILE).is_file():
            return None
        return self._on_disk(folder, "training", ended_stage, caller)

    def _scoring_status(self, job_id: str, model: dict | None, folder: Path, caller: str | None) -> pb.JobStatus | None:
        """A served model's scoring chain; one no longer served is settled or stopped."""
        if model is not None:
            try:
                position = read_position(self.scoring.ledger(job_id).store)
            except FedscoreError:   # closed since it was listed
                return None
            if caller is not None and caller not in position.members:
                return None
            detail = model["role"] + (f", {model['unbilled']} answers unbilled" if "unbilled" in model else "")
            return _job_status(job_id, "scoring", "serving", position, detail)
        if not (folder / SCORING_FILE).is_file():
            return None
        return self._on_disk(folder, "scoring", lambda _, p: ("settled" if p.last_kind.endswith("settlement")
                                                              else "stopped", ""), caller)

    @staticmethod
    def _on_disk(folder: Path, chain: str, stage_of, caller: str | None) -> pb.JobStatus | None:
        """A chain read from its file; one that cannot be read is listed only to a caller without a name (no
        TLS), since its members are unknown."""
        path = folder / (TRAINING_FILE if chain == "training" else SCORING_FILE)
        try:
            position = read_position_file(path)
        except UNREADABLE as error:
            log.warning("job %s: its %s chain %s cannot be read: %s", folder.name, chain, path.name, error)
            if caller is not None:
                return None
            return pb.JobStatus(job_id=folder.name, chain=chain, stage="unreadable", detail=f"{path.name}: {error}")
        if caller is not None and caller not in position.members:
            return None
        stage, detail = stage_of(folder, position)
        return _job_status(folder.name, chain, stage, position, detail)
