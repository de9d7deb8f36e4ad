"""Run every bench at full size, one after another, and write the summary to bench/results/<date>.md.

    python tools/run_benchmarks.py [--only NAME ...] [--smoke --out PATH]

Each bench's output is shown as it runs; the summary holds each figure with its baseline from the same run,
the ratio, its goal, and the one-minute load average before and after its bench. Meant for an idle machine:
the figures of a busy one are not comparable (the load columns show it).
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from figures import bench_scripts, parse_last_line  # noqa: E402
from summary import RESULTS_DIR, Row, failed_row, rows_of, write_summary  # noqa: E402

FULL_SIZE_ARGUMENTS = {"psi": ["--rows", "1000000"]}   # the size its goal is stated at; others: their defaults


def run_bench(script: Path, smoke: bool) -> list[Row]:
    """Run one bench, echoing its output; its figures as summary rows."""
    before = os.getloadavg()[0]
    size = ["--smoke"] if smoke else FULL_SIZE_ARGUMENTS.get(script.stem, [])
    command = [sys.executable, str(script), *size]
    shown = " ".join(["python", f"bench/{script.name}", *size])
    print(f"== {shown} (load {before:.2f})", flush=True)
    lines = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=script.parent) as process:
        for line in process.stdout:
            print(line, end="", flush=True)
            lines.append(line.strip())
    after = os.getloadavg()[0]
    last = next((line for line in reversed(lines) if line), "")
    if process.returncode != 0:
        return [failed_row(script.stem, process.returncode, before, after, shown)]
    return rows_of(script.stem, parse_last_line(last), before, after, shown)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="bench names (default: every bench)")
    parser.add_argument("--smoke", action="store_true", help="smoke sizes, to try this runner (needs --out)")
    parser.add_argument("--out", type=Path, help="default: bench/results/<date>.md")
    args = parser.parse_args()
    if args.smoke and args.out is None:
        parser.error("--smoke figures are not measurements: give --out outside bench/results")
    scripts = [s for s in bench_scripts() if not args.only or s.stem in args.only]
    started = time.gmtime()
    rows = [row for script in scripts for row in run_bench(script, args.smoke)]
    path = args.out or RESULTS_DIR / f"{time.strftime('%Y-%m-%d', started)}.md"
    heading = (f"Benchmarks of {time.strftime('%Y-%m-%d %H:%M UTC', started)}{' (smoke sizes)' if args.smoke else ''}: "
               f"{os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()} {platform.release()}")
    write_summary(path, rows, heading)
    print(f"summary: {path}")
    return 1 if any(r.figure == "(failed)" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
