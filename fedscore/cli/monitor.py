"""`fedscore monitor --job JOB`: the served model's scoring log at its card center, against its training.

Finds the card center's model of the job in the state folder (a `--local`
run's state root, or the card center daemon's own state folder), reads its
monitoring baseline and its scoring log (fedscore.monitoring), prints a table
per period and the alerts, optionally writes an HTML page, and ends with
EXIT_ALERT when an alert fired, so a cron job can page someone.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

from fedscore.errors import ConfigError


def since_day(text: str) -> str:
    """--since: a day as YYYY-MM-DD (UTC), checked (a bad one is a bad command line: exit 2)."""
    try:
        return dt.date.fromisoformat(text.strip()).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day: give it as YYYY-MM-DD (UTC)") from None


def model_folder(job_path: Path, state: Path | None, job_id: str) -> Path:
    """The card center's folder of the job's model: the one named, else its newest of this job.

    ``state``: a run's state root (holding <card center>/jobs) or the card center's own state folder (jobs)."""
    from fedscore.job import check_job_id
    from fedscore.job_file import load_job
    from fedscore.model.model_file import PartyModel

    spec, base = load_job(job_path)
    root = state if state is not None else base / "state"
    center = spec.card_center.name
    jobs = next((folder for folder in (root / center / "jobs", root / "jobs") if folder.is_dir()), None)
    if jobs is None:
        raise ConfigError(f"no card center state in {root}: give --state, the state folder of the run "
                          f"(holding {center}/jobs) or of the card center's daemon (holding jobs)")
    if job_id:
        folder = jobs / check_job_id(job_id, "--job-id")
        if not (folder / "model.json").is_file():
            raise ConfigError(f"the card center has no model {job_id!r} in {jobs}")
        return folder
    found = []
    for path in jobs.glob("*/model.json"):
        try:
            model = PartyModel.from_json(path.read_text())
        except (OSError, ValueError, TypeError):
            continue
        if model.job_name == spec.name and model.role == "card_center":
            found.append((path.stat().st_mtime, path.parent))
    if not found:
        raise ConfigError(f"the card center has no trained model of job {spec.name!r} in {jobs}; run the job first")
    return max(found)[1]


def run_monitor(job_path: Path, state: Path | None = None, job_id: str = "", since: str | None = None,
                per: int = 0) -> dict:
    """The monitoring document of the job's served model (fedscore.monitoring.review.review)."""
    from fedscore.job_file import load_monitoring, load_scoring
    from fedscore.monitoring.baseline import load_baseline
    from fedscore.monitoring.review import review
    from fedscore.monitoring.scoring_log import LOG_FOLDER, log_files, read_log

    if per < 0:
        raise ConfigError(f"--per must be a number of requests (1 or more; 0: per day), got {per}")
    thresholds, policy = load_monitoring(job_path), load_scoring(job_path).policy
    folder = model_folder(job_path, state, job_id)
    baseline = load_baseline(folder)
    log = folder / LOG_FOLDER
    if not log_files(log):
        raise ConfigError(f"no scoring log in {log}: the card center writes it while it serves this model; "
                          "score applicants with it first (fedscore serve, or fedscore score)")
    try:
        document = review(read_log(log, since), baseline, policy, thresholds, per)
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"scoring log {log} does not match its model's baseline: {error}") from None
    return {**document, "model_folder": str(folder), "log": str(log), "since": since}


def _cell_partner(partner: dict) -> str:
    latency = "—" if partner["median_ms"] is None else f"{partner['median_ms']:.0f}/{partner['p95_ms']:.0f}ms"
    return f"{partner['answer_rate']:.0%} {latency}"


def format_monitor(document: dict) -> str:
    """The terminal's table: one row per period, the expected row, then the alerts and notes."""
    rows = document["periods"]
    partners = sorted({name for row in rows for name in row["partners"]} | set(document["expected"]["answer_rates"]))
    header = ["period", "requests", "PSI", "worst CSI", *partners, "approve", "review", "decline"]
    table = []
    for row in rows:
        worst = "—" if row["worst_feature"] is None else f"{row['worst_feature']} {row['csi'][row['worst_feature']]:.3f}"
        psi = f"{row['psi']:.3f} {row['psi_reading']}" + ("" if row["judged"] else " (few)")
        table.append([row["period"], str(row["requests"]), psi, worst,
                      *(_cell_partner(row["partners"][p]) if p in row["partners"] else "—" for p in partners),
                      *(f"{row['decisions'][d]:.0%}" for d in ("approve", "review", "decline"))])
    expected = document["expected"]
    table.append(["expected", "", "", "",
                  *(f"{expected['answer_rates'][p]:.0%}" if p in expected["answer_rates"] else "—" for p in partners),
                  *(f"{expected['decisions'][d]:.0%}" for d in ("approve", "review", "decline"))])
    widths = [max(len(str(line[i])) for line in [header, *table]) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) if i in (0, 2, 3) else str(v).rjust(w) for i, (v, w) in enumerate(zip(line, widths)))
             for line in [header, *table]]
    per = document["per"]
    lines.insert(0, f"model {document['job_id']}: {document['requests']} requests, per {per}"
                    f"{'' if not document.get('since') else ' since ' + document['since']}; partners: answer rate "
                    "and median/95th-percentile reply time")
    for kind, items in (("ALERT", document["alerts"]), ("note", document["notes"])):
        lines += [f"{kind}: {item['message']}" for item in items]
    if not rows:
        lines.append(f"no request logged{' since ' + document['since'] if document.get('since') else ''}")
    if not document["alerts"]:
        lines.append("no alert")
    return "\n".join(lines)


def write_monitor_page(path: Path, document: dict) -> None:
    from fedscore.files import write_atomically
    from fedscore.report.monitor_page import render_monitor_page   # matplotlib loads only for a page

    write_atomically(path, render_monitor_page(document))


def monitor_json(document: dict) -> str:
    return json.dumps(document, indent=2)
