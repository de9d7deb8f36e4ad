"""Mutual TLS and roles: every daemon accepts only consortium certificates, dials only the member it means,
and lets each member call only what its role allows — a refused call changes nothing."""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from dataclasses import replace

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from nacl.signing import SigningKey

from fedscore.cli import main
from fedscore.job_file import ScoringSettings, load_job
from fedscore.crypto.certs import init_consortium
from fedscore.crypto.paillier import generate_keypair
from fedscore.daemons.launcher import LocalConsortium
from fedscore.errors import ConfigError, PeerError
from fedscore.ledger.store import LedgerStore
from fedscore.proto import fedscore_pb2 as pb
from fedscore.proto import fedscore_pb2_grpc as pb_grpc
from fedscore.cli.runner import submit
from fedscore.transport import codec
from fedscore.transport.clients.base import Peer
from fedscore.transport.clients.party import PartyClient, PartyJobClient
from fedscore.transport.clients.scoring import ScoringClient
from fedscore.transport.rpc import OPTIONS
from fedscore.transport.tls import TlsIdentity

from conftest import breast_parties, job_naming_the_daemons, write_job

PREPARED = "tls-job-0badcafe"


def test_certs_init_makes_owner_only_keys_and_certificates_naming_each_member(tmp_path, capsys):
    assert main(["certs", "init", "--consortium", str(tmp_path / "c"), "--members", "card_center,bureau"]) == 0
    assert "tls_dir" in capsys.readouterr().out
    root = tmp_path / "c"
    ca = x509.load_pem_x509_certificate((root / "ca" / "ca.pem").read_bytes())
    for member in ("coordinator", "card_center", "bureau"):   # the coordinator is always a member
        folder = root / member
        assert stat.S_IMODE((folder / "key.pem").stat().st_mode) == 0o600
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        cert = x509.load_pem_x509_certificate((folder / "cert.pem").read_bytes())
        cert.verify_directly_issued_by(ca)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == member
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [member]
        assert TlsIdentity.load(folder).name == member
        assert "PRIVATE" not in repr(TlsIdentity.load(folder))   # the key is never printed
    assert stat.S_IMODE((root / "ca" / "ca.key").stat().st_mode) == 0o600

    # admitting a member later keeps everyone's key and the CA
    before = {"ca": (root / "ca" / "ca.key").read_bytes(), "bureau": (root / "bureau" / "key.pem").read_bytes()}
    init_consortium(root, ["airline"])
    assert (root / "ca" / "ca.key").read_bytes() == before["ca"]
    assert (root / "bureau" / "key.pem").read_bytes() == before["bureau"]
    x509.load_pem_x509_certificate((root / "airline" / "cert.pem").read_bytes()).verify_directly_issued_by(ca)
    with pytest.raises(ConfigError, match="member name"):
        init_consortium(root, ["../escape"])
    # with the CA key kept offline, admitting a member is refused rather than done under a new CA
    (root / "ca" / "ca.key").rename(tmp_path / "offline.key")
    with pytest.raises(ConfigError, match="ca.key is missing"):
        init_consortium(root, ["newcomer"])
    assert not (root / "newcomer").exists()


def test_a_folder_with_a_readable_key_or_a_foreign_certificate_is_refused(tmp_path):
    ours = init_consortium(tmp_path / "ours", ["bank"])["bank"]
    theirs = init_consortium(tmp_path / "theirs", ["bank"])["bank"]
    os.chmod(ours / "key.pem", 0o644)
    with pytest.raises(ConfigError, match="key.pem is readable by others"):
        TlsIdentity.load(ours)
    os.chmod(ours / "key.pem", 0o600)
    (ours / "ca.pem").write_bytes((theirs / "ca.pem").read_bytes())
    with pytest.raises(ConfigError, match="cert.pem is not signed by ca.pem"):
        TlsIdentity.load(ours)
    (ours / "cert.pem").unlink()
    with pytest.raises(ConfigError, match="cert.pem is missing"):
        TlsIdentity.load(ours)


def _serve(folder, extra: str, *flags: str) -> subprocess.CompletedProcess | subprocess.Popen:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    config = folder / "party.toml"
    config.write_text(f'[party]\nname = "bureau"\nlisten = "127.0.0.1:0"\nstate_dir = "state"\n{extra}')
    command = [sys.executable, "-m", "fedscore", "party", "serve", "--config", str(config), "--ready-file",
               str(folder / "ready"), *flags]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_a_daemon_needs_its_own_identity_and_warns_on_every_insecure_start(tmp_path):
    refused = _serve(tmp_path / "a", "")
    assert refused.wait(timeout=60) == 2
    assert "no TLS identity; set tls_dir" in refused.stderr.read()

    folders = init_consortium(tmp_path / "certs", ["card_center", "bureau"])
    wrong = _serve(tmp_path / "b", f'tls_dir = "{folders["card_center"]}"\n')
    assert wrong.wait(timeout=60) == 2
    assert "names 'card_center', not 'bureau'" in wrong.stderr.read()

    for attempt in range(2):
        insecure = _serve(tmp_path / f"c{attempt}", "", "--insecure")
        deadline = time.monotonic() + 60
        while not (tmp_path / f"c{attempt}" / "ready").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        insecure.terminate()
        _, errors = insecure.communicate(timeout=30)
        assert "WARNING" in errors and "WITHOUT TLS" in errors


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    from conftest import DATA

    folder = tmp_path_factory.mktemp("tls")
    for name in ("breast_hetero_guest.csv", "breast_hetero_host.csv"):
        (folder / name).write_bytes((DATA / name).read_bytes())
    issuer = SigningKey(bytes([9]) * 32)
    spec, base = load_job(write_job(folder, breast_parties(), epochs=2, validation=0.3))
    with LocalConsortium(spec, base, folder / "state", 1, (bytes(issuer.verify_key).hex(),)) as running:
        report = submit(running.spec, running.coordinator_address, lambda event: None, tls=running.card_center_identity)
        settings = ScoringSettings(consent_issuers=(bytes(issuer.verify_key).hex(),))
        scoring = ScoringClient(running.spec.card_center.address, "guest", running.card_center_identity)
        scoring.open_scoring(running.spec, settings.to_json(), report["job_id"])
        # a job the coordinator prepared at the partner and left open, so refused calls about it reach a real job
        host = PartyJobClient("host", running.spec.party("host").address, PREPARED, generate_keypair(512)[0],
                              tls=running.identity("coordinator"))
        host.prepare_job(running.spec)
        yield running, report
        scoring.close()
        host.close()


def test_plaintext_a_foreign_ca_and_the_wrong_member_are_refused(consortium, tmp_path):
    running, _ = consortium
    guest = running.spec.party("guest").address
    assert PartyClient(Peer("guest", guest, tls=running.identity("coordinator"))).ping().name == "guest"
    with pytest.raises(PeerError, match="guest"):
        PartyClient(Peer("guest", guest, tls=None)).ping()
    stranger = TlsIdentity.load(init_consortium(tmp_path / "other", ["coordinator"])["coordinator"])
    with pytest.raises(PeerError, match="TLS handshake failed"):
        PartyClient(Peer("guest", guest, tls=stranger)).ping()
    with pytest.raises(PeerError, match="certificate that does not name party 'host'"):
        PartyClient(Peer("host", guest, tls=running.identity("coordinator"))).ping()


PARTY_SERVICES = ("Party", "Jobs", "Training", "Alignment", "Chain", "Scoring")


def _stub(running, caller: str, target: str, method: str = "RunJob"):
    """A channel from ``caller`` to ``target`` and the stub of the service that has ``method``."""
    identity = running.identity(caller)
    address = running.coordinator_address if target == "coordinator" else running.spec.party(target).address
    channel = grpc.secure_channel(address, identity.channel_credentials(),
                                  options=[*OPTIONS, ("grpc.ssl_target_name_override", target)])
    services = ("Coordinator",) if target == "coordinator" else PARTY_SERVICES
    service = next(s for s in services if method in pb.DESCRIPTOR.services_by_name[s].methods_by_name)
    return channel, getattr(pb_grpc, f"{service}Stub")(channel)


def _heights(running, job_id: str) -> dict[str, int]:
    heights = {}
    for member in ("coordinator", "guest", "host"):
        store = LedgerStore(running.state_root / member / "jobs" / job_id / "ledger.sqlite")
        heights[member] = len(list(store.blocks()))
        store.close()
    return heights


def test_each_member_may_call_only_what_its_role_allows_and_a_refusal_changes_nothing(consortium):
    running, report = consortium
    trained, spec = report["job_id"], codec.spec_to_proto(running.spec)
    step = pb.StepRef(job_id=trained, epoch=0, batch=0)
    block = pb.Block(job_id=trained, height=99, previous=bytes(32), timestamp_ns=1, entries=[b"{}"])
    refused = [
        # a partner acting as coordinator at the card center
        ("host", "guest", "PrepareJob", pb.PrepareJobRequest(job_id=PREPARED, job=spec, party="guest")),
        ("host", "guest", "AbortJob", pb.JobRef(job_id=trained)),
        ("host", "guest", "MaskedGradient", step),
        ("host", "guest", "Align", pb.AlignRequest(job_id=trained)),
        ("host", "guest", "ProposeBlock", block),
        ("host", "guest", "SignSettlement", pb.SettlementRequest(job_id=trained, body=b"{}")),
        # a partner asking the card center for scores, or to open, settle or close a model
        ("host", "guest", "Score", pb.ScoreRequest(job_id=trained, applicant_id="1", consent="x")),
        ("host", "guest", "OpenScoring", pb.OpenScoringRequest(job_id=trained, job=spec)),
        ("host", "guest", "SettleScoring", pb.JobRef(job_id=trained)),
        ("host", "guest", "CloseScoring", pb.JobRef(job_id=trained)),
        # the coordinator acting as card center at the partner
        ("coordinator", "host", "PsiBlindedIds", pb.JobRef(job_id=PREPARED)),
        ("coordinator", "host", "PartialScore", pb.PartialScoreRequest(job_id=trained, items=[pb.PartialScoreItem(tag="t")])),
        ("coordinator", "host", "CloseScoring", pb.JobRef(job_id=trained)),
        ("coordinator", "host", "OpenScoring", pb.OpenScoringRequest(job_id=trained, job=spec, pair_key=bytes(32))),
        ("coordinator", "guest", "Score", pb.ScoreRequest(job_id=trained, applicant_id="1", consent="x")),
        # the card center acting as coordinator at the partner
        ("guest", "host", "AbortJob", pb.JobRef(job_id=PREPARED)),
        ("guest", "host", "FinishJob", pb.JobRef(job_id=PREPARED)),
        # only the job's card center asks for training
        ("host", "coordinator", "RunJob", pb.RunJobRequest(job=spec)),
        ("coordinator", "coordinator", "RunJob", pb.RunJobRequest(job=spec)),
    ]
    heights = _heights(running, trained)
    for caller, target, method, request in refused:
        channel, stub = _stub(running, caller, target, method)
        with channel:
            with pytest.raises(grpc.RpcError) as caught:
                answer = getattr(stub, method)(request, timeout=30)
                if method in ("PsiBlindedIds", "RunJob"):   # server streams: the status comes with the first read
                    list(answer)
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, (caller, target, method, caught.value.details())
            assert f"refused {caller!r}" in caught.value.details()

    # a partner cannot make itself a card center: parties take jobs only from the card centers they name
    swapped = replace(running.spec, parties=tuple(
        replace(p, label="y" if p.name == "host" else None) for p in running.spec.parties))
    channel, stub = _stub(running, "host", "coordinator")
    with channel, pytest.raises(grpc.RpcError) as caught:
        list(stub.RunJob(pb.RunJobRequest(job=codec.spec_to_proto(swapped)), timeout=60))
    # the job fails at whichever party answers first: host (its own card center) lacks the label column, and
    # guest refuses host as a card center; guest's refusal, asked directly, is the rule under test
    assert caught.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT)
    at_guest = PartyJobClient("guest", running.spec.party("guest").address, "swapped-0000beef",
                              generate_keypair(512)[0], tls=running.identity("coordinator"))
    with pytest.raises(Exception, match="takes jobs only from card centers guest; refused a job with card center 'host'"):
        at_guest.prepare_job(swapped)
    at_guest.close()

    # nothing changed: the prepared job is still there, the chains did not move, the model still serves
    coordinator_view = PartyJobClient("host", running.spec.party("host").address, PREPARED, generate_keypair(512)[0],
                                      tls=running.identity("coordinator"))
    with pytest.raises(Exception, match="already prepared"):
        coordinator_view.prepare_job(running.spec)
    coordinator_view.close()
    assert _heights(running, trained) == heights
    assert not running.dead_members()
    scoring = ScoringClient(running.spec.card_center.address, "guest", running.card_center_identity)
    assert [m for m in scoring.open_scoring(running.spec, "{}", trained).features]
    scoring.close()


def test_the_shipped_configs_find_their_identities_after_certs_init(tmp_path):
    """The README's remote set-up: `fedscore certs init --consortium certs ...` at the repository root, then the
    configs in coordinator/ and parties/ as they are."""
    import shutil
    from pathlib import Path

    from fedscore.daemons.config import load_coordinator_config, load_party_config
    from fedscore.daemons.server import load_identity

    root = Path(__file__).resolve().parent.parent
    for folder in ("coordinator", "parties"):
        shutil.copytree(root / folder, tmp_path / folder, ignore=shutil.ignore_patterns("state"))
    assert main(["certs", "init", "--consortium", str(tmp_path / "certs"), "--members", "card_center,bureau,ecommerce"]) == 0
    configs = [load_coordinator_config(tmp_path / "coordinator" / "coordinator.toml")] + [
        load_party_config(path) for path in sorted((tmp_path / "parties").glob("*/party.toml"))]
    assert [c.name for c in configs] == ["coordinator", "bureau", "card_center", "ecommerce"]
    for config in configs:
        assert load_identity("party", config, insecure=False).tls.name == config.name


GRPC_CORE_LINE = re.compile(r"^[EWI]\d{4} \d\d:\d\d:\d\d|ssl_transport_security|\.cc:\d+\]", re.M)


def test_a_certificate_from_another_consortium_is_named_as_such_and_grpc_core_stays_quiet(consortium, tmp_path):
    running, _ = consortium
    fedscore = [sys.executable, "-m", "fedscore"]
    made = subprocess.run([*fedscore, "certs", "init", "--consortium", str(tmp_path / "other"), "--members", "guest"],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    job = job_naming_the_daemons(running, tmp_path / "job.toml")
    foreign = ["--tls", str(tmp_path / "other" / "guest")]   # the card center's name, another consortium's CA

    status = subprocess.run([*fedscore, "status", "--job", str(job), *foreign], capture_output=True, text=True, timeout=120)
    assert status.returncode == 2
    members = [line for line in status.stdout.splitlines() if not line.startswith(" ")]
    assert len(members) == 3 and all("DOWN  (TLS handshake failed: certificate not from this consortium's CA" in line
                                     for line in members), status.stdout
    assert not GRPC_CORE_LINE.search(status.stderr) and status.stderr == ""

    run = subprocess.run([*fedscore, "run", str(job), *foreign], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert not GRPC_CORE_LINE.search(run.stderr), run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        f"fedscore: error: coordinator at {running.coordinator_address}: TLS handshake failed: certificate not from "
        "this consortium's CA: the daemon's certificate and this side's ca.pem come from different CAs")


def test_status_shows_every_member_its_jobs_and_chain_head_through_health_and_status(consortium, capsys):
    from fedscore.cli.status import consortium_status

    running, report = consortium
    members = {m["member"]: m for m in consortium_status(running.spec, running.identity("host"))}
    assert {m: s["health"] for m, s in members.items()} == {"coordinator": "SERVING", "guest": "SERVING", "host": "SERVING"}
    coordinator_jobs = {j["job_id"]: j for j in members["coordinator"]["jobs"]}
    trained = coordinator_jobs[report["job_id"]]
    assert trained["stage"] == "finished" and trained["blocks"] == report["ledger_blocks"]
    assert trained["head"] == report["ledger_head"] and trained["step"][0] == 2   # two epochs
    host_jobs = {j["job_id"]: j for j in members["host"]["jobs"]}
    assert host_jobs[PREPARED]["stage"] == "prepared" and host_jobs[PREPARED]["step"] is None
    serving = [j for j in members["guest"]["jobs"] if j["chain"] == "scoring"]
    assert [j["job_id"] for j in serving] == [report["job_id"]] and serving[0]["blocks"] >= 1

    # through the command: JSON, then a member that is down makes it exit 2 and is named
    job = job_naming_the_daemons(running, running.state_root / "status-job.toml")
    assert main(["status", "--job", str(job), "--tls", str(running.certs_dir / "guest"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [m["member"] for m in shown["members"]] == ["coordinator", "guest", "host"]
    stranger = job.read_text().replace(running.spec.party("host").address, "127.0.0.1:9")
    job.write_text(stranger)
    assert main(["status", "--job", str(job), "--tls", str(running.certs_dir / "guest")]) == 2
    assert "127.0.0.1:9" in capsys.readouterr().out
