"""The coordinator daemon: holds the Paillier private key and drives each job.

A submitted job runs in its own thread: key generation, preparing every
party, the training steps (fedscore.protocol.training) over gRPC clients,
evaluation, and asking each party to write its model. Progress streams back
to the submitter; the last event is the report. Once training starts the
job is checkpointed (its spec, key and what alignment found; the steps are
on the chain), so when a member dies mid-job the coordinator waits for it
to come back and every party rewinds to the chain's last step, and when the
coordinator itself restarts it resumes its unfinished jobs. On any other
failure every party is told to abort, so no model is left from a failed job.
"""
from __future__ import annotations

import collections
import json
import logging
import queue
import threading
import time
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import grpc

from fedscore import __version__
from fedscore.config import DaemonConfig, JobSpec, check_job_id
from fedscore.crypto.certs import COORDINATOR
from fedscore.crypto.paillier import PrivateKey
from fedscore.daemons.access import require
from fedscore.errors import FedscoreError, PeerError
from fedscore.model.model_file import write_atomically
from fedscore.model.rows import split_rows
from fedscore.proto import fedscore_pb2 as pb
from fedscore.proto import fedscore_pb2_grpc as pb_grpc
from fedscore.protocol.coordinator import CoordinatorSession, new_job_id
from fedscore.ledger import identity
from fedscore.ledger.member import LedgerMember
from fedscore.ledger.store import LedgerStore
from fedscore.protocol.audit import (
    alignment_entry,
    forget_steps_off_chain,
    last_step,
    append_block,
    job_end_entry,
    job_start_entry,
    settlement_entry,
    step_entry,
)
from fedscore.protocol.fanout import call_each
from fedscore.protocol.party import Step
from fedscore.protocol.training import (
    RECOVERABLE, Progress, StepRecord, TrainingResult, history_from_chain, run_training,
)
from fedscore.report import build_report
from fedscore.transport import codec
from fedscore.transport.clients.party import PartyJobClient
from fedscore.transport.rpc import RELAYED, servicer_errors, status_for
from fedscore.transport.tls import TlsIdentity, caller_name

log = logging.getLogger("fedscore.coordinator")
handles_errors = servicer_errors("label")


MAX_RECOVERIES = 20          # resumptions one job may go through before it gives up
CHECKPOINT_FILE = "coordinator.json"
KEY_FILE = "paillier.key"
FAILED_FILE = "failed.json"
MAX_RESTARTS = 5            # coordinator restarts one job may go through (a crash that recurs is not resumed forever)


@dataclass
class RunningJob:
    """What a job needs once training starts, fresh or resumed after a restart."""

    spec: JobSpec
    job_id: str
    coordinator: CoordinatorSession
    clients: dict[str, PartyJobClient]
    ledger: LedgerMember
    replies: dict[str, dict]           # party -> role, features, rows
    summary: dict                      # what alignment found
    obfuscation_seconds: float
    started: float                     # wall-clock seconds since the epoch
    recoveries: int = 0
    restarts: int = 0                  # times the coordinator restarted during this job
    result: TrainingResult | None = None   # once trained and evaluated

    @property
    def rows(self) -> int:
        return self.summary["aligned_rows"]

    @property
    def train_rows(self) -> int:
        return len(split_rows(self.rows, self.spec.validation, self.spec.seed)[0])


def job_folder(state_dir: Path, job_id: str) -> Path:
    return state_dir / "jobs" / check_job_id(job_id, "coordinator")


def save_checkpoint(state_dir: Path, job: RunningJob) -> None:
    """Written once training starts; the chain holds every step after that."""
    folder = job_folder(state_dir, job.job_id)
    if not (folder / KEY_FILE).exists():
        write_atomically(folder / KEY_FILE, job.coordinator.private_key_json(), mode=0o600)
    document = {
        "job_id": job.job_id, "spec": codec.spec_to_text(job.spec),
        "replies": job.replies, "summary": job.summary, "obfuscation_seconds": job.obfuscation_seconds,
        "started": job.started, "restarts": job.restarts,
        "result": dataclasses.asdict(job.result) if job.result is not None else None,
    }
    write_atomically(folder / CHECKPOINT_FILE, json.dumps(document, indent=1))


def drop_checkpoint(state_dir: Path, job_id: str) -> None:
    """A finished or failed job is never resumed; its key goes with it."""
    for name in (CHECKPOINT_FILE, KEY_FILE):
        (job_folder(state_dir, job_id) / name).unlink(missing_ok=True)


def abort_everywhere(clients: dict[str, PartyJobClient]) -> None:
    for client in clients.values():
        try:
            client.abort_job()
        except FedscoreError:
            pass


def start_job(
    spec: JobSpec, job_id: str, state_dir: Path, progress, align_only: bool, tls: TlsIdentity | None
) -> RunningJob | dict:
    """Keys, preparing every party, the chain's genesis, alignment and opening training; checkpointed.

    Returns the report instead when the job only aligns. A failure before training leaves nothing to resume.
    """
    started = time.time()
    for party in spec.parties:
        if not party.address:
            raise FedscoreError(f"job {spec.name!r}: party {party.name!r} has no address")
    progress(Progress("keys", message=f"generating a {spec.key_bits}-bit Paillier key pair"))
    coordinator = CoordinatorSession(job_id, spec)
    clients = {p.name: PartyJobClient(p.name, p.address, job_id, coordinator.public_key, spec.rpc_timeout, tls)
               for p in spec.parties}
    center = spec.card_center.name
    ledger: LedgerMember | None = None
    try:
        pings = call_each(clients, lambda name, c: c.ping())
        for name, reply in pings.items():
            if reply.name != name:
                raise PeerError(f"the daemon at {clients[name].address} is party {reply.name!r}, not {name!r}")
        signing_key = identity.load_or_create(state_dir)
        coordinator.facts.public_key = identity.public_hex(signing_key)
        ledger = LedgerMember("coordinator", signing_key, job_folder(state_dir, job_id) / "ledger.sqlite", coordinator.facts)
        progress(Progress("prepare", message="parties loading and checking their data"))
        replies = call_each(clients, lambda name, c: c.prepare_job(spec))
        members = {"coordinator": {"role": "coordinator", "key": coordinator.facts.public_key}}
        members.update({name: {"role": r.role, "key": r.signing_key.hex()} for name, r in replies.items()})
        append_block(ledger, clients, [job_start_entry(job_id, spec, members, coordinator.public_key.fingerprint())])
        progress(Progress("align", message="private set intersection between the card center and each partner"))
        aligned_at = time.perf_counter()
        alignment = clients[center].align(spec.min_overlap)
        alignment_seconds = time.perf_counter() - aligned_at
        progress(Progress("align", seconds=alignment_seconds, message=f"{alignment.aligned_rows} applicants held by every party"))
        summary = {
            "aligned_rows": alignment.aligned_rows,
            "overlaps": {o.party: o.rows for o in alignment.overlaps},
            "alignment_seconds": alignment_seconds,
            "party_rows": {name: reply.rows for name, reply in replies.items()},
        }
        append_block(ledger, clients, [alignment_entry(summary["aligned_rows"], summary["overlaps"])])
        if align_only:
            abort_everywhere(clients)
            ledger.close()
            for client in clients.values():
                client.close()
            return {"job": spec.name, "job_id": job_id, **summary, "seconds": time.time() - started}
        if spec.precompute_epochs:
            progress(Progress("prepare", message=f"parties making {spec.precompute_epochs} epoch(s) of obfuscators in advance"))
        obfuscation_seconds = max(call_each(clients, lambda name, c: c.start_training()).values())
        job = RunningJob(
            spec, job_id, coordinator, clients, ledger,
            {name: {"role": r.role, "features": r.features, "rows": r.rows} for name, r in replies.items()},
            summary, obfuscation_seconds, started,
        )
        expect_columns(job)
        save_checkpoint(state_dir, job)
        return job
    except BaseException:
        abort_everywhere(clients)
        drop_checkpoint(state_dir, job_id)
        for client in clients.values():
            client.close()
        if ledger is not None:
            ledger.close()
        raise


def expect_columns(job: RunningJob) -> None:
    center = job.spec.card_center.name
    for name, reply in job.replies.items():
        job.coordinator.expect_columns(name, reply["features"] + (1 if name == center else 0))


def load_job(state_dir: Path, job_id: str, tls: TlsIdentity | None) -> RunningJob:
    """An unfinished job from its checkpoint, after the coordinator restarted (counted: see MAX_RESTARTS)."""
    folder = job_folder(state_dir, job_id)
    document = json.loads((folder / CHECKPOINT_FILE).read_text())
    spec = codec.spec_from_text(document["spec"])
    private_key = PrivateKey.from_json((folder / KEY_FILE).read_text())
    result = TrainingResult(**document["result"]) if document.get("result") else None
    replies, summary = document["replies"], document["summary"]
    obfuscation_seconds, started, restarts = document["obfuscation_seconds"], document["started"], document["restarts"] + 1
    coordinator = CoordinatorSession(job_id, spec, (private_key.public_key, private_key))
    signing_key = identity.load_or_create(state_dir)
    coordinator.facts.public_key = identity.public_hex(signing_key)
    ledger = LedgerMember("coordinator", signing_key, folder / "ledger.sqlite", coordinator.facts)
    clients = {p.name: PartyJobClient(p.name, p.address, job_id, private_key.public_key, spec.rpc_timeout, tls)
               for p in spec.parties}
    job = RunningJob(spec, job_id, coordinator, clients, ledger, replies, summary, obfuscation_seconds, started,
                     restarts=restarts, result=result)
    expect_columns(job)
    save_checkpoint(state_dir, job)
    return job


def recover(job: RunningJob, error: Exception | None, progress) -> dict[Step, StepRecord]:
    """Wait for every member to answer, bring their replicas to the coordinator's head, and rewind every
    party to the chain's last step; returns the chain's steps. Fails the job, naming the member, when one
    stays down past the job's restart_timeout."""
    job.recoveries += 1
    if job.recoveries > MAX_RECOVERIES:
        raise FedscoreError(f"job {job.spec.name!r} gave up after {MAX_RECOVERIES} resumptions; last: {error}")
    job.ledger.abandon_uncommitted()   # the block being signed when the member died is proposed again
    timeout = job.spec.restart_timeout
    cause = f"{error}; " if error is not None else "the coordinator restarted; "
    log.warning("job %s: %swaiting up to %.0f s for every member", job.job_id, cause, timeout)
    progress(Progress("recover", message=f"{cause}waiting up to {timeout:.0f} s for every member, then resuming"))
    deadline = time.monotonic() + timeout
    while True:
        down = []
        for name, client in job.clients.items():
            try:
                client.ping()
            except FedscoreError:
                down.append(name)
        if not down:
            head, after = job.ledger.head, last_step(job.ledger.entries())
            try:
                call_each(job.clients, lambda name, c: c.resume_job(after, head))
                break
            except RECOVERABLE as again:   # another member went down meanwhile: wait for it too
                down = [str(again)]
        if time.monotonic() > deadline:
            reason = f"party {down[0]!r} did not answer" if down[0] in job.clients else down[0]
            raise PeerError(f"{reason} for {timeout:.0f} s (restart_timeout)" + (f" after: {error}" if error else ""))
        time.sleep(0.5)
    forget_steps_off_chain(job.coordinator.facts, job.ledger.seen.steps)
    log.info("job %s resumes after %s", job.job_id, after or "its start")
    progress(Progress("recover", message=f"every member answers; resuming after {after or 'the start'}"))
    return history_from_chain(job.ledger.entries())


def with_recovery(job: RunningJob, progress, action):
    """Run ``action`` again after a recovery when a member died under it."""
    while True:
        try:
            return action()
        except RECOVERABLE as error:
            recover(job, error, progress)


def chain_holds(ledger: LedgerMember, kind: str) -> bool:
    return any(entry.get("kind") == kind for entry in ledger.entries())


def finish_job(job: RunningJob, state_dir: Path, progress, cancelled: threading.Event | None = None,
               history: dict[Step, StepRecord] | None = None) -> dict:
    """Train (from the chain's last step), evaluate, write the models, end and settle the chain; the report.

    Until the settlement is on the chain a failure aborts the job everywhere (no model is kept); after it,
    the job is done whatever happens to the clean-up.
    """
    spec, clients, ledger = job.spec, job.clients, job.ledger
    center = spec.card_center.name
    partners = {p.name: clients[p.name] for p in spec.partners}
    try:
        if job.result is None:
            job.result = run_training(
                job.coordinator, (center, clients[center]), partners, train_rows=job.train_rows,
                total_rows=job.rows, progress=progress, cancelled=cancelled,
                on_step=lambda *event: append_block(ledger, clients, [step_entry(*event)]),
                history=history, recover=lambda error: recover(job, error, progress),
            )
            save_checkpoint(state_dir, job)   # evaluated: a restart goes straight to the models and the chain's end
        finished = with_recovery(job, progress, lambda: call_each(clients, lambda name, c: c.finish_job()))
        digests = {name: f.model_digest for name, f in finished.items()}
        # each is looked for on the chain again when retried: a member may have died after it was committed
        with_recovery(job, progress, lambda: chain_holds(ledger, "job_end") or append_block(
            ledger, clients, [job_end_entry(digests)]))
        with_recovery(job, progress, lambda: chain_holds(ledger, "settlement") or append_block(
            ledger, clients, [settlement_entry(ledger, clients)]))
    except BaseException as error:
        abort_everywhere(clients)
        drop_checkpoint(state_dir, job.job_id)
        record_failure(state_dir, job, error)
        for client in clients.values():
            client.close()
        ledger.close()
        raise
    settlement, head = ledger.entries()[-1], ledger.head
    report = build_report(
        spec, job.job_id, job.coordinator.public_key, job.rows, job.train_rows, job.result,
        parties={
            name: {
                **job.replies[name],
                "model": finished[name].model_path,
                "report": finished[name].report_path,
                "state_dir": finished[name].state_dir,
            }
            for name in clients
        },
        alignment={**job.summary, "obfuscation": spec.obfuscation, "obfuscation_seconds": job.obfuscation_seconds},
        audit={
            "ledgers": {"coordinator": str(ledger.path), **{n: f.ledger_path for n, f in finished.items()}},
            "head": head.hash().hex(),
            "blocks": head.height + 1,
            "settlement": {k: settlement[k] for k in ("currency", "payer", "lines", "total")},
        },
        coordinator_state=str(state_dir),
        seconds=time.time() - job.started,
    )
    report["resumptions"] = job.recoveries + job.restarts
    write_atomically(job_folder(state_dir, job.job_id) / "job.json", json.dumps(report, indent=2) + "\n")
    drop_checkpoint(state_dir, job.job_id)
    for name, client in clients.items():   # settled: a party that misses this only keeps the job in memory
        try:
            client.close_job()
        except FedscoreError as error:
            log.warning("job %s: party %s did not close it: %s", job.job_id, name, error)
        client.close()
    ledger.close()
    return report


def record_failure(state_dir: Path, job: RunningJob | None, error: BaseException, job_id: str = "",
                   card_center: str = "") -> None:
    """Why a job failed, for whoever follows it later (its card center only)."""
    document = {"card_center": job.spec.card_center.name if job else card_center,
                "error": f"{type(error).__name__}: {error}"}
    write_atomically(job_folder(state_dir, job.job_id if job else job_id) / FAILED_FILE, json.dumps(document))


def run_job(
    spec: JobSpec, job_id: str, state_dir: Path, progress, cancelled: threading.Event | None = None,
    align_only: bool = False, tls: TlsIdentity | None = None,
) -> dict:
    """Run one job end to end over gRPC (or only its alignment); returns the report."""
    started = start_job(spec, job_id, state_dir, progress, align_only, tls)
    if isinstance(started, dict):
        return started
    return finish_job(started, state_dir, progress, cancelled)


def resume_job(state_dir: Path, job_id: str, progress, tls: TlsIdentity | None) -> dict:
    """Go on with a job this coordinator was running when it stopped."""
    try:
        job = load_job(state_dir, job_id, tls)
    except (OSError, ValueError, KeyError, TypeError, FedscoreError) as error:
        drop_checkpoint(state_dir, job_id)
        raise FedscoreError(f"coordinator: job {job_id} cannot resume, its checkpoint is unreadable ({error})") from None
    try:
        if job.restarts > MAX_RESTARTS:
            raise FedscoreError(f"coordinator: job {job_id} restarted {MAX_RESTARTS} times; not resuming it again")
        history = recover(job, None, progress)
    except BaseException as error:
        abort_everywhere(job.clients)
        drop_checkpoint(state_dir, job_id)
        record_failure(state_dir, job, error)
        for client in job.clients.values():
            client.close()
        job.ledger.close()
        raise
    return finish_job(job, state_dir, progress, history=history)


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


def spec_of_checkpoint(checkpoint: Path) -> JobSpec:
    document = json.loads(checkpoint.read_text())
    return codec.spec_from_text(document["spec"])


class CoordinatorService(pb_grpc.CoordinatorServicer):
    def __init__(self, config: DaemonConfig):
        self.config = config
        self.label = "coordinator"
        self._runs: dict[str, JobRun] = {}
        self._lock = threading.Lock()

    def resume_unfinished(self) -> list[str]:
        """At start, before serving: go on with every job that was training when this daemon stopped."""
        resumed = []
        for checkpoint in sorted((self.config.state_dir / "jobs").glob(f"*/{CHECKPOINT_FILE}")):
            job_id = checkpoint.parent.name
            try:
                spec = spec_of_checkpoint(checkpoint)
            except (OSError, ValueError, KeyError, StopIteration, FedscoreError) as error:
                log.error("job %s cannot resume: unreadable checkpoint (%s)", job_id, error)
                drop_checkpoint(self.config.state_dir, job_id)
                continue
            run = JobRun(job_id, spec)
            with self._lock:
                self._runs[job_id] = run
            run.start(lambda publish, job_id=job_id: resume_job(self.config.state_dir, job_id, publish, self.config.tls))
            log.warning("resuming job %s, unfinished when the coordinator stopped", job_id)
            resumed.append(job_id)
        return resumed

    @handles_errors
    def Ping(self, request, context):
        return pb.PingReply(name=self.config.name, role="coordinator", version=__version__)

    @handles_errors
    def Status(self, request, context):
        """The jobs this daemon ran or runs since it started that the caller is a member of: state, last
        progress, chain head."""
        caller = caller_name(context)
        with self._lock:
            runs = sorted((j, r) for j, r in self._runs.items() if caller is None or caller in r.members)
        statuses = []
        for job_id, run in runs:
            stage, detail, latest = run.state()
            status = pb.JobStatus(job_id=job_id, stage=stage, detail=detail, chain="training")
            if latest is not None:
                status.epoch = latest.epoch
                status.batch = latest.step
            path = job_folder(self.config.state_dir, job_id) / "ledger.sqlite"
            if path.is_file():
                store = LedgerStore(path, read_only=True)
                try:
                    blocks, head = store.head_summary()
                finally:
                    store.close()
                status.blocks, status.head = blocks, head.hex()
            statuses.append(status)
        return pb.StatusReply(name=self.config.name, role="coordinator", version=__version__, jobs=statuses)

    def RunJob(self, request, context):
        try:
            spec = codec.spec_from_proto(request.job)
            require(context, spec.card_center.name, "coordinator: running a job")   # the card center asks for training
        except FedscoreError as error:
            context.abort(status_for(error), str(error))
        job_id = new_job_id(spec.name)
        cancelled = threading.Event()
        run = JobRun(job_id, spec, grace=spec.restart_timeout, cancelled=cancelled)
        with self._lock:
            self._runs[job_id] = run
        events = run.follow()
        context.add_callback(lambda: run.unfollow(events))   # the submitter went away: see JobRun
        run.start(lambda publish: run_job(spec, job_id, self.config.state_dir, publish, cancelled, request.align_only,
                                          self.config.tls))
        yield from self._stream(run, events, context)

    def FollowJob(self, request, context):
        try:
            check_job_id(request.job_id, self.label)
        except FedscoreError as error:
            context.abort(status_for(error), str(error))
        with self._lock:
            run = self._runs.get(request.job_id)
        if run is None:
            folder = self.config.state_dir / "jobs" / request.job_id
            if (folder / "job.json").is_file():
                report = (folder / "job.json").read_text()
                center = next(p["name"] for p in json.loads(report)["parties"] if p["role"] == "card_center")
                self._allow_follower(context, center)
                yield pb.JobEvent(job_id=request.job_id, report_json=report)
                return
            try:
                failure = json.loads((folder / FAILED_FILE).read_text())
            except (OSError, ValueError):
                context.abort(grpc.StatusCode.NOT_FOUND, f"coordinator: no job {request.job_id} here")
            self._allow_follower(context, failure.get("card_center", ""))
            context.abort(grpc.StatusCode.NOT_FOUND, f"coordinator: job {request.job_id} failed: {failure.get('error')}")
        self._allow_follower(context, run.card_center)
        events = run.follow()
        context.add_callback(lambda: run.unfollow(events))
        yield from self._stream(run, events, context)

    @staticmethod
    def _allow_follower(context, card_center: str) -> None:
        try:
            require(context, card_center, "coordinator: following a job")
        except FedscoreError as error:
            context.abort(status_for(error), str(error))

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
            elif isinstance(item, FedscoreError):
                log.warning("job %s failed: %s", run.job_id, item)
                # "coordinator reports:" tells the submitter the job failed, not that the coordinator went away
                message = f"{self.label} {RELAYED} {item}" if isinstance(item, PeerError) else str(item)
                context.abort(status_for(item), message)
            else:
                log.error("job %s failed", run.job_id, exc_info=item)
                context.abort(status_for(item), f"coordinator: internal error ({type(item).__name__}: {item})")


def add_to_server(service: CoordinatorService, server) -> None:
    pb_grpc.add_CoordinatorServicer_to_server(service, server)
