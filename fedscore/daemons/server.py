"""Start a daemon's gRPC server, announce its address, and stop cleanly on SIGTERM."""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import grpc

from fedscore.daemons.config import DaemonConfig
from fedscore.crypto.engine import open_engine
from fedscore.daemons.access import AccessInterceptor, CallLimits
from fedscore.errors import ConfigError
from fedscore.daemons.health import add_health, stopping
from fedscore.files import write_atomically
from fedscore.transport.rpc import channel_options, limit_client_messages
from fedscore.transport.tls import INSECURE_WARNING, TlsIdentity


def configure_logging(name: str) -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s",
    )


def load_identity(role: str, config: DaemonConfig, insecure: bool) -> DaemonConfig:
    """The daemon's TLS identity from ``tls_dir``, which must name this member; none only with --insecure."""
    if insecure:
        return replace(config, tls=None)
    if config.tls_dir is None:
        raise ConfigError(
            f"{role} {config.name!r}: no TLS identity; set tls_dir in its config to the member folder made by "
            "`fedscore certs init` (or start with --insecure, for debugging only)"
        )
    identity = TlsIdentity.load(config.tls_dir)
    if identity.name != config.name:
        raise ConfigError(
            f"{role} {config.name!r}: the certificate in {config.tls_dir} names {identity.name!r}, not {config.name!r}"
        )
    return replace(config, tls=identity)


def serve(role: str, config: DaemonConfig, ready_file: Path | None = None, insecure: bool = False,
          lifeline_fd: int | None = None) -> int:
    """Run until SIGTERM or SIGINT. ``ready_file`` receives host:port once serving; ``lifeline_fd``, an
    inherited pipe's read end: stop, as on SIGTERM, when it closes (the launcher that holds its other end died)."""
    configure_logging(config.name)
    log = logging.getLogger(f"fedscore.{role}")
    if insecure:
        log.warning(INSECURE_WARNING)
        print(f"WARNING: {role} {config.name!r} {INSECURE_WARNING}", file=sys.stderr, flush=True)
    config = load_identity(role, config, insecure)
    os.umask(0o077)   # every file and folder the daemon makes (ledgers, journals, models) is its owner's only
    config.state_dir.mkdir(parents=True, exist_ok=True)
    config.state_dir.chmod(0o700)   # a folder made by an older version, or by hand, too
    pool = None
    service = None
    # a message over the limit is refused by gRPC (RESOURCE_EXHAUSTED) before any of it is kept; a port in use is
    # refused too (gRPC's default, SO_REUSEPORT, would let a second daemon bind it and take half its calls)
    options = [*channel_options(config.max_message_mib * 1024 * 1024), ("grpc.so_reuseport", 0)]
    limit_client_messages(config.max_message_mib * 1024 * 1024)
    limits = CallLimits()
    # who may call what (the role table) and how much one caller may hold, checked before a servicer runs
    label = f"party {config.name!r}" if role == "party" else role
    access = AccessInterceptor(config.name, config.card_centers, limits, label=label, observers=config.observers)
    server = grpc.server(ThreadPoolExecutor(max_workers=limits.threads, thread_name_prefix=role), options=options,
                         interceptors=[access])
    if role == "party":
        from fedscore.daemons.party import service as party

        if config.data_dir is None or not config.data_dir.is_dir():
            raise ConfigError(f"party {config.name!r}: data folder {config.data_dir} does not exist")
        pool = open_engine(config.engine, config.workers or None, config.ray_address)
        service = party.PartyService(config, pool)
        party.add_to_server(service, server)
    else:
        from fedscore.daemons import coordinator

        service = coordinator.CoordinatorService(config)
        coordinator.add_to_server(service, server)
    health = add_health(server, role)
    host = config.listen.rsplit(":", 1)[0]
    try:
        if config.tls is None:
            port = server.add_insecure_port(config.listen)
        else:   # mutual TLS: callers without a certificate from the consortium CA never reach a method
            port = server.add_secure_port(config.listen, config.tls.server_credentials())
    except RuntimeError:
        port = 0
    if not port:
        raise ConfigError(f"{role} {config.name!r} cannot listen on {config.listen} (in use, or not a local address)")
    if role == "coordinator":
        service.resume_unfinished()   # registered before serving, so a submitter following one finds it
    server.start()
    address = f"{host}:{port}"
    if config.tls is None:
        log.warning("%s %r serving on %s without TLS", role, config.name, address)
    else:
        log.info("%s %r serving on %s (mutual TLS as %r)", role, config.name, address, config.tls.name)
    announce = address + "\n"
    http_server = None
    if role == "party" and config.http_listen:
        from fedscore.daemons.http import start_http

        http_server, http_address = start_http(service.scoring, config.http_listen, config.tls)
        scheme = "http" if config.tls is None else "https"
        log.info("scoring over HTTP/JSON on %s://%s/v1/score", scheme, http_address)
        announce += f"http={http_address}\n"
    if ready_file is not None:
        write_atomically(ready_file, announce)
    stop_requested(lifeline_fd, log).wait()
    log.info("stopping")
    stopping(health)
    if http_server is not None:
        http_server.shutdown()
    if role == "party":
        service.scoring.close_all()   # pending scoring entries go on the chain, or stay journalled
    server.stop(grace=2).wait()
    if role == "party":
        service.audience.close_all()   # after the last call: each act is one block, committed before it answers
    if pool is not None:
        pool.close()
    return 0


def stop_requested(lifeline_fd: int | None, log: logging.Logger) -> threading.Event:
    """An event set by SIGTERM, SIGINT or the launcher's lifeline closing: what every daemon waits on."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if lifeline_fd is not None:
        threading.Thread(target=_stop_when_closed, args=(lifeline_fd, stop, log), name="lifeline", daemon=True).start()
    return stop


def _stop_when_closed(descriptor: int, stop: threading.Event, log: logging.Logger) -> None:
    """Block on the lifeline (nothing is ever written to it) until end of file, then stop the daemon."""
    try:
        while os.read(descriptor, 1):
            pass
    except OSError:
        pass
    log.warning("the process that launched this daemon is gone; stopping")
    stop.set()
