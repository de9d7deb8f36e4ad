"""A daemon SIGKILLed mid-work takes its crypto workers, its forkserver and its resource tracker with it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pandas as pd

from fedscore.job_file import load_job
from fedscore.crypto.paillier import generate_keypair
from fedscore.daemons.launcher import signal_session
from fedscore.proctable import Process, command, descendants, in_session, wait_gone
from fedscore.proto import fedscore_pb2 as pb
from fedscore.proto import fedscore_pb2_grpc as pb_grpc
from fedscore.transport import codec

from conftest import TEST_KEY_BITS, breast_parties, write_job

JOB_ID = "cleanup-0000aaaa"
IDS = 100_000          # seconds of PSI hashing on two workers: the kill lands mid-work
WORKERS = 2


def until(condition, what: str, timeout: float = 60.0):
    """Poll ``condition`` until it returns something true, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.05)
    return value


def start_partner(folder: Path) -> tuple[subprocess.Popen, str]:
    data = folder / "data"
    data.mkdir()
    pd.DataFrame({"id": range(IDS), "z": 0.5}).to_csv(data / "partner.csv", index=False)
    config = folder / "party.toml"
    config.write_text(f'[party]\nname = "partner"\nlisten = "127.0.0.1:0"\nstate_dir = "{folder / "state"}"\n'
                      f'data_dir = "{data}"\nworkers = {WORKERS}\nmin_key_bits = {TEST_KEY_BITS}\n'
                      'card_centers = ["card_center"]\n')
    ready = folder / "ready"
    daemon = subprocess.Popen([sys.executable, "-m", "fedscore", "party", "serve", "--config", str(config),
                               "--ready-file", str(ready), "--insecure"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    until(lambda: ready.exists() or daemon.poll() is not None, "the party daemon ready")
    assert daemon.poll() is None, "the party daemon exited at start-up"
    return daemon, ready.read_text().split()[0]


def prepare(stub, folder: Path) -> None:
    (folder / "card_center.csv").write_text("id,y\n1,0\n")
    job = write_job(folder, [{"name": "card_center", "data": "card_center.csv", "id": "id", "label": "y"},
                             {"name": "partner", "data": "partner.csv", "id": "id"}])
    spec, _ = load_job(job)
    public_key, _ = generate_keypair(TEST_KEY_BITS)
    stub.PrepareJob(pb.PrepareJobRequest(job_id=JOB_ID, job=codec.spec_to_proto(spec), party="partner",
                                         public_key=public_key.to_bytes()), timeout=60)


def pool_processes(daemon_pid: int) -> set[Process] | None:
    """The daemon's forkserver, resource tracker and workers, once all of them run."""
    processes = descendants(daemon_pid)
    servers = [p for p in processes if "forkserver" in command(p)]
    workers = {w for server in servers for w in descendants(server.pid)}
    tracker = any("resource_tracker" in command(p) for p in processes)
    return processes if tracker and len(workers) == WORKERS else None


def test_a_party_daemon_killed_mid_psi_leaves_no_worker_forkserver_or_tracker(tmp_path):
    daemon, address = start_partner(tmp_path)
    try:
        with grpc.insecure_channel(address) as channel:
            prepare(pb_grpc.JobsStub(channel), tmp_path)
            hashing = pb_grpc.AlignmentStub(channel).PsiBlindedIds(pb.JobRef(job_id=JOB_ID), timeout=120)   # on the pool's workers
            before = until(lambda: pool_processes(daemon.pid), "the daemon's pool at work")
            os.kill(daemon.pid, signal.SIGKILL)    # the daemon alone, as the OOM killer or `kill -9` would
            daemon.wait()
            hashing.cancel()
        left = wait_gone(before, timeout=30)
        assert not left, f"still running after their daemon died: {[command(p) for p in left]}"
    finally:
        signal_session(daemon.pid, signal.SIGKILL)
        daemon.wait()


def _pid(_: int) -> int:
    return os.getpid()


def test_a_pool_made_in_a_killed_process_ends_with_it(tmp_path):
    """The same for a fork-context pool (as chain verification uses): the parent's lifeline reaches the workers."""
    script = ("import sys, time\nfrom fedscore.lifeline import process_pool\nfrom test_worker_cleanup import _pid\n"
              "pool = process_pool(2, 'fork')\nprint(sorted(set(pool.map(_pid, range(40), chunksize=1))), flush=True)\n"
              "time.sleep(600)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env,
                              start_new_session=True)
    try:
        assert parent.stdout.readline().startswith("[")     # the workers have run tasks
        before = until(lambda: descendants(parent.pid), "the pool's workers")
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert not wait_gone(before, timeout=30)
    finally:
        signal_session(parent.pid, signal.SIGKILL)
        parent.wait()
        parent.stdout.close()


LAUNCHER = """
import sys, time
from pathlib import Path
from fedscore.daemons.launcher import LocalConsortium
from fedscore.job_file import load_job
spec, base = load_job(Path(sys.argv[1]))
consortium = LocalConsortium(spec, base, Path(sys.argv[2]), insecure=True)
consortium.start()
print(" ".join(str(p.pid) for p in consortium.processes.values()), flush=True)
time.sleep(600)
"""


def test_local_daemons_end_with_their_launcher_however_it_dies(breast_folder):
    """`fedscore run --local` SIGKILLed (nothing of it runs its clean-up) still leaves no daemon running."""
    job = write_job(breast_folder, breast_parties())
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(job), str(breast_folder / "state")],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        pids = [int(pid) for pid in launcher.stdout.readline().split()]
        assert len(pids) == 3, "a coordinator and two parties should have started"
        daemons = set().union(*(in_session(pid) for pid in pids))   # each daemon runs in a session of its own
        assert {p.pid for p in daemons} >= set(pids)
        launcher.kill()
        launcher.wait()
        left = wait_gone(daemons, 60)
        assert not left, f"still running after their launcher was killed: {[command(p) for p in left]}"
    finally:
        if launcher.poll() is None:
            launcher.kill()
        for pid in locals().get("pids", []):
            signal_session(pid, signal.SIGKILL)
