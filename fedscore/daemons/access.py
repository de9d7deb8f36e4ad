"""Who may call what, by the member name in the caller's certificate, and how much one caller may hold.

Two checks, each in one place:

* The caller's role, before the request is read. ``ROLE_TABLE`` is the only
  place that says which role may call which gRPC method; ``AccessInterceptor``
  enforces it on every call before the servicer runs (for a request stream:
  before its first message is read), so a member without the role is refused
  without being able to hold a thread. It also bounds what a member with the
  role can hold: ``CallLimits.calls_per_caller`` open calls at once, and a
  request stream whose next message takes longer than ``CallLimits.idle_seconds``
  is ended. The domain code repeats none of this.
* Job-specific facts, after the request is read: the table knows roles, not
  jobs, so the code that looks the job or model up checks the one member it
  names, with ``require``: THIS job's card center
  (fedscore.daemons.party.jobs.require_card_center), the chain's proposer by
  chain kind (fedscore.daemons.party.chain.Chains), the card center a model was
  trained with or is served for (fedscore.daemons.party.service.ScoringServicer),
  and the job's card center asking the coordinator to run or follow it
  (fedscore.daemons.coordinator.service).

A plaintext daemon (--insecure) knows no caller, so it checks no role and no
per-caller limit: that mode is for debugging only. Methods missing from the
table are refused in both modes.
"""
from __future__ import annotations

import enum
import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType

import grpc

from fedscore.crypto.certs import COORDINATOR
from fedscore.errors import AccessError
from fedscore.proto import fedscore_pb2 as pb
from fedscore.transport.tls import caller_name

__all__ = [
    "COORDINATOR", "ROLE_TABLE", "AccessInterceptor", "CallLimits", "Role", "roles_of", "require",
]

log = logging.getLogger("fedscore.access")


class Role(enum.Enum):
    """What a caller is to this daemon, known from its certificate alone; the value reads in refusals."""

    COORDINATOR = "the coordinator"
    CARD_CENTER = "a card center"   # one this party takes jobs from (config `card_centers`; empty: none)
    SELF = "this member itself"     # e.g. a card center's approval system, calling with the card center's certificate
    MEMBER = "any member"           # any certificate from the consortium CA
    OBSERVER = "an observer"        # one this member lets read its chains (config `observers`); nothing else


_COORDINATOR = frozenset({Role.COORDINATOR})
_CARD_CENTER = frozenset({Role.CARD_CENTER})
_SELF = frozenset({Role.SELF})
_MEMBER = frozenset({Role.MEMBER})
_OBSERVER = frozenset({Role.OBSERVER})
_P = f"/{pb.DESCRIPTOR.package}."

ROLE_TABLE: Mapping[str, frozenset[Role]] = MappingProxyType({
    f"{_P}Party/Ping": _MEMBER,
    f"{_P}Party/Status": _MEMBER,   # each caller sees only the jobs it is a member of
    f"{_P}Jobs/PrepareJob": _COORDINATOR,
    f"{_P}Jobs/StartTraining": _COORDINATOR,
    f"{_P}Jobs/FinishJob": _COORDINATOR,
    f"{_P}Jobs/AbortJob": _COORDINATOR,
    f"{_P}Jobs/CloseJob": _COORDINATOR,
    f"{_P}Jobs/ResumeJob": _COORDINATOR,
    f"{_P}Training/MaskedGradient": _COORDINATOR,
    f"{_P}Training/ApplyGradient": _COORDINATOR,
    f"{_P}Training/MaskedBinSums": _COORDINATOR,
    f"{_P}Training/ApplyBinSums": _COORDINATOR,
    f"{_P}Training/ForwardStep": _COORDINATOR,
    f"{_P}Training/LossShare": _COORDINATOR,
    f"{_P}Training/Evaluate": _COORDINATOR,
    f"{_P}Training/ScoreMaskSeed": _COORDINATOR,
    f"{_P}Training/EncryptedBinSums": _CARD_CENTER,
    f"{_P}Training/KeepFeatures": _CARD_CENTER,
    f"{_P}Training/EncryptedPartial": _CARD_CENTER,
    f"{_P}Training/PutResidual": _CARD_CENTER,
    f"{_P}Training/EncryptedLossTerm": _CARD_CENTER,
    f"{_P}Training/MaskedScores": _CARD_CENTER,
    f"{_P}Alignment/Align": _COORDINATOR,
    f"{_P}Alignment/PsiBlindedIds": _CARD_CENTER,
    f"{_P}Alignment/PsiReblind": _CARD_CENTER,
    f"{_P}Alignment/PsiAccept": _CARD_CENTER,
    # the chain's proposer: the coordinator (training chain) or the card center (scoring and audience chains)
    f"{_P}Chain/ProposeBlock": _COORDINATOR | _CARD_CENTER,
    f"{_P}Chain/CommitBlock": _COORDINATOR | _CARD_CENTER,
    f"{_P}Chain/SignSettlement": _COORDINATOR | _CARD_CENTER,
    # a card center opens its own model (SELF) and its partners' (CARD_CENTER)
    f"{_P}Scoring/OpenScoring": _SELF | _CARD_CENTER,
    f"{_P}Scoring/Score": _SELF,
    f"{_P}Scoring/PartialScore": _CARD_CENTER,
    f"{_P}Scoring/SettleScoring": _SELF,
    f"{_P}Scoring/CloseScoring": _SELF | _CARD_CENTER,
    f"{_P}Scoring/RecordVerification": _SELF,   # the card center's verification system, with its certificate
    f"{_P}Scoring/ScoreBatch": _SELF,
    # marketing audiences: the card center's marketing system (its certificate) asks its own daemon, which asks
    # the partner; the partner then checks the request names the caller as the card center (require)
    f"{_P}Audience/Handover": _SELF,
    f"{_P}Audience/Query": _SELF,
    f"{_P}Audience/Campaign": _SELF,
    f"{_P}Audience/Conversion": _SELF,
    f"{_P}Audience/Settle": _SELF,
    f"{_P}Audience/AcceptModel": _CARD_CENTER,
    f"{_P}Audience/AnswerQuery": _CARD_CENTER,
    f"{_P}Audience/StartCampaign": _CARD_CENTER,
    f"{_P}Audience/Unrecorded": _CARD_CENTER,
    f"{_P}Coordinator/Ping": _MEMBER,
    f"{_P}Coordinator/Status": _MEMBER,
    f"{_P}Coordinator/RunJob": _MEMBER,      # then: the caller must be the job's card center
    f"{_P}Coordinator/FollowJob": _MEMBER,   # then: the caller must be the job's card center
    "/grpc.health.v1.Health/Check": _MEMBER | _OBSERVER,
    "/grpc.health.v1.Health/Watch": _MEMBER | _OBSERVER,
    "/grpc.health.v1.Health/List": _MEMBER | _OBSERVER,
    # an observer (a regulator's replica) reads the chains this member holds, and may call nothing else
    f"{_P}Replica/ListChains": _OBSERVER,
    f"{_P}Replica/ChainBlocks": _OBSERVER,
    f"{_P}Observer/Status": _MEMBER,   # served by the observer's own daemon: any member may ask what it holds
})


@dataclass(frozen=True)
class CallLimits:
    """How many calls a daemon serves at once, and for how long one caller may hold them.

    Sized for the members' own concurrency: the coordinator sends a party at
    most a few calls at once per job, a card center a few per partner per job
    (one partial-score batch at a time per model), and `fedscore score`
    keeps 8 requests in flight by default. ``calls_per_caller`` leaves room for
    that; ``threads`` leaves room for several callers at their limit at once.
    """

    threads: int = 64               # the server's thread pool
    calls_per_caller: int = 16      # open calls one member may have at once (RESOURCE_EXHAUSTED beyond)
    idle_seconds: float = 10.0      # a request stream's next message must come within this (DEADLINE_EXCEEDED)

    def __post_init__(self) -> None:
        if not 0 < self.calls_per_caller < self.threads:
            raise ValueError("calls_per_caller must be positive and below threads, so no one caller holds them all")
        if self.idle_seconds <= 0:
            raise ValueError("idle_seconds must be positive")


def roles_of(caller: str, own_name: str, card_centers: Iterable[str] = (),
             observers: Iterable[str] = ()) -> frozenset[Role]:
    """The roles ``caller`` plays towards the daemon of member ``own_name``. An observer this member admits
    plays that role only: it reads chains and takes part in nothing."""
    if caller in frozenset(observers) and caller not in (COORDINATOR, own_name):
        return _OBSERVER
    card_centers = frozenset(card_centers)
    roles = {Role.MEMBER}
    if caller == COORDINATOR:
        roles.add(Role.COORDINATOR)
    if caller == own_name:
        roles.add(Role.SELF)
    if caller in card_centers and caller != COORDINATOR:
        roles.add(Role.CARD_CENTER)
    return frozenset(roles)


def require(context: grpc.ServicerContext, allowed: str, what: str) -> None:
    """Refuse the call unless the caller's certificate names ``allowed`` (or the daemon runs plaintext).

    For the job-specific checks made once the request is read; a role alone is the table's to check.
    """
    caller = caller_name(context)
    if caller is not None and caller != allowed:
        raise AccessError(f"{what} is for {allowed!r} only; refused {caller!r}")


class StreamIdle(BaseException):
    """A request stream's next message did not come in time.

    A BaseException, like asyncio's CancelledError, so that a servicer's
    catch-all for its own bugs lets it through to the interceptor.
    """


class IdleDeadline(Iterator):
    """A request stream whose every next message must arrive within ``seconds``.

    gRPC's request iterator has no timeout, so a helper thread reads it, one
    message per ask; the servicer's thread waits with a timeout. Closing tells
    the helper to stop; a helper still waiting on gRPC wakes when the call ends.
    """

    def __init__(self, requests: Iterator, seconds: float):
        self.seconds = seconds
        self._requests = requests
        self._asks: queue.SimpleQueue = queue.SimpleQueue()
        self._answers: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._read, name="request-stream", daemon=True).start()

    def _read(self) -> None:
        while self._asks.get():
            try:
                self._answers.put((next(self._requests), None))
            except BaseException as error:   # noqa: BLE001 - the end of the stream or its failure, handed over
                self._answers.put((None, error))
                return

    def __next__(self):
        self._asks.put(True)
        try:
            message, error = self._answers.get(timeout=self.seconds)
        except queue.Empty:
            raise StreamIdle(f"no message within {self.seconds:g} s") from None
        if error is not None:
            raise error
        return message

    def close(self) -> None:
        self._asks.put(False)


class AccessInterceptor(grpc.ServerInterceptor):
    """Enforces ``table`` and ``limits`` on every call to the daemon of member ``name``."""

    def __init__(self, name: str, card_centers: Iterable[str] = (), limits: CallLimits = CallLimits(),
                 label: str | None = None, table: Mapping[str, frozenset[Role]] = ROLE_TABLE,
                 observers: Iterable[str] = ()):
        self.name = name
        self.card_centers = tuple(card_centers)
        self.observers = tuple(observers)
        self.limits = limits
        self.label = label or repr(name)
        self.table = table
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:   # no such method: gRPC answers UNIMPLEMENTED
            return None
        return _guarded(handler, handler_call_details.method, self)

    @contextmanager
    def admitted(self, method: str, context: grpc.ServicerContext) -> Iterator[None]:
        """Run the call only if the caller's role allows it and the caller has a free seat."""
        caller = caller_name(context)
        allowed = self.table.get(method)
        if allowed is None:
            self._refuse(context, grpc.StatusCode.PERMISSION_DENIED,
                         f"{self.label}: {method} is not in its role table; refused {_who(caller)}")
        if caller is None:   # plaintext: nobody to check
            yield
            return
        if not allowed & roles_of(caller, self.name, self.card_centers, self.observers):
            wanted = " or ".join(sorted(role.value for role in allowed))
            self._refuse(context, grpc.StatusCode.PERMISSION_DENIED,
                         f"{self.label}: {method} is for {wanted} only; refused {caller!r}")
        release = self._take_seat(caller)
        if release is None:
            self._refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"{self.label}: {caller!r} already has {self.limits.calls_per_caller} calls open here "
                         f"(the most one member may hold); refused {method}")
        context.add_callback(release)   # also when the servicer's generator is never closed
        try:
            yield
        finally:
            release()

    def _take_seat(self, caller: str) -> Callable[[], None] | None:
        """Count one more open call of ``caller``; the returned function (idempotent) frees it."""
        with self._lock:
            if self._open[caller] >= self.limits.calls_per_caller:
                return None
            self._open[caller] += 1
        done = threading.Event()

        def release() -> None:
            with self._lock:
                if done.is_set():
                    return
                done.set()
                self._open[caller] -= 1
                if not self._open[caller]:
                    del self._open[caller]

        return release

    def _refuse(self, context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> None:
        log.warning("%s", message)
        context.abort(code, message)

    def end_idle(self, method: str, context: grpc.ServicerContext, idle: StreamIdle) -> None:
        self._refuse(context, grpc.StatusCode.DEADLINE_EXCEEDED,
                     f"{self.label}: ended {method} from {_who(caller_name(context))}: {idle}")


def _who(caller: str | None) -> str:
    return repr(caller) if caller is not None else "a plaintext caller"


_MAKERS = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}


def _guarded(handler: grpc.RpcMethodHandler, method: str, interceptor: AccessInterceptor) -> grpc.RpcMethodHandler:
    """``handler`` admitted by ``interceptor``, its request stream (if any) behind the idle deadline."""
    kind, make = _MAKERS[handler.request_streaming, handler.response_streaming]
    behaviour = getattr(handler, kind)

    @contextmanager
    def entered(request, context):
        with interceptor.admitted(method, context):
            if not handler.request_streaming:
                yield request
                return
            paced = IdleDeadline(request, interceptor.limits.idle_seconds)
            context.add_callback(paced.close)
            try:
                yield paced
            except StreamIdle as idle:
                interceptor.end_idle(method, context, idle)
            finally:
                paced.close()

    if handler.response_streaming:
        def guarded(request, context):
            with entered(request, context) as request:
                yield from behaviour(request, context)
    else:
        def guarded(request, context):
            with entered(request, context) as request:
                return behaviour(request, context)

    return make(guarded, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
