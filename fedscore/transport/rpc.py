"""Channel settings and error translation shared by every client and server.

Servers turn fedscore's own errors into the status their class owns (see
fedscore.errors), with the class's name in trailing metadata and a message
that already names the party at fault; clients rebuild that very class.
Transport failures (a daemon that is down, still starting, silent past its
deadline, or refusing our certificate) become PeerError naming the peer.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import NoReturn

import grpc

from fedscore.job import JobSpec
from fedscore.transport.tls import TlsIdentity
from fedscore.errors import FedscoreError, InternalError, PeerError, class_for_status, error_class, rebuild

MAX_MESSAGE_BYTES = 64 * 1024 * 1024   # vectors are streamed in blocks far below this


def channel_options(max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        # a peer that restarts is reached again within seconds, not after gRPC's default two-minute backoff.
        # Not grpc.min_reconnect_backoff_ms: gRPC takes it as the time a connection (TLS handshake included)
        # may take, and at 200 ms a busy machine's handshakes failed as "Handshake read failed (Endpoint closing)"
        ("grpc.initial_reconnect_backoff_ms", 200),
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
ERROR_CLASS = "fedscore-error-class"   # trailing metadata: the fedscore.errors class a daemon's status stands for


def open_channel(address: str, peer: str, tls: TlsIdentity | None, options: list | None = None) -> grpc.Channel:
    """A channel to member ``peer``: mutual TLS, refusing a server whose certificate names anyone else.

    ``tls=None`` is the --insecure debugging mode: plaintext, nobody checked.
    """
    options = list(_client_options if options is None else options)
    if tls is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, tls.channel_credentials(), options=[*options, ("grpc.ssl_target_name_override", peer)])


def status_for(error: BaseException) -> grpc.StatusCode:
    """The status ``error``'s class owns; INTERNAL for anything that is not a fedscore error (a bug)."""
    return grpc.StatusCode[error.grpc_status] if isinstance(error, FedscoreError) else grpc.StatusCode.INTERNAL


def abort(context: grpc.ServicerContext, error: BaseException, owner: str) -> NoReturn:
    """End the call with ``error``: its status, its class beside it, a message naming the party at fault.

    ``owner`` names this daemon: relayed peer failures and bugs say who reports them.
    """
    if isinstance(error, PeerError):
        sent, message = PeerError, f"{owner} {RELAYED} {error}"
    elif isinstance(error, FedscoreError):
        sent, message = type(error), str(error)
    else:
        sent, message = InternalError, f"{owner}: internal error ({type(error).__name__}: {error})"
    context.set_trailing_metadata(((ERROR_CLASS, sent.__name__),))
    context.abort(status_for(error), message)


def servicer_errors(owner: str) -> Callable:
    """Decorator for servicer methods: map exceptions to a status naming ``owner`` (unless already named)."""

    def wrap(method: Callable) -> Callable:
        @functools.wraps(method)
        def unary(self, request, context):
            try:
                return method(self, request, context)
            except Exception as error:  # a bug here must not kill the daemon either
                if isinstance(error, FedscoreError):
                    log.warning("%s: %s", method.__name__, error)
                else:
                    log.exception("%s failed", method.__name__)
                abort(context, error, getattr(self, owner))

        return unary

    return wrap


def sent_class(error: grpc.RpcError) -> type[FedscoreError] | None:
    """The fedscore error class a daemon named beside its status; None if it named none (or one we do not know)."""
    metadata = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    names = [value for key, value in metadata or () if key == ERROR_CLASS]
    return error_class(names[0]) if names else None


FOREIGN_CA = "certificate not from this consortium's CA"
# how OpenSSL (BoringSSL) words a certificate signed by a CA we do not trust, or a peer refusing ours as such
_FOREIGN_CA_SIGNS = ("certificate signature failure", "bad_signature", "certificate verify failed",
                     "certificate_verify_failed", "unable to get local issuer", "self signed certificate in certificate chain",
                     "unknown_ca", "unknown ca")

_REASONS = ("TLS handshake failed", "its certificate names", "nothing listens there", "the connection closed before")


def failure_reason(details: str) -> str:
    """A failed connection's gRPC details in a few words; the details as they are when not understood.

    `fedscore status` shows it beside a member that is down; ``unreachable`` names the peer before it.
    A reason already given passes as it is.
    """
    if details.startswith(_REASONS):
        return details
    lowered = details.lower()
    handshake = "tls handshake failed" in lowered or "ssl_error" in lowered or "certificate" in lowered
    if handshake and any(sign in lowered for sign in _FOREIGN_CA_SIGNS):
        return f"TLS handshake failed: {FOREIGN_CA}: the daemon's certificate and this side's ca.pem come from different CAs"
    if handshake and "wrong_version_number" in lowered:
        return "TLS handshake failed: the daemon speaks plaintext (started with --insecure?)"
    if handshake:
        return f"TLS handshake failed (a certificate from another CA, or a daemon started with --insecure?): {details}"
    if "hostname verification" in lowered:
        return "its certificate names another member: is the address right?"
    if "connection refused" in lowered:
        return "nothing listens there (not started yet, or stopped)"
    if "handshake read failed" in lowered or "handshake write failed" in lowered:
        return ("the connection closed before the TLS handshake finished (still starting, overloaded, or "
                f"stopping?): {details}")
    return details


def unreachable(peer: str, address: str, details: str) -> PeerError:
    """Why no call got through: nobody listening, a handshake cut short, or a certificate refused."""
    lowered = details.lower()
    if "hostname verification" in lowered:
        return PeerError(f"the daemon at {address} presented a certificate that does not name {peer}")
    reason = failure_reason(details)
    if reason.startswith("TLS handshake failed"):
        return PeerError(f"{peer} at {address}: {reason}")
    if reason == details:
        return PeerError(f"{peer} at {address} did not answer ({details})")
    return PeerError(f"{peer} at {address} did not answer: {reason}")


def peer_error(peer: str, address: str, error: grpc.RpcError, timeout: float | None = None) -> FedscoreError:
    """The fedscore error a failed call stands for: the class the daemon named, else what the status says."""
    code, details = error.code(), error.details() or ""
    named = sent_class(error)
    if named is not None:   # the daemon answered and named its error
        return rebuild(named, details or f"{peer} at {address} failed ({code.name})")
    if code == grpc.StatusCode.UNAVAILABLE:
        if RELAYED in details:   # the daemon answered: one of its own peers did not
            return PeerError(details)
        return unreachable(peer, address, details)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        limit = f" within {timeout:.0f} s" if timeout else ""
        return PeerError(f"{peer} at {address} did not answer{limit}")
    if code == grpc.StatusCode.CANCELLED:
        return PeerError(f"{peer} at {address}: call cancelled")
    # A daemon that named no class (or gRPC itself): the status's class. Any other refusal the daemon explains
    # (servers name the party at fault) is passed on as it is, and not taken for a peer that went away.
    fallback = class_for_status(code.name) or FedscoreError
    return rebuild(fallback, details or f"{peer} at {address} failed ({code.name})")
