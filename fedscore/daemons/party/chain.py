"""A party's replicas of the chains it is a member of, by kind: a job's training chain (proposed by the
coordinator) and a model's scoring chain (proposed by the card center). The replica (LedgerMember, under
its chain's rules) checks each block against what this member saw itself before co-signing it, and
countersigns a settlement only if it follows from the replica."""
from __future__ import annotations

from typing import Protocol

import grpc

from fedscore.daemons.access import COORDINATOR, require
from fedscore.daemons.party.jobs import Jobs
from fedscore.daemons.party.scoring import ScoringHost
from fedscore.errors import ProtocolError
from fedscore.ledger.member import LedgerMember
from fedscore.proto import fedscore_pb2 as pb
from fedscore.transport import codec


class ChainKind(Protocol):
    """One kind of chain: who proposes its blocks, and what follows a commit."""

    def replica(self, job_id: str, context: grpc.ServicerContext) -> LedgerMember:
        """This member's replica, if the caller is the chain's proposer."""

    def committed(self, job_id: str) -> None:
        """A block was appended to the replica."""


class TrainingChain:
    """A job's training chain: the coordinator proposes every block."""

    def __init__(self, jobs: Jobs):
        self.jobs = jobs
        self.label = jobs.label

    def replica(self, job_id: str, context: grpc.ServicerContext) -> LedgerMember:
        require(context, COORDINATOR, f"{self.label}: job {job_id}")
        return self.jobs.get(job_id).ledger

    def committed(self, job_id: str) -> None:
        pass


class ScoringChain:
    """A served model's scoring chain: the card center that runs the model proposes every block."""

    def __init__(self, scoring: ScoringHost, label: str):
        self.scoring = scoring
        self.label = label

    def replica(self, job_id: str, context: grpc.ServicerContext) -> LedgerMember:
        require(context, self.scoring.card_center_of(job_id), f"{self.label}: scoring chain of {job_id}")
        return self.scoring.ledger(job_id)

    def committed(self, job_id: str) -> None:
        self.scoring.committed(job_id)


class Chains:
    """The Chain service: each call goes to the chain kind the request names ("" is a training chain)."""

    def __init__(self, label: str, kinds: dict[str, ChainKind]):
        self.label = label
        self.kinds = kinds

    def _kind(self, name: str) -> ChainKind:
        kind = self.kinds.get(name or "training")
        if kind is None:
            raise ProtocolError(f"{self.label}: no chain {name!r}")
        return kind

    def propose(self, request: pb.Block, context: grpc.ServicerContext) -> pb.Signature:
        block = codec.block_from_proto(request)
        return pb.Signature(signature=self._kind(request.chain).replica(request.job_id, context).sign(block))

    def commit(self, request: pb.Block, context: grpc.ServicerContext) -> pb.Empty:
        kind = self._kind(request.chain)
        kind.replica(request.job_id, context).commit(codec.block_from_proto(request))
        kind.committed(request.job_id)
        return pb.Empty()

    def sign_settlement(self, request: pb.SettlementRequest, context: grpc.ServicerContext) -> pb.Signature:
        replica = self._kind(request.chain).replica(request.job_id, context)
        return pb.Signature(signature=replica.countersign_settlement(request.body))
