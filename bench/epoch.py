"""One training epoch on FATE's default-credit pair through the real daemons, 2048-bit keys.

    python bench/epoch.py [--data DIR] [--workers 0] [--sample 100] [--smoke]

30 000 rows, 13 + 10 features, whole batch. Runs the epoch twice on the same
daemons: with obfuscators made in advance (`precompute_epochs = 1`: the online epoch time,
and the time spent making them) and with obfuscators made inline. Then it
times plain python-paillier's encryption, scalar multiplication and addition
on a sample and estimates the same epoch's work done that way (encryptions:
one per row per party holding a share of the residual; per feature and row a
scalar multiplication and an addition). Last line (see figures.py): the
online and inline epoch times, each beside that estimate, and the time spent
making obfuscators in advance.
"""
from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from phe import paillier as phe

from common import SHARED_DATA, parse_with_smoke, run_jobs_through_daemons
from figures import Figure, print_figures

FILES = ("default_credit_hetero_guest.csv", "default_credit_hetero_host.csv")   # the same ids in the same order

JOB = """\
[job]
name = "epoch-bench"
epochs = 1
batch_size = 0
learning_rate = 0.15
validation = 0.0
key_bits = {key_bits}
precompute_epochs = 1

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
    ])


if __name__ == "__main__":
    main()
