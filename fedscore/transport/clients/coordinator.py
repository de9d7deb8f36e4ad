"""A job submitter's view of the coordinator: run a job and follow its progress."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import grpc

from fedscore.config import JobSpec
from fedscore.crypto.certs import COORDINATOR
from fedscore.errors import PeerError
from fedscore.proto import fedscore_pb2 as pb
from fedscore.proto import fedscore_pb2_grpc as pb_grpc
from fedscore.protocol.training import Progress
from fedscore.transport import codec
from fedscore.transport.clients.base import Peer, ServiceClient
from fedscore.transport.rpc import PING_TIMEOUT, RELAYED
from fedscore.transport.tls import TlsIdentity


class CoordinatorClient(ServiceClient):
    """Submits a job to a coordinator and follows its progress."""

    stub_class = pb_grpc.CoordinatorStub

    def __init__(self, address: str, tls: TlsIdentity | None = None):
        super().__init__(Peer(COORDINATOR, address, tls, PING_TIMEOUT, label="coordinator"))

    def ping(self) -> pb.PingReply:
        return self._call("Ping", pb.PingRequest(), timeout=PING_TIMEOUT)

    def run_job(self, spec: JobSpec, progress: Callable[[Progress], None], align_only: bool = False,
                follow_seconds: float = 0.0) -> str:
        """Run ``spec`` (or only its alignment); returns the report JSON.

        If the coordinator goes away mid-job, keep trying for ``follow_seconds`` to follow the job again: a
        restarted coordinator resumes it.
        """
        request = pb.RunJobRequest(job=codec.spec_to_proto(spec), align_only=align_only)
        events: Iterator[pb.JobEvent] = self._stub.RunJob(request)
        job_id, lost_at = "", None
        while True:
            try:
                for event in events:
                    job_id, lost_at = event.job_id or job_id, None
                    if event.HasField("report_json"):
                        return event.report_json
                    p = event.progress
                    progress(Progress(p.stage, p.epoch, p.epochs, p.loss, p.seconds, p.message, p.step, p.steps))
                raise PeerError(f"coordinator at {self.peer.address} ended the job without a report")
            except grpc.RpcError as error:
                gone = error.code() == grpc.StatusCode.UNAVAILABLE and RELAYED not in (error.details() or "")
                if not gone or not job_id or follow_seconds <= 0:
                    raise self.peer.error(error) from None
                now = time.monotonic()
                if lost_at is None:
                    lost_at = now
                    progress(Progress("recover", message=f"lost the coordinator; following job {job_id} when it is back"))
                elif now - lost_at > follow_seconds:
                    raise self.peer.error(error, follow_seconds) from None
                time.sleep(0.5)
                events = self._stub.FollowJob(pb.JobRef(job_id=job_id))
