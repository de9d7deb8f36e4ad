"""Channel settings and error translation shared by every client and server.

Servers turn fedscore's own errors into gRPC statuses whose message already
names the party at fault; clients turn transport failures (a daemon that is
down, or silent past its deadline) into PeerError naming the peer.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import grpc

from fedscore.job import JobSpec
from fedscore.transport.tls import TlsIdentity
from fedscore.errors import (
    ConfigError, DataError, DeniedError, FedscoreError, InternalError, PeerError, ProtocolError, UnknownJobError,
)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024   # vectors are streamed in blocks far below this


def channel_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # a peer that restarts is reached again within seconds, not after gRPC's default two-minute backoff
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]


OPTIONS = channel_options()
_client_options = OPTIONS


def limit_client_messages(max_message_bytes: int) -> None:
    """A daemon's max_message_mib applies to the channels it dials too (called once, when it starts)."""
    global _client_options
    _client_options = channel_options(max_message_bytes)
PING_TIMEOUT = 10.0
STEP_TIMEOUT = JobSpec.rpc_timeout   # coordinator -> party, unless the job sets rpc_timeout
PARTNER_SHARE = 2 / 3      # card center -> partner: shorter, so a silent partner is named before the card center is

log = logging.getLogger("fedscore.rpc")
RELAYED = "reports:"   # "party 'guest' reports: partner 'x' at ... did not answer": a daemon relaying a peer's silence


def open_channel(address: str, peer: str, tls: TlsIdentity | None, options: list | None = None) -> grpc.Channel:
    """A channel to member ``peer``: mutual TLS, refusing a server whose certificate names anyone else.

    ``tls=None`` is the --insecure debugging mode: plaintext, nobody checked.
    """
    options = list(_client_options if options is None else options)
    if tls is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, tls.channel_credentials(), options=[*options, ("grpc.ssl_target_name_override", peer)])


def status_for(error: BaseException) -> grpc.StatusCode:
    if isinstance(error, DeniedError):
        return grpc.StatusCode.PERMISSION_DENIED
    if isinstance(error, (DataError, ConfigError)):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(error, UnknownJobError):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(error, PeerError):        # a peer of this daemon did not answer: the caller may wait and resume
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(error, ProtocolError):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(error, FedscoreError):
        return grpc.StatusCode.ABORTED
    return grpc.StatusCode.INTERNAL


def servicer_errors(owner: str) -> Callable:
    """Decorator for servicer methods: map exceptions to a status naming ``owner`` (unless already named)."""

    def wrap(method: Callable) -> Callable:
        @functools.wraps(method)
        def unary(self, request, context):
            try:
                return method(self, request, context)
            except FedscoreError as error:
                log.warning("%s: %s", method.__name__, error)
                message = f"{getattr(self, owner)} {RELAYED} {error}" if isinstance(error, PeerError) else str(error)
                context.abort(status_for(error), message)
            except Exception as error:  # a bug here must not kill the daemon
                log.exception("%s failed", method.__name__)
                context.abort(grpc.StatusCode.INTERNAL, f"{getattr(self, owner)}: internal error ({type(error).__name__}: {error})")

        return unary

    return wrap


def peer_error(peer: str, address: str, error: grpc.RpcError, timeout: float | None = None) -> FedscoreError:
    code, details = error.code(), error.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        if RELAYED in details:   # the daemon answered: one of its own peers did not
            return PeerError(details)
        if "Hostname Verification" in details:
            return PeerError(f"the daemon at {address} presented a certificate that does not name {peer}")
        if "handshake" in details.lower() or "certificate" in details.lower():
            return PeerError(
                f"{peer} at {address}: TLS handshake failed (a certificate from another CA, or a daemon "
                f"started with --insecure?): {details}"
            )
        return PeerError(f"{peer} at {address} did not answer ({details})")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        limit = f" within {timeout:.0f} s" if timeout else ""
        return PeerError(f"{peer} at {address} did not answer{limit}")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return DataError(details)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return DeniedError(details)
    if code == grpc.StatusCode.NOT_FOUND:
        return UnknownJobError(details)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return ProtocolError(details)
    if code == grpc.StatusCode.INTERNAL:
        return InternalError(details or f"{peer} at {address} failed")
    if code == grpc.StatusCode.CANCELLED:
        return PeerError(f"{peer} at {address}: call cancelled")
    # A refusal or failure the daemon explains (servers name the party at fault): passed on as it is, and
    # not taken for a peer that went away.
    return FedscoreError(details or f"{peer} at {address} failed ({code.name})")
