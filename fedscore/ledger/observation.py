"""An observer's replica of one chain: every block a member serves it, checked as members check it, kept or refused.

An observer (a regulator) signs nothing and sees no data, only what the chain holds. Each block it receives
from a member must follow its replica's head (height, previous hash, time, Merkle root), carry exactly one
valid signature from every member the genesis it holds names (a genesis it does not hold yet: every member
that genesis names; it must be of this replica's job id), be served by one of those members, and hold
entries the chain alone shows nothing wrong with (fedscore.ledger.observed_rules: settlements recomputed or
bounded from the chain). A block that fails is refused with an error naming the member, the chain, the
height and what is wrong.

What members cannot see, the observer can: a second, validly signed block at a height it already holds.
Each member holds only the block its proposer committed to it, so a proposer that got two versions signed
(as a resumed job allows, see the README) could leave members with different chains that each verify.
The observer, reading every member, keeps the first and records the other, when it is signed by exactly the
members of the genesis held, as an equivocation alarm, durably in the replica file (both block hashes, who
served each, the other block's header and signatures), and logs it at ERROR; `fedscore audit verify` then
refuses the replica naming it. Another genesis (another job, other members or keys) is another chain,
refused, never an alarm.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fedscore.errors import ConfigError, FedscoreError, LedgerError
from fedscore.ledger import merkle
from fedscore.ledger.block import Block, decode_entry
from fedscore.ledger.member import MAX_CLOCK_SKEW_NS, UNREADABLE
from fedscore.ledger.observed_rules import ObservedChain, chain_of_genesis, objection
from fedscore.ledger.store import LedgerStore
from fedscore.ledger.verify import check_link, genesis_members, signature_problems

log = logging.getLogger("fedscore.observer")

SCHEMA = """
CREATE TABLE IF NOT EXISTS observed (
    height INTEGER PRIMARY KEY,
    member TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alarms (
    height INTEGER NOT NULL,
    held BLOB NOT NULL,
    held_from TEXT NOT NULL,
    other BLOB NOT NULL,
    other_from TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    evidence TEXT NOT NULL,
    PRIMARY KEY (height, other)
);
"""


ALARMS_QUERY = "SELECT height, held, held_from, other, other_from FROM alarms ORDER BY height"
BUSY_SECONDS = 5.0   # how long a read of the alarms waits for the observer's own write to finish


class AlarmsUnreadable(FedscoreError):
    """A replica file whose alarm table cannot be read (locked past the wait, damaged): no proof of no alarm."""


class BlockRefused(LedgerError):
    """A block a member served that the observer will not keep; the message names member, chain, height and why."""

    def __init__(self, height: int, job_id: str, chain: str, member: str, reason: str):
        super().__init__(height, f"{chain} chain of job {job_id}, served by {member!r}: {reason}")
        self.member, self.reason = member, reason


@dataclass(frozen=True)
class Equivocation:
    """Two different blocks at one height of a chain, each validly signed by every member."""

    job_id: str
    chain: str
    height: int
    held: bytes
    held_from: str
    other: bytes
    other_from: str

    def line(self) -> str:
        return (f"EQUIVOCATION on the {self.chain} chain of job {self.job_id} at block {self.height}: "
                f"{self.held_from!r} served {self.held.hex()[:16]}, {self.other_from!r} served {self.other.hex()[:16]}, "
                "both signed by every member")

    def to_dict(self) -> dict:
        return {"job_id": self.job_id, "chain": self.chain, "height": self.height, "held": self.held.hex(),
                "held_from": self.held_from, "other": self.other.hex(), "other_from": self.other_from}


def _evidence(block: Block) -> str:
    """The other block, whole, as JSON: what a regulator shows the members."""
    return json.dumps({
        "height": block.height, "previous": block.previous.hex(), "timestamp_ns": block.timestamp_ns,
        "merkle_root": block.merkle_root.hex(), "hash": block.hash().hex(),
        "entries": [entry.hex() for entry in block.entries],
        "signatures": {member: signature.hex() for member, signature in sorted(block.signatures.items())},
    }, sort_keys=True)


def recorded_alarms(path: Path, job_id: str = "", chain: str = "") -> list[Equivocation]:
    """The alarms a replica file records (none in a member's replica, which has no alarm table), read-only;
    AlarmsUnreadable when the table is there but cannot be read (still locked after BUSY_SECONDS, damaged)."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_SECONDS)
    except sqlite3.Error as error:
        raise AlarmsUnreadable(f"{path}: cannot open it to read its alarms: {error}") from None
    try:
        rows = db.execute(ALARMS_QUERY).fetchall()
    except sqlite3.OperationalError as error:
        if str(error).startswith("no such table"):   # not an observer's replica
            return []
        raise AlarmsUnreadable(f"{path}: cannot read its alarms: {error}") from None
    except sqlite3.Error as error:
        raise AlarmsUnreadable(f"{path}: cannot read its alarms: {error}") from None
    finally:
        db.close()
    return [Equivocation(job_id, chain, h, bytes(a), af, bytes(b), bf) for h, a, af, b, bf in rows]


class ObserverReplica:
    """The observer's replica of the ``chain`` ("training", "scoring" or "audience") of ``job_id`` (an audience
    chain's id), in the SQLite file ``path``."""

    def __init__(self, path: Path, job_id: str, chain: str):
        self.job_id, self.chain = job_id, chain
        self.store = LedgerStore(path)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        self._load()

    @classmethod
    def check_genesis(cls, block: Block, job_id: str, chain: str, member: str) -> None:
        """BlockRefused unless an empty replica of ``job_id`` would keep ``block`` as its genesis, served by
        ``member``: checked before any file is made for a chain a member lists."""
        scratch = cls.__new__(cls)   # no file: only what _check reads
        scratch.job_id, scratch.chain = job_id, chain
        scratch.state, scratch.members, scratch.head = ObservedChain(), {}, None
        scratch._check(block, member)

    @property
    def path(self) -> Path:
        return self.store.path

    @property
    def height(self) -> int:
        """Blocks on this replica."""
        return 0 if self.head is None else self.head.height + 1

    def _load(self) -> None:
        """The replica's state from its file: on opening, and after a refused block left it half reviewed."""
        self.state = ObservedChain()
        self.members: dict[str, bytes] = {}
        self.head: Block | None = None
        for block in self.store.blocks():
            self._follow(block)
            for entry in block.decoded():
                self.state.add(entry)

    def _follow(self, block: Block) -> None:
        if self.head is None:
            self.members = genesis_members(block)
        self.head = block

    def _refuse(self, block: Block, member: str, reason: str) -> BlockRefused:
        return BlockRefused(block.height, self.job_id, self.chain, member, reason)

    def receive(self, block: Block, member: str) -> Equivocation | None:
        """Keep ``block``, served by ``member``, if it is the next valid one; a block already held is no news.
        A different, validly signed block at a height held is an equivocation (recorded, logged, returned);
        anything else wrong raises BlockRefused."""
        return self.receive_all([block], member)

    def receive_all(self, blocks: list[Block], member: str) -> Equivocation | None:
        """``receive`` each of ``blocks`` in turn, storing the valid ones in one transaction (a page from a member
        costs one write to disk, not one per block); those before a refused block are kept."""
        with self._lock:
            pending: list[Block] = []
            for block in blocks:
                if block.height < self.height:
                    self._store(pending, member)   # a refusal here changed nothing: no state to read again
                    alarm = self._compare(block, member)
                    if alarm is not None:
                        return alarm
                    continue
                try:
                    self._check(block, member)
                except BlockRefused:
                    self._store(pending, member)
                    self._load()   # the refused block's entries were reviewed into the state: read it again
                    raise
                pending.append(block)
                self._follow(block)
            self._store(pending, member)
            return None

    def _store(self, blocks: list[Block], member: str) -> None:
        if blocks:
            self.store.append_all(blocks)
            self._db.execute("BEGIN")   # one transaction, not one per row
            self._db.executemany("INSERT OR REPLACE INTO observed VALUES (?, ?)", [(b.height, member) for b in blocks])
            self._db.execute("COMMIT")
            blocks.clear()

    def _genesis_members(self, block: Block, member: str) -> dict[str, bytes]:
        """The members a genesis ``block`` names, if it is one of this replica's job, served by one of them."""
        try:
            members = genesis_members(block)
            job_id = chain_of_genesis(decode_entry(block.entries[0]))
        except LedgerError as error:
            raise self._refuse(block, member, str(error).split(": ", 1)[1]) from None
        if job_id != self.job_id:
            raise self._refuse(block, member, f"its genesis is of job {job_id!r}, not of job {self.job_id}")
        if member not in members:
            raise self._refuse(block, member, f"its genesis does not name {member!r} as a member; "
                                              "a chain is read only from its own members")
        return members

    def _signature_problem(self, block: Block, member: str) -> str | None:
        """Why ``block`` is not signed by exactly the members of the genesis held (of its own, if none is), or None."""
        members = self.members if self.head is not None else self._genesis_members(block, member)
        bad = signature_problems([(block.height, block.hash(), block.signatures, members)])
        return bad[0][1] if bad else None

    def _refuse_strangers(self, block: Block, member: str) -> None:
        """Refuse any block from a member the genesis held does not name: a chain is read only from its members."""
        if self.head is not None and member not in self.members:
            raise self._refuse(block, member, f"{member!r} is not a member in the genesis of the chain held")

    def _check(self, block: Block, member: str) -> None:
        self._refuse_strangers(block, member)
        try:
            check_link(block, self.head)
        except LedgerError as error:
            raise self._refuse(block, member, str(error).split(": ", 1)[1]) from None
        if not block.entries:
            raise self._refuse(block, member, "a block must hold entries")
        if block.timestamp_ns > time.time_ns() + MAX_CLOCK_SKEW_NS:
            raise self._refuse(block, member, "its time is in the future")
        problem = self._signature_problem(block, member)
        if problem:
            raise self._refuse(block, member, problem)
        for position, raw in enumerate(block.entries):   # into the state as reviewed: a refusal reloads it
            try:
                entry = decode_entry(raw)
                reason = objection(entry, self.state) if isinstance(entry, dict) else "an entry that is not a JSON object"
            except UNREADABLE as error:
                reason = f"an entry it cannot read ({type(error).__name__})"
            except ConfigError as error:   # a fee contract that is not one
                reason = str(error)
            if reason:
                raise self._refuse(block, member, f"entry {position}: {reason}")
            self.state.add(entry)

    def _compare(self, block: Block, member: str) -> Equivocation | None:
        """A block at a height held: no news, refused, or (signed by exactly the held genesis' members) an alarm."""
        self._refuse_strangers(block, member)
        held = next(self.store.blocks(block.height, block.height + 1))
        if held.hash() == block.hash() and merkle.root(block.entries) == block.merkle_root:
            return None   # no news
        if merkle.root(block.entries) != block.merkle_root:
            raise self._refuse(block, member, "it differs from the block held at this height, and its Merkle root "
                                              "does not match its entries")
        row = self._db.execute("SELECT member FROM observed WHERE height = ?", (block.height,)).fetchone()
        if block.height == 0 and self._genesis_of(block) != (self.job_id, self.members):
            raise self._refuse(block, member, f"another chain: its genesis names another job, or other members or keys, "
                                              f"than the genesis held, served by {row[0] if row else ''!r} (no "
                                              "equivocation: the members of the chain held did not sign it)")
        problem = self._signature_problem(block, member)
        if problem:
            raise self._refuse(block, member, f"it differs from the block held at this height, and {problem}")
        alarm = Equivocation(self.job_id, self.chain, block.height, held.hash(), row[0] if row else "", block.hash(),
                             member)
        self._db.execute("INSERT OR IGNORE INTO alarms VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (alarm.height, alarm.held, alarm.held_from, alarm.other, alarm.other_from, time.time_ns(),
                          _evidence(block)))
        log.error("%s", alarm.line())
        return alarm

    @staticmethod
    def _genesis_of(block: Block) -> tuple[object, dict[str, bytes]] | None:
        """The job id and members a genesis names (None: it is no readable genesis)."""
        try:
            return chain_of_genesis(decode_entry(block.entries[0])), genesis_members(block)
        except LedgerError:
            return None

    def alarms(self) -> list[Equivocation]:
        with self._lock:
            rows = self._db.execute(ALARMS_QUERY).fetchall()
        return [Equivocation(self.job_id, self.chain, h, bytes(a), af, bytes(b), bf) for h, a, af, b, bf in rows]

    def close(self) -> None:
        self._db.close()
        self.store.close()
