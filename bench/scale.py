"""FATE's benchmark shape through the real daemons: 100 000 rows, card center 30 features,
one partner 300 features (synthetic, seeded), one epoch, 2048-bit keys.

    python bench/scale.py [--rows 100000] [--center 30] [--partner 300] [--workers 0] [--smoke]

Prints the epoch time, the whole run's time, and the peak resident memory of
every process (daemons and their crypto workers). Last line (see figures.py):
scale_epoch_seconds=... scale_peak_mib=...
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import parse_with_smoke, run_through_daemons, two_party_job
from figures import Figure, print_figures


def write_data(folder: Path, rows: int, center: int, partner: int, key_bits: int) -> None:
    rng = np.random.default_rng(2020)
    x_center = rng.normal(size=(rows, center)).astype(np.float32)
    x_partner = rng.normal(size=(rows, partner)).astype(np.float32)
    signal = x_center[:, :5].sum(1) + x_partner[:, :20].sum(1) * 0.3
    y = (signal + rng.normal(size=rows) > 0).astype(int)
    ids = np.arange(rows)
    frame = pd.DataFrame(x_center, columns=[f"c{i}" for i in range(center)])
    frame.insert(0, "y", y)
    frame.insert(0, "id", ids)
    frame.to_csv(folder / "card_center.csv", index=False, float_format="%.5f")
    frame = pd.DataFrame(x_partner, columns=[f"p{i}" for i in range(partner)])
    frame.insert(0, "id", ids[::-1])
    frame.to_csv(folder / "partner.csv", index=False, float_format="%.5f")
    # synthetic rows every party holds, timed not protected: the overlap and rows-per-column floors are off (the
    # smoke run's 400 rows would fall under both)
    job = two_party_job("scale-bench", key_bits, epochs=1, batch_size=0, learning_rate=0.15, validation=0.0,
                        min_overlap=0, min_rows_per_column=0)
    (folder / "job.toml").write_text(job)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--center", type=int, default=30)
    parser.add_argument("--partner", type=int, default=300)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--key-bits", type=int, default=2048)
    args = parse_with_smoke(parser, "400 rows, 5 + 20 features, 512-bit keys: seconds",
                            rows=400, center=5, partner=20, key_bits=512)
    with tempfile.TemporaryDirectory(prefix="fedscore-scale-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        write_data(folder, args.rows, args.center, args.partner, args.key_bits)
        print(f"wrote {args.rows} rows × ({args.center} + {args.partner}) features in {time.perf_counter() - started:.0f} s", flush=True)
        started = time.perf_counter()
        report, peaks = run_through_daemons(folder / "job.toml", args.workers)
        whole = time.perf_counter() - started
    epoch = report["epoch_seconds"][0]
    print(f"one epoch: {epoch:.1f} s; whole run (start, load, align, train, evaluate, settle): {whole:.1f} s; train AUC {report['auc']:.4f}")
    peak = 0.0
    for member, processes in peaks.items():
        print(f"peak memory, {member}: {max(processes):.0f} MiB (processes: {', '.join(f'{m:.0f}' for m in processes)} MiB)")
        peak = max(peak, max(processes))
    print_figures([Figure("scale_epoch_seconds", epoch), Figure("scale_peak_mib", peak)])


if __name__ == "__main__":
    main()
