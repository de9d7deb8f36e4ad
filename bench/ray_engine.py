"""The same training epoch on the local engine and on the Ray engine with the same cores, side by side, at 1 and
2 workers; then each engine's bulk encryption and Xᵀ[[d]] rates.

    python bench/ray_engine.py [--rows 4000] [--center 10] [--partner 40] [--key-bits 2048] [--repeat 2] [--smoke]

Synthetic rows (seeded): a card center and one partner, whole batch, 2048-bit
keys, obfuscators made inline (so the engine does all of an epoch's bulk
Paillier work: encryptions, Xᵀ[[d]], gradient obfuscators). Every party runs in
this process (fedscore.protocol.training.simulation: the same sessions and
messages, no gRPC) so only the engine differs. Each setting trains two epochs
and the faster counts (the first also builds each worker's obfuscator table);
the settings take turns on both engines, ``--repeat`` times, and the best of
each counts, so load from elsewhere on a shared machine falls on both alike.

The local engine is CryptoPool with 1 or 2 worker processes; the Ray engine is
a Ray cluster of two nodes with one CPU each, started here on this machine
(two raylets), with at most 1 or 2 tasks at once. Same key, same rows; both
engines' pools stay open throughout (idle between their turns).

Last line (see figures.py): the Ray epoch at 2 and at 1 worker beside the local
engine's, and the speed-up from 1 to 2 workers on Ray beside the local one.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import parse_with_smoke, two_party_job
from figures import Figure, print_figures

from fedscore.crypto.paillier import generate_keypair
from fedscore.crypto.pool import CryptoPool
from fedscore.job_file import load_job
from fedscore.protocol.training.simulation import build_consortium, load_tables, simulate

ROUNDS = 2                                           # epochs per setting; the faster counts
NODE = {"num_cpus": 1, "object_store_memory": 80 * 2**20}
OPERATION_ROWS = 2000                                # rows of the bulk-operation timings (--smoke: fewer)


def write_data(folder: Path, rows: int, center: int, partner: int, key_bits: int) -> None:
    rng = np.random.default_rng(2020)
    x_center, x_partner = rng.normal(size=(rows, center)), rng.normal(size=(rows, partner))
    y = (x_center[:, :3].sum(1) + 0.3 * x_partner[:, :10].sum(1) + rng.normal(size=rows) > 0).astype(int)
    frame = pd.DataFrame(x_center, columns=[f"c{i}" for i in range(center)])
    frame.insert(0, "y", y)
    frame.insert(0, "id", np.arange(rows))
    frame.to_csv(folder / "card_center.csv", index=False, float_format="%.5f")
    frame = pd.DataFrame(x_partner, columns=[f"p{i}" for i in range(partner)])
    frame.insert(0, "id", np.arange(rows))
    frame.to_csv(folder / "partner.csv", index=False, float_format="%.5f")
    job = two_party_job("ray-bench", key_bits, epochs=ROUNDS, batch_size=0, learning_rate=0.15, validation=0.0,
                        min_overlap=0, min_rows_per_column=0, precompute_epochs=0, early_stop_tol=0.0)
    (folder / "job.toml").write_text(job + '\n[binning]\nmethod = "none"\n')   # raw columns: Xᵀ[[d]] per step


def epoch_seconds(job_file: Path, keys, pool: CryptoPool) -> float:
    spec, base = load_job(job_file)
    pool.warm(keys[0])
    result = simulate(build_consortium(spec, load_tables(spec, base), pool, keys))
    return min(result.epoch_seconds)


def operation_rates(pool: CryptoPool, keys, rows: int, columns: int) -> tuple[float, float]:
    """(encryptions per second, Xᵀ[[d]] rows per second with ``columns`` columns) through ``pool``."""
    rng = np.random.default_rng(1)
    values = rng.integers(-(2**40), 2**40, rows).tolist()
    started = time.perf_counter()
    encrypted = pool.encrypt(keys[0], values)
    encrypt = rows / (time.perf_counter() - started)
    matrix = rng.integers(-32767, 32768, size=(rows, columns))
    started = time.perf_counter()
    pool.weighted_sums(keys[0], encrypted, matrix)
    return encrypt, rows / (time.perf_counter() - started)


def measure(job_file: Path, keys, rows: int, columns: int, repeats: int) -> dict[str, dict[str, float]]:
    """{engine: {setting: best figure}}: every setting on both engines, taken in turns ``repeats`` times so a busy
    moment on a shared machine falls on both alike; the fastest epoch and the highest rate count."""
    from ray.cluster_utils import Cluster

    from fedscore.crypto.ray_pool import RayPool

    folder = tempfile.mkdtemp(prefix="fedscore-ray-")   # Ray's session: short, its socket paths live in it
    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False, "temp_dir": folder})
    pools: dict[str, dict[int, CryptoPool]] = {"local": {}, "ray": {}}
    try:
        cluster.add_node(**NODE, temp_dir=folder)
        cluster.wait_for_nodes()
        for workers in (2, 1):   # the first Ray pool joins the cluster, the other shares its connection
            pools["ray"][workers] = RayPool(cluster.address, workers)
            pools["local"][workers] = CryptoPool(workers)
        best: dict[str, dict[str, float]] = {"local": {}, "ray": {}}
        for _ in range(repeats):
            for workers in (1, 2):
                for engine in ("local", "ray"):
                    seconds = epoch_seconds(job_file, keys, pools[engine][workers])
                    best[engine][f"epoch_{workers}"] = min(seconds, best[engine].get(f"epoch_{workers}", seconds))
            for engine in ("local", "ray"):
                rates = operation_rates(pools[engine][2], keys, rows, columns)
                for name, rate in zip(("encrypt", "inner"), rates):
                    best[engine][name] = max(rate, best[engine].get(name, rate))
        return best
    finally:
        for engine in ("local", "ray"):
            for workers in (1, 2):
                if workers in pools[engine]:
                    pools[engine][workers].close()
        cluster.shutdown()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--center", type=int, default=10)
    parser.add_argument("--partner", type=int, default=40)
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=2, help="turns of every setting on both engines; the best counts")
    args = parse_with_smoke(parser, "300 rows, 3 + 5 features, 512-bit keys, one turn: seconds",
                            rows=300, center=3, partner=5, key_bits=512, repeat=1)
    operation_rows = min(OPERATION_ROWS, args.rows)
    with tempfile.TemporaryDirectory(prefix="fedscore-ray-") as tmp:
        folder = Path(tmp)
        write_data(folder, args.rows, args.center, args.partner, args.key_bits)
        keys = generate_keypair(args.key_bits)
        best = measure(folder / "job.toml", keys, operation_rows, args.partner, args.repeat)
    local, ray = best["local"], best["ray"]
    print(f"{args.rows} rows × ({args.center} + {args.partner}) features, {args.key_bits}-bit keys, obfuscators inline; "
          f"local: worker processes; ray: two nodes of 1 CPU on this machine; best of {args.repeat} turns")
    for workers in (1, 2):
        print(f"{workers} worker(s): epoch local {local[f'epoch_{workers}']:.2f} s, ray {ray[f'epoch_{workers}']:.2f} s "
              f"(ray/local ×{ray[f'epoch_{workers}'] / local[f'epoch_{workers}']:.2f})")
    for name, engine in (("local", local), ("ray", ray)):
        print(f"{name}, 2 workers, {operation_rows} rows: {engine['encrypt']:.0f} encryptions/s, "
              f"{engine['inner']:.0f} Xᵀ[[d]] rows/s at {args.partner} columns")
    print_figures([
        Figure("ray_epoch_seconds", ray["epoch_2"], local["epoch_2"], "local engine, same 2 cores"),
        Figure("ray_epoch_one_worker_seconds", ray["epoch_1"], local["epoch_1"], "local engine, 1 worker"),
        Figure("ray_speedup_two_workers", ray["epoch_1"] / ray["epoch_2"], local["epoch_1"] / local["epoch_2"],
               "local engine's speed-up"),
    ])


if __name__ == "__main__":
    main()
