"""The Ray engine against the local pool, on a real Ray cluster of two nodes (two raylets) on this machine: each
operation's results, a whole training job's weights bit for bit, and a Ray worker killed mid-epoch."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from fedscore.crypto import pool as local_pool  # noqa: E402
from fedscore.crypto.engine import open_engine  # noqa: E402
from fedscore.crypto.obfuscation import STANDARD  # noqa: E402
from fedscore.crypto.paillier import encrypt  # noqa: E402
from fedscore.crypto.pool import CryptoPool  # noqa: E402
from fedscore.crypto.psi import new_secret  # noqa: E402
from fedscore.crypto.ray_pool import RayPool, _narrowed  # noqa: E402
from fedscore.errors import ConfigError  # noqa: E402
from fedscore.job_file import load_job  # noqa: E402
from fedscore.proctable import command, descendants, wait_gone  # noqa: E402
from fedscore.protocol.training.simulation import build_consortium, load_tables, simulate  # noqa: E402

from fedscore.cli.runner import submit  # noqa: E402
from fedscore.daemons.launcher import LocalConsortium  # noqa: E402

from conftest import DATA, assert_descent_from_recorded_start, breast_parties, split_three_ways, write_job  # noqa: E402

NODE = {"num_cpus": 1, "object_store_memory": 80 * 2**20}   # Ray's smallest object store
JOB = {"epochs": 2, "batch_size": 100, "l2": 0.05, "learning_rate": 0.3, "validation": 0.25, "precompute_epochs": 1,
       "refill_obfuscators": True}
KILLED_AT = 3   # the weighted-sums call whose first chunk's worker is killed: the first epoch's third step


def test_a_cluster_that_does_not_answer_is_named_at_once():
    assert not ray.is_initialized()
    with socket.socket() as probe:   # a port no one listens on
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    started = time.monotonic()
    with pytest.raises(ConfigError, match=f"no Ray cluster answers at ray_address '{address}'"):
        open_engine("ray", None, address)
    assert time.monotonic() - started < 10 and not ray.is_initialized()


@pytest.fixture(scope="module")
def cluster():
    """A head node and a second node, each its own raylet with one CPU; gone, with its processes, at the end."""
    before = descendants(os.getpid())
    folder = tempfile.mkdtemp(prefix="fedscore-ray-")   # short: Ray's socket paths live in it
    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False, "temp_dir": folder})
    try:
        cluster.add_node(**NODE, temp_dir=folder)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        started = {p for p in descendants(os.getpid()) - before if "multiprocessing" not in command(p)}  # not the local pool's
        left = wait_gone(started, timeout=30)
        shutil.rmtree(folder, ignore_errors=True)
        assert not left, f"Ray processes left running: {[command(process) for process in left]}"


@pytest.fixture(scope="module")
def ray_pool(cluster):
    pool = open_engine("ray", 2, cluster.address, window_bits=8)
    assert isinstance(pool, RayPool) and pool.workers == 2
    assert sum(node["Alive"] for node in ray.nodes()) == 2 and ray.cluster_resources()["CPU"] == 2
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def local():
    pool = CryptoPool(2, window_bits=8)
    yield pool
    pool.close()


def test_every_operation_gives_the_local_pools_results(ray_pool, local, keypair):
    public, private = keypair
    rng = np.random.default_rng(5)
    values = rng.integers(-(2**40), 2**40, 300).tolist()
    ours = ray_pool.encrypt(public, values)
    assert [private.decrypt_signed(c) for c in ours] == values
    assert ours != local.encrypt(public, values)   # fresh obfuscators, drawn on the workers
    assert [private.decrypt_signed(c) for c in ray_pool.encrypt(public, values[:40], STANDARD)] == values[:40]

    made = ray_pool.obfuscators(public, 50)
    assert len(set(made)) == 50 and all(private.decrypt(encrypt(public, 0, r)) == 0 for r in made)

    matrix = rng.integers(-32767, 32768, size=(300, 7))
    expected = [sum(v * int(x) for v, x in zip(values, column)) for column in matrix.T]
    sums = ray_pool.weighted_sums(public, ours, matrix)
    assert [private.decrypt_signed(c) for c in sums] == expected
    assert [private.decrypt_signed(c) for c in local.weighted_sums(public, ours, matrix)] == expected
    assert _narrowed(matrix).dtype == np.int16 and _narrowed(matrix).tolist() == matrix.tolist()   # a quarter shipped

    columns = np.array([rng.choice(9, 3, replace=False) for _ in range(300)])   # a row's 1s: distinct columns
    binned = [sum(v for v, row in zip(values, columns) if j in row.tolist()) for j in range(9)]
    assert [private.decrypt_signed(c) for c in ray_pool.column_sums(public, ours, columns, 9)] == binned
    assert [private.decrypt_signed(c) for c in local.column_sums(public, ours, columns, 9)] == binned

    secret, ids = new_secret(), [f"customer-{i}" for i in range(500)]
    blinded = ray_pool.hash_and_blind(secret, b"job-1", ids)
    assert blinded == local.hash_and_blind(secret, b"job-1", ids) and len(blinded) == 500 * 32
    other = new_secret()
    assert ray_pool.blind(other, blinded) == local.blind(other, blinded)
    assert ray_pool.encrypt(public, []) == [] and ray_pool.idle


ENCODINGS = {"binned": None, "raw": {"method": "none"}}   # a gradient as sums per bin, or as Xᵀ[[d]]


def train(folder: Path, keypair, pool, encoding: str, start: dict | None = None):
    """(weights of each party, losses, the card center's checkpoint at its start) for the three-party job."""
    spec, base = load_job(write_job(folder_for(folder), split_three_ways(folder), ENCODINGS[encoding], **JOB))
    consortium = build_consortium(spec, load_tables(spec, base), pool, keypair)
    if start is not None:
        consortium.card_center.restore(start)   # the card center's secret random start, the same on both engines
    start = json.loads(json.dumps(consortium.card_center.checkpoint()))
    result = simulate(consortium)
    return [s.weights.copy() for s in (consortium.card_center, *consortium.partners.values())], result.losses, start


@pytest.fixture(scope="module")
def local_models(tmp_path_factory, keypair, local):
    """Each encoding's job trained once on the local engine."""
    return {encoding: train(tmp_path_factory.mktemp(encoding), keypair, local, encoding) for encoding in ENCODINGS}


def folder_for(tmp_path: Path) -> Path:
    tmp_path.mkdir(exist_ok=True)
    for name in ("breast_hetero_guest.csv", "breast_hetero_host.csv"):
        (tmp_path / name).write_bytes((DATA / name).read_bytes())
    return tmp_path


def assert_same_model(ours, theirs) -> None:
    weights, losses, _ = ours
    expected, expected_losses, _ = theirs
    assert len(weights) == 3 and all(np.any(w) for w in weights)   # trained, every party
    for mine, local in zip(weights, expected):
        assert mine.dtype == local.dtype and mine.tobytes() == local.tobytes()   # bit for bit
    assert losses == expected_losses


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_job_trained_on_ray_has_the_local_engines_weights_bit_for_bit(tmp_path, keypair, ray_pool, local_models,
                                                                        encoding):
    local_model = local_models[encoding]
    assert_same_model(train(tmp_path, keypair, ray_pool, encoding, start=local_model[2]), local_model)


def test_a_worker_killed_mid_epoch_is_retried_and_the_model_is_the_same(tmp_path, keypair, ray_pool, local_models,
                                                                        monkeypatch):
    """The first chunk of one gradient's Xᵀ[[d]] waits in its Ray worker until the test SIGKILLs that worker; Ray
    runs the chunk again on a fresh worker."""
    local_model = local_models["raw"]
    victim_file = tmp_path / "victim"
    original, calls = ray_pool._task, []

    def task(fn):
        if fn is local_pool._weighted_sum_chunk:
            calls.append(fn)
            if len(calls) == KILLED_AT:
                return ray.remote(num_cpus=1, max_retries=ray_pool.max_retries)(waits_to_be_killed(fn, str(victim_file)))
        return original(fn)

    monkeypatch.setattr(ray_pool, "_task", task)
    killed: list[int] = []
    watcher = threading.Thread(target=kill_when_named, args=(victim_file, killed), daemon=True)
    watcher.start()
    model = train(tmp_path / "job", keypair, ray_pool, "raw", start=local_model[2])
    watcher.join(timeout=60)
    assert len(calls) > KILLED_AT and killed and killed[0] != os.getpid()
    assert_same_model(model, local_model)


def waits_to_be_killed(fn, victim_file: str):
    """``fn`` whose first run, anywhere in the cluster, names its process in ``victim_file`` and waits; a retry
    (the victim file is there) runs ``fn``."""
    def first_run_waits(*args):
        mine = f"{victim_file}.{os.getpid()}"
        Path(mine).write_text(str(os.getpid()))
        try:
            os.link(mine, victim_file)   # atomic: only one run is the victim
        except FileExistsError:
            return fn(*args)
        finally:
            os.unlink(mine)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.01)
        raise RuntimeError("the worker was not killed")
    return first_run_waits


def kill_when_named(victim_file: Path, killed: list[int]) -> None:
    deadline = time.monotonic() + 60
    while not victim_file.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    if victim_file.exists():
        pid = int(victim_file.read_text())
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)




class PartnerOnRay(LocalConsortium):
    """Every party's daemon as usual, but ``partner``'s config asks for the Ray engine at ``address``."""

    def __init__(self, *args, partner: str, address: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.partner, self.address = partner, address

    def _launch(self, member, role, settings):
        if member == self.partner:
            settings = {**settings, "engine": "ray", "ray_address": self.address}
        return super()._launch(member, role, settings)


def test_a_party_daemon_configured_for_ray_trains_through_grpc(breast_folder, cluster):
    """The partner's daemon joins the cluster as its driver (mutual TLS between the daemons as always) and its
    share of the job is done by Ray tasks; the model is exactly gradient descent from the recorded start."""
    spec, base = load_job(write_job(breast_folder, breast_parties(), epochs=2, batch_size=128, validation=0.25))
    with PartnerOnRay(spec, base, breast_folder / "state", workers=1, partner="host", address=cluster.address) as members:
        report = submit(members.spec, members.coordinator_address, lambda event: None, tls=members.card_center_identity)
        assert "Paillier work on the Ray cluster at" in members.log_path("host").read_text()
        assert "Ray cluster" not in members.log_path("guest").read_text()
    assert report["epochs"] == 2
    assert_descent_from_recorded_start(spec, base, report)
