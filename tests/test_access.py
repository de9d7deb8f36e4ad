"""The role table and its interceptor, on real gRPC servers with mutual TLS: every (method, caller role) pair is
allowed or refused before the servicer runs, and a member holding silent streams cannot stop a party serving
others."""
from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc
import pytest
from grpc_health.v1 import health_pb2

from fedscore.crypto.certs import init_consortium
from fedscore.daemons.access import ROLE_TABLE, AccessInterceptor, CallLimits, Role, roles_of
from fedscore.proto import fedscore_pb2 as pb
from fedscore.transport.rpc import open_channel
from fedscore.transport.tls import TlsIdentity, caller_name

SERVER, CARD_CENTER = "bank", "cardco"
# what each caller is to the server "bank", written out here rather than computed by the code under test
CALLERS = {
    "coordinator": {Role.COORDINATOR, Role.MEMBER},
    CARD_CENTER: {Role.CARD_CENTER, Role.MEMBER},
    SERVER: {Role.SELF, Role.MEMBER},
    "bureau": {Role.MEMBER},
}
PACKAGE = pb.DESCRIPTOR.package
PING, STATUS = f"/{PACKAGE}.Party/Ping", f"/{PACKAGE}.Party/Status"
MASKED_GRADIENT, PUT_RESIDUAL = f"/{PACKAGE}.Training/MaskedGradient", f"/{PACKAGE}.Training/PutResidual"
UNLISTED = f"/{PACKAGE}.Party/Unlisted"
WAIT = 30.0   # seconds a test waits for something that should happen at once


def _shapes() -> dict[str, tuple[bool, bool]]:
    """(request streamed, response streamed) of every method the daemons serve, from the protos."""
    shapes = {}
    for descriptor in (pb.DESCRIPTOR, health_pb2.DESCRIPTOR):
        for service in descriptor.services_by_name.values():
            for method in service.methods:
                shapes[f"/{service.full_name}/{method.name}"] = (method.client_streaming, method.server_streaming)
    return shapes


SHAPES = _shapes()
STREAMED_REQUESTS = sorted(m for m, (streamed, _) in SHAPES.items() if streamed and m in ROLE_TABLE)


@dataclass
class Calls:
    """What the servicer saw: which calls ran, which request streams were read, and who is reading now."""

    ran: set = field(default_factory=set)             # (method, caller)
    read: dict = field(default_factory=dict)          # (method, caller) -> messages read
    reading: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)   # a handler started reading its stream
    lock: threading.Lock = field(default_factory=threading.Lock)

    def behaviour(self, method: str, shape: tuple[bool, bool]):
        streamed_request, streamed_response = shape

        def run(request, context):
            caller = caller_name(context)
            with self.lock:
                self.ran.add((method, caller))
            if streamed_request:
                self.reading.put((method, caller))
                count = sum(1 for _ in request)
                with self.lock:
                    self.read[method, caller] = count
            return b"ok"

        if streamed_response:
            def streamed(request, context):
                yield run(request, context)
            return streamed
        return run

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        """A generic handler for every method of the table (and one the table does not list)."""
        methods = {**{m: SHAPES[m] for m in ROLE_TABLE}, UNLISTED: (False, False)}
        services: dict[str, dict] = {}
        for method, shape in methods.items():
            service, name = method[1:].split("/")
            make = {(False, False): grpc.unary_unary_rpc_method_handler,
                    (False, True): grpc.unary_stream_rpc_method_handler,
                    (True, False): grpc.stream_unary_rpc_method_handler,
                    (True, True): grpc.stream_stream_rpc_method_handler}[shape]
            services.setdefault(service, {})[name] = make(self.behaviour(method, shape))
        return [grpc.method_handlers_generic_handler(service, table) for service, table in services.items()]


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    return init_consortium(tmp_path_factory.mktemp("consortium"), [SERVER, CARD_CENTER, "bureau"])


@contextmanager
def _serving(members, limits: CallLimits, calls: Calls, tls: bool = True) -> Iterator[str]:
    interceptor = AccessInterceptor(SERVER, [CARD_CENTER], limits, label=f"party {SERVER!r}")
    server = grpc.server(ThreadPoolExecutor(max_workers=limits.threads), interceptors=[interceptor])
    server.add_generic_rpc_handlers(calls.handlers())
    if tls:
        port = server.add_secure_port("127.0.0.1:0", TlsIdentity.load(members[SERVER]).server_credentials())
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)


@contextmanager
def _channel(members, caller: str | None, address: str) -> Iterator[grpc.Channel]:
    channel = open_channel(address, SERVER, TlsIdentity.load(members[caller]) if caller else None)
    try:
        yield channel
    finally:
        channel.close()


def _silent(release: threading.Event) -> Iterator[bytes]:
    """A request stream that sends nothing until released."""
    release.wait()
    yield from ()


def _call(channel: grpc.Channel, method: str, requests, timeout: float = WAIT):
    """Call ``method`` with ``requests`` (one message, or an iterator for a streamed request)."""
    streamed_request, streamed_response = SHAPES.get(method, (False, False))
    kind = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
            (True, False): channel.stream_unary, (True, True): channel.stream_stream}[streamed_request, streamed_response]
    answer = kind(method)(requests, timeout=timeout)
    return list(answer) if streamed_response else answer


def _open_silent_streams(channel: grpc.Channel, method: str, count: int, release: threading.Event) -> list[grpc.Future]:
    return [channel.stream_unary(method).future(_silent(release)) for _ in range(count)]


def test_the_table_names_every_method_the_daemons_serve_and_nothing_else():
    assert set(ROLE_TABLE) == set(SHAPES)
    assert all(ROLE_TABLE.values())


def test_roles_come_from_the_certificate_name_alone():
    assert roles_of("coordinator", SERVER, [CARD_CENTER]) == {Role.COORDINATOR, Role.MEMBER}
    assert roles_of("bureau", SERVER, [CARD_CENTER]) == {Role.MEMBER}
    assert roles_of(CARD_CENTER, SERVER, [CARD_CENTER]) == {Role.CARD_CENTER, Role.MEMBER}
    # a party with no card_centers list takes jobs from no member: nobody is a card center to it
    assert roles_of("bureau", SERVER, []) == {Role.MEMBER}
    assert roles_of("coordinator", SERVER, []) == {Role.COORDINATOR, Role.MEMBER}
    assert roles_of(SERVER, SERVER, []) == {Role.SELF, Role.MEMBER}
    # naming the coordinator does not make it a card center
    assert roles_of("coordinator", SERVER, ["coordinator"]) == {Role.COORDINATOR, Role.MEMBER}


def test_every_method_and_caller_role_is_allowed_or_refused_before_anything_is_read(members):
    calls, release = Calls(), threading.Event()
    refused = 0
    try:
        with _serving(members, CallLimits(), calls) as address:
            for caller, roles in CALLERS.items():
                with _channel(members, caller, address) as channel:
                    for method, allowed in ROLE_TABLE.items():
                        streamed = SHAPES[method][0]
                        if allowed & roles:
                            _call(channel, method, iter([b"m"]) if streamed else b"m")
                            assert (method, caller) in calls.ran
                            if streamed:
                                assert calls.read[method, caller] == 1
                            continue
                        # refused: a silent request stream is refused all the same, so nothing of it was read
                        with pytest.raises(grpc.RpcError) as error:
                            _call(channel, method, _silent(release) if streamed else b"m")
                        assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED, (method, caller)
                        assert repr(caller) in error.value.details() and method in error.value.details()
                        assert (method, caller) not in calls.ran and (method, caller) not in calls.read
                        refused += 1
                    # fail closed: a method the table does not list is refused even to the coordinator
                    with pytest.raises(grpc.RpcError) as error:
                        _call(channel, UNLISTED, b"m")
                    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
                    assert "not in its role table" in error.value.details()
    finally:
        release.set()
    assert refused > len(ROLE_TABLE)   # the loop did refuse: most methods are for one role
    assert (UNLISTED, "coordinator") not in calls.ran


def test_a_plaintext_daemon_checks_no_role_but_still_refuses_unlisted_methods(members):
    calls = Calls()
    with _serving(members, CallLimits(), calls, tls=False) as address, _channel(members, None, address) as channel:
        assert _call(channel, MASKED_GRADIENT, b"m") == b"ok"
        assert _call(channel, PUT_RESIDUAL, iter([b"m", b"m"])) == b"ok"
        assert calls.read[PUT_RESIDUAL, None] == 2
        with pytest.raises(grpc.RpcError) as error:
            _call(channel, UNLISTED, b"m")
        assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_silent_streams_from_a_member_without_the_role_are_all_refused_at_once(members):
    limits = CallLimits(threads=4, calls_per_caller=2, idle_seconds=600)   # no idle deadline ends anything here
    calls, release = Calls(), threading.Event()
    try:
        with _serving(members, limits, calls) as address, _channel(members, "bureau", address) as bureau, \
                _channel(members, "coordinator", address) as coordinator:
            held = [f for method in STREAMED_REQUESTS
                    for f in _open_silent_streams(bureau, method, 3 * limits.threads, release)]
            for future in held:
                assert future.exception(timeout=WAIT).code() == grpc.StatusCode.PERMISSION_DENIED
                assert "'bureau'" in future.exception().details()
            # the party still serves: everything above was refused without holding a thread
            assert _call(bureau, PING, b"m", timeout=5) == b"ok"
            assert _call(coordinator, MASKED_GRADIENT, b"m", timeout=5) == b"ok"
    finally:
        release.set()
    assert not any(caller == "bureau" for _, caller in calls.read)


def test_silent_streams_from_a_member_with_the_role_are_capped_and_ended_by_the_idle_deadline(members):
    limits = CallLimits(threads=4, calls_per_caller=2, idle_seconds=5)
    calls, release = Calls(), threading.Event()
    try:
        with _serving(members, limits, calls) as address, \
                _channel(members, CARD_CENTER, address) as card_center, \
                _channel(members, "bureau", address) as bureau, _channel(members, "coordinator", address) as coordinator:
            streams = _open_silent_streams(card_center, PUT_RESIDUAL, limits.threads + 2, release)
            ended: queue.SimpleQueue = queue.SimpleQueue()
            for future in streams:
                future.add_done_callback(lambda f: ended.put(f.exception()))
            for _ in range(limits.calls_per_caller):   # the admitted ones wait for their first message
                assert calls.reading.get(timeout=WAIT) == (PUT_RESIDUAL, CARD_CENTER)
            refused = [ended.get(timeout=WAIT) for _ in range(len(streams) - limits.calls_per_caller)]
            assert {e.code() for e in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
            assert all(f"'{CARD_CENTER}'" in e.details() and f"{limits.calls_per_caller} calls" in e.details()
                       for e in refused)
            # meanwhile others are served, well before the idle deadline could free a thread
            assert _call(bureau, PING, b"m", timeout=limits.idle_seconds / 2) == b"ok"
            assert _call(coordinator, MASKED_GRADIENT, b"m", timeout=limits.idle_seconds / 2) == b"ok"
            idle = [ended.get(timeout=WAIT) for _ in range(limits.calls_per_caller)]
            assert {e.code() for e in idle} == {grpc.StatusCode.DEADLINE_EXCEEDED}
            assert all(f"'{CARD_CENTER}'" in e.details() and "no message within 5 s" in e.details() for e in idle)
            # every seat is free again: as many streams are admitted, and end well once their sender speaks
            later = threading.Event()
            again = _open_silent_streams(card_center, PUT_RESIDUAL, limits.calls_per_caller, later)
            for _ in again:
                assert calls.reading.get(timeout=WAIT) == (PUT_RESIDUAL, CARD_CENTER)
            later.set()
            assert [f.result(timeout=WAIT) for f in again] == [b"ok"] * limits.calls_per_caller
    finally:
        release.set()


@pytest.fixture
def party_daemon(members, tmp_path):
    """A real party daemon "bank" taking jobs only from "cardco"; yields its address and its log."""
    (tmp_path / "data").mkdir()
    config = tmp_path / "party.toml"
    config.write_text(f'[party]\nname = "{SERVER}"\nlisten = "127.0.0.1:0"\nstate_dir = "state"\n'
                      f'tls_dir = "{members[SERVER]}"\ncard_centers = ["{CARD_CENTER}"]\n')
    ready, log = tmp_path / "ready", tmp_path / "daemon.log"
    with log.open("w") as errors:
        daemon = subprocess.Popen([sys.executable, "-m", "fedscore", "party", "serve", "--config", str(config),
                                   "--ready-file", str(ready)], stdout=subprocess.DEVNULL, stderr=errors)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():   # the daemon writes its address once serving
            assert daemon.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield ready.read_text().split()[0], log
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


def test_a_party_daemon_keeps_answering_while_a_member_without_a_role_opens_silent_streams(members, party_daemon):
    address, log = party_daemon
    release = threading.Event()
    silent = [f"/{PACKAGE}.Training/PutResidual", f"/{PACKAGE}.Alignment/PsiReblind"]
    try:
        with _channel(members, "bureau", address) as bureau, _channel(members, "coordinator", address) as coordinator:
            # together more streams than the daemon has threads; each is refused unread, holding no thread
            held = [f for method in silent for f in _open_silent_streams(bureau, method, CallLimits().threads, release)]
            answers = [future.exception(timeout=WAIT) for future in held]
            assert all(a.code() == grpc.StatusCode.PERMISSION_DENIED and "refused 'bureau'" in a.details()
                       for a in answers), ({(a.code(), a.details()) for a in answers}, log.read_text()[-2000:])
            for caller in (coordinator, bureau):   # their senders are still silent, and the party answers
                assert pb.PingReply.FromString(_call(caller, PING, b"", timeout=10)).name == SERVER
    finally:
        release.set()
