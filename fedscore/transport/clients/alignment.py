"""Calls of a party's Alignment service: the coordinator asks the card center to align, and the card
center runs private set intersection with each partner (an AlignmentClient is the PartnerPsiHandle of
fedscore.protocol.alignment)."""
from __future__ import annotations

import numpy as np

from fedscore.crypto import psi
from fedscore.proto import fedscore_pb2 as pb
from fedscore.proto import fedscore_pb2_grpc as pb_grpc
from fedscore.transport import codec
from fedscore.transport.clients.base import Peer, ServiceClient


class AlignmentClient(ServiceClient):
    """One party's side of one job's alignment."""

    stub_class = pb_grpc.AlignmentStub

    def __init__(self, peer: Peer, job_id: str):
        super().__init__(peer)
        self.job_id = job_id

    def align(self, min_overlap: int) -> pb.AlignReply:
        """Coordinator -> card center: intersect with every partner."""
        return self._call("Align", pb.AlignRequest(job_id=self.job_id, min_overlap=min_overlap))

    def blinded_ids(self) -> bytes:
        return self._fixed_stream("PsiBlindedIds", pb.JobRef(job_id=self.job_id), psi.POINT_BYTES)

    def reblind(self, points: bytes) -> bytes:
        blocks = codec.fixed_blocks(points, psi.POINT_BYTES, self.job_id)
        return self._fixed_stream("PsiReblind", blocks, psi.POINT_BYTES)

    def accept(self, positions: np.ndarray) -> None:
        data = np.asarray(positions, dtype="<u8").tobytes()
        self._call("PsiAccept", pb.FixedBlock(job_id=self.job_id, width=8, offset=0, total=len(positions), data=data))
