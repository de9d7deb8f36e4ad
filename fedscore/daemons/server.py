"""Start a daemon's gRPC server, announce its address, and stop cleanly on SIGTERM."""
from __future__ import annotations

import logging
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from fedscore.config import DaemonConfig
from fedscore.crypto.pool import CryptoPool
from fedscore.errors import ConfigError
from fedscore.model.model_file import write_atomically
from fedscore.transport.rpc import channel_options


def configure_logging(name: str) -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s",
    )


def serve(role: str, config: DaemonConfig, ready_file: Path | None = None) -> int:
    """Run until SIGTERM or SIGINT. ``ready_file`` receives host:port once serving."""
    configure_logging(config.name)
    log = logging.getLogger(f"fedscore.{role}")
    config.state_dir.mkdir(parents=True, exist_ok=True)
    pool = None
    service = None
    # a message over the limit is refused by gRPC (RESOURCE_EXHAUSTED) before any of it is kept
    options = channel_options(config.max_message_mib * 1024 * 1024)
    server = grpc.server(ThreadPoolExecutor(max_workers=32, thread_name_prefix=role), options=options)
    if role == "party":
        from fedscore.daemons import party

        if config.data_dir is None or not config.data_dir.is_dir():
            raise ConfigError(f"party {config.name!r}: data folder {config.data_dir} does not exist")
        pool = CryptoPool(config.workers or None)
        service = party.PartyService(config, pool)
        party.add_to_server(service, server)
    else:
        from fedscore.daemons import coordinator

        coordinator.add_to_server(coordinator.CoordinatorService(config), server)
    host = config.listen.rsplit(":", 1)[0]
    try:
        port = server.add_insecure_port(config.listen)
    except RuntimeError:
        port = 0
    if not port:
        raise ConfigError(f"{role} {config.name!r} cannot listen on {config.listen} (in use, or not a local address)")
    server.start()
    address = f"{host}:{port}"
    log.warning("%s %r serving on %s without TLS (loopback or trusted network only)", role, config.name, address)
    announce = address + "\n"
    http_server = None
    if service is not None and config.http_listen:
        from fedscore.daemons.http import start_http

        http_server, http_address = start_http(service.scoring, config.http_listen)
        log.warning("scoring over HTTP/JSON on http://%s/v1/score (no TLS)", http_address)
        announce += f"http={http_address}\n"
    if ready_file is not None:
        write_atomically(ready_file, announce)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("stopping")
    if http_server is not None:
        http_server.shutdown()
    if service is not None:
        service.scoring.close_all()   # pending scoring entries go on the chain, or stay journalled
    server.stop(grace=2).wait()
    if pool is not None:
        pool.close()
    return 0
