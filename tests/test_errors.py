"""Every fedscore error raised in a daemon arrives as its own class, with its message, and exits the CLI with its code.

Raised in a real gRPC server on loopback (through the servicer_errors the daemons use) and behind the scoring
HTTP endpoint, rebuilt on the other side, then turned into an exit code by the function the CLI's main uses.
"""
from __future__ import annotations

import http.client
import json
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from fedscore import errors
from fedscore.cli.exits import exit_for
from fedscore.daemons.http import start_http
from fedscore.errors import FedscoreError, InternalError, LedgerError, PeerError, UnverifiedError
from fedscore.transport.rpc import RELAYED, peer_error, servicer_errors

OWNER = "party 'guest'"
CLASSES = [value for value in vars(errors).values() if isinstance(value, type) and issubclass(value, FedscoreError)]
# The CLI's contract: 1 a bug, 2 a problem to fix, 3 a record that does not verify. A new class must be placed here.
EXIT = {cls: 2 for cls in CLASSES} | {InternalError: 1, UnverifiedError: 3, LedgerError: 3}
LINE = {1: "fedscore: internal error: ", 2: "fedscore: error: ", 3: "fedscore: does not verify: "}


def made(cls: type[FedscoreError]) -> FedscoreError:
    """An instance as the code raising it would build one."""
    if cls is LedgerError:
        return LedgerError(4, "the signature of member 'host' does not verify")
    return cls(f"what went wrong, as {cls.__name__} says it")


class Raiser:
    """A servicer whose one method raises whatever the test sets, translated as every daemon's methods are."""

    label = OWNER

    def __init__(self):
        self.error: BaseException | None = None

    @servicer_errors("label")
    def Raise(self, request: bytes, context) -> bytes:
        raise self.error

    def Abort(self, request: bytes, context) -> bytes:
        """The status alone, no class named: as a peer of an older version would answer."""
        context.abort(grpc.StatusCode[self.error.grpc_status], str(self.error))


@pytest.fixture(scope="module")
def daemon():
    raiser = Raiser()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    handlers = {name: grpc.unary_unary_rpc_method_handler(getattr(raiser, name)) for name in ("Raise", "Abort")}
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("fedscore.test.Raiser", handlers)])
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    server.start()
    channel = grpc.insecure_channel(address)

    def call(error: BaseException, method: str = "Raise") -> FedscoreError:
        raiser.error = error
        with pytest.raises(grpc.RpcError) as caught:
            channel.unary_unary(f"/fedscore.test.Raiser/{method}")(b"", timeout=10)   # bytes in, bytes out
        return peer_error(OWNER, address, caught.value)

    yield call
    channel.close()
    server.stop(None)


def test_the_table_gives_every_class_its_exit_code_and_a_status_of_its_own_kind():
    assert {cls: cls.exit_code for cls in CLASSES} == EXIT
    assert all(grpc.StatusCode[cls.grpc_status] for cls in CLASSES)
    assert errors.UnknownJobError.grpc_status == "NOT_FOUND" and errors.UnknownJobError.http_status == 404
    assert errors.class_for_status("INVALID_ARGUMENT") is errors.DataError   # what a relay that names none meant


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_each_error_raised_in_a_daemon_arrives_as_its_class_and_exits_with_its_code(daemon, cls):
    raised = made(cls)
    arrived = daemon(raised)
    assert type(arrived) is cls
    message = f"{OWNER} {RELAYED} {raised}" if cls is PeerError else str(raised)   # a relayed failure says who relays it
    assert str(arrived) == message
    assert exit_for(arrived) == (EXIT[cls], LINE[EXIT[cls]] + message)


def test_a_bug_in_a_daemon_arrives_as_an_internal_error_naming_the_daemon(daemon):
    arrived = daemon(ZeroDivisionError("division by zero"))
    assert type(arrived) is InternalError
    assert exit_for(arrived) == (1, f"fedscore: internal error: {OWNER}: internal error (ZeroDivisionError: division by zero)")


@pytest.mark.parametrize("cls", [InternalError, LedgerError, errors.UnknownJobError, errors.AccessError],
                         ids=lambda cls: cls.__name__)
def test_a_peer_that_names_no_class_gets_the_class_its_status_stands_for(daemon, cls):
    arrived = daemon(made(cls), "Abort")
    assert type(arrived) is errors.class_for_status(cls.grpc_status)
    assert exit_for(arrived)[0] == EXIT[cls]   # the exit code survives even then


class FailingHost:
    """A scoring host whose every request fails with what the test sets."""

    name = "card_center"

    def __init__(self):
        self.error: BaseException | None = None

    def open_models(self) -> list[str]:
        return []

    def score(self, job_id: str, applicant: str, features: dict, consent: str):
        raise self.error


@pytest.fixture(scope="module")
def endpoint():
    host = FailingHost()
    server, address = start_http(host, "127.0.0.1:0", None)

    def post(error: BaseException) -> tuple[int, FedscoreError]:
        host.error = error
        connection = http.client.HTTPConnection(*address.split(":"), timeout=10)
        body = json.dumps({"applicant_id": "a1", "features": {"AGE": 30}, "consent": "token"})
        connection.request("POST", "/v1/score", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        document = json.loads(response.read())
        connection.close()
        return response.status, errors.rebuild(errors.error_class(document["error_class"]), document["error"])

    yield post
    server.shutdown()


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
def test_each_error_behind_the_http_endpoint_answers_its_status_and_class(endpoint, cls):
    raised = made(cls)
    status, arrived = endpoint(raised)
    assert status == cls.http_status and type(arrived) is cls and str(arrived) == str(raised)
    assert exit_for(arrived) == (EXIT[cls], LINE[EXIT[cls]] + str(raised))


def test_a_bug_behind_the_http_endpoint_is_a_500_internal_error(endpoint):
    status, arrived = endpoint(KeyError("features"))
    assert status == 500 and type(arrived) is InternalError
    assert str(arrived) == "card_center: internal error (KeyError)" and exit_for(arrived)[0] == 1
