"""One consortium member's replica of a chain: check a proposed block, sign it, commit it.

This is the log itself, the same for every kind of chain: a block must
follow this replica's head (height, previous hash, time, Merkle root), come
from the chain's proposer, and be the only block this member signs at its
height; once every member has signed, each verifies all signatures and
appends it. What a chain may record is its rules' business (`ChainRules`):
a job's training chain (fedscore.ledger.training_rules), proposed by the
coordinator, or a model's scoring chain (fedscore.ledger.scoring_rules),
proposed by the card center. The rules read every entry of a proposed block
against this member's own first-hand record, and say which settlement the
replica implies, so the member countersigns only that one.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from nacl.signing import SigningKey

from fedscore.errors import ProtocolError
from fedscore.ledger.block import Block, decode_entry, make_block, sign, signature_valid
from fedscore.ledger.settlement import countersign
from fedscore.ledger.store import LedgerStore
from fedscore.ledger.verify import LedgerError, signature_problems, check_link, genesis_members

MAX_CLOCK_SKEW_NS = 300 * 10**9
UNREADABLE = (ValueError, KeyError, TypeError, AttributeError)   # what reading a malformed entry raises


class Review(Protocol):
    """A proposed block's entries, read in order against the chain and the block's entries before them."""

    def objection(self, entry: dict) -> str | None: ...
    def add(self, entry: dict) -> None: ...


class ChainRules(Protocol):
    """What one kind of chain may record, as one member judges it from what it saw itself."""

    proposer_role: str   # the role (in the genesis entry) of the one member who proposes blocks

    def remember(self, entry: dict) -> None:
        """An entry committed to this replica (on start-up: every stored one, in order)."""

    def entries(self) -> list[dict]:
        """The committed entries these rules keep in memory."""

    def review(self) -> Review:
        """A fresh review of a proposed block, over the committed chain."""

    def settlement_body(self) -> dict:
        """The settlement this replica implies now."""

    def settlement_refusal(self, body: bytes) -> str | None:
        """Why this member will not countersign settlement ``body`` (None: it follows from the replica)."""


Rules = TypeVar("Rules", bound=ChainRules)


@dataclass
class SummaryReview:
    """A proposed block's entries read one by one against a chain's genesis and a summary of the rest (``seen``),
    for rules that keep only those (a scoring or an audience chain): ``judge(entry, facts, genesis, seen)`` says
    why this member cannot sign an entry; each entry it accepts joins the summary before the next is judged."""

    judge: Callable[[dict, Any, dict | None, Any], str | None]
    facts: Any
    genesis: dict | None
    seen: Any

    def objection(self, entry: dict) -> str | None:
        return self.judge(entry, self.facts, self.genesis, self.seen)

    def add(self, entry: dict) -> None:
        if self.genesis is None:
            self.genesis = entry
        self.seen.add(entry)


class LedgerMember(Generic[Rules]):
    """This member's replica of one chain, under that chain's ``rules``."""

    def __init__(self, name: str, key: SigningKey, path: Path, rules: Rules):
        self.name = name
        self.key = key
        self.rules = rules
        self.store = LedgerStore(path)
        self._lock = threading.Lock()
        self._signed: dict[int, bytes] = {}   # height -> the one block hash this member signed there
        self.genesis: Block | None = None
        self.head: Block | None = None
        for block in self.store.blocks():
            self._remember(block)

    def _remember(self, block: Block) -> None:
        if self.genesis is None:
            self.genesis = block
        self.head = block
        for entry in block.decoded():
            self.rules.remember(entry)

    @property
    def path(self) -> Path:
        return self.store.path

    @property
    def height(self) -> int:
        """Blocks on this replica."""
        return 0 if self.head is None else self.head.height + 1

    def _refuse(self, block: Block, reason: str) -> LedgerError:
        return LedgerError(block.height, f"member {self.name!r} refuses it: {reason}")

    def propose(self, entries: list[dict]) -> Block:
        """The next block (unsigned) holding ``entries``."""
        return make_block(self.head, entries)

    def check(self, block: Block) -> None:
        """Refuse (LedgerError naming the block and this member) anything this member cannot vouch for."""
        try:
            check_link(block, self.head)
        except LedgerError as error:
            raise self._refuse(block, str(error).split(": ", 1)[1]) from None
        if block.timestamp_ns > time.time_ns() + MAX_CLOCK_SKEW_NS:
            raise self._refuse(block, "its time is in the future")
        review = self.rules.review()
        for entry_bytes in block.entries:
            try:
                entry = decode_entry(entry_bytes)
                reason = review.objection(entry)
            except UNREADABLE as error:
                reason = f"an entry it cannot read ({type(error).__name__})"
            if reason:
                raise self._refuse(block, reason)
            review.add(entry)

    def proposer(self, block: Block) -> tuple[str, bytes]:
        """Who may propose blocks on this chain, and their key: the one member the genesis gives the rules' proposer role."""
        genesis = block if block.height == 0 else self.genesis
        entry = decode_entry(genesis.entries[0])
        role = self.rules.proposer_role
        names = [n for n, m in entry.get("members", {}).items() if m.get("role") == role]
        if len(names) != 1:
            raise self._refuse(block, f"the genesis names no single {role}")
        return names[0], bytes.fromhex(entry["members"][names[0]]["key"])

    def sign(self, block: Block) -> bytes:
        """Check, then sign: only the chain's proposer's blocks, never an empty one, and one block per height,
        so the proposer cannot get two versions signed and nobody else can propose at all."""
        with self._lock:
            if not block.entries:
                raise self._refuse(block, "a block must hold entries")
            earlier = self._signed.get(block.height)
            if earlier is not None and earlier != block.hash():
                raise self._refuse(block, "it already signed another block at this height")
            try:
                proposer, key = self.proposer(block)
            except (*UNREADABLE, IndexError):
                raise self._refuse(block, "the genesis entry is not readable") from None
            if proposer != self.name and not signature_valid(block.hash(), block.signatures.get(proposer, b""), key):
                raise self._refuse(block, f"it is not signed by the proposer {proposer!r}")
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

    def countersign_settlement(self, body: bytes) -> bytes:
        """This member's signature on settlement ``body``, the canonical JSON its proposer sent, if the body
        follows from this replica (ProtocolError naming this member and why not, otherwise)."""
        with self._lock:
            refusal = self.rules.settlement_refusal(body)
        if refusal:
            raise ProtocolError(f"party {self.name!r}: {refusal}")
        return countersign(self.key, body)

    def entries(self) -> list[dict]:
        """The committed entries the rules keep: every one (training), the genesis only (scoring)."""
        return self.rules.entries()

    def close(self) -> None:
        self.store.close()
