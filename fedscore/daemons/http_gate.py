"""Which connections to the HTTPS scoring endpoint get a thread, and when.

A connection takes one of the MAX_WORKERS threads only while a request is
being read, scored and answered. Before that, and between requests on a
kept-alive connection, it waits on one gate thread that watches every waiting
socket at once: there the TLS handshake runs without blocking and must finish
within HANDSHAKE_DEADLINE of the connection's arrival, and a connection that
sends no request (the first after the handshake, or the next) is closed after
IDLE_TIMEOUT. A client that opens sockets and sends nothing, or completes the
handshake and sends nothing, holds a socket for seconds but never a thread, so
the approval system's requests keep theirs. A request that began must be read
whole within REQUEST_DEADLINE, or its connection is cut: a client trickling
bytes holds a thread for that long, not for as long as it likes.

One client address holds at most PER_ADDRESS connections, and the endpoint at
most MAX_OPEN. Past either, the longest-waiting connection (of that address, or
of any) is closed to make room; a new connection is refused only when every one
it would displace is busy with a request.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import queue
import selectors
import socket
import ssl
import threading
import time
from collections import OrderedDict, defaultdict
from typing import Callable

log = logging.getLogger("fedscore.http")

MAX_WORKERS = 64          # requests read, scored and answered at once; more wait for a thread, holding none
MAX_OPEN = 512            # connections held at all (handshaking, idle or in a request)
PER_ADDRESS = 32          # connections from one client address; above an approval system's connection pool
HANDSHAKE_DEADLINE = 2.0  # seconds from arrival to a finished TLS handshake
IDLE_TIMEOUT = 5.0        # seconds a connection may wait for its first or next request
REQUEST_DEADLINE = 10.0   # seconds a worker waits for the whole request once it began; then the connection is cut


class Link:
    """One client connection: its socket (TLS-wrapped on a TLS endpoint), and the reader and writer every
    request on it shares, so bytes a client sent ahead (a pipelined request) are not lost between requests."""

    __slots__ = ("sock", "address", "rfile", "wfile", "handshaking", "deadline", "watching", "open", "reading_until",
                 "reading_checked")

    def __init__(self, sock: socket.socket, address: tuple, handshaking: bool):
        self.sock, self.address, self.handshaking = sock, address, handshaking
        self.rfile, self.wfile = sock.makefile("rb"), sock.makefile("wb")
        self.deadline = 0.0
        self.watching = 0      # the selector events it is registered for; 0 when not registered
        self.open = True
        self.reading_until = 0.0     # while a request is read: when the gate cuts the connection (0: not reading)
        self.reading_checked = 0.0   # the gate's pending check of reading_until, at this time

    def request_read(self) -> None:
        """The request is read whole; answering it has no deadline here."""
        self.reading_until = 0.0

    @property
    def host(self) -> str:
        return self.address[0]

    def close(self) -> None:
        """End the stream, then drop what the client sent that will not be read, so that closing is a clean
        end of stream and not a reset that could overtake the answer or alert sent before it."""
        self.open = False
        for closing in (self.rfile, self.wfile):
            try:
                closing.close()
            except OSError:   # the writer flushes on close; to a client that is gone it cannot
                pass
        try:
            self.sock.settimeout(0.0)
            self.sock.shutdown(socket.SHUT_WR)   # on a TLS socket this also drops TLS: reads below are raw
            for _ in range(16):
                if not self.sock.recv(65536):
                    break
        except OSError:   # nothing more to read, or the client is gone
            pass
        self.sock.close()


def next_request_state(link: Link) -> int | bool:
    """True when the next request's first bytes are here, False at the end of the stream, else the selector
    events to wait for. The socket must be non-blocking."""
    try:
        if link.rfile.peek(1):
            return True
    except ssl.SSLWantReadError:
        return selectors.EVENT_READ
    except ssl.SSLWantWriteError:
        return selectors.EVENT_WRITE
    except OSError:
        return False
    if isinstance(link.sock, ssl.SSLSocket):
        return False   # a TLS read that returns nothing is the end of the stream
    try:   # a plaintext reader returns nothing both at the end and when no byte came yet
        return bool(link.sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return selectors.EVENT_READ
    except OSError:
        return False


class ConnectionGate:
    """The gate thread, which holds waiting connections, and the worker threads that serve requests.

    ``serve`` answers one request on a link (its socket blocking, with a timeout of its choosing) and says
    whether the connection stays open for another.
    """

    def __init__(self, tls: ssl.SSLContext | None, serve: Callable[[Link], bool]):
        self._tls, self._serve = tls, serve
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()    # new sockets and links back from workers
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_reader, selectors.EVENT_READ)
        self._waiting: OrderedDict[Link, None] = OrderedDict()    # longest waiting first
        self._waiting_from: dict[str, OrderedDict[Link, None]] = defaultdict(OrderedDict)
        self._open_from: dict[str, int] = defaultdict(int)   # waiting or in a request
        self._open = 0
        self._deadlines: list[tuple[float, int, Link]] = []   # waiting links'
        self._reading: list[tuple[float, int, Link]] = []     # links in a worker, reading a request
        self._order = itertools.count()
        self._ready: queue.SimpleQueue = queue.SimpleQueue()    # links with a request, for the workers
        self._workers_lock = threading.Lock()
        self._workers = self._idle_workers = self._backlog = 0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="http-gate", daemon=True)
        self._thread.start()

    # --- called from other threads

    def admit(self, sock: socket.socket, address: tuple) -> None:
        """Take a just-accepted socket; the gate thread decides whether to keep it."""
        self._post(("new", sock, address))

    def stop(self) -> None:
        """Close every waiting connection; requests under way finish, then their connections close."""
        self._stopped.set()
        self._post(("stop",))
        self._thread.join(5)

    def _post(self, message: tuple) -> None:
        self._inbox.put(message)
        try:
            self._wake_writer.send(b"\0")
        except OSError:   # the wake-up buffer is full (the gate is awake anyway), or the gate stopped
            pass

    # --- the gate thread

    def _run(self) -> None:
        while not self._stopped.is_set():
            for key, _ in self._selector.select(self._time_to_next_deadline()):
                if key.fileobj is self._wake_reader:
                    self._drain_wake_ups()
                elif key.data.open:
                    self._step(key.data)
            self._read_inbox()
            self._expire()
        for link in list(self._waiting):
            self._close(link)
        while True:   # what arrived while stopping
            try:
                message = self._inbox.get_nowait()
            except queue.Empty:
                break
            if message[0] == "new":
                message[1].close()
            elif message[0] == "back":
                self._close(message[1])
        self._selector.close()
        for closing in (self._wake_reader, self._wake_writer):
            closing.close()

    def _drain_wake_ups(self) -> None:
        try:
            while self._wake_reader.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _read_inbox(self) -> None:
        while True:
            try:
                message = self._inbox.get_nowait()
            except queue.Empty:
                return
            if message[0] == "new":
                self._accept(*message[1:])
            elif message[0] == "back":
                link, keep = message[1:]
                if keep and not self._stopped.is_set():
                    link.sock.settimeout(0.0)
                    self._wait(link, IDLE_TIMEOUT)
                    self._step(link)
                else:
                    self._close(link)

    def _accept(self, sock: socket.socket, address: tuple) -> None:
        host = address[0]
        if (self._open_from.get(host, 0) >= PER_ADDRESS and not self._evict(self._waiting_from.get(host, {}))) or (
                self._open >= MAX_OPEN and not self._evict(self._waiting)):
            log.debug("HTTP connection from %s refused: its connections are all busy", host)
            sock.close()
            return
        try:
            sock.setblocking(False)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except (OSError, ValueError) as error:
            log.debug("HTTP connection from %s dropped at once: %s", host, error)
            sock.close()
            return
        link = Link(sock, address, handshaking=self._tls is not None)
        self._open += 1
        self._open_from[host] += 1
        self._wait(link, HANDSHAKE_DEADLINE if link.handshaking else IDLE_TIMEOUT)
        self._step(link)

    def _evict(self, waiting: dict[Link, None]) -> bool:
        """Close the longest-waiting link of ``waiting``; False if there is none."""
        if not waiting:
            return False
        link = next(iter(waiting))
        log.debug("HTTP connection from %s closed to make room", link.host)
        self._close(link)
        return True

    def _wait(self, link: Link, seconds: float) -> None:
        link.deadline = time.monotonic() + seconds
        self._waiting[link] = None
        self._waiting_from[link.host][link] = None
        heapq.heappush(self._deadlines, (link.deadline, next(self._order), link))

    def _step(self, link: Link) -> None:
        """Advance ``link``; whatever goes wrong with one connection closes it, never the gate."""
        try:
            self._advance(link)
        except Exception:
            log.exception("HTTP connection from %s: the gate failed on it", link.host)
            self._close(link)

    def _advance(self, link: Link) -> None:
        """Take the handshake a step, or see whether a request has come; hand the link to a worker if so."""
        if link.handshaking:
            try:
                link.sock.do_handshake()
            except ssl.SSLWantReadError:
                return self._watch(link, selectors.EVENT_READ)
            except ssl.SSLWantWriteError:
                return self._watch(link, selectors.EVENT_WRITE)
            except (OSError, ValueError) as error:
                log.debug("TLS handshake from %s failed: %s", link.host, error)
                return self._close(link)
            link.handshaking = False
            self._forget(link)
            self._wait(link, IDLE_TIMEOUT)
        state = next_request_state(link)
        if state is True:
            self._unwatch(link)
            self._forget(link)
            self._dispatch(link)
        elif state is False:
            self._close(link)
        else:
            self._watch(link, state)

    def _watch(self, link: Link, events: int) -> None:
        if not link.watching:
            self._selector.register(link.sock, events, link)
        elif link.watching != events:
            self._selector.modify(link.sock, events, link)
        link.watching = events

    def _unwatch(self, link: Link) -> None:
        if link.watching:
            self._selector.unregister(link.sock)
            link.watching = 0

    def _forget(self, link: Link) -> None:
        """No longer waiting (its deadline entry goes stale and is skipped)."""
        self._waiting.pop(link, None)
        from_host = self._waiting_from.get(link.host)
        if from_host is not None:
            from_host.pop(link, None)
            if not from_host:
                del self._waiting_from[link.host]

    def _close(self, link: Link) -> None:
        if not link.open:
            return
        self._unwatch(link)
        self._forget(link)
        link.close()
        self._open -= 1
        self._open_from[link.host] -= 1
        if not self._open_from[link.host]:
            del self._open_from[link.host]

    def _time_to_next_deadline(self) -> float | None:
        while self._deadlines:
            deadline, _, link = self._deadlines[0]
            if link in self._waiting and link.deadline == deadline:
                break
            heapq.heappop(self._deadlines)
        while self._reading and not self._reading_check_due(*self._reading[0]):
            heapq.heappop(self._reading)
        soonest = min([entries[0][0] for entries in (self._deadlines, self._reading) if entries], default=None)
        return None if soonest is None else max(0.0, soonest - time.monotonic())

    def _expire(self) -> None:
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, _, link = heapq.heappop(self._deadlines)
            if link in self._waiting and link.deadline == deadline:
                log.debug("HTTP connection from %s closed: %s", link.host,
                          "no TLS handshake in time" if link.handshaking else "no request in time")
                self._close(link)
        while self._reading and self._reading[0][0] <= now:
            entry = heapq.heappop(self._reading)
            link = entry[2]
            if not self._reading_check_due(*entry):
                continue
            if link.reading_until > now:   # its worker took it later than it was queued: check again then
                self._check_reading(link)
            else:
                log.debug("HTTP connection from %s cut: its request was not read whole in time", link.host)
                try:   # the socket's own shutdown, not TLS's: its worker is blocked reading and gets the end
                    socket.socket.shutdown(link.sock, socket.SHUT_RDWR)
                except OSError:
                    pass

    @staticmethod
    def _reading_check_due(at: float, _: int, link: Link) -> bool:
        """Whether this check of a link's reading deadline still counts: the link still reads a request,
        and no later check of it was queued."""
        return bool(link.reading_until) and link.open and at == link.reading_checked

    def _check_reading(self, link: Link) -> None:
        link.reading_checked = link.reading_until
        heapq.heappush(self._reading, (link.reading_checked, next(self._order), link))

    # --- the workers

    def _dispatch(self, link: Link) -> None:
        link.reading_until = time.monotonic() + REQUEST_DEADLINE   # from the queue; its worker restarts the clock
        self._check_reading(link)
        with self._workers_lock:
            if self._idle_workers:
                self._idle_workers -= 1
            elif self._workers < MAX_WORKERS:
                self._workers += 1
                threading.Thread(target=self._work, name="http-worker", daemon=True).start()
            else:
                self._backlog += 1
        self._ready.put(link)

    def _work(self) -> None:
        while True:
            link = self._ready.get()
            link.reading_until = time.monotonic() + REQUEST_DEADLINE
            keep = False
            try:
                keep = self._serve(link)
            except Exception as error:   # a client gone mid-answer, or a bug: this connection ends, not the endpoint
                log.info("HTTP connection from %s dropped: %s", link.host, error)
            link.request_read()
            if self._stopped.is_set():
                link.close()
            else:
                self._post(("back", link, keep))
            with self._workers_lock:
                if self._backlog:
                    self._backlog -= 1
                else:
                    self._idle_workers += 1
