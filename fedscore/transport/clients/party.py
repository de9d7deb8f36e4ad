"""A party daemon's Party service (any member may ask who it is), and the coordinator's or the card
center's whole view of a party in one job: the clients of its services on one channel."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from gmpy2 import mpz

from fedscore.job import JobSpec
from fedscore.crypto.paillier import PublicKey
from fedscore.ledger.block import Block
from fedscore.proto import fedscore_pb2 as pb
from fedscore.proto import fedscore_pb2_grpc as pb_grpc
from fedscore.job import Step
from fedscore.transport.clients.alignment import AlignmentClient
from fedscore.transport.clients.base import Peer, ServiceClient
from fedscore.transport.clients.chain import ChainClient, ChainMember
from fedscore.transport.clients.jobs import JobsClient
from fedscore.transport.clients.training import TrainingClient
from fedscore.transport.rpc import PING_TIMEOUT, STEP_TIMEOUT
from fedscore.transport.tls import TlsIdentity


class PartyClient(ServiceClient):
    """Who a party daemon is (any member may ask)."""

    stub_class = pb_grpc.PartyStub

    def ping(self) -> pb.PingReply:
        return self._call("Ping", pb.PingRequest(), timeout=PING_TIMEOUT)


class PartyJobClient(PartyClient, ChainMember):
    """A party's daemon as one job sees it: ``jobs``, ``training``, ``alignment`` and ``chain`` (its training
    chain) share one channel. It passes on the methods the coordinator's driver and chain calls use, so one
    object is the party's handle in every protocol step."""

    def __init__(self, name: str, address: str, job_id: str, public_key: PublicKey | None, timeout: float = STEP_TIMEOUT,
                 tls: TlsIdentity | None = None, label: str = ""):
        super().__init__(Peer(name, address, tls, timeout, label))
        self.jobs = JobsClient(self.peer, job_id, public_key)
        self.training = TrainingClient(self.peer, job_id, public_key)
        self.alignment = AlignmentClient(self.peer, job_id)
        self.chain = ChainClient(self.peer, job_id)

    @property
    def address(self) -> str:
        return self.peer.address

    # -- Jobs ------------------------------------------------------------------

    def prepare_job(self, spec: JobSpec) -> pb.PrepareJobReply:
        return self.jobs.prepare_job(spec)

    def start_training(self) -> pb.StartTrainingReply:
        return self.jobs.start_training()

    def finish_job(self) -> pb.FinishJobReply:
        return self.jobs.finish_job()

    def abort_job(self) -> None:
        self.jobs.abort_job()

    def close_job(self) -> None:
        self.jobs.close_job()

    def resume_job(self, after: Step | None, head: Block) -> None:
        self.jobs.resume_job(after, head)

    # -- Alignment and Training: the handles of the training driver ------------

    def align(self, min_overlap: int) -> pb.AlignReply:
        return self.alignment.align(min_overlap)

    def masked_gradient(self, step: Step) -> list[mpz]:
        return self.training.masked_gradient(step)

    def apply_gradient(self, step: Step, values: list[int]) -> None:
        self.training.apply_gradient(step, values)

    def masked_bin_sums(self) -> dict[str, list[mpz]]:
        return self.training.masked_bin_sums()

    def apply_bin_sums(self, values: Mapping[str, list[int]]) -> dict[str, int]:
        return self.training.apply_bin_sums(values)

    def forward_step(self, step: Step) -> None:
        self.training.forward_step(step)

    def loss_share(self, step: Step) -> tuple[mpz, dict[str, str]]:
        return self.training.loss_share(step)

    def evaluate(self, mask_sum: np.ndarray) -> dict:
        return self.training.evaluate(mask_sum)

    def score_mask_seed(self) -> bytes:
        return self.training.score_mask_seed()
