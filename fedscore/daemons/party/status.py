"""Who a party daemon is, and what it holds: its training jobs (stage, last step, chain position) and the
models it serves. A caller sees only the jobs and models it is a member of."""
from __future__ import annotations

import grpc

from fedscore import __version__
from fedscore.daemons.access import COORDINATOR
from fedscore.daemons.party.jobs import Jobs, PreparedJob
from fedscore.daemons.party.scoring import ScoringHost
from fedscore.ledger.block import decode_entry
from fedscore.proto import fedscore_pb2 as pb
from fedscore.transport.tls import caller_name


class PartyStatus:
    """The Party service: Ping and Status."""

    def __init__(self, name: str, jobs: Jobs, scoring: ScoringHost):
        self.name = name
        self.jobs = jobs
        self.scoring = scoring

    def ping(self, request: pb.PingRequest, context: grpc.ServicerContext) -> pb.PingReply:
        return pb.PingReply(name=self.name, role="party", version=__version__)

    def status(self, request: pb.PingRequest, context: grpc.ServicerContext) -> pb.StatusReply:
        caller = caller_name(context)
        statuses = [self._job_status(job) for job in self.jobs.listed()
                    if caller is None or caller in {COORDINATOR, *(p.name for p in job.spec.parties)}]
        statuses += self._model_statuses(caller)
        return pb.StatusReply(name=self.name, role="party", version=__version__, jobs=statuses)

    @staticmethod
    def _job_status(job: PreparedJob) -> pb.JobStatus:
        done = job.session.last_step if job.session is not None else None
        stage = "training" if job.session is not None else "aligned" if job.aligned_rows is not None else "prepared"
        blocks, head = job.ledger.store.head_summary()
        return pb.JobStatus(
            job_id=job.job_id, stage=stage, epoch=done.epoch + 1 if done else 0, batch=done.batch + 1 if done else 0,
            blocks=blocks, head=head.hex(), chain="training",
        )

    def _model_statuses(self, caller: str | None) -> list[pb.JobStatus]:
        statuses = []
        for model in self.scoring.open_models():
            ledger = self.scoring.ledger(model["job_id"])
            if caller is not None and caller not in decode_entry(ledger.genesis.entries[0]).get("members", {}):
                continue
            blocks, head = ledger.store.head_summary()
            detail = model["role"] + (f", {model['unbilled']} answers unbilled" if "unbilled" in model else "")
            statuses.append(pb.JobStatus(job_id=model["job_id"], stage="serving", blocks=blocks, head=head.hex(),
                                         chain="scoring", detail=detail))
        return statuses
