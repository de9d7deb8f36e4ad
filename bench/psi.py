"""Private set intersection through the real daemons: two parties of N ids each.

    python bench/psi.py --rows 1000000 [--overlap 0.8] [--workers 0] [--smoke]
    python bench/psi.py --rows 10000000     # bounded memory: each daemon under 2 GiB
    python bench/psi.py --rows 10000000 --spill-only

`--spill-only` times the card center's spill alone, in this process and
without crypto: random 32-byte values for both lists (80 % shared) written
to sorted runs and merged, with the traced peak memory.

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
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

from fedscore.proctable import descendants
from fedscore.protocol.spill import DEFAULT_RUN_ROWS, MINE, THEIRS, RunWriter, intersect_runs

from common import parse_with_smoke, peak_mib, run_through_daemons, two_party_job
from figures import Figure, print_figures

GOAL_IDS_PER_SECOND = 2_000_000 / 60   # both parties' ids of the 1M × 1M run in a minute


CSV_CHUNK_ROWS = 1_000_000   # rows written at a time: 10 M rows never sit in one frame


def write_shuffled(path: Path, rows: int, seed: int, columns) -> None:
    """A CSV of ``rows`` rows in a random order, ``columns(row numbers)`` giving a chunk's columns."""
    order = np.random.default_rng(seed).permutation(rows)
    for start in range(0, rows, CSV_CHUNK_ROWS):
        chunk = order[start : start + CSV_CHUNK_ROWS]
        pd.DataFrame(columns(chunk)).to_csv(path, mode="a" if start else "w", header=start == 0, index=False)


def write_parties(folder: Path, rows: int, overlap: float, key_bits: int) -> int:
    shared = int(rows * overlap)
    rng = np.random.default_rng(0)

    # shared ids are numbers on one side and padded text on the other: the id rule makes them equal
    def center(at: np.ndarray) -> dict:
        ids = np.where(at < shared, at, 10**9 + at - shared)
        return {"id": ids, "y": rng.integers(0, 2, len(at)), "x": rng.normal(size=len(at))}

    def partner(at: np.ndarray) -> dict:
        ids = [f" {i} " if i < shared else f"P-{i - shared}" for i in at.tolist()]
        return {"customer": ids, "z": rng.normal(size=len(at))}

    write_shuffled(folder / "card_center.csv", rows, 1, center)
    write_shuffled(folder / "partner.csv", rows, 2, partner)
    # a call may last as long as the whole alignment: about 20 000 ids a second on two cores
    rpc_timeout = max(1800, rows // 2000)
    (folder / "job.toml").write_text(
        two_party_job("psi-bench", key_bits, partner_id="customer", min_overlap=0, rpc_timeout=rpc_timeout)
    )
    return shared


def daemon_peaks() -> dict[str, float]:
    """Each daemon's peak memory so far, by the member its config folder names (its crypto workers apart)."""
    peaks = {}
    for process in descendants(os.getpid()):
        try:
            arguments = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--config" in arguments and b"serve" in arguments:
            config = Path(arguments[arguments.index(b"--config") + 1].decode())
            peaks[config.parent.name] = peak_mib(process.pid)
    return peaks


def spill_only(rows: int) -> None:
    """Sorted runs and their merge for two lists of ``rows`` random values: time and traced peak memory."""
    rng = np.random.default_rng(0)
    chunk = 1 << 18
    with tempfile.TemporaryDirectory(prefix="fedscore-spill-") as tmp:
        folder = Path(tmp)
        tracemalloc.start()
        started = time.perf_counter()
        writers = [RunWriter(folder, side, DEFAULT_RUN_ROWS) for side in (MINE, THEIRS)]
        shared = 0
        for start in range(0, rows, chunk):
            count = min(chunk, rows - start)
            mine, theirs = rng.bytes(32 * count), bytearray(rng.bytes(32 * count))
            common = count * 8 // 10
            theirs[: 32 * common] = mine[: 32 * common]
            shared += common
            writers[0].add(mine)
            writers[1].add(bytes(theirs))
        runs = writers[0].close() + writers[1].close()
        written = time.perf_counter() - started
        positions = intersect_runs(runs, folder, rows, DEFAULT_RUN_ROWS)
        merged = time.perf_counter() - started - written
        peak = tracemalloc.get_traced_memory()[1]
        disk = sum(run.stat().st_size for run in runs)
    assert np.count_nonzero(positions >= 0) == shared
    print(f"spill of 2 × {rows} values: runs written in {written:.1f} s (with making the values), merged in "
          f"{merged:.1f} s; {len(runs)} runs, {disk / 1e6:.0f} MB on disk; traced peak {peak / 2**20:.0f} MiB, "
          f"of which {positions.nbytes / 2**20:.0f} MiB the positions array (8 B per own id)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="ids per party")
    parser.add_argument("--overlap", type=float, default=0.8)
    parser.add_argument("--workers", type=int, default=0, help="crypto processes per party (0 = every core)")
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--spill-only", action="store_true",
                        help="time the card center's sorted runs and merge alone, without crypto or daemons")
    args = parse_with_smoke(parser, "2 000 ids a party, 512-bit keys: seconds", rows=2000, key_bits=512)
    if args.spill_only:
        spill_only(args.rows)
        return

    with tempfile.TemporaryDirectory(prefix="fedscore-psi-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        shared = write_parties(folder, args.rows, args.overlap, args.key_bits)
        print(f"wrote 2 × {args.rows} ids ({shared} shared) in {time.perf_counter() - started:.1f} s", flush=True)
        stages: dict[str, float] = {}

        loaded: dict[str, float] = {}

        def progress(event) -> None:
            stages.setdefault(event.stage, time.perf_counter())
            if event.stage == "align" and not loaded:
                loaded.update(daemon_peaks())

        report, peaks = run_through_daemons(folder / "job.toml", args.workers, align_only=True, progress=progress)

    seconds = report["alignment_seconds"]
    assert report["aligned_rows"] == shared, (report["aligned_rows"], shared)
    print(f"aligned {report['aligned_rows']} of {args.rows} × {args.rows} ids in {seconds:.1f} s "
          f"(load and check both files: {stages['align'] - stages['prepare']:.1f} s)")
    for member, processes in peaks.items():
        described = ", ".join(f"{mib:.0f}" for mib in processes)
        before = f"; {loaded[member]:.0f} MiB before the alignment (start, load and check)" if member in loaded else ""
        print(f"peak memory, {member}: {max(processes):.0f} MiB (processes: {described} MiB{before})")
    print_figures([
        Figure("psi_ids_per_second", 2 * args.rows / seconds, at_least=GOAL_IDS_PER_SECOND),
        Figure("psi_peak_mib", max(max(processes) for processes in peaks.values())),
    ])


if __name__ == "__main__":
    main()
