"""A party's replicas of the chains it is a member of, by kind: a job's training chain (proposed by the
coordinator) and a model's scoring chain (proposed by the card center). A member checks each block
against what it saw itself before co-signing it, and countersigns a settlement only if it follows from
its own replica."""
from __future__ import annotations

from typing import Protocol

import grpc
from nacl.signing import SigningKey

from fedscore.daemons.access import COORDINATOR, require
from fedscore.daemons.party.jobs import Jobs
from fedscore.daemons.party.scoring import ScoringHost
from fedscore.errors import ProtocolError
from fedscore.ledger.block import decode_entry, encode_entry
from fedscore.ledger.member import LedgerMember
from fedscore.ledger.settlement import settlement_body, settlement_message
from fedscore.proto import fedscore_pb2 as pb
from fedscore.transport import codec


class ChainKind(Protocol):
    """One kind of chain: who proposes its blocks, and how a settlement of it is countersigned."""

    def replica(self, job_id: str, context: grpc.ServicerContext) -> LedgerMember:
        """This member's replica, if the caller is the chain's proposer."""

    def committed(self, job_id: str) -> None:
        """A block was appended to the replica."""

    def countersign(self, job_id: str, replica: LedgerMember, body: bytes) -> bytes:
        """This member's signature of a settlement, once checked against its replica."""


class TrainingChain:
    """A job's training chain: the coordinator proposes every block."""

    def __init__(self, jobs: Jobs, key: SigningKey):
        self.jobs = jobs
        self.key = key
        self.label = jobs.label

    def replica(self, job_id: str, context: grpc.ServicerContext) -> LedgerMember:
        require(context, COORDINATOR, f"{self.label}: job {job_id}")
        return self.jobs.get(job_id).ledger

    def committed(self, job_id: str) -> None:
        pass

    def countersign(self, job_id: str, replica: LedgerMember, body: bytes) -> bytes:
        expected = settlement_body(replica.entries())
        try:
            decoded = decode_entry(body)
        except ValueError:
            raise ProtocolError(f"{self.label}: the settlement to sign is not JSON") from None
        if body != encode_entry(expected):
            raise ProtocolError(
                f"{self.label}: refuses to sign a settlement that does not follow from its own replica "
                "(fee contract, recorded steps and overlaps)"
            )
        return self.key.sign(settlement_message(decoded)).signature


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

    def countersign(self, job_id: str, replica: LedgerMember, body: bytes) -> bytes:
        return self.scoring.sign_settlement(job_id, body)


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
        kind = self._kind(request.chain)
        replica = kind.replica(request.job_id, context)
        return pb.Signature(signature=kind.countersign(request.job_id, replica, request.body))
