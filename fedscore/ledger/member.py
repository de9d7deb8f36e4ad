"""One consortium member's part in the chain: check a proposed block, sign it, commit it.

The coordinator proposes each block; every member checks it against its
own replica (height, previous hash, time, Merkle root) and its own record of
the job (fedscore.ledger.entries) before signing; once every member has
signed, each verifies all signatures and appends the block to its replica.

The same member keeps a model's scoring chain, under that chain's rules
(fedscore.ledger.scoring): there the card center proposes, and a member
keeps only a summary of the chain in memory, not its entries, since
scoring adds one entry per request.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from fedscore.ledger import entries as entry_rules
from fedscore.ledger.block import Block, decode_entry, make_block, sign, signature_valid
from fedscore.ledger.entries import Facts
from fedscore.ledger.scoring import ScoringFacts, ScoringSeen, audit_scoring, forget_recorded
from fedscore.ledger.store import LedgerStore
from fedscore.ledger.verify import LedgerError, signature_problems, check_link, genesis_members

MAX_CLOCK_SKEW_NS = 300 * 10**9


class LedgerMember:
    def __init__(self, name: str, key: SigningKey, path: Path, facts: Facts | ScoringFacts):
        self.name = name
        self.key = key
        self.facts = facts
        self.scoring = isinstance(facts, ScoringFacts)
        self.store = LedgerStore(path)
        self._lock = threading.Lock()
        self._signed: dict[int, bytes] = {}   # height -> the one block hash this member signed there
        self.genesis: Block | None = None
        self.head: Block | None = None
        self._entries: list[dict] = []        # every entry (training); the genesis entry only (scoring)
        self._seen: Any = ScoringSeen(dict(facts.pair_keys)) if self.scoring else entry_rules.Seen()
        for block in self.store.blocks():
            self._remember(block)

    def _remember(self, block: Block) -> None:
        if self.genesis is None:
            self.genesis = block
        self.head = block
        for entry in block.decoded():
            if not self.scoring or not self._entries:
                self._entries.append(entry)
            self._seen.add(entry)
            if self.scoring:
                forget_recorded(entry, self.facts)   # on the chain now: no need to remember it

    @property
    def path(self) -> Path:
        return self.store.path

    @property
    def height(self) -> int:
        """Blocks on this replica."""
        return 0 if self.head is None else self.head.height + 1

    @property
    def seen(self) -> Any:
        return self._seen

    def _audit(self, entry: dict, chain: list[dict], seen: Any) -> str | None:
        if self.scoring:
            return audit_scoring(entry, self.facts, chain[0] if chain else None, seen)
        return entry_rules.audit(entry, self.facts, chain, seen)

    def propose(self, entries: list[dict]) -> Block:
        """The next block (unsigned) holding ``entries``."""
        return make_block(self.head, entries)

    def check(self, block: Block) -> None:
        """Refuse (LedgerError naming the block and this member) anything this member cannot vouch for."""
        try:
            check_link(block, self.head)
        except LedgerError as error:
            raise LedgerError(block.height, f"member {self.name!r} refuses it: {str(error).split(': ', 1)[1]}") from None
        if block.timestamp_ns > time.time_ns() + MAX_CLOCK_SKEW_NS:
            raise LedgerError(block.height, f"member {self.name!r} refuses it: its time is in the future")
        chain = self._entries if len(block.entries) == 1 or self.scoring else list(self._entries)
        seen = self._seen.copy()
        for position, entry_bytes in enumerate(block.entries):
            try:
                entry = decode_entry(entry_bytes)
                reason = self._audit(entry, chain, seen)
            except (ValueError, KeyError, TypeError, AttributeError) as error:
                reason = f"an entry it cannot read ({type(error).__name__})"
            if reason:
                raise LedgerError(block.height, f"member {self.name!r} refuses it: {reason}")
            if position + 1 < len(block.entries):
                if not self.scoring:
                    chain.append(entry)
                elif not chain:
                    chain = [entry]          # a scoring rule needs only the genesis entry
            seen.add(entry)

    def proposer(self, block: Block) -> tuple[str, bytes]:
        """Who may propose blocks on this chain, and their key: the coordinator (training), the card center (scoring)."""
        genesis = block if block.height == 0 else self.genesis
        entry = decode_entry(genesis.entries[0])
        role = "card_center" if entry.get("kind") == "scoring_start" else "coordinator"
        names = [n for n, m in entry.get("members", {}).items() if m.get("role") == role]
        if len(names) != 1:
            raise LedgerError(block.height, f"member {self.name!r} refuses it: the genesis names no single {role}")
        return names[0], bytes.fromhex(entry["members"][names[0]]["key"])

    def sign(self, block: Block) -> bytes:
        """Check, then sign: only the chain's proposer's blocks, never an empty one, and one block per height,
        so the proposer cannot get two versions signed and nobody else can propose at all."""
        with self._lock:
            if not block.entries:
                raise LedgerError(block.height, f"member {self.name!r} refuses it: a block must hold entries")
            earlier = self._signed.get(block.height)
            if earlier is not None and earlier != block.hash():
                raise LedgerError(block.height, f"member {self.name!r} refuses it: it already signed another block at this height")
            try:
                proposer, key = self.proposer(block)
            except (ValueError, KeyError, TypeError, AttributeError, IndexError):
                raise LedgerError(block.height, f"member {self.name!r} refuses it: the genesis entry is not readable") from None
            if proposer != self.name and not signature_valid(block.hash(), block.signatures.get(proposer, b""), key):
                raise LedgerError(block.height, f"member {self.name!r} refuses it: it is not signed by the proposer {proposer!r}")
            self.check(block)
            self._signed[block.height] = block.hash()
            return sign(block, self.key)

    def commit(self, block: Block) -> None:
        """Append a block every member signed, this member included (it checked it then). Committing the
        head again is a no-op, so a proposer may resend a block to a member that missed it."""
        with self._lock:
            if self.head is not None and block.height == self.head.height and block.hash() == self.head.hash():
                return
            check_link(block, self.head)
            members = genesis_members(block if block.height == 0 else self.genesis)
            if members.get(self.name) != bytes(self.key.verify_key):
                raise LedgerError(block.height, f"member {self.name!r} refuses to commit it: the genesis does not list its key")
            bad = signature_problems([(block.height, block.hash(), block.signatures, members)])
            if bad:
                raise LedgerError(bad[0][0], f"member {self.name!r} refuses to commit it: {bad[0][1]}")
            self.store.append(block)
            self._remember(block)

    def abandon_uncommitted(self) -> None:
        """Forget signatures given to blocks that were never committed: a resumed job proposes its next block
        again, and this member must be able to sign that one. (A proposer could use this to get two blocks
        signed at one height; members then hold whichever the proposer commits to them — see the README.)"""
        with self._lock:
            self._signed = {height: block for height, block in self._signed.items() if height < self.height}

    def entries(self) -> list[dict]:
        return list(self._entries)

    def close(self) -> None:
        self.store.close()
