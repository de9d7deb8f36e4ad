"""One training epoch on FATE's default-credit pair through the real daemons, 2048-bit keys; then raw columns
against binned attributes, side by side.

    python bench/epoch.py [--data DIR] [--workers 0] [--sample 100] [--smoke]

30 000 rows, 13 + 10 features, whole batch. Runs the epoch twice on the same
daemons: with obfuscators made in advance (`precompute_epochs = 1`: the online epoch time,
and the time spent making them) and with obfuscators made inline. Then it
times plain python-paillier's encryption, scalar multiplication and addition
on a sample and estimates the same epoch's work done that way (encryptions:
one per row per party holding a share of the residual; per feature and row a
scalar multiplication and an addition).

Binned attributes against raw columns: the same rows, the same key and
obfuscators made in advance, the faster of two epochs each in one process
(fedscore.protocol.training.simulation: the same sessions and messages, no
gRPC). With 0/1 indicator columns a partner's gradient is a product of
ciphertexts per bin (CryptoPool.column_sums) instead of a scalar
multiplication per feature and row, so the binned online epoch should be no
slower although it has several columns per feature.

Last line (see figures.py): the online and inline epoch times, each beside
that estimate, the time spent making obfuscators in advance, and the binned
online epoch beside the raw one.
"""
from __future__ import annotations

import argparse
import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from phe import paillier as phe

from fedscore.crypto.paillier import generate_keypair
from fedscore.crypto.pool import CryptoPool
from fedscore.job import Binning, JobSpec
from fedscore.job_file import load_job
from fedscore.protocol.training.simulation import build_consortium, load_tables, simulate

from common import SHARED_DATA, parse_with_smoke, run_jobs_through_daemons
from figures import Figure, print_figures

FILES = ("default_credit_hetero_guest.csv", "default_credit_hetero_host.csv")   # the same ids in the same order
ROUNDS = 2   # epochs timed per encoding in one process; the faster counts

JOB = """\
[job]
name = "epoch-bench"
epochs = 1
batch_size = 0
learning_rate = 0.15
validation = 0.0
min_overlap = 0         # a timing bench on sampled rows: the overlap floor is not what it measures
key_bits = {key_bits}
precompute_epochs = 1

[binning]
method = "none"         # raw standardised columns; the binned epoch is measured beside it

[[parties]]
name = "guest"
data = "default_credit_hetero_guest.csv"
id = "id"
label = "y"

[[parties]]
name = "host"
data = "default_credit_hetero_host.csv"
id = "id"
"""


def naive_phe_epoch(rows: int, features: int, sample: int, key_bits: int) -> tuple[float, dict[str, float]]:
    public, _ = phe.generate_paillier_keypair(n_length=key_bits)
    rng = random.Random(0)
    encrypted = []
    start = time.perf_counter()
    for _ in range(sample):
        encrypted.append(public.encrypt(rng.uniform(-3, 3)))
    encrypt = (time.perf_counter() - start) / sample
    start = time.perf_counter()
    products = [e * rng.uniform(-5, 5) for e in encrypted]
    multiply = (time.perf_counter() - start) / sample
    start = time.perf_counter()
    total = products[0]
    for p in products[1:]:
        total = total + p
    add = (time.perf_counter() - start) / (sample - 1)
    # 2 encryptions per row (partner's partial score, card center's residual share); per feature and row
    # one scalar multiplication and one addition; one addition per row to combine the residual.
    seconds = 2 * rows * encrypt + rows * features * (multiply + add) + rows * add
    return seconds, {"encrypt": encrypt, "multiply": multiply, "add": add}


def in_process_epoch(spec: JobSpec, base: Path, keys, workers: int) -> tuple[float, int]:
    """(online epoch seconds, columns trained) for ``spec`` with every party in this process: the faster of
    two epochs, both with obfuscators made in advance, so a busy moment on a shared machine counts less."""
    spec = replace(spec, epochs=ROUNDS, precompute_epochs=ROUNDS, early_stop_tol=0.0)
    pool = CryptoPool(workers)
    try:
        consortium = build_consortium(spec, load_tables(spec, base), pool, keys)
        result = simulate(consortium)
    finally:
        pool.close()
    sessions = (consortium.card_center, *consortium.partners.values())
    return min(result.epoch_seconds), sum(session.weights.size for session in sessions)


def raw_against_binned(job_file: Path, key_bits: int, workers: int) -> tuple[float, float]:
    """(raw, binned) online epoch seconds: same rows, same key, obfuscators made in advance for both."""
    spec, base = load_job(job_file)
    keys = generate_keypair(key_bits)
    raw, raw_columns = in_process_epoch(spec, base, keys, workers)
    binned, binned_columns = in_process_epoch(replace(spec, binning=Binning()), base, keys, workers)
    print(f"in one process, online epoch: raw columns {raw:.2f} s ({raw_columns} weights), "
          f"binned attributes {binned:.2f} s ({binned_columns} weights): binned/raw ×{binned / raw:.2f}")
    return raw, binned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--sample", type=int, default=100, help="python-paillier calls timed per operation")
    parser.add_argument("--rows", type=int, default=0, help="the first ROWS rows only (0: all)")
    parser.add_argument("--key-bits", type=int, default=2048)
    args = parse_with_smoke(parser, "300 rows, 512-bit keys, small samples: seconds",
                            rows=300, key_bits=512, sample=10)
    with tempfile.TemporaryDirectory(prefix="fedscore-epoch-") as tmp:
        folder = Path(tmp)
        for name in FILES:
            lines = (args.data / name).read_text().splitlines(keepends=True)
            (folder / name).write_text("".join(lines[: args.rows + 1] if args.rows else lines))
        (folder / "job.toml").write_text(JOB.format(key_bits=args.key_bits))
        (ahead, inline), peaks = run_jobs_through_daemons(folder / "job.toml", [{}, {"precompute_epochs": 0}], args.workers)
        raw, binned = raw_against_binned(folder / "job.toml", args.key_bits, args.workers)
    for name, report in (("precompute_epochs=1", ahead), ("precompute_epochs=0", inline)):
        print(f"{name}: epoch {report['epoch_seconds'][0]:.1f} s, obfuscators made in advance "
              f"{report['obfuscation_seconds']:.1f} s, train AUC {report['auc']:.4f}")
    print(f"peak memory {max(max(p) for p in peaks.values()):.0f} MiB")
    rows = ahead["rows"]
    features = 13 + 1 + 10
    naive, unit = naive_phe_epoch(rows, features, args.sample, args.key_bits)
    print(f"python-paillier, timed on {args.sample} calls each: encrypt {unit['encrypt'] * 1e3:.2f} ms, "
          f"scalar multiply {unit['multiply'] * 1e3:.2f} ms, add {unit['add'] * 1e3:.3f} ms")
    online, made, inline_seconds = ahead["epoch_seconds"][0], ahead["obfuscation_seconds"], inline["epoch_seconds"][0]
    print_figures([
        Figure("epoch_seconds", online, naive, "naive python-paillier, estimated"),
        Figure("epoch_inline_seconds", inline_seconds, naive, "naive python-paillier, estimated"),
        Figure("epoch_obfuscation_seconds", made),
        Figure("epoch_binned_seconds", binned, raw, "raw columns, same rows and key, in one process"),
    ])


if __name__ == "__main__":
    main()
