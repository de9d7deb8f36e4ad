"""`fedscore status` after a job ends: every member lists the finished job and its chains' heads (after a restart
too, read from its jobs folder), and the heads are compared, naming the member whose replica differs."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from fedscore.cli import main
from fedscore.cli.runner import submit
from fedscore.cli.status import compare_heads, consortium_status
from fedscore.daemons.job_folders import newest_job_folders
from fedscore.daemons.launcher import LocalConsortium, signal_session
from fedscore.job_file import ScoringSettings, load_job
from fedscore.ledger.store import LedgerStore
from fedscore.transport.clients.scoring import ScoringClient

from conftest import DATA, breast_parties, job_naming_the_daemons, write_job


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A consortium whose job finished (its parties closed it) and whose model the card center serves, and
    an --align-only job (its parties aborted it after alignment)."""
    folder = tmp_path_factory.mktemp("status")
    for name in ("breast_hetero_guest.csv", "breast_hetero_host.csv"):
        (folder / name).write_bytes((DATA / name).read_bytes())
    issuer = SigningKey(bytes([5]) * 32).verify_key
    spec, base = load_job(write_job(folder, breast_parties(), epochs=1, validation=0.3))
    with LocalConsortium(spec, base, folder / "state", 1, (bytes(issuer).hex(),)) as running:
        report = submit(running.spec, running.coordinator_address, lambda event: None, tls=running.card_center_identity)
        scoring = ScoringClient(running.spec.card_center.address, "guest", running.card_center_identity)
        scoring.open_scoring(running.spec, ScoringSettings(consent_issuers=(bytes(issuer).hex(),)).to_json(),
                             report["job_id"])
        aligned = submit(running.spec, running.coordinator_address, lambda event: None, align_only=True,
                         tls=running.card_center_identity)
        yield running, {**report, "aligned_job_id": aligned["job_id"]}
        scoring.close()


def _status(running, member: str = "host") -> dict[str, dict]:
    return {m["member"]: m for m in consortium_status(running.spec, running.identity(member))}


def _jobs(found: dict, job_id: str) -> dict[str, dict]:
    """One member's listing of ``job_id``, by chain."""
    return {job["chain"]: job for job in found["jobs"] if job["job_id"] == job_id}


def _comparison(members, job_id: str, chain: str = "training") -> dict:
    return next(e for e in compare_heads(list(members)) if e["job_id"] == job_id and e["chain"] == chain)


def _job_file(running) -> Path:
    return job_naming_the_daemons(running, running.state_root / "status-job.toml")


def _restart(running, member: str) -> None:
    process = running.processes[member]
    signal_session(process.pid, signal.SIGTERM)
    process.wait(timeout=30)
    running.restart(member)


def test_every_member_lists_the_finished_job_with_the_coordinators_head_and_the_heads_agree(finished, capsys):
    running, report = finished
    members = _status(running)
    for name in ("coordinator", "guest", "host"):
        training = _jobs(members[name], report["job_id"])["training"]
        assert training["stage"] == "finished", name
        assert (training["blocks"], training["head"]) == (report["ledger_blocks"], report["ledger_head"]), name
        assert training["step"] is not None and training["step"][0] == 1, name   # one epoch
    assert len({tuple(_jobs(members[name], report["job_id"])["training"]["step"]) for name in members}) == 1
    aligned = {name: _jobs(members[name], report["aligned_job_id"])["training"] for name in members}
    assert {name: job["stage"] for name, job in aligned.items()} == {"coordinator": "aligned", "guest": "aborted",
                                                                     "host": "aborted"}
    assert aligned["host"]["detail"] == "its chain ends with alignment" and aligned["host"]["step"] is None
    assert _comparison(members.values(), report["aligned_job_id"])["verdict"] == "agree"
    assert _jobs(members["guest"], report["job_id"])["scoring"]["stage"] == "serving"
    agreed = _comparison(members.values(), report["job_id"])
    assert agreed["verdict"] == "agree" and set(agreed["members"]) == {"coordinator", "guest", "host"}
    assert agreed["summary"].startswith("heads agree (3 members)")

    job = _job_file(running)
    assert main(["status", "--job", str(job), "--tls", str(running.certs_dir / "host"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [m["member"] for m in shown["members"]] == ["coordinator", "guest", "host"]
    entry = next(e for e in shown["heads"] if e["job_id"] == report["job_id"] and e["chain"] == "training")
    assert entry["verdict"] == "agree" and {m["head"] for m in entry["members"].values()} == {report["ledger_head"]}
    assert main(["status", "--job", str(job), "--tls", str(running.certs_dir / "host")]) == 0
    text = capsys.readouterr().out
    assert f"heads agree (3 members): {report['ledger_blocks']} blocks, head {report['ledger_head'][:12]}" in text


def test_restarted_members_still_list_finished_jobs_from_their_jobs_folder(finished):
    running, report = finished
    for member in ("host", "coordinator"):
        _restart(running, member)
    members = _status(running, "guest")
    host = _jobs(members["host"], report["job_id"])
    assert host["training"]["stage"] == "finished" and host["training"]["head"] == report["ledger_head"]
    assert host["scoring"]["stage"] == "stopped"   # not served since the restart; its replica is still there
    coordinator = _jobs(members["coordinator"], report["job_id"])["training"]
    assert (coordinator["stage"], coordinator["head"]) == ("finished", report["ledger_head"])
    assert _jobs(members["coordinator"], report["aligned_job_id"])["training"]["stage"] == "aligned"
    assert _comparison(members.values(), report["job_id"])["verdict"] == "agree"
    scoring = _comparison(members.values(), report["job_id"], "scoring")
    assert set(scoring["members"]) == {"guest", "host"} and scoring["verdict"] == "agree"


def _tamper(replica: Path, change) -> bytes:
    """Change the last block of a replica; returns the file as it was."""
    original = replica.read_bytes()
    store = LedgerStore(replica, read_only=True)
    last = list(store.blocks())[-1]
    store.close()
    with sqlite3.connect(replica) as db:
        change(db, last)
    return original


def _drop_last(db: sqlite3.Connection, last) -> None:
    for table in ("blocks", "entries", "signatures"):
        db.execute(f"DELETE FROM {table} WHERE height = ?", (last.height,))


def _rewrite_last(db: sqlite3.Connection, last) -> None:
    """Another block at the same height: what a coordinator committing different blocks to different members leaves."""
    other = replace(last, timestamp_ns=last.timestamp_ns + 1)
    db.execute("UPDATE blocks SET timestamp_ns = ?, hash = ? WHERE height = ?", (other.timestamp_ns, other.hash(), last.height))


def test_status_names_a_member_behind_and_a_member_whose_head_differs(finished, capsys):
    running, report = finished
    job = _job_file(running)
    replica = running.state_root / "host" / "jobs" / report["job_id"] / "ledger.sqlite"
    original = _tamper(replica, _drop_last)
    try:
        behind = _comparison(_status(running).values(), report["job_id"])
        assert behind["verdict"] == "behind"
        assert behind["members"]["host"] == {"blocks": report["ledger_blocks"] - 1, "head": behind["members"]["host"]["head"],
                                             "state": "behind"}
        assert {behind["members"][m]["state"] for m in ("coordinator", "guest")} == {"same"}
        assert f"host is behind at {report['ledger_blocks'] - 1} blocks" in behind["summary"]
        assert main(["status", "--job", str(job), "--tls", str(running.certs_dir / "guest")]) == 0   # a block may be on its way
        capsys.readouterr()

        replica.write_bytes(original)
        _tamper(replica, _rewrite_last)
        forked = _comparison(_status(running).values(), report["job_id"])
        assert forked["verdict"] == "fork" and forked["members"]["host"]["state"] == "differs"
        assert forked["members"]["host"]["blocks"] == report["ledger_blocks"]
        assert forked["members"]["host"]["head"] != report["ledger_head"]
        assert forked["summary"].startswith(f"heads DIFFER at {report['ledger_blocks']} blocks (a fork): ")
        assert f"host holds {forked['members']['host']['head'][:12]}" in forked["summary"]
        assert f"coordinator, guest hold {report['ledger_head'][:12]}" in forked["summary"]
        assert main(["status", "--job", str(job), "--tls", str(running.certs_dir / "guest")]) == 3
        assert "heads DIFFER" in capsys.readouterr().out
        assert main(["status", "--job", str(job), "--tls", str(running.certs_dir / "guest"), "--json"]) == 3
        shown = json.loads(capsys.readouterr().out)
        entry = next(e for e in shown["heads"] if e["job_id"] == report["job_id"] and e["chain"] == "training")
        assert entry["verdict"] == "fork" and entry["members"]["host"]["state"] == "differs"
    finally:
        replica.write_bytes(original)
    assert _comparison(_status(running).values(), report["job_id"])["verdict"] == "agree"


def test_status_reads_only_the_newest_job_folders_and_counts_the_others(tmp_path):
    jobs = tmp_path / "jobs"
    for age, job_id in enumerate(["old-00000001", "mid-00000002", "new-00000003"]):
        (jobs / job_id).mkdir(parents=True)
        (jobs / job_id / "ledger.sqlite").write_bytes(b"")
        os.utime(jobs / job_id / "ledger.sqlite", (1_000_000 + age, 1_000_000 + age))
        os.utime(jobs / job_id, (1_000_000, 1_000_000))
    (jobs / "not a job").mkdir()
    folders, left_off = newest_job_folders(tmp_path, limit=2)
    assert [f.name for f in folders] == ["new-00000003", "mid-00000002"] and left_off == 1
    assert newest_job_folders(tmp_path / "none") == ([], 0)


def test_heads_are_compared_per_job_and_chain():
    def member(name, *jobs):
        return {"member": name, "health": "SERVING", "jobs": [
            {"job_id": j, "chain": c, "blocks": b, "head": h} for j, c, b, h in jobs]}

    members = [member("coordinator", ("a-00000001", "training", 5, "aa")),
               member("bank", ("a-00000001", "training", 5, "aa"), ("a-00000001", "scoring", 3, "cc")),
               member("bureau", ("a-00000001", "training", 4, "a4"), ("a-00000001", "scoring", 3, "dd"))]
    training, scoring = compare_heads(members)
    assert training["verdict"] == "behind" and training["members"]["bureau"]["state"] == "behind"
    assert training["summary"] == "heads differ (a member is behind): coordinator, bank hold aa at 5 blocks; " \
                                  "bureau is behind at 4 blocks, head a4"
    assert scoring["verdict"] == "fork" and {m["state"] for m in scoring["members"].values()} == {"differs"}
    assert scoring["summary"] == "heads DIFFER at 3 blocks (a fork): bank holds cc; bureau holds dd"


def test_a_job_a_party_no_longer_holds_is_finished_interrupted_or_aborted_by_its_folder(tmp_path):
    from fedscore.daemons.party.status import ended_stage
    from fedscore.ledger.position import ChainPosition

    def position(kind: str) -> ChainPosition:
        return ChainPosition(3, b"\x01" * 32, frozenset({"coordinator", "bank"}), kind, None)

    assert ended_stage(tmp_path, position("settlement")) == ("finished", "")
    assert ended_stage(tmp_path, position("alignment")) == ("aborted", "its chain ends with alignment")
    (tmp_path / "checkpoint.json").write_text("{}")   # a restart left it mid-training: the coordinator resumes it
    assert ended_stage(tmp_path, position("step"))[0] == "interrupted"


def test_a_party_with_many_jobs_lists_the_newest_and_counts_the_others(finished, capsys):
    from fedscore.daemons.job_folders import MAX_LISTED_JOBS

    running, report = finished
    jobs = running.state_root / "host" / "jobs"
    replica = jobs / report["job_id"] / "ledger.sqlite"
    copies = [jobs / f"copy-{i:08x}" for i in range(MAX_LISTED_JOBS + 5)]
    try:
        for age, folder in enumerate(copies):
            folder.mkdir()
            (folder / "ledger.sqlite").write_bytes(replica.read_bytes())
            os.utime(folder / "ledger.sqlite", (2_000_000_000 + age, 2_000_000_000 + age))   # the newest of all
        host = _status(running)["host"]
        listed = [job["job_id"] for job in host["jobs"] if job["chain"] == "training"]
        assert listed == [folder.name for folder in reversed(copies)][:MAX_LISTED_JOBS]
        held = len(list(jobs.iterdir()))
        assert host["jobs_left_off"] == held - MAX_LISTED_JOBS
        assert main(["status", "--job", str(_job_file(running)), "--tls", str(running.certs_dir / "host")]) == 0
        assert f"({held - MAX_LISTED_JOBS} older jobs not listed)" in capsys.readouterr().out
    finally:
        for folder in copies:
            (folder / "ledger.sqlite").unlink(missing_ok=True)
            folder.rmdir()


def test_a_consortium_member_outside_the_job_sees_none_of_its_chains(finished):
    from fedscore.crypto.certs import init_consortium
    from fedscore.transport.tls import TlsIdentity

    running, report = finished
    init_consortium(running.certs_dir, ["outsider"])
    members = consortium_status(running.spec, TlsIdentity.load(running.certs_dir / "outsider"))
    assert {m["member"]: m["health"] for m in members} == {"coordinator": "SERVING", "guest": "SERVING", "host": "SERVING"}
    assert not any("error" in m for m in members)   # each answered Status: it listed nothing of the job
    assert [job for m in members for job in m["jobs"]] == [] and compare_heads(members) == []
    members = consortium_status(running.spec, running.identity("guest"))
    assert all(_jobs(m, report["job_id"]) for m in members)   # as a member of the job, every member lists it
