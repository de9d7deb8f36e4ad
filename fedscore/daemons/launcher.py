"""`--local`: a whole consortium as separate OS processes on this machine.

Each member gets its own state folder and config under the run's state root;
each party daemon's data folder is the folder of its own data file, and it
opens only the file the job names for it. Daemons bind port 0 and report the
port they got through a ready file, so runs never collide on ports (a service
that others call, `fedscore serve`, gives them fixed addresses instead); a
daemon is used only once it answers the standard gRPC health check. Unless
told to run insecure, the launcher makes the consortium's CA and every
member's certificate under the state root (once; later runs reuse them), so
the daemons talk mutual TLS as they would across banks.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedscore.job import JobSpec
from fedscore.crypto.certs import COORDINATOR, init_consortium
from fedscore.daemons.health import SERVICES
from fedscore.errors import DataError, PeerError
from fedscore.proctable import in_session, wait_gone
from fedscore.transport.rpc import open_channel, peer_error
from fedscore.transport.tls import TlsIdentity

HEALTH_TIMEOUT = 5.0       # one health check: a busy machine may be slow to answer the first
POLL_SECONDS = 0.05
MAX_RESTARTS = 5           # per member and run: a daemon that keeps dying is left down (the job then fails)
LEFTOVER_SECONDS = 10.0    # how long a dead daemon's workers may take to follow it
OBSERVER = "regulator"     # the observer's member name when a local consortium runs one
OBSERVER_POLL_SECONDS = 0.2
LOCAL_MAX_JOBS = 10_000    # a partner's job budget when one owner runs every party (the run's state folder is reused)


def signal_session(session: int, signum: int) -> None:
    """Send ``signum`` to every process of a session (a daemon starts its own), if any is left."""
    try:
        os.killpg(session, signum)
    except ProcessLookupError:
        pass


def _toml_string(value: str) -> str:
    return json.dumps(value)  # TOML basic strings share JSON's escapes


def _toml_value(value: str | int | float | list | dict) -> str:
    if isinstance(value, dict):   # an inline table
        return "{" + ", ".join(f"{_toml_string(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    return _toml_string(value) if isinstance(value, (str, list)) else str(value)


class LocalConsortium:
    """Start, watch and stop the coordinator and one daemon per party."""

    startup_seconds = 60.0     # from start to answering health SERVING (all daemons start side by side)

    def __init__(self, spec: JobSpec, base_dir: Path, state_root: Path, workers: int = 0,
                 consent_issuers: tuple[str, ...] = (), insecure: bool = False,
                 listen: Mapping[str, str] | None = None, http_listen: str = "127.0.0.1:0",
                 verifiers: Mapping[str, str] | None = None, observer: bool = False,
                 audience: Mapping[str, dict] | None = None):
        """``listen``: member -> host:port its daemon binds (default: a free loopback port); ``http_listen``:
        the card center's HTTPS scoring endpoint; ``verifiers``: name -> hex key of the identity verifiers the
        card center trusts; ``observer``: also run an observer (OBSERVER), which every member admits, reading
        every chain; ``audience``: party -> its [party.audience] settings (a partner answering audience queries)."""
        self.spec = spec
        self.audience = dict(audience or {})
        self.observer = OBSERVER if observer else ""
        self.observer_address = ""
        self.listen = dict(listen or {})
        self.http_listen = http_listen
        self.insecure = insecure
        self.certs_dir = state_root.resolve() / "certs"
        self.consent_issuers = list(consent_issuers)   # one owner runs every party here: the job's issuers are trusted
        self.verifiers = dict(verifiers or {})
        self.http_addresses: dict[str, str] = {}
        self.base_dir = base_dir
        self.state_root = state_root.resolve()
        self.workers = workers
        self.processes: dict[str, subprocess.Popen] = {}
        self.coordinator_address = ""
        self.restarts: dict[str, int] = {}     # member -> times the supervisor restarted it
        self.leftovers: dict[str, int] = {}    # member -> processes that outlived its dead daemon (then killed)
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        # the daemons' lifeline: they hold the read end and stop when it reaches end of file, which the kernel
        # makes happen when this process ends, however it ends (SIGKILL too); only this process holds the write end
        self._lifeline, self._lifeline_holder = os.pipe()

    def __enter__(self) -> "LocalConsortium":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _launch(self, member: str, role: str, settings: dict[str, str | int | list[str] | dict[str, str]]) -> Path:
        folder = self.state_root / member
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        config = folder / f"{role}.toml"
        if not self.insecure:
            settings = {**settings, "tls_dir": str(self.certs_dir / member)}
        lines = [f"[{role}]"] + [
            f"{key} = {_toml_value(value)}" for key, value in settings.items()
        ]
        config.write_text("\n".join(lines) + "\n")
        return self._spawn(member, role, config)

    def _launch_observer(self, addresses: Mapping[str, str]) -> Path:
        """The observer's daemon, reading every member at ``addresses``."""
        folder = self.state_root / self.observer
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        config = folder / "observer.toml"
        tls = "" if self.insecure else f"tls_dir = {_toml_string(str(self.certs_dir / self.observer))}\n"
        members = "".join(f"{member} = {_toml_string(address)}\n" for member, address in addresses.items())
        listen = _toml_string(self.listen.get(self.observer, "127.0.0.1:0"))
        config.write_text(f'[observer]\nname = "{self.observer}"\nlisten = {listen}\nstate_dir = "."\n{tls}'
                          f'poll_seconds = {OBSERVER_POLL_SECONDS}\n\n[observer.members]\n{members}')
        return self._spawn(self.observer, "observer", config)

    def _role(self, member: str) -> str:
        return "coordinator" if member == COORDINATOR else "observer" if member == self.observer else "party"

    def _spawn(self, member: str, role: str, config: Path) -> Path:
        """Start one daemon from its config file, logging to its folder; returns its ready file."""
        ready = config.parent / "ready"
        ready.unlink(missing_ok=True)
        log = self.log_path(member).open("ab")
        self.processes[member] = subprocess.Popen(
            [sys.executable, "-m", "fedscore", role, "serve", "--config", str(config), "--ready-file", str(ready),
             "--lifeline-fd", str(self._lifeline), *(["--insecure"] if self.insecure else [])],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            pass_fds=(self._lifeline,),
        )
        log.close()
        return ready

    def identity(self, member: str) -> TlsIdentity | None:
        """The TLS identity to act as ``member`` (e.g. the card center submitting a job); None when insecure."""
        return None if self.insecure else TlsIdentity.load(self.certs_dir / member)

    @property
    def card_center_identity(self) -> TlsIdentity | None:
        """Who submits jobs and asks for scores (the card center's data scientist and approval system)."""
        return self.identity(self.spec.card_center.name)

    def start(self) -> JobSpec:
        if not self.insecure:
            observers = [self.observer] if self.observer else []
            init_consortium(self.certs_dir, [COORDINATOR, *(p.name for p in self.spec.parties), *observers])
        admits = {"observers": [self.observer]} if self.observer else {}
        ready_files: dict[str, Path] = {}
        parties = []
        for party in self.spec.parties:
            data = (self.base_dir / party.data).resolve()
            if not data.is_file():
                raise DataError(f"party {party.name!r}: data file {party.data!r} not found (looked for {data})")
            ready_files[party.name] = self._launch(
                party.name, "party",
                # one owner runs every party here, so the job's key size and batches are the policy, and the job's
                # card center is every party's; with every party's data in one place, no job budget protects anything
                {"name": party.name, "listen": self.listen.get(party.name, "127.0.0.1:0"), "state_dir": ".",
                 "data_dir": str(data.parent),
                 "workers": self.workers, "min_key_bits": self.spec.key_bits, "min_batch_rows": 1,
                 "consent_issuers": self.consent_issuers, "card_centers": [self.spec.card_center.name],
                 "max_jobs": LOCAL_MAX_JOBS, **admits,
                 **({"http_listen": self.http_listen, "verifiers": self.verifiers} if party.is_card_center else {}),
                 **({"audience": self.audience[party.name]} if party.name in self.audience else {})},
            )
            parties.append(replace(party, data=data.name))
        ready_files["coordinator"] = self._launch(
            "coordinator", "coordinator",
            {"name": "coordinator", "listen": self.listen.get(COORDINATOR, "127.0.0.1:0"), "state_dir": ".", **admits},
        )
        addresses = self._wait(ready_files)
        self.coordinator_address = addresses["coordinator"]
        if self.observer:
            self.observer_address = self._wait({self.observer: self._launch_observer(addresses)})[self.observer]
        self.spec = replace(
            self.spec,
            parties=tuple(replace(p, address=addresses[p.name]) for p in parties),
            coordinator_address=self.coordinator_address,
        )
        return self.spec

    def _wait(self, ready_files: dict[str, Path]) -> dict[str, str]:
        """Each daemon's address, once it serves (they start side by side, so waiting in turn costs nothing)."""
        deadline = time.monotonic() + self.startup_seconds
        addresses: dict[str, str] = {}
        for member, ready in ready_files.items():
            addresses[member] = self._announced(member, ready, deadline)
            self.wait_until_serving(member, addresses[member], deadline)
        return addresses

    def _announced(self, member: str, ready: Path, deadline: float) -> str:
        """The address in ``member``'s ready file (written once it listens), noting its HTTP address if any."""
        while not ready.exists():
            self._still_starting(member, deadline, "wrote no ready file")
        address, *rest = ready.read_text().split()
        for line in rest:
            if line.startswith("http="):
                self.http_addresses[member] = line.removeprefix("http=")
        return address

    def wait_until_serving(self, member: str, address: str, deadline: float) -> None:
        """Return once ``member``'s daemon answers the gRPC health check SERVING: listening is not yet serving.

        PeerError naming the daemon and its log if it exits first, or is not serving by ``deadline``
        (time.monotonic()); the message says what the last check got.
        """
        request = health_pb2.HealthCheckRequest(service=SERVICES[self._role(member)])
        with open_channel(address, member, self.identity(member)) as channel:
            check = health_pb2_grpc.HealthStub(channel).Check
            while True:
                try:
                    status = check(request, timeout=max(0.1, min(HEALTH_TIMEOUT, deadline - time.monotonic()))).status
                except grpc.RpcError as error:
                    last = str(peer_error(f"{member} daemon", address, error, HEALTH_TIMEOUT))
                else:
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        return
                    last = f"its health is {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}"
                self._still_starting(member, deadline, f"did not answer its health check SERVING (last: {last})")

    def _still_starting(self, member: str, deadline: float, late: str) -> None:
        """Wait a moment for a daemon that is starting; PeerError if it died or ``late`` past the deadline."""
        if self.processes[member].poll() is not None:
            raise PeerError(f"{member} daemon exited at start-up: {self.log_tail(member)}")
        if time.monotonic() > deadline:
            raise PeerError(f"{member} daemon {late} within {self.startup_seconds:g} s (log: {self.log_path(member)})")
        time.sleep(POLL_SECONDS)

    def restart(self, member: str) -> None:
        """Start ``member``'s daemon again (after it died) on the address it had, with its state as it was."""
        process = self.processes[member]
        if process.poll() is None:
            raise PeerError(f"{member} daemon is still running")
        role = self._role(member)
        address = {"coordinator": self.coordinator_address, "observer": self.observer_address}.get(role) or \
            self.spec.party(member).address
        folder = self.state_root / member
        config = folder / f"{role}.toml"
        lines = config.read_text().splitlines()
        config.write_text("\n".join(f'listen = "{address}"' if l.startswith("listen = ") else l for l in lines) + "\n")
        self._wait({member: self._spawn(member, role, config)})

    def supervise(self) -> None:
        """Restart any daemon that dies, as systemd would in a deployment: the job resumes from its checkpoints."""

        def watch() -> None:
            while not self._stopping.wait(0.2):
                for member in self.dead_members():
                    if self._stopping.is_set() or self.restarts.get(member, 0) >= MAX_RESTARTS:
                        continue
                    self.restarts[member] = self.restarts.get(member, 0) + 1
                    self._clear_leftovers(member)
                    try:
                        self.restart(member)
                    except (PeerError, OSError):
                        pass   # counted; tried again until MAX_RESTARTS

        self._supervisor = threading.Thread(target=watch, name="supervisor", daemon=True)
        self._supervisor.start()

    def _clear_leftovers(self, member: str) -> None:
        """A dead daemon's processes (its session: it was started in its own) must follow it; any that do not
        within LEFTOVER_SECONDS are counted in ``leftovers`` and killed."""
        session = self.processes[member].pid
        left = wait_gone(in_session(session), LEFTOVER_SECONDS)
        if left:
            self.leftovers[member] = self.leftovers.get(member, 0) + len(left)
            signal_session(session, signal.SIGKILL)

    def log_path(self, member: str) -> Path:
        return self.state_root / member / "daemon.log"

    def log_tail(self, member: str, lines: int = 3) -> str:
        path = self.log_path(member)
        try:
            tail = path.read_text(errors="replace").strip().splitlines()[-lines:]
        except OSError:
            return "(no log)"
        return " | ".join(tail) + f" (log: {path})"

    def dead_members(self) -> list[str]:
        return [m for m, p in self.processes.items() if p.poll() is not None]

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join()
        for process in self.processes.values():
            if process.poll() is None:
                signal_session(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                signal_session(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()
        for descriptor in (self._lifeline, self._lifeline_holder):
            try:
                os.close(descriptor)
            except OSError:   # stopped twice
                pass
