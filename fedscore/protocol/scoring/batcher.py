"""The card center's scoring blocks: pending entries batched into blocks every member co-signs.

The card center proposes each block; every partner checks the entries that
concern it (fedscore.ledger.scoring_rules) and signs, and the block is committed
at every member. A proposed block is kept on disk as JSON (`block_to_json`)
until it is on the chain, so a card center that restarts proposes the same
block again rather than a second one at that height.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from fedscore.ledger.block import Block, decode_entry
from fedscore.ledger.member import LedgerMember
from fedscore.files import write_atomically
from fedscore.ledger.cosign import LedgerHandle, co_sign, propose
from fedscore.ledger.scoring_rules import PENDING_KINDS, entry_id
from fedscore.protocol.scoring.card_center import CardCenterScorer

log = logging.getLogger("fedscore.scoring")


def block_to_json(block: Block) -> str:
    return json.dumps({
        "height": block.height, "previous": block.previous.hex(), "timestamp_ns": block.timestamp_ns,
        "merkle_root": block.merkle_root.hex(), "entries": [e.decode("utf-8") for e in block.entries],
        "signatures": {n: s.hex() for n, s in block.signatures.items()},
    })


def block_from_json(text: str) -> Block:
    d = json.loads(text)
    return Block(d["height"], bytes.fromhex(d["previous"]), d["timestamp_ns"], bytes.fromhex(d["merkle_root"]),
                 tuple(e.encode("utf-8") for e in d["entries"]), {n: bytes.fromhex(s) for n, s in d["signatures"].items()})


class EntryBatcher:
    """Turns pending scoring entries into blocks: when `batch_entries` wait, or the oldest waited `batch_seconds`.

    A proposed block is kept (on disk too) and proposed again, unchanged,
    until every member signed it, so a member that signed it once never sees
    a second block at that height. After a failure the members are brought
    up to date first (`sync`: reopened where they restarted, sent the blocks
    they missed). Entries arriving meanwhile wait for the next block.
    """

    def __init__(self, scorer: CardCenterScorer, member: LedgerMember, peers: Mapping[str, LedgerHandle],
                 sync: Callable[[], None], proposal_path: Path, batch_entries: int = 500, batch_seconds: float = 1.0):
        self.scorer = scorer
        self.member = member
        self.peers = dict(peers)
        self.sync = sync
        self.proposal_path = proposal_path
        self.batch_entries = batch_entries
        self.batch_seconds = batch_seconds
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._needs_sync = False
        self._proposal: Block | None = self._saved_proposal()

    def _saved_proposal(self) -> Block | None:
        """A block proposed before a restart and not yet on the chain: proposed again first."""
        if not self.proposal_path.exists():
            return None
        block = block_from_json(self.proposal_path.read_text())
        if block.height < self.member.height:
            self.proposal_path.unlink()
            return None
        self.scorer.drop_pending({entry_id(e) for e in map(decode_entry, block.entries) if e.get("kind") in PENDING_KINDS})
        self._needs_sync = True
        return block

    @property
    def has_proposal(self) -> bool:
        return self._proposal is not None

    def flush(self) -> int:
        """Put every pending entry on the chain now; returns how many went on."""
        with self._flush_lock:
            return self._flush_locked()

    def _flush_locked(self, extra: list[dict] | None = None) -> int:
        """Co-sign the block proposed earlier if any, then what is pending now (or, given ``extra``, that alone)."""
        written, taken, due = 0, 0, 0 if extra is not None else self.scorer.pending_count()
        while True:
            if self._proposal is None:
                if extra is not None:
                    entries, extra = extra, None
                elif taken < due:
                    entries = self.scorer.take_pending(min(self.batch_entries, due - taken))
                    taken += len(entries)
                else:
                    entries = []
                if not entries:
                    break
                try:
                    self._proposal = propose(self.member, entries)
                except Exception:
                    if entries and entries[0].get("kind") in PENDING_KINDS:
                        self.scorer.put_back(entries)
                    raise
                write_atomically(self.proposal_path, block_to_json(self._proposal), 0o600)
            try:
                if self._needs_sync:
                    self.sync()
                    self._needs_sync = False
                signed = co_sign(self.member, self.peers, self._proposal)
            except Exception:
                self._needs_sync = True
                raise
            written += sum(1 for e in signed.decoded() if e.get("kind") == "scoring")
            self._proposal = None
            self.proposal_path.unlink(missing_ok=True)
            self._distribute(signed)
            on_chain = self.member.rules.seen.requests
            self.scorer.journal.keep_only(lambda record: entry_id(record) not in on_chain)
        return written

    def _distribute(self, block: Block) -> None:
        """Commit at every member; one that misses it is brought up to date before the next block."""
        for name, peer in self.peers.items():
            try:
                peer.commit_block(block)
            except Exception as error:
                log.warning("scoring block %d: member %s did not commit it (%s); it is sent again later", block.height, name, error)
                self._needs_sync = True

    def append_after_pending(self, make_entry: Callable[[], dict | None]) -> None:
        """Flush, then append ``make_entry()`` alone, with no scoring block in between (a settlement);
        nothing if it returns None."""
        with self._flush_lock:
            self._flush_locked()
            entry = make_entry()
            if entry is not None:
                self._flush_locked(extra=[entry])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scoring-blocks", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        waited_since: float | None = None
        while not self._stop.wait(min(0.05, self.batch_seconds / 4)):
            count = self.scorer.pending_count() + (self._proposal is not None)
            if not count:
                waited_since = None
                continue
            waited_since = waited_since or time.monotonic()
            if count >= self.batch_entries or time.monotonic() - waited_since >= self.batch_seconds:
                try:
                    self.flush()
                    waited_since = None
                except Exception as error:   # nothing is lost: the proposal and the journal keep the entries
                    log.warning("scoring block not co-signed yet, entries kept: %s", error)
                    waited_since = time.monotonic()   # try again after another batch_seconds

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
