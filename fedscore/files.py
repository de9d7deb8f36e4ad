"""Writing files so that a crash never leaves half of one, and reading their digests.

``write_atomically`` replaces a file whole (a reader sees the old content or
the new, never a mix); ``write_secret`` creates a key or salt once, readable
by its owner only and on disk before it is used. An append-only JSON-lines
file (a journal, a count of uses) can end in a line a crash cut short:
``cut_torn_tail`` removes it before appending resumes, ``read_json_lines``
reads what is whole.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger("fedscore.files")


def temporary_copy(path: Path, data: str | bytes) -> str:
    """``data`` in a new owner-only file beside ``path``, flushed to disk; returns its name."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb" if isinstance(data, bytes) else "w") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return temporary


def write_atomically(path: Path, text: str | bytes, mode: int = 0o600) -> None:
    """Write to a temporary file beside ``path`` and rename: a reader sees all or nothing.

    Owner-only unless ``mode`` says otherwise: what fedscore writes (models, reports, scores, checkpoints)
    describes applicants or a party's data, so other accounts on the machine read none of it.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = temporary_copy(path, text)
    try:
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` holding ``data``, readable by its owner only, whole and fsynced before it appears.

    An existing file is never replaced (FileExistsError): a secret made once
    stays the one every earlier use relied on, even when two processes race
    to make it. The folder is made owner-only if it does not exist yet.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = temporary_copy(path, data)   # mkstemp makes it 0o600
    try:
        os.link(temporary, path)              # atomic, and fails if path exists
    finally:
        Path(temporary).unlink(missing_ok=True)


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in blocks (data files can be large)."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def cut_torn_tail(path: Path) -> None:
    """Truncate ``path`` after its last newline, so the next append starts a line of its own."""
    if not path.exists():
        return
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        log.warning("%s: dropping a line cut short by a crash (%d bytes)", path.name, len(data) - end)
        with path.open("r+b") as handle:
            handle.truncate(end)


def read_json_lines(path: Path) -> list[dict]:
    """The records of a JSON-lines file, in order, none if it does not exist; a line that is not a JSON object
    (one cut short by a crash, or not UTF-8) is skipped with a warning rather than refusing the whole file."""
    if not path.exists():
        return []
    records = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict):
                records.append(record)
            else:
                log.warning("%s line %d is not readable; skipped", path.name, number)
    return records
