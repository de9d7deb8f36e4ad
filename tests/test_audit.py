"""The audit chain of a real run: every replica verifies to the same head, fees settle, commands work."""
from __future__ import annotations

import datetime
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from fedscore.cli.audit import check_head
from fedscore.cli.demo import summary_table
from fedscore.cli.runner import run_job_file
from fedscore.errors import FedscoreError, UnverifiedError

from conftest import split_three_ways, write_job


def audit(*args):
    return subprocess.run([sys.executable, "-m", "fedscore", "audit", *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audited")
    for name in ("breast_hetero_guest.csv", "breast_hetero_host.csv"):
        (folder / name).write_bytes((Path(__file__).parent / "data" / name).read_bytes())
    parties = split_three_ways(folder)
    job = write_job(folder, parties, epochs=2, batch_size=150, validation=0.2)
    job.write_text(job.read_text() + '\n[fees]\ncurrency = "CNY"\nper_step = 250\nper_overlap_row = 3\n')
    return run_job_file(job, local=True, workers=1)


def test_every_replica_verifies_to_the_same_head(finished_run):
    report = finished_run
    assert set(report["ledgers"]) == {"coordinator", "guest", "partner_a", "partner_b"}
    steps = report["steps"]
    assert report["ledger_blocks"] == 1 + 1 + steps + 1 + 1  # genesis, alignment, steps, job end, settlement
    for member, path in report["ledgers"].items():
        done = audit("verify", path, "--head", report["ledger_head"])
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"ok: {report['ledger_blocks']} blocks, {report['ledger_blocks']} entries, head {report['ledger_head']}, genesis ")


def test_settlement_pays_each_partner_by_the_contract(finished_run):
    report = finished_run
    steps, overlaps = report["steps"], report["overlaps"]
    lines = {line["payee"]: line["amount"] for line in report["settlement"]["lines"]}
    assert lines == {p: steps * 250 + overlaps[p] * 3 for p in ("partner_a", "partner_b")}
    assert report["settlement"]["payer"] == "guest"
    done = audit("balances", report["ledgers"]["partner_a"])
    assert done.returncode == 0
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.strip().splitlines()[1:]}
    total = sum(lines.values())
    assert rows["guest"] == [str(total), "0", str(-total)]
    assert rows["partner_a"] == ["0", str(lines["partner_a"]), str(lines["partner_a"])]


def test_show_prove_and_check_proof(finished_run, tmp_path):
    ledger = finished_run["ledgers"]["partner_b"]
    shown = audit("show", ledger)
    assert shown.returncode == 0 and '"kind": "job_start"' in shown.stdout and '"kind": "settlement"' in shown.stdout
    assert '"residual/partner_b"' in shown.stdout  # the step entries carry message digests
    proof = audit("prove", ledger, "2:0")
    assert proof.returncode == 0, proof.stderr
    assert json.loads(json.loads(proof.stdout)["entry"])["kind"] == "step"
    path = tmp_path / "proof.json"
    path.write_text(proof.stdout)
    checked = audit("check-proof", path)
    assert checked.returncode == 0 and checked.stdout.startswith("ok: entry 0 is in block 2")
    tampered = json.loads(proof.stdout)
    tampered["entry"] = tampered["entry"].replace('"batch":0', '"batch":1')
    path.write_text(json.dumps(tampered))
    failed = audit("check-proof", path)
    assert failed.returncode == 3 and "does not verify" in failed.stderr   # like a ledger that does not verify


def test_a_truncated_replica_fails_against_the_reported_head(finished_run, tmp_path):
    copy = tmp_path / "ledger.sqlite"
    copy.write_bytes(Path(finished_run["ledgers"]["partner_a"]).read_bytes())
    last = finished_run["ledger_blocks"] - 1
    db = sqlite3.connect(copy)
    for table in ("blocks", "entries", "signatures"):
        db.execute(f"DELETE FROM {table} WHERE height = ?", (last,))
    db.commit()
    db.close()
    assert audit("verify", copy).returncode == 0  # a prefix of a chain is a valid chain ...
    done = audit("verify", copy, "--head", finished_run["ledger_head"])
    assert done.returncode == 3 and "not the expected" in done.stderr  # ... but not the reported one


def test_a_malformed_head_is_a_usage_error_not_a_failed_verification(finished_run):
    """Exit 3 means "the evidence does not verify": a mistyped or cut-short --head must not say that."""
    for head in (finished_run["ledger_head"][:12], finished_run["ledger_head"] + "0", "zz" * 32):
        done = audit("verify", finished_run["ledgers"]["guest"], "--head", head)
        assert done.returncode == 2 and "not a block hash" in done.stderr, head


def test_a_tampered_replica_fails_and_names_the_block(finished_run, tmp_path):
    copy = tmp_path / "ledger.sqlite"
    copy.write_bytes(Path(finished_run["ledgers"]["guest"]).read_bytes())
    db = sqlite3.connect(copy)
    body = db.execute("SELECT body FROM entries WHERE height = 3").fetchone()[0]
    db.execute("UPDATE entries SET body = ? WHERE height = 3", (body.replace(b'"rows":', b'"rows": '),))
    db.commit()
    db.close()
    done = audit("verify", copy)
    assert done.returncode == 3
    assert "block 3: Merkle root does not match its entries" in done.stderr
    printed = audit("verify", copy, "--json")
    assert printed.returncode == 3
    assert json.loads(printed.stdout) == {"ok": False, "block": 3, "error": "block 3: Merkle root does not match its entries"}


def test_audit_json_documents_match_the_run(finished_run, tmp_path):
    report = finished_run
    ledger = report["ledgers"]["partner_a"]
    verified = audit("verify", ledger, "--head", report["ledger_head"], "--json")
    assert verified.returncode == 0, verified.stderr
    found = json.loads(verified.stdout)
    assert found["ok"] is True and found["head"] == report["ledger_head"]
    assert found["blocks"] == found["entries"] == report["ledger_blocks"]
    assert found["members"] == sorted(report["ledgers"])

    balances = json.loads(audit("balances", ledger, "--json").stdout)
    lines = {line["payee"]: line["amount"] for line in report["settlement"]["lines"]}
    assert balances["currency"] == "CNY"
    assert balances["members"]["partner_a"] == {"owes": 0, "owed": lines["partner_a"], "net": lines["partner_a"]}
    assert balances["members"]["guest"]["net"] == -sum(lines.values())

    shown = json.loads(audit("show", ledger, "--json").stdout)
    assert shown["verifies"] is True and len(shown["blocks"]) == report["ledger_blocks"]
    assert shown["blocks"][-1]["hash"] == report["ledger_head"]
    assert shown["blocks"][0]["entries"][0]["kind"] == "job_start"
    assert shown["blocks"][-1]["signed_by"] == sorted(report["ledgers"])

    proof = audit("prove", ledger, "2:0", "--json")
    assert proof.returncode == 0
    path = tmp_path / "proof.json"
    path.write_text(proof.stdout)
    checked = json.loads(audit("check-proof", path, "--json").stdout)
    assert checked["ok"] is True and checked["height"] == 2 and checked["index"] == 0
    assert checked["genesis_hash"] == shown["blocks"][0]["hash"]


def test_audit_quiet_says_nothing_and_answers_by_exit_code(finished_run, tmp_path):
    done = audit("verify", finished_run["ledgers"]["guest"], "--quiet")
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""
    wrong = audit("verify", finished_run["ledgers"]["guest"], "--head", "00" * 32, "--quiet")
    assert wrong.returncode == 3 and wrong.stdout == "" and "not the expected" in wrong.stderr


def test_the_head_the_demo_prints_is_one_verify_takes(finished_run):
    printed = re.search(r"head ([0-9a-f]+…)$", summary_table(finished_run), flags=re.M)
    assert printed and len(printed[1]) == 16 + 1 and finished_run["ledger_head"].startswith(printed[1][:-1])
    for head in (printed[1], printed[1][:-1], finished_run["ledger_head"][:40]):   # as printed, or any longer prefix
        done = audit("verify", finished_run["ledgers"]["guest"], "--head", head)
        assert done.returncode == 0 and done.stdout.startswith("ok: "), (head, done.stderr)


def test_a_head_prefix_that_is_not_the_chains_end_fails(finished_run, tmp_path):
    ledger = finished_run["ledgers"]["guest"]
    blocks = json.loads(audit("show", ledger, "--json").stdout)["blocks"]
    earlier = blocks[-2]["hash"][:20]   # the replica went on past the head a report gave
    done = audit("verify", ledger, "--head", earlier)
    assert done.returncode == 3
    assert f"not the expected {earlier}: the chain goes on 1 block past block {len(blocks) - 2}" in done.stderr
    stranger = audit("verify", ledger, "--head", "0123456789abcdef")
    assert stranger.returncode == 3 and "not the expected 0123456789abcdef" in stranger.stderr
    short = audit("verify", ledger, "--head", finished_run["ledger_head"][:15])
    assert short.returncode == 2 and "at least the first 16" in short.stderr


class _Hashed:
    def __init__(self, digest: bytes):
        self.digest = digest

    def hash(self) -> bytes:
        return self.digest


def test_a_prefix_two_blocks_share_is_a_usage_error_not_a_failed_verification():
    blocks = [_Hashed(bytes.fromhex("ab" * 8) + bytes([i]) * 24) for i in range(3)]
    with pytest.raises(FedscoreError, match="--head abababababababab is ambiguous: the hashes of blocks 0, 1, 2") as caught:
        check_head(blocks, "ab" * 8)
    assert not isinstance(caught.value, UnverifiedError) and caught.value.exit_code == 2
    check_head(blocks, "ab" * 8 + "02")   # one more digit names the head alone


def test_show_prints_block_times_in_iso_8601_utc_and_json_keeps_nanoseconds(finished_run):
    ledger = finished_run["ledgers"]["guest"]
    blocks = json.loads(audit("show", ledger, "--json").stdout)["blocks"]
    shown = audit("show", ledger).stdout
    for block in blocks:
        nanoseconds = block["timestamp_ns"]
        assert isinstance(nanoseconds, int)
        moment = datetime.datetime.fromtimestamp(nanoseconds // 10**9, tz=datetime.timezone.utc)
        iso = f"{moment:%Y-%m-%dT%H:%M:%S}.{nanoseconds % 10**9 // 1000:06d}Z"
        assert block["time"] == iso
        assert f"block {block['height']}  {block['hash']}  {iso}  signed by " in shown
    assert str(blocks[0]["timestamp_ns"]) not in shown
