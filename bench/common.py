"""Helpers shared by the benchmarks: their --smoke sizes, a two-party job file, run a job through real daemons,
read processes' peak memory."""
from __future__ import annotations

import argparse

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from fedscore.job_file import load_job
from fedscore.daemons.launcher import LocalConsortium
from fedscore.proctable import descendants
from fedscore.cli.runner import submit

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

TWO_PARTY_JOB = """\
[job]
name = "{name}"
key_bits = {key_bits}
{settings}
[[parties]]
name = "card_center"
data = "card_center.csv"
id = "id"
label = "y"

[[parties]]
name = "partner"
data = "partner.csv"
id = "{partner_id}"
"""


def parse_with_smoke(parser: argparse.ArgumentParser, smoke_help: str, **smoke_sizes: object) -> argparse.Namespace:
    """The bench's arguments; with --smoke, ``smoke_sizes`` replace them so the bench runs in seconds (make test)."""
    parser.add_argument("--smoke", action="store_true", help=smoke_help)
    args = parser.parse_args()
    if args.smoke:
        for name, value in smoke_sizes.items():
            setattr(args, name, value)
    return args


def two_party_job(name: str, key_bits: int, partner_id: str = "id", **settings: int | float) -> str:
    """A job file for card_center.csv (ids in "id", labels in "y") and partner.csv, with these [job] settings."""
    lines = "".join(f"{key} = {value}\n" for key, value in settings.items())
    return TWO_PARTY_JOB.format(name=name, key_bits=key_bits, settings=lines, partner_id=partner_id)


def process_tree(root: int) -> list[int]:
    """``root`` and every process below it."""
    return [root, *(process.pid for process in descendants(root))]


def peak_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_jobs_through_daemons(job_file: Path, variants: Sequence[dict[str, object]], workers: int = 0,
                             align_only: bool = False, progress=lambda event: None):
    """([report of each variant], {member: [peak MiB of each process of its tree]}): the job once per variant (job
    settings to change), one after another on the same daemons, started here."""
    spec, base = load_job(job_file)
    with LocalConsortium(spec, base, job_file.parent / "state", workers) as consortium:
        reports = [
            submit(replace(consortium.spec, **variant), consortium.coordinator_address, progress,
                   align_only=align_only, tls=consortium.card_center_identity)
            for variant in variants
        ]
        peaks = {
            member: [peak_mib(pid) for pid in process_tree(process.pid)]
            for member, process in consortium.processes.items()
        }
    return reports, peaks


def run_through_daemons(job_file: Path, workers: int = 0, align_only: bool = False, progress=lambda event: None):
    """(report, {member: [peak MiB of each process of its tree]}) for one job run on daemons started here."""
    reports, peaks = run_jobs_through_daemons(job_file, [{}], workers, align_only, progress)
    return reports[0], peaks
