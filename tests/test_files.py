"""Files a crash must not leave half-written: atomic replacement, owner-only secrets made once, digests."""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from fedscore import files
from fedscore.crypto.certs import write_private
from fedscore.errors import ConfigError
from fedscore.ledger import identity


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_secret_is_owner_only_and_on_disk_before_it_appears(tmp_path, monkeypatch):
    path = tmp_path / "keys" / "salt.key"
    seen_at_fsync = []
    real_fsync = os.fsync
    monkeypatch.setattr(files.os, "fsync", lambda fd: (seen_at_fsync.append(path.exists()), real_fsync(fd)))
    files.write_secret(path, b"s" * 32)
    assert seen_at_fsync == [False]   # flushed to disk, then linked into place
    assert path.read_bytes() == b"s" * 32 and mode(path) == 0o600 and mode(path.parent) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["salt.key"]   # no temporary left behind


def test_a_secret_is_never_replaced(tmp_path):
    path = tmp_path / "salt.key"
    files.write_secret(path, b"first")
    with pytest.raises(FileExistsError):
        files.write_secret(path, b"second")
    assert path.read_bytes() == b"first" and [p.name for p in tmp_path.iterdir()] == ["salt.key"]


def test_every_secret_writer_uses_it(tmp_path):
    key = identity.load_or_create(tmp_path)
    written = tmp_path / identity.KEY_FILE
    assert written.read_bytes() == bytes(key) and mode(written) == 0o600
    assert bytes(identity.load_or_create(tmp_path)) == bytes(key)
    write_private(tmp_path / "key.pem", b"pem")
    assert mode(tmp_path / "key.pem") == 0o600
    with pytest.raises(ConfigError, match="not overwriting a private key"):
        write_private(tmp_path / "key.pem", b"other")


def test_an_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "sub" / "report.json"
    files.write_atomically(path, "old")
    files.write_atomically(path, b"new", mode=0o600)
    assert path.read_bytes() == b"new" and mode(path) == 0o600
    with pytest.raises(TypeError):
        files.write_atomically(path, 42)   # fails while writing: the old content stays
    assert path.read_bytes() == b"new" and [p.name for p in path.parent.iterdir()] == ["report.json"]


def test_file_digest_is_sha256_of_the_content(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"id,y\n1,0\n" * 100_000)
    assert files.file_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_line_cut_short_by_a_crash_is_cut_off_and_the_rest_read(tmp_path):
    path = tmp_path / "journal.jsonl"
    assert files.read_json_lines(path) == [] and files.cut_torn_tail(path) is None
    path.write_text('{"n": 1}\nnot json\n{"n": 2}\n{"n": 3, "tor')
    assert files.read_json_lines(path) == [{"n": 1}, {"n": 2}]   # the middle line and the torn tail skipped
    files.cut_torn_tail(path)
    assert path.read_text() == '{"n": 1}\nnot json\n{"n": 2}\n'
    with path.open("a") as handle:
        handle.write('{"n": 4}\n')
    assert files.read_json_lines(path) == [{"n": 1}, {"n": 2}, {"n": 4}]
