"""From a trained model to a running service: `fedscore serve` answers the curl commands it prints and stops
cleanly; the shipped configs (parties/, coordinator/, examples/default_credit/) score the demo's applicants."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent import futures
from pathlib import Path

import grpc
import pandas as pd
import pytest
from google.protobuf import descriptor_pb2

from fedscore.cli.demo import DEMO_VERIFIER, DEMO_VERIFIER_FILE, issuer_key, verifier_key, write_demo
from fedscore.cli.runner import run_job_file
from fedscore.cli.status import member_status
from fedscore.daemons.launcher import LocalConsortium
from fedscore.errors import PeerError
from fedscore.job_file import load_job, load_scoring
from fedscore.proctable import Process, in_session, wait_gone
from fedscore.transport.tls import TlsIdentity

from test_scoring_daemons import expected_answers

ROOT = Path(__file__).resolve().parent.parent
ROWS = 5000
DEMO_PORTS = ("50060", "50061", "50062", "50063")   # the demo's and the shipped job's: coordinator, card center, partners
FEDSCORE = [sys.executable, "-m", "fedscore"]


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on now (all held until each is known, so they differ)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def on_ports(job: Path, ports: list[int]) -> None:
    """The job file's coordinator and party addresses moved to ``ports`` (a test must not need 5006x free)."""
    text = job.read_text()
    for old, new in zip(DEMO_PORTS, ports):
        assert text.count(f'"127.0.0.1:{old}"') == 1, old
        text = text.replace(f'"127.0.0.1:{old}"', f'"127.0.0.1:{new}"')
    job.write_text(text)


def daemon_pids(state: Path) -> list[int]:
    """The daemons whose config lies under ``state``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().decode(errors="replace").replace("\0", " ")
            except OSError:
                continue
            if str(state) in command and " serve --config " in command:
                found.append(int(entry.name))
    return found


def daemons_of(state: Path) -> set[Process]:
    """Every process of those daemons: each leads its own session, its workers in it."""
    return {process for pid in daemon_pids(state) for process in in_session(pid)}


def run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """A printed command as a user pastes it (`fedscore` as this interpreter's)."""
    args = shlex.split(command)
    if args[0] == "fedscore":
        args = FEDSCORE + args[1:]
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The demo on its first 5000 applicants, 2 epochs with 512-bit keys (tests only), its job on free ports."""
    folder = tmp_path_factory.mktemp("serve")
    job = write_demo(folder, epochs=2, key_bits=512, rows=ROWS)
    on_ports(job, free_ports(4))
    run_job_file(job, local=True, workers=1)
    return folder


def test_serve_answers_the_commands_it_prints_and_stops_every_daemon_on_ctrl_c(trained):
    http_port = free_ports(1)[0]
    state = trained / "state"
    process = subprocess.Popen(
        [*FEDSCORE, "serve", "job.toml", "--http", f"127.0.0.1:{http_port}", "--json"], cwd=trained,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),   # as a terminal's Ctrl-C finds it
    )
    try:
        printed = ""
        for line in process.stdout:   # one JSON document, once every daemon serves and the model is open
            printed += line
            if line.startswith("}"):
                break
        assert printed, f"serve ended before it was ready: {process.stderr.read()}"
        ready = json.loads(printed)
        commands = ready["commands"]
        spec, _ = load_job(trained / "job.toml")
        assert ready["addresses"] == {"coordinator": spec.coordinator_address, **{p.name: p.address for p in spec.parties},
                                      "https": f"127.0.0.1:{http_port}"}
        assert len(daemon_pids(state)) == 4
        daemons = daemons_of(state)

        health = run(commands["health"], trained)
        assert health.returncode == 0, health.stderr
        assert [m["job_id"] for m in json.loads(health.stdout)["models"]] == [ready["job_id"]]

        # the printed curl scores the printed applicant: the trained model's own answer (offline, from the files)
        applicant = ready["request"]["applicant_id"]
        assert "--cert" in commands["score"] and "--resolve" in commands["score"]
        assert ready["consent"].startswith("a fresh consent from the demo identity provider")
        answers = []
        for _ in range(2):   # pasted twice: the consent allows three checks
            scored = run(commands["score"], trained)
            assert scored.returncode == 0, scored.stderr
            answers.append(json.loads(scored.stdout))
        applicants = pd.read_csv(trained / "applicants.csv", dtype=str)
        expected = expected_answers(trained, applicants[applicants["id"] == applicant])[applicant]
        for answer in answers:
            assert answer["job_id"] == ready["job_id"] and 0 < answer["probability"] < 1
            assert answer["probability"] == pytest.approx(expected.probability, abs=1e-9)
            assert answer["decision"] == expected.decision in {"approve", "review", "decline"}
        assert answers[0]["request_id"] != answers[1]["request_id"]

        # gRPC health: fedscore status, and the health service's descriptor grpcurl is pointed at
        status = run(commands["status"], trained)
        assert status.returncode == 0, status.stderr
        assert status.stdout.count("SERVING") == 4 and "NOT_SERVING" not in status.stdout
        files = descriptor_pb2.FileDescriptorSet.FromString((trained / shlex.split(commands["grpcurl"])[2]).read_bytes())
        assert [s.name for f in files.file for s in f.service] == ["Health"] and files.file[0].package == "grpc.health.v1"
        if shutil.which("grpcurl"):
            checked = run(commands["grpcurl"], trained)
            assert checked.returncode == 0 and '"SERVING"' in checked.stdout, checked.stderr

        # a second service on the same addresses is refused at once, naming the member and its address
        again = subprocess.run([*FEDSCORE, "serve", "job.toml", "--http", f"127.0.0.1:{free_ports(1)[0]}"],
                               cwd=trained, capture_output=True, text=True, timeout=60)
        assert again.returncode == 2
        assert again.stderr.strip().splitlines()[-1].startswith(f"fedscore: error: cannot serve coordinator on {spec.coordinator_address}")

        # a card center that dies is restarted on its address, and the model opened there again
        card_center = [pid for pid in daemon_pids(state) if "card_center" in Path(f"/proc/{pid}/cmdline").read_text()]
        killed = in_session(card_center[0])
        os.killpg(card_center[0], signal.SIGKILL)
        assert wait_gone(killed, 10) == set()
        deadline = time.monotonic() + 60
        while True:
            health = run(commands["health"], trained)
            if health.returncode == 0 and ready["job_id"] in health.stdout:
                break
            assert time.monotonic() < deadline, f"the model was not opened again: {health.stdout} {health.stderr}"
            time.sleep(0.2)
        daemons = daemons_of(state)

        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, rest
    assert "Traceback" not in rest and rest.strip().splitlines()[-1] == "fedscore: stopped"
    assert wait_gone(daemons, 10) == set() and daemons_of(state) == set()
    for address in ready["addresses"].values():   # every port is free again (for a server: connections may linger)
        host, port = address.rsplit(":", 1)
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, int(port)))


def test_a_daemon_refuses_a_port_another_grpc_server_holds(trained, tmp_path):
    """gRPC lets a second server share a port (SO_REUSEPORT) by default; a daemon on a fixed port must not."""
    holder = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = holder.add_insecure_port("127.0.0.1:0")
    holder.start()
    try:
        spec, base = load_job(trained / "job.toml")
        issuers = load_scoring(trained / "job.toml").consent_issuers
        consortium = LocalConsortium(spec, base, trained / "state", 1, issuers, listen={"bureau": f"127.0.0.1:{port}"})
        with pytest.raises(PeerError, match=rf"bureau daemon exited at start-up: .*cannot listen on 127.0.0.1:{port}"):
            with consortium:
                pass
    finally:
        holder.stop(None)


# -- the shipped configs, as they are ------------------------------------------------------------


def test_the_shipped_configs_trust_the_demos_public_keys_the_package_ships():
    """The demo's identity provider and identity verifier, whose keys ship public on purpose, are what the shipped
    configs trust, so the demo's consents and verification pass at daemons started from them."""
    from fedscore.daemons.config import load_party_config

    issuer, verifier = bytes(issuer_key().verify_key).hex(), bytes(verifier_key().verify_key).hex()
    for party in ("card_center", "bureau", "ecommerce"):
        config = load_party_config(ROOT / "parties" / party / "party.toml")
        assert config.consent_issuers == (issuer,)
        assert config.verifiers == (((DEMO_VERIFIER, verifier),) if party == "card_center" else ())
    job = load_scoring(ROOT / "examples" / "default_credit" / "job.toml")
    assert job.consent_issuers == (issuer,) and job.verifiers == ((DEMO_VERIFIER, verifier),)



def wait_serving(members: dict[str, tuple[subprocess.Popen, Path]], tls: TlsIdentity) -> None:
    """Each daemon has written its ready file and answers its health check SERVING (or the test fails naming it)."""
    deadline = time.monotonic() + 60
    for member, (process, ready) in members.items():
        role = "coordinator" if member == "coordinator" else "party"
        while not (ready.exists() and member_status(member, ready.read_text().split()[0], role, tls)["health"] == "SERVING"):
            assert process.poll() is None, f"{member} daemon exited: {ready.parent}"
            assert time.monotonic() < deadline, f"{member} daemon not serving within 60 s"
            time.sleep(0.1)


def test_the_shipped_configs_score_the_demos_applicants_as_they_are(tmp_path):
    """Copies of coordinator/, parties/ and examples/default_credit/ with only what a test must change: free
    ports, 512-bit keys (so min_key_bits), 2 epochs, and the demo's first 5000 applicants as the data."""
    for folder in ("coordinator", "parties", "examples/default_credit"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("state", "*.csv"))
    demo = write_demo(tmp_path / "demo", epochs=2, key_bits=512, rows=ROWS).parent   # the data and fresh applicants
    for party in ("card_center", "bureau", "ecommerce"):
        shutil.copy(demo / f"{party}.csv", tmp_path / "examples/default_credit")
    job = tmp_path / "examples/default_credit/job.toml"
    text = job.read_text()
    assert text.count("\nkey_bits = 2048") == 1 and text.count("\nepochs = 30") == 1
    job.write_text(text.replace("\nkey_bits = 2048", "\nkey_bits = 512").replace("\nepochs = 30", "\nepochs = 2"))
    ports = free_ports(5)
    on_ports(job, ports[:4])
    card_center = tmp_path / "parties/card_center/party.toml"
    config = card_center.read_text()
    assert config.count('http_listen = "127.0.0.1:8443"') == 1
    card_center.write_text(config.replace("127.0.0.1:8443", f"127.0.0.1:{ports[4]}"))
    for party in ("card_center", "bureau", "ecommerce"):
        path = tmp_path / f"parties/{party}/party.toml"
        assert path.read_text().count("min_key_bits = 2048") == 1
        path.write_text(path.read_text().replace("min_key_bits = 2048", "min_key_bits = 512"))

    done = run("fedscore certs init --consortium certs --members card_center,bureau,ecommerce", tmp_path)
    assert done.returncode == 0, done.stderr
    members: dict[str, tuple[subprocess.Popen, Path]] = {}
    configs = {"coordinator": ("coordinator", "coordinator/coordinator.toml"),
               **{p: ("party", f"parties/{p}/party.toml") for p in ("card_center", "bureau", "ecommerce")}}
    try:
        for (member, (role, config)), port in zip(configs.items(), ports):
            ready = tmp_path / f"{member}.ready"
            log = (tmp_path / f"{member}.log").open("w")
            members[member] = (subprocess.Popen(
                [*FEDSCORE, role, "serve", "--config", config, "--listen", f"127.0.0.1:{port}", "--ready-file", str(ready)],
                cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True), ready)
            log.close()
        wait_serving(members, TlsIdentity.load(tmp_path / "certs/card_center"))

        trained = run("fedscore run examples/default_credit/job.toml --tls certs/card_center --json --quiet", tmp_path)
        assert trained.returncode == 0, trained.stderr
        scored = run("fedscore score --job examples/default_credit/job.toml --tls certs/card_center "
                     "--input demo/applicants.csv --output scored.csv --json", tmp_path)
        assert scored.returncode == 0, scored.stderr + (tmp_path / "card_center.log").read_text()[-2000:]
        summary = json.loads(scored.stdout)
        assert (summary["rows"], summary["scored"], summary["failed"]) == (10, 10, 0)
        assert summary["job_id"] == json.loads(trained.stdout)["job_id"]
        answers = pd.read_csv(tmp_path / "scored.csv", keep_default_na=False)
        assert answers["probability"].between(0, 1, inclusive="neither").all()
        assert answers["partners_missing"].tolist()[-2:] == ["ecommerce", "bureau;ecommerce"]   # as the demo's
        # the shipped card center records the demo verifier's verifications, signed with the shipped key
        (tmp_path / "selfie.jpg").write_bytes(b"a synthetic face")
        key = ROOT / "fedscore" / "data" / DEMO_VERIFIER_FILE
        verified = run(f"fedscore verification record --job examples/default_credit/job.toml --tls certs/card_center "
                       f"--applicant {answers['id'].iloc[0]} --method face-match --verifier {DEMO_VERIFIER} "
                       f"--verifier-key {key} --evidence selfie.jpg --json", tmp_path)
        assert verified.returncode == 0, verified.stderr
        assert json.loads(verified.stdout)["job_id"] == summary["job_id"]
        # and the shipped card center's HTTPS endpoint answers with the shipped certificates
        certs = "certs/card_center"
        health = run(f"curl -s --cacert {certs}/ca.pem --cert {certs}/cert.pem --key {certs}/key.pem "
                     f"--resolve card_center:{ports[4]}:127.0.0.1 https://card_center:{ports[4]}/v1/health", tmp_path)
        assert json.loads(health.stdout)["models"][0]["job_id"] == summary["job_id"]
    finally:
        for process, _ in members.values():
            process.send_signal(signal.SIGTERM)
        for process, _ in members.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def test_demo_serve_ends_serving_and_stops_on_sigterm(tmp_path):
    """`demo --serve`: one JSON document (report, scoring, serving) once the service answers; SIGTERM stops it."""
    ports = [int(p) for p in DEMO_PORTS]
    for port in ports:   # the demo's job listens where the shipped configs do
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                pytest.skip(f"127.0.0.1:{port}, an address of the demo's job, is in use here")
    http_port = free_ports(1)[0]
    process = subprocess.Popen(
        [*FEDSCORE, "demo", "--workdir", "demo", "--epochs", "1", "--key-bits", "512", "--rows", "3000", "--serve",
         "--http", f"127.0.0.1:{http_port}", "--json", "--quiet"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        printed = ""
        for line in process.stdout:
            printed += line
            if line.startswith("}"):
                break
        assert printed, f"the demo ended before serving: {process.stderr.read()}"
        document = json.loads(printed)
        assert set(document) == {"report", "scoring", "verification", "observer", "monitor", "dispute", "audience", "serving"}
        assert document["scoring"]["failed"] == 0 and document["observer"]["caught_up"]
        serving = document["serving"]
        assert serving["job_id"] == document["report"]["job_id"]
        assert serving["addresses"]["card_center"] == "127.0.0.1:50061"
        scored = run(serving["commands"]["score"], tmp_path)
        assert scored.returncode == 0 and 0 < json.loads(scored.stdout)["probability"] < 1, scored.stdout + scored.stderr
        assert len(daemon_pids(tmp_path / "demo" / "state")) == 4
        daemons = daemons_of(tmp_path / "demo" / "state")
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0 and rest == "", rest   # --quiet: nothing but errors
    assert wait_gone(daemons, 10) == set()
