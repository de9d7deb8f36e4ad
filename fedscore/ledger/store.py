"""A member's replica of a job's chain: one SQLite file, appended to in transactions."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

from fedscore.ledger.block import Block

SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    height INTEGER PRIMARY KEY,
    previous BLOB NOT NULL,
    timestamp_ns INTEGER NOT NULL,
    merkle_root BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    height INTEGER NOT NULL,
    position INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (height, position)
);
CREATE TABLE IF NOT EXISTS signatures (
    height INTEGER NOT NULL,
    member TEXT NOT NULL,
    signature BLOB NOT NULL,
    PRIMARY KEY (height, member)
);
"""


class LedgerStore:
    def __init__(self, path: Path | str, read_only: bool = False):
        self.path = Path(path)
        if read_only:  # auditing must never change the evidence
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def append(self, block: Block) -> None:
        """Store a block and its entries and signatures atomically."""
        self.append_all([block])

    def append_all(self, blocks: list[Block]) -> None:
        """Store blocks, in order, in one transaction (a replica catching up writes a page at once)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for block in blocks:
                db.execute(
                    "INSERT INTO blocks VALUES (?, ?, ?, ?, ?)",
                    (block.height, block.previous, block.timestamp_ns, block.merkle_root, block.hash()),
                )
                db.executemany("INSERT INTO entries VALUES (?, ?, ?)",
                               [(block.height, i, e) for i, e in enumerate(block.entries)])
                db.executemany("INSERT INTO signatures VALUES (?, ?, ?)",
                               [(block.height, m, s) for m, s in sorted(block.signatures.items())])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def head_summary(self) -> tuple[int, bytes]:
        """(blocks stored, hash of the last one): a member's position on its chain, without reading it all."""
        row = self._db.execute("SELECT COUNT(*), (SELECT hash FROM blocks ORDER BY height DESC LIMIT 1) FROM blocks").fetchone()
        return int(row[0]), bytes(row[1] or b"")

    def first_entry(self) -> bytes | None:
        """The genesis block's first entry (a chain's start, naming its members), without reading the rest."""
        row = self._db.execute("SELECT body FROM entries WHERE height = 0 AND position = 0").fetchone()
        return None if row is None else bytes(row[0])

    def entries_newest_first(self) -> Iterator[bytes]:
        """Every stored entry, the last one first: a chain's latest facts are read from its end, lazily."""
        cursor = self._db.execute("SELECT body FROM entries ORDER BY height DESC, position DESC")
        try:
            for (body,) in cursor:
                yield bytes(body)
        finally:   # a reader that stops early ends the statement at once
            cursor.close()

    def blocks(self, start: int = 0, stop: int | None = None) -> Iterator[Block]:
        """Every stored block from height ``start`` on (below ``stop``, if given), in height order, as stored
        (verification decides whether it is valid)."""
        end = 2**62 if stop is None else stop
        entries: dict[int, list[bytes]] = {}
        query = "SELECT height, position, body FROM entries WHERE height >= ? AND height < ? ORDER BY height, position"
        for height, _, body in self._db.execute(query, (start, end)):
            entries.setdefault(height, []).append(bytes(body))
        signatures: dict[int, dict[str, bytes]] = {}
        query = "SELECT height, member, signature FROM signatures WHERE height >= ? AND height < ?"
        for height, member, signature in self._db.execute(query, (start, end)):
            signatures.setdefault(height, {})[member] = bytes(signature)
        rows = self._db.execute(
            "SELECT height, previous, timestamp_ns, merkle_root, hash FROM blocks WHERE height >= ? AND height < ? "
            "ORDER BY height", (start, end)
        )
        for height, previous, timestamp_ns, merkle_root, _ in rows:
            yield Block(
                height=height, previous=bytes(previous), timestamp_ns=timestamp_ns, merkle_root=bytes(merkle_root),
                entries=tuple(entries.get(height, [])), signatures=signatures.get(height, {}),
            )
