"""Helpers shared by the benchmarks: run a job through real daemons, read processes' peak memory."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from fedscore.job_file import load_job
from fedscore.daemons.launcher import LocalConsortium
from fedscore.proctable import descendants
from fedscore.cli.runner import submit

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


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
