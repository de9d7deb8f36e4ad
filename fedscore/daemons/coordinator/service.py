"""The coordinator's gRPC service: submitting a job, following it, and what this daemon runs.

The jobs themselves live in jobs.py (start, recover, finish, resume), their
files in checkpoint.py and their events in events.py; this module turns gRPC
calls into those and events back into messages.
"""
from __future__ import annotations

import logging
import queue
import threading

import grpc

from fedscore import __version__
from fedscore.daemons.config import DaemonConfig
from fedscore.job import check_job_id
from fedscore.daemons.access import require
from fedscore.daemons.chain_reads import add_replica_service
from fedscore.daemons.coordinator.checkpoint import JobFolder, checkpointed_jobs
from fedscore.daemons.coordinator.events import JobRun, JobRuns
from fedscore.daemons.coordinator.jobs import resume_job, run_job
from fedscore.daemons.job_folders import newest_job_folders
from fedscore.errors import FedscoreError, UnknownJobError
from fedscore.ledger.position import UNREADABLE, read_position_file
from fedscore.proto import fedscore_pb2 as pb
from fedscore.proto import fedscore_pb2_grpc as pb_grpc
from fedscore.protocol.training.coordinator import new_job_id
from fedscore.protocol.training.driver import Progress
from fedscore.transport import codec
from fedscore.transport.rpc import abort, servicer_errors
from fedscore.transport.tls import caller_name

log = logging.getLogger("fedscore.coordinator")
handles_errors = servicer_errors("label")


class CoordinatorService(pb_grpc.CoordinatorServicer):
    def __init__(self, config: DaemonConfig):
        self.config = config
        self.label = "coordinator"
        self._runs = JobRuns()

    def resume_unfinished(self) -> list[str]:
        """At start, before serving: go on with every job that was training when this daemon stopped."""
        resumed = []
        for folder in checkpointed_jobs(self.config.state_dir):
            job_id = folder.job_id
            try:
                spec = folder.spec()
            except (OSError, ValueError, KeyError, StopIteration, FedscoreError) as error:
                log.error("job %s cannot resume: unreadable checkpoint (%s)", job_id, error)
                folder.drop_checkpoint()
                continue
            run = self._runs.add(JobRun(job_id, spec))
            run.start(lambda publish, job_id=job_id: resume_job(self.config.state_dir, job_id, publish, self.config.tls))
            log.warning("resuming job %s, unfinished when the coordinator stopped", job_id)
            resumed.append(job_id)
        return resumed

    @handles_errors
    def Ping(self, request, context):
        return pb.PingReply(name=self.config.name, role="coordinator", version=__version__)

    @handles_errors
    def Status(self, request, context):
        """The jobs the caller is a member of: those running, then the newest job folders (a run of this
        daemon's with its state, last progress and chain head; an older job from its folder: finished,
        failed, aligned or aborted)."""
        caller = caller_name(context)
        runs = {run.job_id: run for run in self._runs.of_member(caller)}
        strangers = {run.job_id for run in self._runs.of_member(None)} - set(runs)   # runs the caller is not in
        folders, left_off = newest_job_folders(self.config.state_dir)
        listed = {folder.name for folder in folders}
        running = [run for job_id, run in runs.items() if job_id not in listed and run.outcome is None]
        left_off -= sum(JobFolder(self.config.state_dir, run.job_id).path.is_dir() for run in running)
        statuses = [self._status(run) for run in running]
        for folder in folders:
            if folder.name in runs:
                statuses.append(self._status(runs[folder.name]))
            elif folder.name not in strangers:
                status = ended_status(JobFolder(self.config.state_dir, folder.name), caller)
                statuses += [status] if status is not None else []
        return pb.StatusReply(name=self.config.name, role="coordinator", version=__version__, jobs=statuses,
                              jobs_left_off=left_off)

    def RunJob(self, request, context):
        try:
            spec = codec.spec_from_proto(request.job)
            self._require_jobs_card_center(context, spec.card_center.name, "running a job")
        except FedscoreError as error:
            abort(context, error, self.label)
        job_id = new_job_id(spec.name)
        cancelled = threading.Event()
        run = self._runs.add(JobRun(job_id, spec, grace=spec.restart_timeout, cancelled=cancelled))
        events = run.follow()
        context.add_callback(lambda: run.unfollow(events))   # the submitter went away: see JobRun
        run.start(lambda publish: run_job(spec, job_id, self.config.state_dir, publish, cancelled, request.align_only,
                                          self.config.tls))
        yield from self._stream(run, events, context)

    def FollowJob(self, request, context):
        try:
            check_job_id(request.job_id, self.label)
            run = self._runs.get(request.job_id)
            ended = JobFolder(self.config.state_dir, request.job_id).ended() if run is None else None
            if run is None and ended is None:
                raise UnknownJobError(f"coordinator: no job {request.job_id} here")
            self._require_jobs_card_center(context, run.card_center if run else ended[0], "following a job")
        except FedscoreError as error:
            abort(context, error, self.label)
        if run is None:   # ended before this daemon started
            _, report, error = ended
            if report is None:
                abort(context, UnknownJobError(f"coordinator: job {request.job_id} failed: {error}"), self.label)
            yield pb.JobEvent(job_id=request.job_id, report_json=report)
            return
        events = run.follow()
        context.add_callback(lambda: run.unfollow(events))
        yield from self._stream(run, events, context)

    def _status(self, run: JobRun) -> pb.JobStatus:
        """A run's state, its chain's head and last step (as every party reports them), or its last progress
        while it has no chain to read."""
        stage, detail, latest = run.state()
        status = pb.JobStatus(job_id=run.job_id, stage=stage, detail=detail, chain="training")
        try:
            position = read_position_file(JobFolder(self.config.state_dir, run.job_id).ledger_path)
        except UNREADABLE:   # not begun yet
            position = None
        if position is not None:
            status.blocks, status.head = position.blocks, position.head.hex()
            if stage == "finished" and position.last_kind == "alignment":   # an --align-only run
                status.stage = "aligned"
        step = position.last_step if position is not None else None
        if step is not None:
            status.epoch, status.batch = step.epoch + 1, step.batch + 1
        elif latest is not None:
            status.epoch, status.batch = latest.epoch, latest.step
        return status

    @staticmethod
    def _require_jobs_card_center(context: grpc.ServicerContext, card_center: str, what: str) -> None:
        """Only the job's card center runs or follows it: the role table lets any member call, since the job
        is known only once the request is read."""
        require(context, card_center, f"coordinator: {what}")

    def _stream(self, run: JobRun, events: queue.Queue, context):
        while True:
            item = events.get()
            if isinstance(item, Progress):
                yield pb.JobEvent(job_id=run.job_id, progress=pb.Progress(
                    stage=item.stage, epoch=item.epoch, epochs=item.epochs, loss=item.loss,
                    seconds=item.seconds, message=item.message, step=item.step, steps=item.steps,
                ))
            elif isinstance(item, str):
                yield pb.JobEvent(job_id=run.job_id, report_json=item)
                return
            else:   # the job failed: its error reaches the submitter as its own class
                if isinstance(item, FedscoreError):
                    log.warning("job %s failed: %s", run.job_id, item)
                else:
                    log.error("job %s failed", run.job_id, exc_info=item)
                # a PeerError goes as "coordinator reports: ...": the job failed, the coordinator did not go away
                abort(context, item, self.label)


def ended_status(folder: JobFolder, caller: str | None) -> pb.JobStatus | None:
    """A job that ended before this daemon started, from its folder: finished (settled on its chain),
    failed (with why), aligned (an --align-only run) or aborted (its chain ends early, no failure recorded)."""
    if not folder.ledger_path.is_file():   # it ended before its chain began
        return None
    try:
        position = read_position_file(folder.ledger_path)
    except UNREADABLE as error:
        if caller is not None:   # its members are unknown
            return None
        return pb.JobStatus(job_id=folder.job_id, chain="training", stage="unreadable", detail=str(error))
    if caller is not None and caller not in position.members:
        return None
    ended = folder.ended()
    if position.last_kind == "settlement":
        stage, detail = "finished", ""
    elif ended is not None and ended[2] is not None:
        stage, detail = "failed", ended[2]
    elif position.last_kind == "alignment":   # an --align-only run ends there
        stage, detail = "aligned", ""
    else:
        stage, detail = "aborted", f"its chain ends with {position.last_kind or 'no entry'}"
    step = position.last_step
    return pb.JobStatus(job_id=folder.job_id, chain="training", stage=stage, detail=detail, blocks=position.blocks,
                        head=position.head.hex(), epoch=step.epoch + 1 if step else 0, batch=step.batch + 1 if step else 0)


def add_to_server(service: CoordinatorService, server) -> None:
    pb_grpc.add_CoordinatorServicer_to_server(service, server)
    add_replica_service(service.config.state_dir, service.label, server)   # an admitted observer's reads
