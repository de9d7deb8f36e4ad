"""A daemon is used once it serves, a slow handshake is waited for, and "not there yet" is not called a TLS failure."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from fedscore.job_file import load_job
from fedscore.crypto.certs import init_consortium
from fedscore.daemons.launcher import LocalConsortium
from fedscore.errors import PeerError
from fedscore.transport.rpc import open_channel, peer_error
from fedscore.transport.tls import TlsIdentity

from conftest import breast_parties, write_job

HANDSHAKE_DELAY = 0.5   # how long the slow daemon takes to answer a handshake: a busy machine's first connections


@pytest.fixture(scope="module")
def identities(tmp_path_factory) -> dict[str, TlsIdentity]:
    folders = init_consortium(tmp_path_factory.mktemp("certs"), ["guest"])
    stranger = init_consortium(tmp_path_factory.mktemp("other"), ["guest"])["guest"]
    return {**{name: TlsIdentity.load(folder) for name, folder in folders.items()}, "stranger": TlsIdentity.load(stranger)}


def health_server(identity: TlsIdentity | None) -> tuple[grpc.Server, health.HealthServicer, str]:
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", identity.server_credentials()) if identity else \
        server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, servicer, f"127.0.0.1:{port}"


def listener(serve) -> str:
    """A loopback port whose connections ``serve(connection)`` handles, each on its own thread."""
    sock = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        while True:
            connection, _ = sock.accept()
            threading.Thread(target=serve, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return f"127.0.0.1:{sock.getsockname()[1]}"


def slow_proxy(upstream: str) -> str:
    """Forwards to ``upstream``, holding the daemon's first bytes (its handshake answer) for HANDSHAKE_DELAY."""

    def pump(source: socket.socket, sink: socket.socket, delay: float) -> None:
        try:
            while data := source.recv(65536):
                time.sleep(delay)
                delay = 0.0
                sink.sendall(data)
        except OSError:
            pass
        finally:
            sink.close()

    def serve(client: socket.socket) -> None:
        server = socket.create_connection(tuple(upstream.rsplit(":", 1)))
        threading.Thread(target=pump, args=(client, server, 0.0), daemon=True).start()
        pump(server, client, HANDSHAKE_DELAY)

    return listener(serve)


def check(address: str, identity: TlsIdentity | None, timeout: float = 10.0):
    with open_channel(address, "guest", identity) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)


def failure(address: str, identity: TlsIdentity | None, timeout: float = 10.0) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        check(address, identity, timeout)
    error = peer_error("party 'guest'", address, caught.value, timeout)
    assert isinstance(error, PeerError)
    return str(error)


def test_a_daemon_slow_to_answer_the_handshake_is_waited_for_not_dropped(identities):
    server, _, address = health_server(identities["guest"])
    try:
        assert check(slow_proxy(address), identities["coordinator"]).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(None)


def test_nobody_listening_and_a_cut_handshake_are_not_called_tls_failures(identities):
    closed = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    refused = failure(address, identities["coordinator"])
    assert refused == f"party 'guest' at {address} did not answer: nothing listens there (not started yet, or stopped)"
    cut = failure(listener(socket.socket.close), identities["coordinator"])
    assert "closed before the TLS handshake finished" in cut and "TLS handshake failed" not in cut


def test_a_real_tls_refusal_is_still_named_as_one(identities):
    expected = {"stranger": "TLS handshake failed: certificate not from this consortium's CA",
                None: "TLS handshake failed: the daemon speaks plaintext (started with --insecure?)"}
    for identity in ("stranger", None):   # a daemon of another CA; a plaintext daemon
        server, _, address = health_server(identities[identity] if identity else None)
        try:
            assert f"party 'guest' at {address}: {expected[identity]}" in failure(address, identities["coordinator"])
        finally:
            server.stop(None)


@pytest.fixture
def consortium(breast_folder):
    """A local consortium whose 'host' process is a stand-in the test controls (no daemon is started)."""
    spec, base = load_job(write_job(breast_folder, breast_parties()))
    running = LocalConsortium(spec, base, breast_folder / "state", insecure=True)
    running.log_path("host").parent.mkdir(parents=True)
    running.log_path("host").write_text("starting\nloading the data\n")
    yield running
    for process in running.processes.values():
        process.kill()
        process.wait()


def stand_in(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code])


def test_a_local_launch_waits_until_the_daemon_answers_health_serving(consortium):
    server, servicer, address = health_server(None)
    servicer.set("fedscore.v1.Party", health_pb2.HealthCheckResponse.NOT_SERVING)
    serving = threading.Event()

    def start_serving() -> None:
        time.sleep(0.3)
        serving.set()
        servicer.set("fedscore.v1.Party", health_pb2.HealthCheckResponse.SERVING)

    consortium.processes["host"] = stand_in("import time; time.sleep(60)")
    threading.Thread(target=start_serving, daemon=True).start()
    try:
        consortium.wait_until_serving("host", address, time.monotonic() + 30)
        assert serving.is_set()   # listening and answering NOT_SERVING was not enough
    finally:
        server.stop(None)


def test_a_daemon_that_never_serves_is_named_with_its_log(consortium):
    consortium.startup_seconds = 1.0
    consortium.processes["host"] = stand_in("import time; time.sleep(60)")
    closed = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    with pytest.raises(PeerError) as caught:
        consortium.wait_until_serving("host", address, time.monotonic() + consortium.startup_seconds)
    message = str(caught.value)
    assert message.startswith("host daemon did not answer its health check SERVING (last: host daemon at ")
    assert "nothing listens there" in message and f"within 1 s (log: {consortium.log_path('host')})" in message


def test_a_daemon_that_exits_at_start_up_is_named_with_its_log_tail(consortium):
    consortium.processes["host"] = stand_in("raise SystemExit(3)")
    consortium.processes["host"].wait()
    with pytest.raises(PeerError, match=r"^host daemon exited at start-up: starting \| loading the data \(log: "):
        consortium.wait_until_serving("host", "127.0.0.1:9", time.monotonic() + 30)
