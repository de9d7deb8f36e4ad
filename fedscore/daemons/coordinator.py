"""The coordinator daemon: holds the Paillier private key and drives each job.

A submitted job runs in its own thread: key generation, preparing every
party, the training steps (fedscore.protocol.training) over gRPC clients,
evaluation, and asking each party to write its model. Progress streams back
to the submitter; the last event is the report. On any failure every party
is told to abort, so no model is left from a failed job.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from pathlib import Path

from fedscore import __version__
from fedscore.config import DaemonConfig, JobSpec
from fedscore.daemons.access import require
from fedscore.errors import FedscoreError, PeerError
from fedscore.model.model_file import write_atomically
from fedscore.model.rows import split_rows
from fedscore.proto import fedscore_pb2 as pb
from fedscore.proto import fedscore_pb2_grpc as pb_grpc
from fedscore.protocol.coordinator import CoordinatorSession, new_job_id
from fedscore.ledger import identity
from fedscore.ledger.member import LedgerMember
from fedscore.protocol.audit import (
    alignment_entry,
    append_block,
    job_end_entry,
    job_start_entry,
    settlement_entry,
    step_entry,
)
from fedscore.protocol.fanout import call_each
from fedscore.protocol.training import Progress, run_training
from fedscore.report import build_report
from fedscore.transport import codec
from fedscore.transport.clients import PartyClient
from fedscore.transport.rpc import servicer_errors, status_for
from fedscore.transport.tls import TlsIdentity

log = logging.getLogger("fedscore.coordinator")
handles_errors = servicer_errors("label")


def run_job(
    spec: JobSpec, state_dir: Path, progress, cancelled: threading.Event | None = None, align_only: bool = False,
    tls: TlsIdentity | None = None,
) -> dict:
    """Run one job end to end over gRPC (or only its alignment); returns the report."""
    started = time.perf_counter()
    job_id = new_job_id(spec.name)
    for party in spec.parties:
        if not party.address:
            raise FedscoreError(f"job {spec.name!r}: party {party.name!r} has no address")
    clients = {p.name: PartyClient(p.name, p.address, timeout=spec.rpc_timeout, tls=tls) for p in spec.parties}
    center = spec.card_center.name
    partners = {p.name: clients[p.name] for p in spec.partners}
    ledger: LedgerMember | None = None
    try:
        pings = call_each(clients, lambda name, c: c.ping())
        for name, reply in pings.items():
            if reply.name != name:
                raise PeerError(f"the daemon at {clients[name].address} is party {reply.name!r}, not {name!r}")
        progress(Progress("keys", message=f"generating a {spec.key_bits}-bit Paillier key pair"))
        coordinator = CoordinatorSession(job_id, spec)
        signing_key = identity.load_or_create(state_dir)
        coordinator.facts.public_key = identity.public_hex(signing_key)
        ledger = LedgerMember("coordinator", signing_key, state_dir / "jobs" / job_id / "ledger.sqlite", coordinator.facts)
        progress(Progress("prepare", message="parties loading and checking their data"))
        replies = call_each(clients, lambda name, c: c.prepare_job(job_id, spec, coordinator.public_key))
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
            call_each(clients, lambda name, c: c.abort_job())
            return {"job": spec.name, "job_id": job_id, **summary, "seconds": time.perf_counter() - started}
        if spec.precompute_epochs:
            progress(Progress("prepare", message=f"parties making {spec.precompute_epochs} epoch(s) of obfuscators in advance"))
        obfuscation_seconds = max(call_each(clients, lambda name, c: c.start_training()).values())
        for name, reply in replies.items():
            coordinator.expect_columns(name, reply.features + (1 if name == center else 0))
        rows = alignment.aligned_rows
        train_rows = len(split_rows(rows, spec.validation, spec.seed)[0])
        result = run_training(
            coordinator, (center, clients[center]), partners, train_rows=train_rows, total_rows=rows,
            progress=progress, cancelled=cancelled,
            on_step=lambda *event: append_block(ledger, clients, [step_entry(*event)]),
        )
        finished = call_each(clients, lambda name, c: c.finish_job())
        append_block(ledger, clients, [job_end_entry({name: f.model_digest for name, f in finished.items()})])
        settlement = settlement_entry(ledger, clients)
        head = append_block(ledger, clients, [settlement])
        call_each(clients, lambda name, c: c.close_job())
    except BaseException:
        for client in clients.values():
            try:
                client.abort_job()
            except FedscoreError:
                pass
        raise
    finally:
        for client in clients.values():
            client.close()
        if ledger is not None:
            ledger.close()
    report = build_report(
        spec, job_id, coordinator.public_key, rows, train_rows, result,
        parties={
            name: {
                "role": replies[name].role,
                "features": replies[name].features,
                "rows": replies[name].rows,
                "model": finished[name].model_path,
                "report": finished[name].report_path,
                "state_dir": finished[name].state_dir,
            }
            for name in clients
        },
        alignment={**summary, "obfuscation": spec.obfuscation, "obfuscation_seconds": obfuscation_seconds},
        audit={
            "ledgers": {"coordinator": str(ledger.path), **{n: f.ledger_path for n, f in finished.items()}},
            "head": head.hash().hex(),
            "blocks": head.height + 1,
            "settlement": {k: settlement[k] for k in ("currency", "payer", "lines", "total")},
        },
        coordinator_state=str(state_dir),
        seconds=time.perf_counter() - started,
    )
    write_atomically(state_dir / "jobs" / job_id / "job.json", json.dumps(report, indent=2) + "\n")
    return report


class CoordinatorService(pb_grpc.CoordinatorServicer):
    def __init__(self, config: DaemonConfig):
        self.config = config
        self.label = "coordinator"

    @handles_errors
    def Ping(self, request, context):
        return pb.PingReply(name=self.config.name, role="coordinator", version=__version__)

    def RunJob(self, request, context):
        try:
            spec = codec.spec_from_proto(request.job)
            require(context, spec.card_center.name, "coordinator: running a job")   # the card center asks for training
        except FedscoreError as error:
            context.abort(status_for(error), str(error))
        events: queue.Queue = queue.Queue()
        done = object()
        cancelled = threading.Event()
        context.add_callback(cancelled.set)  # the submitter went away: stop and abort at the next step

        def work() -> None:
            try:
                report = run_job(spec, self.config.state_dir, events.put, cancelled, request.align_only, self.config.tls)
                events.put(json.dumps(report))
            except BaseException as error:  # handed to the streaming thread below
                events.put(error)
            events.put(done)

        threading.Thread(target=work, name=f"job-{spec.name}", daemon=True).start()
        while True:
            item = events.get()
            if item is done:
                return
            if isinstance(item, Progress):
                yield pb.JobEvent(progress=pb.Progress(
                    stage=item.stage, epoch=item.epoch, epochs=item.epochs, loss=item.loss,
                    seconds=item.seconds, message=item.message, step=item.step, steps=item.steps,
                ))
            elif isinstance(item, str):
                yield pb.JobEvent(report_json=item)
            elif isinstance(item, FedscoreError):
                log.warning("job %s failed: %s", spec.name, item)
                context.abort(status_for(item), str(item))
            else:
                log.error("job %s failed", spec.name, exc_info=item)
                context.abort(status_for(item), f"coordinator: internal error ({type(item).__name__}: {item})")


def add_to_server(service: CoordinatorService, server) -> None:
    pb_grpc.add_CoordinatorServicer_to_server(service, server)
