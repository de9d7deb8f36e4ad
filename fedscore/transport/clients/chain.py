"""Calls of a member's Chain service by a chain's proposer: the coordinator for a job's training chain, the
card center for a model's scoring chain (a ChainClient is the LedgerHandle and SettlementSigner of
fedscore.ledger.cosign)."""
from __future__ import annotations

from fedscore.ledger.block import Block
from fedscore.proto import fedscore_pb2 as pb
from fedscore.proto import fedscore_pb2_grpc as pb_grpc
from fedscore.transport import codec
from fedscore.transport.clients.base import Peer, ServiceClient


class ChainClient(ServiceClient):
    """A member's replica of one chain of one job: it checks and co-signs blocks and settlements."""

    stub_class = pb_grpc.ChainStub

    def __init__(self, peer: Peer, job_id: str, chain: str = "training"):
        """``chain`` is the kind of chain: "training" or "scoring"."""
        super().__init__(peer)
        self.job_id = job_id
        self.chain = chain

    def propose_block(self, block: Block) -> bytes:
        return self._call("ProposeBlock", codec.block_to_proto(self.job_id, block, self.chain)).signature

    def commit_block(self, block: Block) -> None:
        self._call("CommitBlock", codec.block_to_proto(self.job_id, block, self.chain))

    def sign_settlement(self, body: bytes) -> bytes:
        request = pb.SettlementRequest(job_id=self.job_id, body=body, chain=self.chain)
        return self._call("SignSettlement", request).signature


class ChainMember:
    """A member's facade reached through its ``chain`` client: the LedgerHandle and SettlementSigner the
    proposer's co-signing needs (fedscore.ledger.cosign)."""

    chain: ChainClient

    def propose_block(self, block: Block) -> bytes:
        return self.chain.propose_block(block)

    def commit_block(self, block: Block) -> None:
        self.chain.commit_block(block)

    def sign_settlement(self, body: bytes) -> bytes:
        return self.chain.sign_settlement(body)
