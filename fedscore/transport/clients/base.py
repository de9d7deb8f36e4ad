"""What every client of a member daemon shares: one channel, and calls whose failures name the member."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import grpc

from fedscore.crypto.paillier import PublicKey
from fedscore.errors import FedscoreError
from fedscore.transport import codec
from fedscore.transport.rpc import STEP_TIMEOUT, open_channel, peer_error
from fedscore.transport.tls import TlsIdentity


class Peer:
    """One member daemon: its name, address and channel, shared by the clients of its services.

    ``label`` names it in errors (``party 'host'``, ``partner 'host'``); ``timeout`` is the deadline of a
    call that does not set its own.
    """

    def __init__(self, name: str, address: str, tls: TlsIdentity | None = None, timeout: float = STEP_TIMEOUT,
                 label: str = ""):
        self.name = name
        self.address = address
        self.timeout = timeout
        self.label = label or f"party {name!r}"
        self.channel = open_channel(address, name, tls)

    def close(self) -> None:
        self.channel.close()

    def error(self, error: grpc.RpcError, timeout: float | None = None) -> FedscoreError:
        """A failed call as the fedscore error it stands for, naming this member."""
        return peer_error(self.label, self.address, error, timeout)


class ServiceClient:
    """Calls to one gRPC service of a member daemon; a failure is raised as a fedscore error (see ``Peer.error``)."""

    stub_class: ClassVar[type]

    def __init__(self, peer: Peer):
        self.peer = peer
        self._stub = self.stub_class(peer.channel)

    def close(self) -> None:
        """Close the member's channel, and with it every client that shares it."""
        self.peer.close()

    def _call(self, method: str, request: Any, timeout: float | None = None,
              join: Callable[[Any], Any] | None = None) -> Any:
        """One call (its request one message, or an iterator of them); ``join`` reads a streamed answer."""
        timeout = timeout or self.peer.timeout
        try:
            answer = getattr(self._stub, method)(request, timeout=timeout)
            return answer if join is None else join(answer)
        except grpc.RpcError as error:
            raise self.peer.error(error, timeout) from None

    def _fixed_stream(self, method: str, request: Any, width: int) -> bytes:
        """A call answered by a stream of FixedBlocks: their data joined (each item ``width`` bytes)."""
        return self._call(method, request, join=lambda blocks: codec.join_fixed_blocks(blocks, width))


class JobClient(ServiceClient):
    """A service's calls for one job, whose ciphertexts are under the job's public key."""

    def __init__(self, peer: Peer, job_id: str, public_key: PublicKey | None):
        super().__init__(peer)
        self.job_id = job_id
        self.public_key = public_key
