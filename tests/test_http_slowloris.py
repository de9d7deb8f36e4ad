"""Slow clients on the HTTPS scoring endpoint: sockets that never start the TLS handshake, or finish it and
never send a request, must not keep the approval system's requests from being answered."""
from __future__ import annotations

import http.client
import itertools
import json
import selectors
import socket
import ssl
import threading
import time
from types import SimpleNamespace

import pytest

from fedscore.crypto.certs import init_consortium
from fedscore.daemons.http import start_http
from fedscore.daemons import http_gate
from fedscore.daemons.http_gate import MAX_WORKERS
from fedscore.transport.tls import TlsIdentity

from faults import attack

ATTACK_ADDRESSES = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]   # loopback: any 127.x reaches the server
SOCKETS_PER_THREAD = 16   # four addresses x two threads x 16 = 128 sockets, each address at its share
LEGIT_CALLERS = 4
LEGIT_SECONDS = 3.0   # past the handshake deadline, so idle sockets are closed and reopened while requests go on


class EchoHost:
    """A scoring host whose answer is a function of the request, so a right answer shows it was scored."""

    name = "card_center"

    def open_models(self) -> list[str]:
        return ["job-1"]

    def score(self, job_id: str, applicant: str, features: dict, consent: str):
        answer = SimpleNamespace(probability=features["LIMIT_BAL"] / 1e6, score=int(features["LIMIT_BAL"]) // 1000,
                                 decision="review", credit_limit=features["LIMIT_BAL"], reasons=[], partners_missing=[])
        return "job-1", SimpleNamespace(request_id=f"r-{applicant}", answer=answer)


@pytest.fixture(scope="module")
def identities(tmp_path_factory) -> dict[str, TlsIdentity]:
    folders = init_consortium(tmp_path_factory.mktemp("consortium"), ["card_center", "bureau"])
    return {name: TlsIdentity.load(folder) for name, folder in folders.items()}


@pytest.fixture
def endpoint(identities):
    server, address = start_http(EchoHost(), "127.0.0.1:0", identities["card_center"])
    yield address
    server.shutdown()


def split(address: str) -> tuple[str, int]:
    host, port = address.split(":")
    return host, int(port)


def tls_connection(address: str, identity: TlsIdentity, timeout: float, source: str = "127.0.0.1") -> ssl.SSLSocket:
    raw = socket.create_connection(split(address), timeout=timeout, source_address=(source, 0))
    try:
        return identity.ssl_context(server=False).wrap_socket(raw, server_hostname="card_center")
    except BaseException:
        raw.close()
        raise


def score(address: str, identity: TlsIdentity, limit: int, timeout: float = 15.0) -> dict:
    """One request on a fresh connection, as the approval system makes it; the answer's document."""
    connection = http.client.HTTPConnection(*split(address), timeout=timeout)
    connection.sock = tls_connection(address, identity, timeout)
    try:
        body = json.dumps({"applicant_id": f"a{limit}", "features": {"LIMIT_BAL": limit}, "consent": "token"})
        connection.request("POST", "/v1/score", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200, response.read()[:200]
        return json.loads(response.read())
    finally:
        connection.close()


def closed_by_server(sock: socket.socket) -> bool:
    """Whether a readable idle socket was closed; a TLS session ticket also makes it readable."""
    try:
        return not sock.recv(1)
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
        return False
    except OSError:
        return True


class IdleClients(threading.Thread):
    """Holds SOCKETS_PER_THREAD connections from one address that send nothing, reopening each the server closes.

    ``identity`` None: raw TCP that never sends a ClientHello; otherwise TLS completed with that certificate,
    then no request. ``primed`` is set once the first round of connections has been tried.
    """

    def __init__(self, address: str, source: str, identity: TlsIdentity | None, stop: threading.Event):
        super().__init__(daemon=True)
        self.address, self.source, self.identity, self.stop = address, source, identity, stop
        self.primed = threading.Event()
        self.opened = 0
        self.held = 0
        self.most_held = 0

    def _open(self) -> socket.socket | None:
        try:
            if self.identity is None:
                return socket.create_connection(split(self.address), timeout=5, source_address=(self.source, 0))
            return tls_connection(self.address, self.identity, 5, self.source)
        except (OSError, ssl.SSLError):
            return None

    def run(self) -> None:
        with selectors.DefaultSelector() as watching:
            while not self.stop.is_set():
                while len(watching.get_map()) < SOCKETS_PER_THREAD and not self.stop.is_set():
                    sock = self._open()
                    if sock is None:
                        break
                    sock.setblocking(False)
                    watching.register(sock, selectors.EVENT_READ)
                    self.opened += 1
                self.held = len(watching.get_map())
                self.most_held = max(self.most_held, self.held)
                self.primed.set()
                for key, _ in watching.select(0.1):
                    if closed_by_server(key.fileobj):
                        watching.unregister(key.fileobj)
                        key.fileobj.close()
            for key in list(watching.get_map().values()):
                key.fileobj.close()


def test_idle_connections_beyond_the_thread_count_do_not_stop_scoring(endpoint, identities):
    stop = threading.Event()
    bureau = identities["bureau"]
    idle = [IdleClients(endpoint, source, kind, stop)
            for source in ATTACK_ADDRESSES for kind in (None, bureau)]
    assert len(idle) * SOCKETS_PER_THREAD > MAX_WORKERS
    failures: list[str] = []
    answered: list[int] = []
    try:
        for client in idle:
            client.start()
        for client in idle:
            assert client.primed.wait(20), "an idle client could not open its first connections"
        held_before = sum(client.held for client in idle)

        def legitimate(first: int) -> None:
            for limit in itertools.count(first):
                if limit - first >= 10 and time.monotonic() > started + LEGIT_SECONDS:
                    return
                try:
                    document = score(endpoint, identities["card_center"], limit * 1000)
                    assert document["credit_limit"] == limit * 1000 and document["request_id"] == f"r-a{limit * 1000}"
                    answered.append(limit)
                except (OSError, ssl.SSLError, http.client.HTTPException, AssertionError, ValueError) as error:
                    failures.append(f"{limit}: {type(error).__name__}: {error}")

        callers = [threading.Thread(target=legitimate, args=(1 + i * 1000,)) for i in range(LEGIT_CALLERS)]
        started = time.monotonic()
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(max(0.0, started + 25 - time.monotonic()))
        took = time.monotonic() - started
    finally:
        stop.set()
        for client in idle:
            client.join(10)
    most_held = sum(client.most_held for client in idle)
    print(f"idle sockets held at the start {held_before}, at most {most_held}, opened {sum(c.opened for c in idle)}; "
          f"legitimate requests {len(answered)} answered, {len(failures)} failed, in {took:.1f} s")
    assert not attack(succeeded=len(failures) > 0 or len(answered) < 10 * LEGIT_CALLERS), failures[:5]
    assert most_held > MAX_WORKERS   # the attack was real: more idle sockets than threads at once

    # the gate is no back door: a client without a certificate is still refused, the card center still served
    anonymous = ssl.create_default_context(cadata=identities["card_center"].ca.decode())
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with anonymous.wrap_socket(socket.create_connection(split(endpoint), timeout=10), server_hostname="card_center") as bare:
            bare.sendall(b"GET /v1/health HTTP/1.1\r\n\r\n")
            assert bare.recv(100) == b""   # TLS 1.3: the refusal may only show at the first read
            raise ConnectionError("closed without an answer")
    assert score(endpoint, identities["card_center"], 7000)["credit_limit"] == 7000


def server_closed(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` within ``within`` seconds (it never sends these sockets anything)."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_one_address_holds_at_most_its_share_and_its_longest_idle_make_room(identities, monkeypatch):
    monkeypatch.setattr(http_gate, "HANDSHAKE_DEADLINE", 60.0)   # only the cap closes sockets in this test
    server, address = start_http(EchoHost(), "127.0.0.1:0", identities["card_center"])
    extra = 8
    sockets = [socket.create_connection(split(address), timeout=10, source_address=("127.0.0.6", 0))
               for _ in range(http_gate.PER_ADDRESS + extra)]
    try:
        assert all(server_closed(sock, 10) for sock in sockets[:extra])   # the oldest, in arrival order
        assert not any(server_closed(sock, 0.05) for sock in sockets[extra:])
        # a request from that address still gets in: it displaces the longest idle, not the other way round
        connection = http.client.HTTPConnection(*split(address), timeout=10)
        connection.sock = tls_connection(address, identities["card_center"], 10, "127.0.0.6")
        body = json.dumps({"applicant_id": "a6", "features": {"LIMIT_BAL": 6000}, "consent": "token"})
        connection.request("POST", "/v1/score", body, {"Content-Type": "application/json"})
        assert json.loads(connection.getresponse().read())["credit_limit"] == 6000
        connection.close()
        assert server_closed(sockets[extra], 10) and not server_closed(sockets[extra + 1], 0.05)
        assert score(address, identities["card_center"], 5000)["credit_limit"] == 5000   # other addresses: unaffected
    finally:
        for sock in sockets:
            sock.close()
        server.shutdown()


def test_kept_alive_and_pipelined_requests_are_answered_and_an_idle_one_holds_no_thread(identities, monkeypatch):
    monkeypatch.setattr(http_gate, "MAX_WORKERS", 1)
    monkeypatch.setattr(http_gate, "IDLE_TIMEOUT", 1.0)
    server, address = start_http(EchoHost(), "127.0.0.1:0", identities["card_center"])
    try:
        kept = http.client.HTTPConnection(*split(address), timeout=10)
        kept.sock = tls_connection(address, identities["card_center"], 10)
        first = kept.sock
        for limit in (1000, 2000, 3000):
            body = json.dumps({"applicant_id": "k", "features": {"LIMIT_BAL": limit}, "consent": "token"})
            kept.request("POST", "/v1/score", body, {"Content-Type": "application/json"})
            assert json.loads(kept.getresponse().read())["credit_limit"] == limit
        assert kept.sock is first   # one connection served them all

        # it now idles between requests; with a single worker thread, another client is still answered
        assert score(address, identities["card_center"], 4000, timeout=5)["credit_limit"] == 4000

        # two requests sent in one write: the second, already read ahead, is answered too
        with tls_connection(address, identities["card_center"], 10) as pipelined:
            bodies = [json.dumps({"applicant_id": "p", "features": {"LIMIT_BAL": n}, "consent": "token"}).encode()
                      for n in (5000, 6000)]
            pipelined.sendall(b"".join(b"POST /v1/score HTTP/1.1\r\nHost: card_center\r\nContent-Length: %d\r\n\r\n%s"
                                       % (len(body), body) for body in bodies))
            reader = pipelined.makefile("rb")
            for limit in (5000, 6000):
                status = reader.readline()
                headers = dict(line.decode().split(": ", 1) for line in iter(lambda: reader.readline().strip(), b""))
                body = reader.read(int(headers["Content-Length"]))
                assert status.startswith(b"HTTP/1.1 200") and json.loads(body)["credit_limit"] == limit

        # the kept-alive connection, idle past IDLE_TIMEOUT, is closed by the server
        assert server_closed(first, 10)
    finally:
        server.shutdown()


def test_a_request_trickled_byte_by_byte_is_cut_at_its_deadline_and_frees_its_thread(identities, monkeypatch):
    monkeypatch.setattr(http_gate, "MAX_WORKERS", 1)
    monkeypatch.setattr(http_gate, "REQUEST_DEADLINE", 1.0)
    server, address = start_http(EchoHost(), "127.0.0.1:0", identities["card_center"])
    trickled = threading.Event()
    cut = threading.Event()

    def trickle() -> None:   # a member's certificate, then a request one header byte at a time, never finished
        with tls_connection(address, identities["bureau"], 10, "127.0.0.7") as slow:
            slow.sendall(b"POST /v1/score HTTP/1.1\r\nX-Slow: ")
            try:
                for sent in range(100):   # each byte well within the server's per-read timeout
                    slow.sendall(b"x")
                    if sent == 2:
                        trickled.set()
                    slow.settimeout(0.3)
                    try:
                        if not slow.recv(1):
                            break
                    except TimeoutError:
                        continue
            except OSError:
                pass
            cut.set()

    slow_client = threading.Thread(target=trickle, daemon=True)
    slow_client.start()
    try:
        assert trickled.wait(10)   # it has the one worker thread
        started = time.monotonic()
        answered = score(address, identities["card_center"], 8000, timeout=15)["credit_limit"] == 8000
        waited = time.monotonic() - started
        assert not attack(succeeded=not answered or not cut.wait(10))
        assert waited < 10   # the trickler was cut at its deadline, not after its 100 bytes
    finally:
        slow_client.join(40)
        server.shutdown()
