"""The errors fedscore raises on purpose: each says what was wrong and where."""


class FedscoreError(Exception):
    """Base class: anything a user can fix (a file, a config, a peer)."""


class ConfigError(FedscoreError):
    """A job, party or coordinator configuration is invalid."""


class DataError(FedscoreError):
    """A party's data file cannot be used as it is."""


class ProtocolError(FedscoreError):
    """A peer sent something out of order, of the wrong size, or for an unknown job."""


class UnknownJobError(ProtocolError):
    """A daemon has no such job: it restarted before resuming it, or the job ended (gRPC NOT_FOUND)."""


class PeerError(FedscoreError):
    """A peer did not answer or failed; the message names the peer."""


class TrainingError(FedscoreError):
    """Training itself went wrong (e.g. it diverged); the job's settings need changing."""


class DeniedError(FedscoreError):
    """A request refused for who made it or on whose behalf (gRPC PERMISSION_DENIED)."""


class ConsentError(DeniedError):
    """A scoring request without a consent the party can accept; the message says why."""


class AccessError(DeniedError):
    """A member called what its role does not allow (or a job it is not part of); nothing was changed."""


class InternalError(FedscoreError):
    """A daemon failed in a way no input explains: a bug to report, not a setting to fix."""
