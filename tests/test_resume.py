"""Crash and resume: each kind of daemon is SIGKILLed mid-epoch, the launcher restarts it, and the job finishes
with the chain and fees of an uninterrupted run and weights that are exactly gradient descent from the card
center's start (secret and new in every job, kept across its restart); no process of a killed daemon outlives it."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from fedscore.job_file import load_job
from fedscore.daemons.launcher import LocalConsortium
from fedscore.ledger.store import LedgerStore
from fedscore.ledger.verify import verify_chain
from fedscore.proctable import Process, command, descendants, wait_gone
from fedscore.cli.runner import run_job_file, submit

from conftest import assert_descent_from_recorded_start, split_three_ways, write_job
from faults import count

EPOCHS = 5          # three steps an epoch on the breast data's training rows: chain heights 2 to 16 are steps
KILLS = [("partner_a", 5), ("guest", 9), ("coordinator", 13)]   # (member, chain height at which it dies)


def chain_height(state: Path) -> int:
    """Blocks on the coordinator's replica of the (only) job, read beside the running daemon."""
    found = list(state.glob("coordinator/jobs/*/ledger.sqlite"))
    if not found:
        return 0
    try:
        with sqlite3.connect(f"file:{found[0]}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM blocks").fetchone()[0]
    except sqlite3.Error:
        return 0


def kill_alone(pid: int) -> set[Process]:
    """SIGKILL the daemon only (not its process group, as the OOM killer or `kill -9` would); its processes that
    are still running a while later (recorded before the kill: afterwards they belong to init)."""
    before = descendants(pid)
    os.kill(pid, signal.SIGKILL)
    return wait_gone(before, timeout=30)


def job_with_fees(folder: Path) -> Path:
    job = write_job(folder, split_three_ways(folder), epochs=EPOCHS, batch_size=128, validation=0.3,
                    restart_timeout=90, momentum=0.6)   # velocity must resume too
    job.write_text(job.read_text() + "\n[fees]\nper_step = 7\nper_overlap_row = 1\n")
    return job


@pytest.mark.slow
def test_each_kind_of_daemon_killed_mid_epoch_comes_back_and_the_job_ends_as_if_nothing_happened(breast_folder):
    job = job_with_fees(breast_folder)
    plain = run_job_file(job, local=True, workers=1, state_dir=breast_folder / "plain")

    spec, base = load_job(job)
    state = breast_folder / "state"
    killed: list[tuple[str, int, int]] = []
    left_behind: list[str] = []
    with LocalConsortium(spec, base, state, workers=1) as consortium:
        consortium.supervise()

        def kill_in_turn() -> None:
            for member, height in KILLS:
                while chain_height(state) < height:
                    time.sleep(0.01)
                time.sleep(0.05)   # into the next step's messages
                process = consortium.processes[member]
                left_behind.extend(command(p) for p in kill_alone(process.pid))
                killed.append((member, height, process.pid))
                while consortium.processes[member] is process or consortium.dead_members():
                    time.sleep(0.05)   # the supervisor brings it back before the next kill

        killer = threading.Thread(target=kill_in_turn, daemon=True)
        killer.start()
        events = []
        report = submit(consortium.spec, consortium.coordinator_address, events.append,
                        tls=consortium.card_center_identity)
        killer.join(timeout=5)
        assert [k[0] for k in killed] == [m for m, _ in KILLS]
        assert consortium.restarts == {m: 1 for m, _ in KILLS}

        # a party that died before the coordinator's CloseJob reached it drops the settled job's checkpoint at start
        folder = state / "partner_b" / "jobs" / report["job_id"]
        (folder / "checkpoint.json").write_text("{}")
        (folder / "aligned-rows.bin").write_bytes(bytes(8))
        pool = descendants(consortium.processes["partner_b"].pid)
        assert len(pool) >= 3, "a party runs a forkserver, a resource tracker and its workers"
        left_behind.extend(command(p) for p in kill_alone(consortium.processes["partner_b"].pid))
        deadline = time.monotonic() + 60
        while (folder / "checkpoint.json").exists() or (folder / "aligned-rows.bin").exists():
            assert time.monotonic() < deadline, "the restarted partner kept a settled job's checkpoint"
            time.sleep(0.05)
        assert consortium.restarts.get("partner_b") == 1
        assert not left_behind and not consortium.leftovers, (left_behind, consortium.leftovers)
    for _ in killed:
        count("peer kills and hangs survived")
    recoveries = [e.message for e in events if e.stage == "recover"]
    assert any("partner_a" in m for m in recoveries) and any("guest" in m for m in recoveries)
    assert any("lost the coordinator" in m for m in recoveries) and any("coordinator restarted" in m for m in recoveries)

    # each run's model is exactly gradient descent from its own start: the killed card center kept its start
    for run in (plain, report):
        assert_descent_from_recorded_start(spec, base, run)

    # every step on the chain exactly once, every replica the same, the fees those of the plain run
    replicas = {member: Path(path) for member, path in report["ledgers"].items()}
    heads = set()
    for member, path in replicas.items():
        store = LedgerStore(path)
        blocks = list(store.blocks())
        store.close()
        verify_chain(blocks)   # raises naming the first bad block
        heads.add(blocks[-1].hash())
        steps = [(e["epoch"], e["batch"]) for b in blocks for e in b.decoded() if e["kind"] == "step"]
        assert steps == sorted(set(steps)) and len(steps) == plain["steps"] == EPOCHS * 3, member
    assert len(heads) == 1
    assert report["settlement"] == plain["settlement"]
    assert [line["steps"] for line in report["settlement"]["lines"]] == [EPOCHS * 3] * 2   # no step paid twice
    assert report["settlement"]["total"] == 2 * EPOCHS * 3 * 7 + sum(report["overlaps"].values())
    # nothing left to resume, no key left on disk
    assert not list(state.rglob("checkpoint.json")) and not list(state.rglob("coordinator.json"))
    assert not list(state.rglob("paillier.key"))
    assert json.loads(next(state.glob("coordinator/jobs/*/job.json")).read_text())["job_id"] == report["job_id"]
