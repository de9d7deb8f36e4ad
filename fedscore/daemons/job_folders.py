"""The job folders a daemon's Status reads: the newest first, a bounded number of them.

A daemon keeps a folder per job under ``state_dir/jobs`` for good (its chain replicas are the record of
what happened), so a member with hundreds of jobs would answer slowly if Status read them all: it reads
the newest MAX_LISTED_JOBS, by the last change to any file in them, and says how many it left off.
"""
from __future__ import annotations

from pathlib import Path

from fedscore.job import JOB_ID_PATTERN

MAX_LISTED_JOBS = 50
CHAIN_FILES = ("ledger.sqlite", "scoring.sqlite")   # a block appended changes the file, so the folder's age is its chains'


def _changed(folder: Path) -> float:
    times = [folder.stat().st_mtime]
    for name in CHAIN_FILES:
        try:
            times.append((folder / name).stat().st_mtime)
        except OSError:
            pass
    return max(times)


def newest_job_folders(state_dir: Path, limit: int = MAX_LISTED_JOBS) -> tuple[list[Path], int]:
    """The ``limit`` most recently changed job folders, newest first, and how many older ones there are."""
    jobs_dir = state_dir / "jobs"
    try:
        folders = [path for path in jobs_dir.iterdir() if JOB_ID_PATTERN.fullmatch(path.name) and path.is_dir()]
    except OSError:   # no job yet
        return [], 0
    ages = {}
    for folder in folders:
        try:
            ages[folder] = _changed(folder)
        except OSError:   # removed meanwhile
            continue
    newest = sorted(ages, key=lambda folder: (ages[folder], folder.name), reverse=True)
    return newest[:limit], max(0, len(newest) - limit)
