"""FATE's benchmark shape through the real daemons: 100 000 rows, card center 30 features,
one partner 300 features (synthetic, seeded), one epoch, 2048-bit keys; up to 1 000 000 rows, from CSV or Parquet.

    python bench/scale.py [--rows 100000] [--center 30] [--partner 300] [--workers 0] [--key-bits 2048]
                          [--format csv|parquet] [--binning quantile|none] [--batch-size 0] [--max-steps 0] [--smoke]

Prints the time the parties took to load and check their data, the epoch time (or, with --max-steps, the
steps'), the whole run's time, and the peak resident memory of every process (daemons and their crypto
workers). With --max-steps the job is left after that many steps (with --batch-size, mini-batches): the
peak memory of loading, aligning, selecting features and training at 1 000 000 rows in minutes, not the
hour one full epoch takes. Last line (see figures.py): scale_epoch_seconds=... scale_peak_mib=...
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from common import parse_with_smoke, peak_mib, process_tree, two_party_job
from figures import Figure, print_figures

from fedscore.cli.runner import submit
from fedscore.daemons.launcher import LocalConsortium
from fedscore.job_file import load_job

CHUNK_ROWS = 50_000   # rows generated and written at a time: the bench itself never holds a whole file


def _frames(rows: int, center: int, partner: int, start: int):
    """(card center frame, partner frame) for rows start, ...: seeded per chunk, so any chunking writes the same file."""
    count = min(CHUNK_ROWS, rows - start)
    rng = np.random.default_rng([2020, start])
    x_center = np.round(rng.normal(size=(count, center)), 5)
    x_partner = np.round(rng.normal(size=(count, partner)), 5)
    signal = x_center[:, :5].sum(1) + x_partner[:, :20].sum(1) * 0.3
    y = (signal + rng.normal(size=count) > 0).astype(np.int64)
    ids = np.arange(start, start + count)
    frame_center = pd.DataFrame(x_center, columns=[f"c{i}" for i in range(center)])
    frame_center.insert(0, "y", y)
    frame_center.insert(0, "id", ids)
    frame_partner = pd.DataFrame(x_partner, columns=[f"p{i}" for i in range(partner)])
    frame_partner.insert(0, "id", rows - 1 - ids)   # the partner's rows in another order: alignment does the work
    return frame_center, frame_partner


def write_data(folder: Path, rows: int, center: int, partner: int, data_format: str) -> tuple[str, str]:
    """The two parties' files, written a chunk at a time; returns their names."""
    suffix = ".parquet" if data_format == "parquet" else ".csv"
    names = (f"card_center{suffix}", f"partner{suffix}")
    writers: list = [None, None]
    try:
        for start in range(0, rows, CHUNK_ROWS):
            for index, frame in enumerate(_frames(rows, center, partner, start)):
                path = folder / names[index]
                if data_format == "parquet":
                    import pyarrow as pa
                    import pyarrow.parquet as pq

                    table = pa.Table.from_pandas(frame, preserve_index=False)
                    writers[index] = writers[index] or pq.ParquetWriter(path, table.schema)
                    writers[index].write_table(table)
                else:
                    _append_csv(path, frame, first=not start)
    finally:
        for writer in writers:
            if writer is not None:
                writer.close()
    return names


def _append_csv(path: Path, frame: pd.DataFrame, first: bool) -> None:
    """The chunk's rows at the end of the file (with the header when first): through pyarrow's CSV writer when
    it is installed (ten times pandas' speed), values as written with 5 decimals either way."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pa_csv
    except ImportError:
        frame.to_csv(path, mode="w" if first else "a", header=first, index=False, float_format="%.5f")
        return
    with path.open("wb" if first else "ab") as handle:
        pa_csv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), handle,
                         pa_csv.WriteOptions(include_header=first, quoting_style="none"))


def write_job(folder: Path, names: tuple[str, str], key_bits: int, batch_size: int, binning: str) -> Path:
    # synthetic rows every party holds, timed not protected: the overlap and rows-per-column floors are off (the
    # smoke run's 400 rows would fall under both)
    job = two_party_job("scale-bench", key_bits, epochs=1, batch_size=batch_size, learning_rate=0.15, validation=0.0,
                        min_overlap=0, min_rows_per_column=0)
    job = job.replace('"card_center.csv"', f'"{names[0]}"').replace('"partner.csv"', f'"{names[1]}"')
    if binning != "quantile":
        job += f'\n[binning]\nmethod = "{binning}"\n'
    path = folder / "job.toml"
    path.write_text(job)
    return path


class EnoughSteps(Exception):
    """Raised from the progress callback once --max-steps steps are done: the job is left there."""


@dataclass
class Watch:
    """What the bench reads from a job's progress: when loading started and ended, each step's seconds."""

    max_steps: int
    consortium: LocalConsortium | None = None
    prepare_started: float = 0.0
    load_seconds: float = 0.0
    steps: list[float] = field(default_factory=list)
    peaks: dict[str, list[float]] = field(default_factory=dict)

    def __call__(self, event) -> None:
        if event.stage == "prepare" and not self.prepare_started:
            self.prepare_started = time.perf_counter()
        elif event.stage == "align" and not self.load_seconds and self.prepare_started:
            self.load_seconds = time.perf_counter() - self.prepare_started
            print(f"  parties loaded and checked their data in {self.load_seconds:.1f} s", flush=True)
        elif event.stage == "select" and event.seconds:
            print(f"  bin statistics and feature selection: {event.seconds:.1f} s", flush=True)
        elif event.stage == "step":
            self.steps.append(event.seconds)
            print(f"  step {len(self.steps)}: {event.seconds:.1f} s", flush=True)
            if self.max_steps and len(self.steps) >= self.max_steps:
                self.peaks = read_peaks(self.consortium)
                raise EnoughSteps()

    def seconds(self, report: dict | None) -> float:
        return report["epoch_seconds"][0] if report else float(sum(self.steps))


def read_peaks(consortium: LocalConsortium) -> dict[str, list[float]]:
    return {member: [peak_mib(pid) for pid in process_tree(process.pid)]
            for member, process in consortium.processes.items()}


def run(job_file: Path, workers: int, watch: Watch) -> tuple[dict | None, dict[str, list[float]]]:
    """(report, or None when left after --max-steps; {member: [peak MiB of each process of its tree]})."""
    spec, base = load_job(job_file)
    with LocalConsortium(spec, base, job_file.parent / "state", workers) as consortium:
        watch.consortium = consortium
        try:
            report = submit(consortium.spec, consortium.coordinator_address, watch, tls=consortium.card_center_identity)
        except EnoughSteps:
            return None, watch.peaks
        return report, read_peaks(consortium)


def data_files(args: argparse.Namespace, folder: Path) -> tuple[str, str]:
    """The two files in ``folder``: written there, or linked from --data (written there first if not yet)."""
    source = args.data or folder
    tag = f"{args.rows}x{args.center}+{args.partner}" if args.data else ""
    suffix = ".parquet" if args.data_format == "parquet" else ".csv"
    kept = [source / f"{tag}{name}{suffix}" for name in ("card_center", "partner")]
    if not all(path.exists() for path in kept):
        source.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        written = write_data(source, args.rows, args.center, args.partner, args.data_format)
        for name, path in zip(written, kept):
            (source / name).rename(path)
        print(f"wrote {args.rows} rows × ({args.center} + {args.partner}) features as {args.data_format} in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
    if args.data:
        for path in kept:
            (folder / path.name).symlink_to(path.resolve())
    size = sum(path.stat().st_size for path in kept) / 2**20
    print(f"data: {', '.join(path.name for path in kept)} ({size:.0f} MiB)", flush=True)
    return kept[0].name, kept[1].name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows each party holds (up to 1 000 000 and more)")
    parser.add_argument("--center", type=int, default=30, help="the card center's feature columns")
    parser.add_argument("--partner", type=int, default=300, help="the partner's feature columns")
    parser.add_argument("--workers", type=int, default=0, help="crypto workers per daemon (0: every core)")
    parser.add_argument("--key-bits", type=int, default=2048, help="Paillier key size")
    parser.add_argument("--format", dest="data_format", choices=("csv", "parquet"), default="csv",
                        help="the parties' data files: CSV, or Parquet (needs pyarrow)")
    parser.add_argument("--binning", choices=("quantile", "none"), default="quantile",
                        help="the job's [binning] method (quantile: the default, bins per feature)")
    parser.add_argument("--batch-size", type=int, default=0, help="rows per step (0: the whole set, one step an epoch)")
    parser.add_argument("--max-steps", type=int, default=0,
                        help="leave the job after this many steps (0: run the epoch and the evaluation)")
    parser.add_argument("--data", type=Path, default=None,
                        help="a folder to write the data files in and keep, or to take them from when already there")
    args = parse_with_smoke(parser, "400 rows, 5 + 20 features, 512-bit keys: seconds",
                            rows=400, center=5, partner=20, key_bits=512)
    with tempfile.TemporaryDirectory(prefix="fedscore-scale-") as tmp:
        folder = Path(tmp)
        names = data_files(args, folder)
        job_file = write_job(folder, names, args.key_bits, args.batch_size, args.binning)
        watch = Watch(args.max_steps)
        started = time.perf_counter()
        report, peaks = run(job_file, args.workers, watch)
        whole = time.perf_counter() - started
    seconds = watch.seconds(report)
    if report is None:
        print(f"{len(watch.steps)} steps of {args.batch_size or args.rows} rows: {seconds:.1f} s; whole run (start, "
              f"load, align, select, train): {whole:.1f} s; data loaded in {watch.load_seconds:.1f} s")
    else:
        print(f"one epoch: {seconds:.1f} s; whole run (start, load, align, train, evaluate, settle): {whole:.1f} s; "
              f"data loaded in {watch.load_seconds:.1f} s; train AUC {report['auc']:.4f}")
    peak = 0.0
    for member, processes in peaks.items():
        print(f"peak memory, {member}: {max(processes):.0f} MiB (processes: {', '.join(f'{m:.0f}' for m in processes)} MiB)")
        peak = max(peak, max(processes))
    print_figures([Figure("scale_epoch_seconds", seconds), Figure("scale_peak_mib", peak)])


if __name__ == "__main__":
    main()
