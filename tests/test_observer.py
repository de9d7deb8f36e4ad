"""The observer daemon against a real consortium (mutual TLS on loopback): it follows a training job and a scoring
session to the head every member holds; it may read chains and call nothing else; a member that does not admit
it refuses its reads; a tampered member's block is refused naming why; and two validly signed blocks at one
height raise an alarm that `fedscore status` and `fedscore audit verify` report with exit 3."""
from __future__ import annotations

import signal
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pandas as pd
import pytest

from fedscore.cli import main
from fedscore.cli.demo import write_demo
from fedscore.cli.observer import observer_status
from fedscore.cli.runner import submit
from fedscore.daemons.access import ROLE_TABLE, AccessInterceptor, Role, roles_of
from fedscore.daemons.config import load_coordinator_config, load_party_config
from fedscore.daemons.observer.config import load_observer_config
from fedscore.errors import ConfigError
from fedscore.daemons.chain_reads import add_replica_service
from fedscore.daemons.launcher import OBSERVER, LocalConsortium, signal_session
from fedscore.daemons.observer.follower import Follower
from fedscore.job_file import load_job, load_scoring
from fedscore.ledger.block import make_block, sign
from fedscore.ledger.identity import KEY_FILE
from fedscore.ledger.position import read_position_file
from fedscore.ledger.store import LedgerStore
from fedscore.proto import fedscore_pb2 as pb
from fedscore.proto import fedscore_pb2_grpc as pb_grpc
from fedscore.transport import codec
from fedscore.transport.clients.scoring import ScoringClient
from fedscore.transport.rpc import open_channel
from fedscore.transport.tls import TlsIdentity

from nacl.signing import SigningKey
from test_observation import JOB_ID as UNIT_JOB, _fake_genesis, chain_of, training_entries

WAIT = 120.0   # seconds a condition the observer reaches in a few polls may take on a busy machine
SCORED = 6
PARTY_SERVICES = ("Party", "Jobs", "Training", "Alignment", "Chain", "Scoring")


def test_members_admit_observers_by_name_and_an_observer_config_names_whom_it_reads(tmp_path):
    party = tmp_path / "party.toml"
    party.write_text('[party]\nname = "bureau"\ncard_centers = ["bank"]\nobservers = ["regulator"]\n')
    assert load_party_config(party).observers == ("regulator",)
    assert roles_of("regulator", "bureau", ["bank"], ["regulator"]) == {Role.OBSERVER}   # that role only
    assert roles_of("regulator", "bureau", ["bank"]) == {Role.MEMBER}                    # not admitted: no read
    party.write_text('[party]\nname = "bureau"\ncard_centers = ["bank"]\nobservers = ["bank"]\n')
    with pytest.raises(ConfigError, match="'bank' is in both card_centers and observers"):
        load_party_config(party)
    coordinator = tmp_path / "coordinator.toml"
    coordinator.write_text('[coordinator]\nobservers = ["coordinator"]\n')
    with pytest.raises(ConfigError, match="observers must be a list of member names other than this one"):
        load_coordinator_config(coordinator)

    config = tmp_path / "observer.toml"
    config.write_text('[observer]\nname = "regulator"\nlisten = "127.0.0.1:50090"\ntls_dir = "tls"\n\n'
                      '[observer.members]\ncoordinator = "10.0.0.1:50051"\nbureau = "10.0.0.3:50062"\n')
    loaded = load_observer_config(config)
    assert loaded.members == {"coordinator": "10.0.0.1:50051", "bureau": "10.0.0.3:50062"}
    assert loaded.tls_dir == tmp_path / "tls" and loaded.state_dir == tmp_path / "state" and loaded.poll_seconds == 5.0
    config.write_text('[observer]\nname = "regulator"\n')
    with pytest.raises(ConfigError, match=r"\[observer.members\] names no member"):
        load_observer_config(config)
    config.write_text('[observer]\nname = "regulator"\nsigning = true\n[observer.members]\nbank = "h:1"\n')
    with pytest.raises(ConfigError, match="signing"):
        load_observer_config(config)


def test_init_observer_writes_a_config_observer_serve_takes_as_it_is(tmp_path, capsys):
    folder = tmp_path / "regulators" / "regulator"
    assert main(["init", "observer", "regulator", "--dir", str(folder), "--member", "coordinator=10.0.0.1:50051",
                 "--member", "bank=10.0.0.2:50061"]) == 0
    config = load_observer_config(folder / "observer.toml")
    assert config.members == {"coordinator": "10.0.0.1:50051", "bank": "10.0.0.2:50061"}
    assert config.name == "regulator" and config.tls_dir == folder / "tls" and (folder / "state").is_dir()
    assert 'observers = ["regulator"]' in capsys.readouterr().out
    assert main(["init", "observer", "regulator", "--dir", str(folder), "--member", "bank=10.0.0.2:50061"]) == 2
    assert main(["init", "observer", "regulator", "--dir", str(tmp_path / "none")]) == 2   # reads from nobody
    assert not (tmp_path / "none").exists()


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    """The demo consortium with an observer: a job trained, its model opened, applicants scored and settled."""
    folder = tmp_path_factory.mktemp("observer")
    job = write_demo(folder, epochs=1, key_bits=512, rows=3000)
    spec, base = load_job(job)
    settings = load_scoring(job)
    with LocalConsortium(spec, base, folder / "state", 1, settings.consent_issuers, observer=True) as running:
        report = submit(running.spec, running.coordinator_address, lambda event: None, tls=running.card_center_identity)
        client = ScoringClient(running.spec.card_center.address, running.spec.card_center.name,
                               running.card_center_identity)
        opened = client.open_scoring(running.spec, settings.to_json(), report["job_id"])
        applicants = pd.read_csv(folder / "applicants.csv", dtype=str).head(SCORED)
        for row in applicants.to_dict("records"):
            client.score(row["id"], {name: float(row[name]) for name in opened.features}, row["consent"], report["job_id"])
        client.settle(report["job_id"])
        yield running, report["job_id"]
        client.close()


def _status(running, as_member: str = "card_center") -> dict:
    return observer_status(OBSERVER, running.observer_address, running.identity(as_member))


def _member_replicas(running, job_id: str) -> dict[tuple[str, str], dict[str, bytes]]:
    """(chain kind) -> member -> head hash of its replica file."""
    heads: dict[str, dict[str, bytes]] = {}
    for member in ["coordinator", *(p.name for p in running.spec.parties)]:
        for chain, name in (("training", "ledger.sqlite"), ("scoring", "scoring.sqlite")):
            path = running.state_root / member / "jobs" / job_id / name
            if path.is_file():
                heads.setdefault(chain, {})[member] = read_position_file(path).head
    return heads


def _wait_for(condition, what: str):
    """Poll ``condition`` (the observer polls its members every 0.2 s) until it holds; fail naming ``what``."""
    deadline = time.monotonic() + WAIT
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"the observer did not {what} within {WAIT:g} s")
        time.sleep(0.1)


def _chain(found: dict, job_id: str, chain: str) -> dict | None:
    return next((c for c in found["chains"] if c["job_id"] == job_id and c["chain"] == chain), None)


def test_the_observer_follows_the_training_and_scoring_chains_to_every_members_head(observed, capsys):
    running, job_id = observed
    replicas = _member_replicas(running, job_id)
    assert set(replicas) == {"training", "scoring"}
    assert set(replicas["training"]) == {"coordinator", "card_center", "bureau", "ecommerce"}
    assert set(replicas["scoring"]) == {"card_center", "bureau", "ecommerce"}   # the coordinator has no part in scoring

    def caught_up():
        found = _status(running)
        chains = {kind: _chain(found, job_id, kind) for kind in replicas}
        done = all(c is not None and bytes.fromhex(c["head"]) == next(iter(replicas[kind].values()))
                   and set(c["members"]) == set(replicas[kind]) and c["agree"] for kind, c in chains.items())
        return (found, chains) if done else None

    found, chains = _wait_for(caught_up, "reach every member's head")
    for kind, heads in replicas.items():
        assert len(set(heads.values())) == 1   # the members agree, and the observer holds that head
        chain = chains[kind]
        assert "refused" not in chain
        assert {m: bytes.fromhex(h["head"]) for m, h in chain["members"].items()} == heads
        replica = running.state_root / OBSERVER / "jobs" / job_id / ("ledger.sqlite" if kind == "training" else "scoring.sqlite")
        assert read_position_file(replica).head == heads["card_center"]
    assert found["health"] == "SERVING" and found["alarms"] == []
    entries = [e for b in LedgerStore(running.state_root / OBSERVER / "jobs" / job_id / "scoring.sqlite").blocks()
               for e in b.decoded()]
    assert sum(e["kind"] == "scoring" for e in entries) == SCORED and entries[-1]["kind"] == "scoring_settlement"

    observer_state = running.state_root / OBSERVER
    assert main(["audit", "verify", str(observer_state)]) == 0
    assert "no alarm" in capsys.readouterr().out
    tls = str(running.certs_dir / "card_center")
    assert main(["status", "--observer", f"{OBSERVER}={running.observer_address}", "--tls", tls]) == 0
    shown = capsys.readouterr().out
    assert f"{job_id}" in shown and "4 members agree" in shown and "3 members agree" in shown and "ALARM" not in shown


def test_a_member_asking_the_observer_sees_only_the_chains_that_name_it(observed):
    """The coordinator has no part in scoring: the observer's status shows it the job's training chain only; the
    observer's operator (its own certificate) sees both."""
    running, job_id = observed
    _wait_for(lambda: _chain(_status(running), job_id, "scoring"), "hold the scoring chain")
    as_coordinator = _status(running, "coordinator")
    assert _chain(as_coordinator, job_id, "training") is not None and _chain(as_coordinator, job_id, "scoring") is None
    as_operator = _status(running, OBSERVER)
    assert _chain(as_operator, job_id, "training") is not None and _chain(as_operator, job_id, "scoring") is not None


def _call(channel: grpc.Channel, method: str):
    service = pb.DESCRIPTOR.services_by_name[method.split("/")[1].split(".")[-1]]
    shape = service.methods_by_name[method.split("/")[2]]
    kind = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
            (True, False): channel.stream_unary, (True, True): channel.stream_stream}[
        shape.client_streaming, shape.server_streaming]
    answer = kind(method)(iter([b""]) if shape.client_streaming else b"", timeout=30)
    return list(answer) if shape.server_streaming else answer


def test_the_observer_may_read_chains_and_call_nothing_else(observed):
    running, job_id = observed
    party = running.spec.parties[1]
    with open_channel(party.address, party.name, running.identity(OBSERVER)) as channel:
        listed = pb_grpc.ReplicaStub(channel).ListChains(pb.Empty(), timeout=30)
        assert {(c.job_id, c.chain) for c in listed.chains} >= {(job_id, "training"), (job_id, "scoring")}
        refused = 0
        for method, allowed in ROLE_TABLE.items():
            if Role.OBSERVER in allowed or method.split("/")[1].split(".")[-1] not in PARTY_SERVICES:
                continue
            with pytest.raises(grpc.RpcError) as error:
                _call(channel, method)
            assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED, method
            assert f"refused {OBSERVER!r}" in error.value.details()
            refused += 1
        assert refused >= 30   # every method of every party service
    with open_channel(running.coordinator_address, "coordinator", running.identity(OBSERVER)) as channel:
        for method in ("Coordinator/Status", "Coordinator/RunJob"):
            with pytest.raises(grpc.RpcError) as error:
                _call(channel, f"/{pb.DESCRIPTOR.package}.{method}")
            assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # and a member, even the card center, may not read a chain through the observers' service
    with open_channel(party.address, party.name, running.card_center_identity) as channel:
        with pytest.raises(grpc.RpcError) as error:
            pb_grpc.ReplicaStub(channel).ListChains(pb.Empty(), timeout=30)
        assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_block_a_tampered_member_serves_is_refused_naming_member_chain_block_and_why(observed, tmp_path):
    """A fake 'bureau' (its certificate, the Replica service) serves a copy of the bureau's training chain whose
    block 2 holds another entry: the observer's follower refuses it over gRPC and keeps the blocks before it."""
    running, job_id = observed
    tampered = tmp_path / "fake-bureau"
    copy = tampered / "jobs" / job_id / "ledger.sqlite"
    copy.parent.mkdir(parents=True)
    copy.write_bytes((running.state_root / "bureau" / "jobs" / job_id / "ledger.sqlite").read_bytes())
    with sqlite3.connect(copy) as db:
        db.execute("UPDATE entries SET body = ? WHERE height = 2 AND position = 0", (b'{"kind":"step","forged":true}',))
    server = grpc.server(ThreadPoolExecutor(max_workers=4), interceptors=[AccessInterceptor("bureau", observers=[OBSERVER])])
    add_replica_service(tampered, "party 'bureau'", server)
    port = server.add_secure_port("127.0.0.1:0", TlsIdentity.load(running.certs_dir / "bureau").server_credentials())
    server.start()
    follower = Follower(OBSERVER, tmp_path / "observer", {"bureau": f"127.0.0.1:{port}"}, running.identity(OBSERVER))
    try:
        follower.poll()
        reason = follower.refused[(job_id, "training")]
        assert reason.startswith(f"block 2: training chain of job {job_id}, served by 'bureau': ")
        assert "Merkle root does not match its entries" in reason
        assert follower.replica(job_id, "training").height == 2
        assert follower.status(OBSERVER).chains[0].refused == reason
    finally:
        follower.close()
        server.stop(None)


def _equivocate(running, job_id: str, member: str) -> tuple[bytes, bytes]:
    """Replace the last block of ``member``'s training replica with another block at that height, signed by every
    member's own key: what a coordinator that got two versions signed (a resumed job) could commit to one member."""
    path = running.state_root / member / "jobs" / job_id / "ledger.sqlite"
    store = LedgerStore(path, read_only=True)
    blocks = list(store.blocks())
    store.close()
    last, parent = blocks[-1], blocks[-2]
    other = make_block(parent, [*last.decoded(), {"kind": "job_end", "models": {}}], timestamp_ns=last.timestamp_ns + 1)
    keys = {name: SigningKey((running.state_root / name / KEY_FILE).read_bytes()) for name in last.signatures}
    other = other.with_signatures({name: sign(other, key) for name, key in keys.items()})
    with sqlite3.connect(path) as db:
        for table in ("blocks", "entries", "signatures"):
            db.execute(f"DELETE FROM {table} WHERE height = ?", (last.height,))
    store = LedgerStore(path)
    store.append(other)
    store.close()
    return last.hash(), other.hash()


def test_two_validly_signed_blocks_at_one_height_raise_an_alarm_in_status_and_audit_verify(observed, capsys):
    running, job_id = observed
    _wait_for(lambda: (_chain(_status(running), job_id, "training") or {}).get("agree"), "catch up")
    held, other = _equivocate(running, job_id, "ecommerce")
    found = _wait_for(lambda: _status(running)["alarms"] or None, "raise the alarm")
    assert len(found) == 1
    alarm = found[0]
    assert (alarm["job_id"], alarm["chain"], alarm["held"], alarm["other"], alarm["other_from"]) == (
        job_id, "training", held.hex(), other.hex(), "ecommerce")
    assert alarm["held_from"] in ("coordinator", "card_center", "bureau")
    assert "EQUIVOCATION" in alarm["detail"]

    tls = str(running.certs_dir / "bureau")
    capsys.readouterr()
    assert main(["status", "--observer", f"{OBSERVER}={running.observer_address}", "--tls", tls]) == 3
    assert f"ALARM: EQUIVOCATION on the training chain of job {job_id}" in capsys.readouterr().out
    replica = running.state_root / OBSERVER / "jobs" / job_id / "ledger.sqlite"
    assert main(["audit", "verify", str(replica)]) == 3
    error = capsys.readouterr().err
    assert "EQUIVOCATION" in error and other.hex()[:16] in error and "'ecommerce'" in error
    log = (running.state_root / OBSERVER / "daemon.log").read_text()
    assert "ERROR fedscore.observer: EQUIVOCATION" in log


def test_a_member_that_does_not_admit_the_observer_refuses_its_reads(observed):
    running, _ = observed
    member = "bureau"
    config = running.state_root / member / "party.toml"
    config.write_text("\n".join(l for l in config.read_text().splitlines() if not l.startswith("observers")) + "\n")
    process = running.processes[member]
    signal_session(process.pid, signal.SIGTERM)
    process.wait(timeout=30)
    running.restart(member)
    with open_channel(running.spec.party(member).address, member, running.identity(OBSERVER)) as channel:
        with pytest.raises(grpc.RpcError) as error:
            pb_grpc.ReplicaStub(channel).ListChains(pb.Empty(), timeout=30)
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"Replica/ListChains is for an observer only; refused {OBSERVER!r}" in error.value.details()
    refusal = _wait_for(lambda: next((m["error"] for m in _status(running)["members"]
                                      if m["member"] == member and "is for an observer only" in m.get("error", "")), None),
                        "report the member that refuses it")
    assert f"refused {OBSERVER!r}" in refusal


class ScriptedMember(pb_grpc.ReplicaServicer):
    """A member's Replica service over plaintext, serving what ``pages(from_height)`` says for one chain of JOB_ID."""

    def __init__(self, chains: list[pb.ChainHead], pages, limit: int = 20):
        self.chains, self.pages, self.limit, self.calls = chains, pages, limit, []

    def ListChains(self, request, context):
        return pb.ChainList(chains=self.chains)

    def ChainBlocks(self, request, context):
        self.calls.append(request.from_height)
        if len(self.calls) > self.limit:   # a follower that would ask for ever
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "asked too often")
        return iter([codec.block_to_proto(request.job_id, b, request.chain) for b in self.pages(request.from_height)])


@pytest.fixture
def scripted():
    """Start plaintext members: scripted(name=servicer, ...) -> {name: address}."""
    servers = []

    def start(**members: ScriptedMember) -> dict[str, str]:
        addresses = {}
        for name, servicer in members.items():
            server = grpc.server(ThreadPoolExecutor(max_workers=2))
            pb_grpc.add_ReplicaServicer_to_server(servicer, server)
            addresses[name] = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
            server.start()
            servers.append(server)
        return addresses

    yield start
    for server in servers:
        server.stop(None)


def _head(chain: list, job_id: str = UNIT_JOB) -> pb.ChainHead:
    return pb.ChainHead(job_id=job_id, chain="training", blocks=len(chain), head=chain[-1].hash().hex())


def test_a_page_that_does_not_start_where_asked_is_refused_as_that_members(scripted, tmp_path):
    chain = chain_of(training_entries())
    host = ScriptedMember([_head(chain)], lambda start: chain[:1])   # block 0, whatever is asked
    follower = Follower(OBSERVER, tmp_path, scripted(host=host), None)
    follower.replica(UNIT_JOB, "training").receive(chain[0], "host")   # the observer holds block 0
    try:
        follower.poll()
        assert host.calls == [0, 1]   # asked once more, refused, not asked for ever
        reason = follower.refused[(UNIT_JOB, "training")]
        assert reason == (f"block 0: training chain of job {UNIT_JOB}, served by 'host': a page asked from block 1 "
                          "holds blocks 0, not one by one from there")
        assert follower.held(UNIT_JOB, "training").height == 1
    finally:
        follower.close()


def test_the_catch_up_ends_when_the_observer_stops(scripted, tmp_path):
    chain = chain_of(training_entries())
    stop = threading.Event()

    def one_block_then_stop(start: int) -> list:
        stop.set()
        return chain[start:start + 1]

    host = ScriptedMember([_head(chain)], one_block_then_stop)
    follower = Follower(OBSERVER, tmp_path, scripted(host=host), None)
    follower.replica(UNIT_JOB, "training").receive(chain[0], "host")   # the observer holds block 0
    try:
        follower.poll(stop)
        assert host.calls == [0] and follower.held(UNIT_JOB, "training").height == 1
    finally:
        follower.close()


def test_a_genesis_made_up_by_a_member_is_no_alarm_and_takes_nothing_over(scripted, tmp_path):
    """'evil', read first, serves a genesis of the same job id, naming itself, signed with keys it made up; 'guest'
    and 'host' serve the real chain. The observer keeps the genesis most members serve, and refuses evil's as
    another chain, with no alarm. Job ids whose genesis does not check out leave no file behind."""
    chain = chain_of(training_entries())
    fake = _fake_genesis(UNIT_JOB)
    evil = ScriptedMember([_head([fake]), _head([fake], "made-up-0123abcd")], lambda start: [fake][start:])
    honest = {name: ScriptedMember([_head(chain)], lambda start: chain[start:]) for name in ("guest", "host")}
    follower = Follower(OBSERVER, tmp_path, scripted(evil=evil, **honest), None)
    try:
        follower.poll()
        replica = follower.held(UNIT_JOB, "training")
        assert replica.height == len(chain) and replica.head.hash() == chain[-1].hash()
        assert replica.alarms() == [] and follower.diverged == set()
        assert honest["guest"].calls == honest["host"].calls == [0]   # the genesis' page is read once, not again
        assert "served by 'evil': 'evil' is not a member in the genesis" in follower.refused[(UNIT_JOB, "training")]
        assert follower.held("made-up-0123abcd", "training") is None
        assert not (tmp_path / "jobs" / "made-up-0123abcd").exists()
        follower.poll()   # and again, against the genesis held: still refused, no alarm, the honest still read
        assert replica.alarms() == [] and follower.diverged == set()
    finally:
        follower.close()


def test_different_geneses_served_by_as_many_members_each_keep_none(scripted, tmp_path):
    chain = chain_of(training_entries())
    fake = _fake_genesis(UNIT_JOB)
    evil = ScriptedMember([_head([fake])], lambda start: [fake][start:])
    host = ScriptedMember([_head(chain)], lambda start: chain[start:])
    follower = Follower(OBSERVER, tmp_path, scripted(evil=evil, host=host), None)
    try:
        follower.poll()
        assert follower.held(UNIT_JOB, "training") is None and not (tmp_path / "jobs").exists()
        assert follower.refused[(UNIT_JOB, "training")] == (
            f"block 0: training chain of job {UNIT_JOB}: different geneses, each served by as many members ('evil'; "
            "'host'): none kept until more of their members serve one")
    finally:
        follower.close()


def test_a_member_sees_in_the_observers_status_only_the_chains_that_name_it(scripted, tmp_path):
    chain = chain_of(training_entries())
    host = ScriptedMember([_head(chain)], lambda start: chain[start:])
    follower = Follower(OBSERVER, tmp_path, scripted(host=host), None)
    try:
        follower.poll()
        replica = follower.held(UNIT_JOB, "training")
        other = chain_of([[{**training_entries()[0][0], "job_digest": "77" * 32}]])[0]
        assert replica.receive(other, "guest") is not None   # an alarm on this chain
        for caller in ("host", "guest", OBSERVER, None):
            shown = follower.status(caller)
            assert [c.job_id for c in shown.chains] == [UNIT_JOB] and len(shown.alarms) == 1, caller
        hidden = follower.status("stranger")   # a member in no job with these members
        assert list(hidden.chains) == [] and list(hidden.alarms) == []
        assert [m.member for m in hidden.members] == ["host"]
    finally:
        follower.close()
