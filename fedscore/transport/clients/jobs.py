"""The coordinator's calls of a party's Jobs service: a training job's life at that party."""
from __future__ import annotations

from fedscore.job import JobSpec
from fedscore.ledger.block import Block
from fedscore.proto import fedscore_pb2 as pb
from fedscore.proto import fedscore_pb2_grpc as pb_grpc
from fedscore.job import Step
from fedscore.transport import codec
from fedscore.transport.clients.base import JobClient
from fedscore.transport.rpc import PING_TIMEOUT


class JobsClient(JobClient):
    """One job at one party: prepared with the job's public key, started, then finished, aborted or closed."""

    stub_class = pb_grpc.JobsStub

    def _ref(self) -> pb.JobRef:
        return pb.JobRef(job_id=self.job_id)

    def prepare_job(self, spec: JobSpec) -> pb.PrepareJobReply:
        request = pb.PrepareJobRequest(
            job_id=self.job_id, job=codec.spec_to_proto(spec), party=self.peer.name,
            public_key=b"" if self.public_key is None else self.public_key.to_bytes(),   # none: align only
        )
        return self._call("PrepareJob", request)

    def start_training(self) -> pb.StartTrainingReply:
        """Open the training session: the seconds spent making obfuscators in advance, and its column count."""
        return self._call("StartTraining", self._ref())

    def finish_job(self) -> pb.FinishJobReply:
        return self._call("FinishJob", self._ref())

    def abort_job(self) -> None:
        self._call("AbortJob", self._ref(), timeout=PING_TIMEOUT)

    def close_job(self) -> None:
        self._call("CloseJob", self._ref(), timeout=PING_TIMEOUT)

    def resume_job(self, after: Step | None, head: Block) -> None:
        request = pb.ResumeRequest(job_id=self.job_id, started=after is not None, head=codec.block_to_proto(self.job_id, head))
        if after is not None:
            request.epoch, request.batch = after.epoch, after.batch
        self._call("ResumeJob", request)
