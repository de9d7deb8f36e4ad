"""Calls of a party's Alignment service: the coordinator asks the card center to align, and the card
center runs private set intersection with each partner (an AlignmentClient is the PartnerPsiHandle of
fedscore.protocol.ports)."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import grpc
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

    def blinded_ids(self) -> Iterator[bytes]:
        """The partner's blinded ids, block by block as it sends them."""
        return self._points("PsiBlindedIds", pb.JobRef(job_id=self.job_id))

    def reblind(self, points: Iterable[bytes], count: int) -> Iterator[bytes]:
        """``count`` points sent as they are read, their re-blinded values read as the partner answers."""
        blocks = codec.stream_fixed_blocks(points, psi.POINT_BYTES, count, self.job_id)
        return self._points("PsiReblind", blocks)

    def _points(self, method: str, request: Any) -> Iterator[bytes]:
        """A call answered by a stream of points, read as it arrives; the call is cancelled if the reader stops
        early."""
        timeout = self.peer.timeout
        call = getattr(self._stub, method)(request, timeout=timeout)
        try:
            yield from codec.read_fixed_blocks(call, psi.POINT_BYTES)[1]
        except grpc.RpcError as error:
            raise self.peer.error(error, timeout) from None
        finally:
            call.cancel()

    def accept(self, positions: np.ndarray) -> None:
        data = np.asarray(positions, dtype="<u8").tobytes()
        self._call("PsiAccept", pb.FixedBlock(job_id=self.job_id, width=8, offset=0, total=len(positions), data=data))
