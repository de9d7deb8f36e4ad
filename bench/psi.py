"""Private set intersection through the real daemons: two parties of N ids each.

    python bench/psi.py --rows 1000000 [--overlap 0.8] [--workers 0] [--smoke]

Writes two CSVs (a card center and a partner, `--overlap` of the ids shared),
starts both daemons and a coordinator on loopback, runs the job's alignment
only, and prints the alignment time (what the coordinator measured around the
card center's Align call), ids per second (both parties' ids over that time),
the time the daemons took to load and check their files, and the peak
resident memory of every process (daemons and their crypto workers).
Goal: 1 000 000 × 1 000 000 ids aligned in under 60 s, i.e. at least
33 333 ids/s. Last line (see figures.py): psi_ids_per_second=... psi_peak_mib=...
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

GOAL_IDS_PER_SECOND = 2_000_000 / 60   # both parties' ids of the 1M × 1M run in a minute


def write_parties(folder: Path, rows: int, overlap: float, key_bits: int) -> int:
    shared = int(rows * overlap)
    rng = np.random.default_rng(0)
    # shared ids are numbers on one side and padded text on the other: the id rule makes them equal
    center_ids = np.concatenate([np.arange(shared), np.arange(10**9, 10**9 + rows - shared)])
    partner_ids = [f" {i} " for i in range(shared)] + [f"P-{i}" for i in range(rows - shared)]
    center = pd.DataFrame({"id": center_ids, "y": rng.integers(0, 2, rows), "x": rng.normal(size=rows)})
    partner = pd.DataFrame({"customer": partner_ids, "z": rng.normal(size=rows)})
    center.sample(frac=1.0, random_state=1).to_csv(folder / "card_center.csv", index=False)
    partner.sample(frac=1.0, random_state=2).to_csv(folder / "partner.csv", index=False)
    (folder / "job.toml").write_text(two_party_job("psi-bench", key_bits, partner_id="customer", min_overlap=0))
    return shared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="ids per party")
    parser.add_argument("--overlap", type=float, default=0.8)
    parser.add_argument("--workers", type=int, default=0, help="crypto processes per party (0 = every core)")
    parser.add_argument("--key-bits", type=int, default=2048)
    args = parse_with_smoke(parser, "2 000 ids a party, 512-bit keys: seconds", rows=2000, key_bits=512)

    with tempfile.TemporaryDirectory(prefix="fedscore-psi-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        shared = write_parties(folder, args.rows, args.overlap, args.key_bits)
        print(f"wrote 2 × {args.rows} ids ({shared} shared) in {time.perf_counter() - started:.1f} s", flush=True)
        stages: dict[str, float] = {}

        def progress(event) -> None:
            stages.setdefault(event.stage, time.perf_counter())

        report, peaks = run_through_daemons(folder / "job.toml", args.workers, align_only=True, progress=progress)

    seconds = report["alignment_seconds"]
    assert report["aligned_rows"] == shared, (report["aligned_rows"], shared)
    print(f"aligned {report['aligned_rows']} of {args.rows} × {args.rows} ids in {seconds:.1f} s "
          f"(load and check both files: {stages['align'] - stages['prepare']:.1f} s)")
    for member, processes in peaks.items():
        described = ", ".join(f"{mib:.0f}" for mib in processes)
        print(f"peak memory, {member}: {max(processes):.0f} MiB (processes: {described} MiB)")
    print_figures([
        Figure("psi_ids_per_second", 2 * args.rows / seconds, at_least=GOAL_IDS_PER_SECOND),
        Figure("psi_peak_mib", max(max(processes) for processes in peaks.values())),
    ])


if __name__ == "__main__":
    main()
