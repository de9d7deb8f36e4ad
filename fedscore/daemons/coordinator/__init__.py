"""The coordinator daemon: holds the Paillier private key and drives each job."""
from fedscore.daemons.coordinator.service import CoordinatorService, add_to_server

__all__ = ["CoordinatorService", "add_to_server"]
