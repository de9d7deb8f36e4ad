"""The process table as `ps` shows it (read from /proc): which processes a daemon started, and whether they
outlive it.

A process is named by its pid and its start time (clock ticks after boot), so a pid the kernel hands to a
new process is never mistaken for the one recorded. A zombie counts as gone: it has exited, only its exit
status waits for whoever reaps it.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

PROC = Path("/proc")


class Process(NamedTuple):
    pid: int
    started: int      # clock ticks after boot


class _Stat(NamedTuple):
    process: Process
    state: str
    parent: int
    session: int


def _stat(pid: int) -> _Stat | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()   # after the command name, which may hold spaces and parentheses
    # fields[0] is field 3 of proc(5): state, ppid, pgrp, session, ... starttime is field 22
    return _Stat(Process(pid, int(fields[19])), fields[0], int(fields[1]), int(fields[3]))


def _table() -> list[_Stat]:
    stats = (_stat(int(entry)) for entry in os.listdir(PROC) if entry.isdigit())
    return [s for s in stats if s is not None and s.state != "Z"]


def descendants(pid: int) -> set[Process]:
    """Every running process below ``pid`` (children, their children, ...), not ``pid`` itself."""
    children: dict[int, list[Process]] = {}
    for stat in _table():
        children.setdefault(stat.parent, []).append(stat.process)
    found: set[Process] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child.pid)
    return found


def in_session(session: int) -> set[Process]:
    """Every running process of a session (a daemon started with its own session: the daemon and all it started)."""
    return {stat.process for stat in _table() if stat.session == session}


def running(processes: Iterable[Process]) -> set[Process]:
    """Those of ``processes`` still running (the same pid and start time, and not a zombie)."""
    left = set()
    for process in processes:
        stat = _stat(process.pid)
        if stat is not None and stat.process == process and stat.state != "Z":
            left.add(process)
    return left


def command(process: Process) -> str:
    """The command line of a process, space-separated ('' once it is gone)."""
    try:
        return (PROC / str(process.pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def wait_gone(processes: Iterable[Process], timeout: float, poll: float = 0.05) -> set[Process]:
    """Wait until none of ``processes`` runs, at most ``timeout`` seconds; returns those still running."""
    deadline = time.monotonic() + timeout
    left = running(processes)
    while left and time.monotonic() < deadline:
        time.sleep(poll)
        left = running(left)
    return left
