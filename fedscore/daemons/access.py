"""Who may call what, by the member name in the caller's certificate.

The coordinator drives training: it prepares jobs, runs every step, asks for
evaluation and proposes the training chain's blocks. A job's card center
drives alignment and the training messages to its partners, and scoring:
its approval system calls its own daemon with the card center's identity,
and its daemon asks the partners. Anyone else gets PERMISSION_DENIED before
anything is read or changed. A plaintext daemon (--insecure) knows no
caller, so it checks nothing: that mode is for debugging only.
"""
from __future__ import annotations

import grpc

from fedscore.crypto.certs import COORDINATOR
from fedscore.errors import AccessError
from fedscore.transport.tls import caller_name

__all__ = ["COORDINATOR", "require"]


def require(context: grpc.ServicerContext, allowed: str, what: str) -> None:
    """Refuse the call unless the caller's certificate names ``allowed`` (or the daemon runs plaintext)."""
    caller = caller_name(context)
    if caller is not None and caller != allowed:
        raise AccessError(f"{what} is for {allowed!r} only; refused {caller!r}")
