"""The errors fedscore raises on purpose: each says what was wrong and where.

Each class owns how it leaves a process: ``grpc_status`` (the name of a
grpc.StatusCode: a daemon's answer), ``http_status`` (the scoring endpoint's
answer) and ``exit_code`` (the CLI's, per its documented contract: 1 a bug,
2 a problem to fix, 3 a record that does not verify). Subclasses inherit
them unless they say otherwise, so this file is the one table. Daemons send
the class name beside the status, and clients rebuild the same class with
``rebuild``; a peer that sent no name gets the status's own class
(``class_for_status``).
"""
from __future__ import annotations


class FedscoreError(Exception):
    """Base class: anything a user can fix (a file, a config, a peer)."""

    grpc_status = "ABORTED"
    http_status = 503   # scoring over HTTP: a failure at the card center, to retry later
    exit_code = 2


class DataError(FedscoreError):
    """A party's data file cannot be used as it is."""

    grpc_status = "INVALID_ARGUMENT"
    http_status = 400


class ConfigError(FedscoreError):
    """A job, party or coordinator configuration is invalid."""

    grpc_status = "INVALID_ARGUMENT"
    http_status = 400


class ProtocolError(FedscoreError):
    """A peer sent something out of order, of the wrong size, or for an unknown job."""

    grpc_status = "FAILED_PRECONDITION"
    http_status = 409


class UnknownJobError(ProtocolError):
    """A daemon has no such job: it restarted before resuming it, or the job ended (gRPC NOT_FOUND)."""

    grpc_status = "NOT_FOUND"
    http_status = 404


class PeerError(FedscoreError):
    """A peer did not answer or failed; the message names the peer."""

    grpc_status = "UNAVAILABLE"   # a peer of the daemon did not answer: the caller may wait and resume
    http_status = 503


class TrainingError(FedscoreError):
    """Training itself went wrong (e.g. it diverged); the job's settings need changing."""

    grpc_status = "ABORTED"


class DeniedError(FedscoreError):
    """A request refused for who made it or on whose behalf (gRPC PERMISSION_DENIED)."""

    grpc_status = "PERMISSION_DENIED"
    http_status = 403


class ConsentError(DeniedError):
    """A scoring request without a consent the party can accept; the message says why."""


class AccessError(DeniedError):
    """A member called what its role does not allow (or a job it is not part of); nothing was changed."""


class InternalError(FedscoreError):
    """A daemon failed in a way no input explains: a bug to report, not a setting to fix."""

    grpc_status = "INTERNAL"
    http_status = 500
    exit_code = 1


class UnverifiedError(FedscoreError):
    """A ledger, block or inclusion proof that does not verify: the record itself is in question."""

    grpc_status = "DATA_LOSS"
    exit_code = 3


class LedgerError(UnverifiedError):
    """A block that breaks the chain; the message names it."""

    height: int | None = None   # None when rebuilt from a peer's message

    def __init__(self, height: int, reason: str):
        super().__init__(f"block {height}: {reason}")
        self.height = height


def _classes(base: type[FedscoreError] = FedscoreError) -> list[type[FedscoreError]]:
    """``base`` and every subclass defined so far, parents before children, in definition order."""
    return [base] + [cls for sub in base.__subclasses__() for cls in _classes(sub)]


def error_class(name: str) -> type[FedscoreError] | None:
    """The fedscore error class called ``name``; None for any other name (a peer names only these)."""
    return next((cls for cls in _classes() if cls.__name__ == name), None)


def class_for_status(grpc_status: str) -> type[FedscoreError] | None:
    """For a peer that names no class: the first class above that owns the status (ABORTED: FedscoreError)."""
    return next((cls for cls in _classes() if cls.grpc_status == grpc_status), None)


def rebuild(cls: type[FedscoreError], message: str) -> FedscoreError:
    """An instance of ``cls`` carrying a peer's message as it is, whatever arguments ``cls`` itself takes."""
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    return error
