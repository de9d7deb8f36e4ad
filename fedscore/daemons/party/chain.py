"""A party's replicas of the chains it is a member of, by kind: a job's training chain (proposed by the
coordinator), a model's scoring chain and a card center and partner's audience chain (proposed by the card
center). The replica (LedgerMember, under
its chain's rules) checks each block against what this member saw itself before co-signing it, and
countersigns a settlement only if it follows from the replica."""
from __future__ import annotations

from typing import Protocol

import grpc

from fedscore.daemons.access import COORDINATOR, require
from fedscore.daemons.party.audience import AudienceHost
from fedscore.daemons.party.jobs import Jobs
from fedscore.daemons.party.scoring import ScoringHost
from fedscore.errors import ProtocolError
from fedscore.ledger.member import LedgerMember
from fedscore.proto import fedscore_pb2 as pb
from fedscore.transport import codec


class ChainKind(Protocol):
    """One kind of chain: who proposes its blocks, and what follows a commit."""

    def proposer(self, job_id: str) -> str:
        """The member that proposes the blocks of ``job_id``'s chain of this kind."""

    def replica(self, job_id: str) -> LedgerMember:
        """This member's replica of ``job_id``'s chain of this kind."""

    def committed(self, job_id: str) -> None:
        """A block was appended to the replica."""


class TrainingChain:
    """A job's training chain: the coordinator proposes every block."""

    def __init__(self, jobs: Jobs):
        self.jobs = jobs

    def proposer(self, job_id: str) -> str:
        return COORDINATOR

    def replica(self, job_id: str) -> LedgerMember:
        return self.jobs.get(job_id).ledger

    def committed(self, job_id: str) -> None:
        self.jobs.committed(job_id)


class ScoringChain:
    """A served model's scoring chain: the card center that runs the model proposes every block."""

    def __init__(self, scoring: ScoringHost):
        self.scoring = scoring

    def proposer(self, job_id: str) -> str:
        return self.scoring.card_center_of(job_id)

    def replica(self, job_id: str) -> LedgerMember:
        return self.scoring.ledger(job_id)

    def committed(self, job_id: str) -> None:
        self.scoring.committed(job_id)


class AudienceChainKind:
    """A card center and partner's audience chain (fedscore.daemons.party.audience): the card center proposes."""

    def __init__(self, audience: AudienceHost):
        self.audience = audience

    def proposer(self, job_id: str) -> str:
        return self.audience.proposer(job_id)

    def replica(self, job_id: str) -> LedgerMember:
        return self.audience.ledger(job_id)

    def committed(self, job_id: str) -> None:
        self.audience.committed(job_id)


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

    def _proposers_replica(self, chain: str, job_id: str, context: grpc.ServicerContext) -> LedgerMember:
        """This member's replica of the chain, if the caller is its proposer: the role table lets both the
        coordinator and card centers in, only the chain's kind and job say which of them proposes it."""
        kind = self._kind(chain)
        require(context, kind.proposer(job_id), f"{self.label}: {chain or 'training'} chain of {job_id}")
        return kind.replica(job_id)

    def propose(self, request: pb.Block, context: grpc.ServicerContext) -> pb.Signature:
        replica = self._proposers_replica(request.chain, request.job_id, context)
        return pb.Signature(signature=replica.sign(codec.block_from_proto(request)))

    def commit(self, request: pb.Block, context: grpc.ServicerContext) -> pb.Empty:
        self._proposers_replica(request.chain, request.job_id, context).commit(codec.block_from_proto(request))
        self._kind(request.chain).committed(request.job_id)
        return pb.Empty()

    def sign_settlement(self, request: pb.SettlementRequest, context: grpc.ServicerContext) -> pb.Signature:
        replica = self._proposers_replica(request.chain, request.job_id, context)
        return pb.Signature(signature=replica.countersign_settlement(request.body))
