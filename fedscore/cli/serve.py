"""`fedscore serve JOB` (and `fedscore demo --serve`): a trained consortium as a running scoring service.

The daemons start from the job's trained state like `score --local` starts them, but on the addresses the
job file gives (the coordinator's and each party's) and the card center's HTTPS endpoint on a fixed
address, so others can call them. The job's newest model (or the one named) is opened for scoring, then
the commands to call the service are printed, ready to paste: curl over HTTPS with the card center's
certificate, for the health page and for one real applicant with a fresh consent, and the gRPC health
check. Ctrl-C or SIGTERM stops every daemon.
"""
from __future__ import annotations

import errno
import json
import shlex
import shutil
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2

from fedscore.cli.demo import issuer_key, sign_consent
from fedscore.cli.exits import Terminated
from fedscore.crypto.certs import COORDINATOR
from fedscore.daemons.health import SERVICES
from fedscore.daemons.launcher import LocalConsortium
from fedscore.errors import ConfigError, FedscoreError
from fedscore.job import JobSpec
from fedscore.job_file import load_job, load_scoring
from fedscore.model.data import ID_SEPARATOR, MISSING, normalise_id
from fedscore.transport.clients.scoring import ScoringClient

DEFAULT_HTTP = "127.0.0.1:8443"   # the shipped card center's http_listen too
APPLICANTS = "applicants.csv"     # beside the job file (the demo writes it): where the sample applicant comes from
PLACEHOLDER = "CONSENT_TOKEN"
REOPEN_SECONDS = 1.0              # how often the card center is checked for a restart (its model is then reopened)


def listen_addresses(spec: JobSpec, job_path: Path) -> dict[str, str]:
    """Each member's address from the job file (member -> host:port): where its daemon is to listen."""
    addresses = {COORDINATOR: spec.coordinator_address, **{p.name: p.address for p in spec.parties}}
    missing = [member for member, address in addresses.items() if not address]
    if missing:
        where = "[coordinator] address" if missing[0] == COORDINATOR else f"the address of party {missing[0]!r}"
        raise ConfigError(f"job file {job_path}: no {where}; the service listens on the job file's addresses")
    return addresses


def check_free(addresses: Mapping[str, str], job_path: Path) -> None:
    """ConfigError naming the member and the address if one cannot be listened on (in use, not local):
    said at once, rather than as a daemon that died at start-up."""
    for member, address in addresses.items():
        host, _, port = address.rpartition(":")
        if port == "0":
            continue
        what, where = (member, f"its address in {job_path}")
        if member == "https":
            what, where = "the card center's HTTPS endpoint", "--http"
        try:
            family = socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM)[0][0]
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as the daemons bind
                probe.bind((host.strip("[]"), int(port)))
        except (OSError, ValueError) as error:
            busy = getattr(error, "errno", None) == errno.EADDRINUSE
            advice = "stop what listens there, or choose another port" if busy else "give an address of this machine"
            raise ConfigError(f"cannot serve {what} on {address} ({where}): "
                              f"{getattr(error, 'strerror', None) or error}; {advice}") from None


def check_job_ports(job_path: Path, http_listen: str = DEFAULT_HTTP) -> None:
    """Before a long run that ends serving (`demo --serve`): every address it will need is free now."""
    spec, _ = load_job(job_path)
    check_free({**listen_addresses(spec, job_path), "https": http_listen}, job_path)


def shown(path: Path) -> str:
    """A path as the printed commands give it: relative to here when it is below here, else absolute."""
    path = path.resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def _number(text: str) -> float | int | str | None:
    """A CSV cell as JSON: a number (whole numbers without a point), null when empty, else the text."""
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        return None if text in MISSING else text
    return int(value) if value.is_integer() else value


def sample_request(spec: JobSpec, base: Path, features: list[str], consent_issuers: tuple[str, ...]) -> tuple[dict, str]:
    """One real applicant to score, as the HTTPS body wants it, and where its consent comes from.

    The first row of applicants.csv beside the job (new applicants, as the demo writes them), else of the card
    center's own data file. The consent is fresh, from the demo identity provider, when the job trusts it;
    else the row's own; else a placeholder to replace.
    """
    center = spec.card_center
    needed = [*center.id_columns, *features]
    row = None
    for path in (base / APPLICANTS, base / center.data):
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, nrows=1)
        except (OSError, ValueError):
            continue
        if not frame.empty and all(c in frame.columns for c in needed):
            row = frame.iloc[0].to_dict()
            break
    if row is None:
        raise ConfigError(f"no applicant to show: neither {APPLICANTS} beside the job nor {center.data} has the "
                          f"columns {', '.join(needed)}")
    applicant = ID_SEPARATOR.join(normalise_id(row[c]) for c in center.id_columns)
    issuer = issuer_key()
    if bytes(issuer.verify_key).hex() in consent_issuers:
        consent = sign_consent(issuer, applicant, center.name)
        note = "a fresh consent from the demo identity provider, good for 3 checks"
    elif row.get("consent"):
        consent, note = row["consent"], f"the consent in {APPLICANTS}: each allows 3 checks"
    else:
        consent, note = PLACEHOLDER, f"replace {PLACEHOLDER} with the applicant's consent token"
    body = {"applicant_id": applicant, "features": {name: _number(row[name]) for name in features}, "consent": consent}
    return body, note


def health_protoset(path: Path) -> Path:
    """The standard health service's descriptor (grpc.health.v1), for grpcurl: the daemons serve no reflection."""
    files = descriptor_pb2.FileDescriptorSet()
    health_pb2.DESCRIPTOR.CopyToProto(files.file.add())
    path.write_bytes(files.SerializeToString())
    return path


def program() -> str:
    """How to call fedscore again from here: `fedscore` when that is this one on the PATH, else its path
    (`make demo` runs .venv/bin/fedscore, which is on no PATH until the venv is activated)."""
    path, found = Path(sys.argv[0]), shutil.which("fedscore")
    if path.name != "fedscore" or (found is not None and Path(found).resolve() == path.resolve()):
        return "fedscore"
    return shown(path)


def commands(job_path: Path, state: Path, spec: JobSpec, http_address: str, body: dict) -> dict[str, str]:
    """The commands that call the service, each one line to paste: from the folder serve was started in."""
    center = spec.card_center
    tls = state / "certs" / center.name
    ca, cert, key = (shown(tls / name) for name in ("ca.pem", "cert.pem", "key.pem"))
    host, _, port = http_address.rpartition(":")
    ip = "127.0.0.1" if host in ("", "0.0.0.0", "localhost") else host
    curl = ["curl", "-s", "--cacert", ca, "--cert", cert, "--key", key, "--resolve", f"{center.name}:{port}:{ip}"]
    url = f"https://{center.name}:{port}/v1"
    grpc_health = {"service": SERVICES["party"]}
    return {
        "health": shlex.join([*curl, f"{url}/health"]),
        "score": shlex.join([*curl, f"{url}/score", "-H", "Content-Type: application/json", "-d", json.dumps(body)]),
        "status": shlex.join([program(), "status", "--job", shown(job_path), "--tls", shown(tls)]),
        "grpcurl": shlex.join([
            "grpcurl", "-protoset", shown(health_protoset(state / "health.protoset")), "-cacert", ca, "-cert", cert,
            "-key", key, "-authority", center.name, "-d", json.dumps(grpc_health), center.address,
            "grpc.health.v1.Health/Check",
        ]),
    }


class ScoringService:
    """The consortium's daemons on fixed addresses, the model open at the card center; stopped on leaving."""

    def __init__(self, job_path: Path, state_dir: Path | None = None, job_id: str = "",
                 http_listen: str = DEFAULT_HTTP, workers: int = 1):
        self.job_path = job_path
        self.spec, self.base = load_job(job_path)
        self.settings = load_scoring(job_path)
        self.state = (state_dir or self.base / "state").resolve()
        self.job_id = job_id
        self.addresses = listen_addresses(self.spec, job_path)
        self.http_listen = http_listen
        self.consortium = LocalConsortium(self.spec, self.base, self.state, workers, self.settings.consent_issuers,
                                          listen=self.addresses, http_listen=http_listen,
                                          verifiers=dict(self.settings.verifiers))
        self.client: ScoringClient | None = None

    def __enter__(self) -> "ScoringService":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> dict:
        """Start the daemons, open the model; the document `serve --json` prints (addresses, request, commands)."""
        if not (self.state / self.spec.card_center.name / "jobs").is_dir():
            raise ConfigError(f"no trained state in {self.state}: train the job first "
                              f"(fedscore run {shown(self.job_path)} --local), or name its state with --state")
        check_free({**self.addresses, "https": self.http_listen}, self.job_path)
        self.consortium.start()
        self.consortium.supervise()   # a daemon that dies is restarted; wait() reopens the model at a new card center
        spec = self.consortium.spec
        self.client = ScoringClient(spec.card_center.address, spec.card_center.name, self.consortium.card_center_identity)
        opened = self.open()
        features = list(opened.features) + ([opened.limit_basis] if opened.limit_basis not in (*opened.features, "") else [])
        body, consent = sample_request(spec, self.base, features, self.settings.consent_issuers)
        http_address = self.consortium.http_addresses[spec.card_center.name]
        return {
            "job": shown(self.job_path), "job_id": opened.job_id, "state": shown(self.state),
            "card_center": spec.card_center.name,
            "addresses": {COORDINATOR: spec.coordinator_address, **{p.name: p.address for p in spec.parties},
                          "https": http_address},
            "request": body, "consent": consent,
            "commands": commands(self.job_path, self.state, spec, http_address, body),
        }

    def open(self):
        assert self.client is not None
        return self.client.open_scoring(self.consortium.spec, self.settings.to_json(), self.job_id)

    def wait(self) -> None:
        """Serve until Ctrl-C or SIGTERM; a card center its supervisor restarted gets the model opened again."""
        card_center = self.spec.card_center.name
        opened_after = 0
        try:
            while True:
                time.sleep(REOPEN_SECONDS)
                restarts = self.consortium.restarts.get(card_center, 0)
                if restarts != opened_after:
                    try:
                        self.open()
                        opened_after = restarts
                    except FedscoreError:
                        pass   # not serving yet: tried again
        except (KeyboardInterrupt, Terminated):
            return

    def stop(self) -> None:
        with _signals_ignored():   # a second Ctrl-C must not leave daemons half stopped
            if self.client is not None:
                self.client.close()
                self.client = None
            self.consortium.stop()


@contextmanager
def _signals_ignored() -> Iterator[None]:
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve_until_stopped(job_path: Path, on_ready: Callable[[dict], None], *, state_dir: Path | None = None,
                        job_id: str = "", http_listen: str = DEFAULT_HTTP, workers: int = 1, quiet: bool = False) -> None:
    """Start the service, hand its document to ``on_ready``, serve until Ctrl-C or SIGTERM, stop every daemon."""
    from fedscore.cli.progress import ProgressView

    with ScoringService(job_path, state_dir, job_id, http_listen, workers) as service:
        with ProgressView.for_stderr(quiet) as view:
            view.stage("starting the trained consortium's daemons on the job file's addresses")
            document = service.start()
        on_ready(document)
        sys.stdout.flush()
        service.wait()
        if not quiet:
            print("fedscore: stopping every daemon", file=sys.stderr, flush=True)
    if not quiet:
        print("fedscore: stopped", file=sys.stderr, flush=True)


def format_ready(document: dict) -> str:
    """What `fedscore serve` prints once the service answers."""
    addresses, run = document["addresses"], document["commands"]
    members = [m for m in addresses if m != "https"]
    width = max(map(len, members)) + 2
    lines = [f"serving model {document['job_id']} (state: {document['state']})"]
    for member in members:
        https = f"; HTTPS {addresses['https']}" if member == document["card_center"] else ""
        lines.append(f"  {member:<{width}}{addresses[member]:<18}gRPC{https}")
    applicant = document["request"]["applicant_id"]
    lines += [
        "",
        "HTTPS health (any member's certificate):",
        f"  {run['health']}",
        f"HTTPS score, applicant {applicant} (the card center's certificate; {document['consent']}):",
        f"  {run['score']}",
        "gRPC health (the standard grpc.health.v1 service of every daemon):",
        f"  {run['status']}",
        f"  {run['grpcurl']}",
        "",
        "Ctrl-C stops every daemon.",
    ]
    return "\n".join(lines)
