"""Run a job file: against running daemons, or (--local) on a consortium started here."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from fedscore.config import load_job
from fedscore.daemons.launcher import LocalConsortium
from fedscore.errors import ConfigError
from fedscore.protocol.training import Progress
from fedscore.report import write_report
from fedscore.transport.clients import CoordinatorClient


def submit(spec, address: str, progress: Callable[[Progress], None], align_only: bool = False) -> dict:
    client = CoordinatorClient(address)
    try:
        client.ping()
        return json.loads(client.run_job(spec, progress, align_only))
    finally:
        client.close()


def run_job_file(
    job_path: Path,
    *,
    local: bool,
    report_path: Path | None = None,
    state_dir: Path | None = None,
    workers: int = 0,
    progress: Callable[[Progress], None] = lambda event: None,
    align_only: bool = False,
) -> dict:
    spec, base = load_job(job_path)
    if local:
        progress(Progress("start", message="starting the coordinator and one daemon per party"))
        with LocalConsortium(spec, base, state_dir or base / "state", workers) as consortium:
            report = submit(consortium.spec, consortium.coordinator_address, progress, align_only)
    else:
        missing = [p.name for p in spec.parties if not p.address]
        if not spec.coordinator_address or missing:
            what = "the coordinator" if not spec.coordinator_address else f"party {missing[0]!r}"
            raise ConfigError(f"job file {job_path.name}: no address for {what}; add it, or use --local")
        report = submit(spec, spec.coordinator_address, progress, align_only)
    if report_path is not None:
        write_report(report_path, report)
    return report
