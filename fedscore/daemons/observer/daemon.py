"""`fedscore observer serve`: the observer's follower, its status service and the standard health service.

The observer serves nothing of the chains (members serve them); its port answers `fedscore status` (the
Observer service: its chains, their heads, what each member reported and every alarm) and the gRPC health
check, to any member of the consortium; a member sees only the chains (and their alarms) whose genesis names
it, the observer's own certificate (its operator's) sees them all. It dials the members with its own
certificate, which each member's config must name in `observers` for it to be let in.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from fedscore.daemons.access import AccessInterceptor, CallLimits
from fedscore.daemons.health import add_health, stopping
from fedscore.daemons.observer.config import ObserverConfig
from fedscore.daemons.observer.follower import Follower
from fedscore.daemons.server import configure_logging, load_identity, stop_requested
from fedscore.errors import ConfigError
from fedscore.files import write_atomically
from fedscore.proto import fedscore_pb2_grpc as pb_grpc
from fedscore.transport.rpc import channel_options, limit_client_messages, servicer_errors
from fedscore.transport.tls import INSECURE_WARNING, caller_name


class ObserverServicer(pb_grpc.ObserverServicer):
    def __init__(self, follower: Follower):
        self.label = f"observer {follower.name!r}"
        self.follower = follower

    @servicer_errors("label")
    def Status(self, request, context):
        return self.follower.status(caller_name(context))


def serve_observer(config: ObserverConfig, ready_file: Path | None = None, insecure: bool = False,
                   lifeline_fd: int | None = None) -> int:
    """Follow the members and serve status until SIGTERM or SIGINT (or the lifeline closes)."""
    configure_logging(config.name)
    log = logging.getLogger("fedscore.observer")
    if insecure:
        log.warning(INSECURE_WARNING)
        print(f"WARNING: observer {config.name!r} {INSECURE_WARNING}", file=sys.stderr, flush=True)
    config = load_identity("observer", config, insecure)
    os.umask(0o077)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    config.state_dir.chmod(0o700)
    limit_client_messages(config.max_message_mib * 1024 * 1024)
    options = [*channel_options(config.max_message_mib * 1024 * 1024), ("grpc.so_reuseport", 0)]
    limits = CallLimits()
    access = AccessInterceptor(config.name, (), limits, label=f"observer {config.name!r}")
    server = grpc.server(ThreadPoolExecutor(max_workers=limits.threads, thread_name_prefix="observer"), options=options,
                         interceptors=[access])
    follower = Follower(config.name, config.state_dir, config.members, config.tls)
    pb_grpc.add_ObserverServicer_to_server(ObserverServicer(follower), server)
    health = add_health(server, "observer")
    try:
        port = (server.add_insecure_port(config.listen) if config.tls is None
                else server.add_secure_port(config.listen, config.tls.server_credentials()))
    except RuntimeError:
        port = 0
    if not port:
        raise ConfigError(f"observer {config.name!r} cannot listen on {config.listen} (in use, or not a local address)")
    server.start()
    address = f"{config.listen.rsplit(':', 1)[0]}:{port}"
    log.info("observer %r serving status on %s, reading %s", config.name, address, ", ".join(sorted(config.members)))
    stop = stop_requested(lifeline_fd, log)
    following = threading.Thread(target=follower.run, args=(stop, config.poll_seconds), name="follower", daemon=True)
    following.start()
    if ready_file is not None:
        write_atomically(ready_file, address + "\n")
    stop.wait()
    log.info("stopping")
    stopping(health)
    following.join()
    server.stop(grace=2).wait()
    follower.close()
    return 0
