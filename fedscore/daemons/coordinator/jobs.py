"""A job on the coordinator, from its first call to its report, as one object that cleans up after itself.

A job runs in its own thread: key generation, preparing every party, the
chain's genesis, alignment, with bins the bin statistics and feature selection, the training steps (fedscore.protocol.training)
over gRPC clients, evaluation, and asking each party to write its model.
Once training starts the job is checkpointed (checkpoint.py), so when a
member dies mid-job the coordinator waits for it to come back and every
party rewinds to the chain's last step, and when the coordinator itself
restarts it resumes its unfinished jobs. On any other failure before the
settlement every party is told to abort, so no model is left from a failed
job.

    with RunningJob(folder, spec, tls) as job:
        job.start(progress)
        report = job.finish(progress)
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from fedscore.job import JobSpec
from fedscore.crypto.paillier import PrivateKey, PublicKey
from fedscore.daemons.coordinator.checkpoint import Checkpoint, JobFolder
from fedscore.errors import FedscoreError, PeerError
from fedscore.ledger import identity
from fedscore.ledger.member import LedgerMember
from fedscore.model.rows import split_rows
from fedscore.ledger.cosign import append_block, settlement_entry
from fedscore.ledger.training_rules import (
    TrainingRules,
    alignment_entry,
    job_end_entry,
    job_start_entry,
    last_step,
    step_entry,
)
from fedscore.plural import plural
from fedscore.proto import fedscore_pb2 as pb
from fedscore.protocol.training.coordinator import CoordinatorSession
from fedscore.protocol.training.driver import (
    RECOVERABLE, Progress, StepRecord, TrainingResult, history_from_chain, run_training,
)
from fedscore.protocol.training.fanout import call_each
from fedscore.job import Step
from fedscore.report.build import build_report
from fedscore.transport.clients.party import PartyJobClient
from fedscore.transport.tls import TlsIdentity

log = logging.getLogger("fedscore.coordinator")

MAX_RECOVERIES = 20          # resumptions one job may go through before it gives up
MAX_RESTARTS = 5             # coordinator restarts one job may go through (a crash that recurs is not resumed forever)
POLL_SECONDS = 0.5           # between pings while waiting for a member to come back

Progressed = Callable[[Progress], None]
Result = TypeVar("Result")


def abort_everywhere(clients: dict[str, PartyJobClient]) -> None:
    for client in clients.values():
        try:
            client.abort_job()
        except FedscoreError:
            pass


def chain_holds(ledger: LedgerMember, kind: str) -> bool:
    return any(entry.get("kind") == kind for entry in ledger.entries())


class RunningJob:
    """One job and what it holds open: a client per party, the coordinator's session and chain, its folder.

    Used as a context manager, it cleans up exactly once however the block ends (see :meth:`close`).
    """

    def __init__(self, folder: JobFolder, spec: JobSpec, tls: TlsIdentity | None):
        self.folder = folder
        self.job_id = folder.job_id
        self.spec = spec
        self.tls = tls
        self.clients: dict[str, PartyJobClient] = {}   # once the job's public key is known
        self.coordinator: CoordinatorSession | None = None
        self.ledger: LedgerMember | None = None
        self.checkpoint: Checkpoint | None = None   # once training starts
        self.recoveries = 0
        self.settled = False    # the settlement is on the chain: the job is done whatever happens to the clean-up
        self._closed = False

    def __enter__(self) -> "RunningJob":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.close(error)

    def close(self, error: BaseException | None = None) -> None:
        """Once: a job that failed before its settlement is aborted everywhere and its failure recorded; a job
        that ended drops its checkpoint and key (one that failed after its settlement keeps them, so a restarted
        coordinator writes its report); a settled job is closed on every party; the clients and the chain close."""
        if self._closed:
            return
        self._closed = True
        try:
            if error is not None and not self.settled:
                abort_everywhere(self.clients)
                self.folder.drop_checkpoint()
                self.folder.record_failure(self.spec.card_center.name, error)
            elif error is None:
                self.folder.drop_checkpoint()
                if self.settled:
                    self._close_everywhere()
        finally:
            for client in self.clients.values():
                client.close()
            if self.ledger is not None:
                self.ledger.close()

    def _close_everywhere(self) -> None:
        for name, client in self.clients.items():   # settled: a party that misses this only keeps the job in memory
            try:
                client.close_job()
            except FedscoreError as error:
                log.warning("job %s: party %s did not close it: %s", self.job_id, name, error)

    @property
    def rows(self) -> int:
        return self.checkpoint.summary["aligned_rows"]

    @property
    def train_rows(self) -> int:
        return len(split_rows(self.rows, self.spec.validation, self.spec.seed)[0])

    # -- start ----------------------------------------------------------------

    def start(self, progress: Progressed, align_only: bool = False) -> dict | None:
        """Keys, preparing every party, the chain's genesis, alignment and opening training; checkpointed.

        Returns the alignment's report instead when the job only aligns.
        """
        spec, job_id = self.spec, self.job_id
        started = time.time()
        if not align_only:   # alignment encrypts nothing: an align-only job makes no key pair
            progress(Progress("keys", message=f"generating a {spec.key_bits}-bit Paillier key pair"))
        coordinator = CoordinatorSession(job_id, spec, align_only=align_only)
        clients = self._dial(coordinator.public_key)
        pings = call_each(clients, lambda name, c: c.ping())
        for name, reply in pings.items():
            if reply.name != name:
                raise PeerError(f"the daemon at {clients[name].address} is party {reply.name!r}, not {name!r}")
        self._open(coordinator)
        progress(Progress("prepare", message="parties loading and checking their data"))
        replies = call_each(clients, lambda name, c: c.prepare_job(spec))
        members = {"coordinator": {"role": "coordinator", "key": coordinator.facts.public_key}}
        members.update({name: member_entry(r) for name, r in replies.items()})
        append_block(self.ledger, clients, [job_start_entry(job_id, spec, members, coordinator.facts.paillier_fingerprint)])
        summary, alignment = self._align(progress)
        summary["party_rows"] = {name: reply.rows for name, reply in replies.items()}
        append_block(self.ledger, clients, [alignment_entry(
            summary["aligned_rows"], summary["overlaps"], alignment.card_center_ids, alignment.label_digest)])
        if align_only:
            abort_everywhere(clients)
            return {"job": spec.name, "job_id": job_id, **summary, "seconds": time.time() - started}
        if spec.precompute_epochs:
            progress(Progress("prepare", message=f"parties making {plural(spec.precompute_epochs, 'epoch')} of obfuscators in advance"))
        started_training = call_each(clients, lambda name, c: c.start_training())
        coordinator.check_partner_batches({name: r.columns for name, r in started_training.items()},
                                          len(split_rows(summary["aligned_rows"], spec.validation, spec.seed)[0]))
        obfuscation_seconds = max(r.obfuscation_seconds for r in started_training.values())
        replies = {name: {"role": r.role, "features": r.features, "rows": r.rows, "columns": started_training[name].columns}
                   for name, r in replies.items()}
        self._training(Checkpoint(job_id, spec, replies, summary, obfuscation_seconds, started))
        return None

    def _align(self, progress: Progressed) -> tuple[dict, pb.AlignReply]:
        """Private set intersection between the card center and each partner; what it found, and the reply."""
        progress(Progress("align", message="private set intersection between the card center and each partner"))
        aligned_at = time.perf_counter()
        alignment = self.clients[self.spec.card_center.name].align(self.spec.min_overlap)
        alignment_seconds = time.perf_counter() - aligned_at
        progress(Progress("align", seconds=alignment_seconds, message=f"{plural(alignment.aligned_rows, 'applicant')} held by every party"))
        return {
            "aligned_rows": alignment.aligned_rows,
            "overlaps": {o.party: o.rows for o in alignment.overlaps},
            "alignment_seconds": alignment_seconds,
        }, alignment

    def restore(self, checkpoint: Checkpoint, private_key: PrivateKey) -> None:
        """Pick up a checkpointed job after the coordinator restarted (counted: see MAX_RESTARTS)."""
        self._dial(private_key.public_key)
        checkpoint.restarts += 1
        self._open(CoordinatorSession(self.job_id, self.spec, (private_key.public_key, private_key)))
        self._training(checkpoint)

    def _dial(self, public_key: PublicKey | None) -> dict[str, PartyJobClient]:
        """A client per party for this job, under the job's public key (None: an align-only job)."""
        self.clients = {p.name: PartyJobClient(p.name, p.address, self.job_id, public_key, self.spec.rpc_timeout, self.tls)
                        for p in self.spec.parties}
        return self.clients

    def _open(self, coordinator: CoordinatorSession) -> CoordinatorSession:
        """The coordinator's session and its replica of the job's chain."""
        signing_key = identity.load_or_create(self.folder.state_dir)
        coordinator.facts.public_key = identity.public_hex(signing_key)
        self.coordinator = coordinator
        self.ledger = LedgerMember("coordinator", signing_key, self.folder.ledger_path, TrainingRules(coordinator.facts))
        return coordinator

    def _training(self, checkpoint: Checkpoint) -> None:
        """Training is open: how many gradient values each party sends, and the checkpoint."""
        self.checkpoint = checkpoint
        for name, reply in checkpoint.replies.items():
            self.coordinator.expect_columns(name, reply["columns"])
        self._save()

    def _selected(self, columns: dict[str, int]) -> None:
        """Features selected by IV: each party's column count from now on, kept for a restarted coordinator."""
        for name, count in columns.items():
            self.checkpoint.replies[name]["columns"] = count
        self._save()

    def _save(self) -> None:
        self.folder.save(self.checkpoint, self.coordinator.private_key_json())

    # -- recover --------------------------------------------------------------

    def recover(self, error: Exception | None, progress: Progressed) -> dict[Step, StepRecord]:
        """Wait for every member to answer, bring their replicas to the coordinator's head, and rewind every
        party to the chain's last step; returns the chain's steps. Fails the job, naming the member, when one
        stays down past the job's restart_timeout."""
        self.recoveries += 1
        if self.recoveries > MAX_RECOVERIES:
            raise FedscoreError(f"job {self.spec.name!r} gave up after {MAX_RECOVERIES} resumptions; last: {error}")
        self.ledger.abandon_uncommitted()   # the block being signed when the member died is proposed again
        timeout = self.spec.restart_timeout
        cause = f"{error}; " if error is not None else "the coordinator restarted; "
        log.warning("job %s: %swaiting up to %.0f s for every member", self.job_id, cause, timeout)
        progress(Progress("recover", message=f"{cause}waiting up to {timeout:.0f} s for every member, then resuming"))
        deadline = time.monotonic() + timeout
        while True:
            down = [name for name, client in self.clients.items() if not answers(client)]
            if not down:
                head, after = self.ledger.head, last_step(self.ledger.entries())
                try:
                    call_each(self.clients, lambda name, c: c.resume_job(after, head))
                    break
                except RECOVERABLE as again:   # another member went down meanwhile: wait for it too
                    down = [str(again)]
            if time.monotonic() > deadline:
                reason = f"party {down[0]!r} did not answer" if down[0] in self.clients else down[0]
                raise PeerError(f"{reason} for {timeout:.0f} s (restart_timeout)" + (f" after: {error}" if error else ""))
            time.sleep(POLL_SECONDS)
        self.ledger.rules.forget_steps_off_chain()
        log.info("job %s resumes after %s", self.job_id, after or "its start")
        progress(Progress("recover", message=f"every member answers; resuming after {after or 'the start'}"))
        return history_from_chain(self.ledger.entries())

    def _with_recovery(self, progress: Progressed, action: Callable[[], Result]) -> Result:
        """Run ``action`` again after a recovery when a member died under it."""
        while True:
            try:
                return action()
            except RECOVERABLE as error:
                self.recover(error, progress)

    # -- finish ---------------------------------------------------------------

    def finish(self, progress: Progressed, cancelled: threading.Event | None = None,
               history: dict[Step, StepRecord] | None = None) -> dict:
        """Train (from the chain's last step), evaluate, write the models, end and settle the chain; the report."""
        clients, ledger = self.clients, self.ledger
        if self.checkpoint.result is None:
            self.checkpoint.result = self._train(progress, cancelled, history)
            self._save()   # evaluated: a restart goes straight to the models and the chain's end
        finished = self._with_recovery(progress, lambda: call_each(clients, lambda name, c: c.finish_job()))
        digests = {name: f.model_digest for name, f in finished.items()}
        # each is looked for on the chain again when retried: a member may have died after it was committed
        self._with_recovery(progress, lambda: chain_holds(ledger, "job_end") or append_block(
            ledger, clients, [job_end_entry(digests)]))
        self._with_recovery(progress, lambda: chain_holds(ledger, "settlement") or append_block(
            ledger, clients, [settlement_entry(ledger, clients)]))
        self.settled = True
        report = self._report(finished)
        self.folder.write_report(report)
        return report

    def _train(self, progress: Progressed, cancelled: threading.Event | None,
               history: dict[Step, StepRecord] | None) -> TrainingResult:
        clients, center = self.clients, self.spec.card_center.name
        return run_training(
            self.coordinator, (center, clients[center]), {p.name: clients[p.name] for p in self.spec.partners},
            train_rows=self.train_rows, total_rows=self.rows, progress=progress, cancelled=cancelled,
            on_step=lambda *event: append_block(self.ledger, clients, [step_entry(*event)]),
            history=history, recover=lambda error: self.recover(error, progress), on_columns=self._selected,
        )

    def _report(self, finished: dict) -> dict:
        spec, checkpoint, ledger = self.spec, self.checkpoint, self.ledger
        settlement, head = ledger.entries()[-1], ledger.head
        return build_report(
            spec, self.job_id, self.coordinator.public_key, self.rows, self.train_rows, checkpoint.result,
            parties={
                name: {
                    **checkpoint.replies[name],
                    "model": finished[name].model_path,
                    "report": finished[name].report_path,
                    "state_dir": finished[name].state_dir,
                }
                for name in self.clients
            },
            alignment={**checkpoint.summary, "obfuscation": spec.obfuscation,
                       "obfuscation_seconds": checkpoint.obfuscation_seconds},
            audit={
                "ledgers": {"coordinator": str(ledger.path), **{n: f.ledger_path for n, f in finished.items()}},
                "head": head.hash().hex(),
                "blocks": head.height + 1,
                "settlement": {k: settlement[k] for k in ("currency", "payer", "lines", "total")},
            },
            coordinator_state=str(self.folder.state_dir),
            seconds=time.time() - checkpoint.started,
            resumptions=self.recoveries + checkpoint.restarts,
        )


def member_entry(reply: pb.PrepareJobReply) -> dict:
    """A party in the genesis entry: its role and signing key, and a partner's use of its job budget."""
    entry = {"role": reply.role, "key": reply.signing_key.hex()}
    if reply.HasField("budget"):
        b = reply.budget
        entry["budget"] = {"card_center": b.card_center, "jobs": b.jobs, "max_jobs": b.max_jobs,
                           "window_days": b.window_days}
    return entry


def answers(client: PartyJobClient) -> bool:
    try:
        client.ping()
    except FedscoreError:
        return False
    return True


def run_job(
    spec: JobSpec, job_id: str, state_dir: Path, progress: Progressed, cancelled: threading.Event | None = None,
    align_only: bool = False, tls: TlsIdentity | None = None,
) -> dict:
    """Run one job end to end over gRPC (or only its alignment); returns the report."""
    for party in spec.parties:
        if not party.address:
            raise FedscoreError(f"job {spec.name!r}: party {party.name!r} has no address")
    with RunningJob(JobFolder(state_dir, job_id), spec, tls) as job:
        aligned = job.start(progress, align_only)
        return aligned if aligned is not None else job.finish(progress, cancelled)


def resume_job(state_dir: Path, job_id: str, progress: Progressed, tls: TlsIdentity | None) -> dict:
    """Go on with a job this coordinator was running when it stopped."""
    folder = JobFolder(state_dir, job_id)
    try:
        checkpoint, private_key = folder.load()
    except (OSError, ValueError, KeyError, TypeError, FedscoreError) as error:
        folder.drop_checkpoint()
        raise FedscoreError(f"coordinator: job {job_id} cannot resume, its checkpoint is unreadable ({error})") from None
    with RunningJob(folder, checkpoint.spec, tls) as job:
        job.restore(checkpoint, private_key)
        if checkpoint.restarts > MAX_RESTARTS:
            raise FedscoreError(f"coordinator: job {job_id} restarted {MAX_RESTARTS} times; not resuming it again")
        return job.finish(progress, history=job.recover(None, progress))
