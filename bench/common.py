"""Helpers shared by the benchmarks: run a job through real daemons, read processes' peak memory."""
from __future__ import annotations

import os
from pathlib import Path

from fedscore.job_file import load_job
from fedscore.daemons.launcher import LocalConsortium
from fedscore.runner import submit

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def peak_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_through_daemons(job_file: Path, workers: int = 0, align_only: bool = False, progress=lambda event: None):
    """(report, {member: [peak MiB of each process of its tree]}) for one job run on daemons started here."""
    spec, base = load_job(job_file)
    with LocalConsortium(spec, base, job_file.parent / "state", workers) as consortium:
        report = submit(consortium.spec, consortium.coordinator_address, progress, align_only=align_only,
                        tls=consortium.card_center_identity)
        peaks = {
            member: [peak_mib(pid) for pid in process_tree(process.pid)]
            for member, process in consortium.processes.items()
        }
    return report, peaks
