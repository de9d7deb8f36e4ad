"""Evidence bundles: an excerpt of a scoring chain that settles a dispute, checked offline by anyone.

A bundle cites entries of one model's scoring chain and carries what a reader
needs to check them with nothing but the genesis block's hash they trust: the
genesis block's first entry (the members and their keys) with its Merkle path,
and for each cited block its header and every member's signature on it, and
each cited entry with its Merkle path. Paths are sibling hashes only: nothing
of any other request (no token, tag or mark) is in a bundle.

What the offline check proves: each cited entry is in a block that every
member the trusted genesis lists co-signed. The headers between the genesis
and a cited block are left out (a model that serves for a year has millions of
blocks), so which of those members' chains holds the block is shown by a
replica: given any member's (a partner's, or an observer's), each cited block
must be that replica's block at its height.

Two disputes use it. An applicant says "I never applied": the consent bundle
(fedscore.ledger.consent_evidence) gives the consent token the card center
opened from the chain's sealed copy and the entry that recorded it. A partner
says "you billed us for requests we never answered": the fee bundle
(fedscore.ledger.fee_evidence). Each check is one function raising
EvidenceError that names what failed.
"""
from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass, field

from fedscore.errors import UnverifiedError
from fedscore.ledger import merkle
from fedscore.ledger.block import GENESIS_PREVIOUS, Block, decode_entry, signature_valid
from fedscore.ledger.proofs import header_block, header_document, path_leads_to_root
from fedscore.ledger.verify import LedgerError, genesis_members

FORMAT = "fedscore.evidence/1"
UNMATCHED = "; not matched to a member's replica (--replica shows the block is on that member's chain)"
"""What a verdict says when no replica was given: the blocks are signed by the genesis' members, no more."""
MIN_GENESIS_DIGITS = 16   # as `audit verify --head` takes a head: 64 bits, no two blocks share them


class EvidenceError(UnverifiedError):
    """A bundle that was read but does not prove what it claims (exit 3); the message names the first failure."""


def iso_ms(time_ms: int) -> str:
    """Unix milliseconds as ISO 8601 in UTC, to the second: 2026-12-02T20:15:03Z."""
    moment = datetime.datetime.fromtimestamp(time_ms / 1000, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- building: the excerpt of a verified chain a bundle cites ---------------------------------------

class Excerpt:
    """The entries a bundle cites from ``blocks`` (a chain the caller verified), and so the blocks."""

    def __init__(self, blocks: list[Block]):
        self.blocks = blocks
        self.cited: set[int] = {0}

    def record(self, height: int, index: int) -> dict:
        """One entry with its Merkle path; its block's header and signatures go in the chain part."""
        block = self.blocks[height]
        self.cited.add(height)
        return {
            "height": height, "index": index, "entry": block.entries[index].decode("utf-8"),
            "audit_path": [h.hex() for h in merkle.inclusion_path(block.entries, index)],
        }

    def document(self) -> dict:
        genesis = self.record(0, 0)
        return {"genesis": genesis, "blocks": {str(height): self.block(height) for height in sorted(self.cited)}}

    def block(self, height: int) -> dict:
        block = self.blocks[height]
        signatures = {m: base64.b64encode(s).decode() for m, s in sorted(block.signatures.items())}
        return {"header": header_document(block), "signatures": signatures}


def entries_of(blocks: list[Block], kind: str) -> list[tuple[int, int, dict]]:
    """(height, index, entry) of every entry of ``kind``, in chain order."""
    found = []
    for block in blocks:
        for index, raw in enumerate(block.entries):
            entry = decode_entry(raw)
            if entry.get("kind") == kind:
                found.append((block.height, index, entry))
    return found


# -- checking: the chain part --------------------------------------------------------------------

@dataclass(frozen=True)
class AnchoredChain:
    """The chain part of a bundle, once its genesis, header links and genesis entry checked out."""

    genesis: dict                         # the scoring_start entry: job, members, fees
    members: dict[str, bytes]             # member -> Ed25519 key, from the genesis entry
    headers: dict[int, Block]             # height -> each cited block's header (entries blank), the genesis' too
    signatures: dict[int, dict[str, bytes]]
    cosigned: set[int] = field(default_factory=set)   # blocks whose signatures checked out (each checked once)

    @property
    def genesis_hash(self) -> str:
        return self.headers[0].hash().hex()

    @property
    def card_center(self) -> str:
        return next(n for n, m in sorted(self.genesis["members"].items()) if m["role"] == "card_center")

    @property
    def partners(self) -> list[str]:
        return sorted(n for n, m in self.genesis["members"].items() if m["role"] == "partner")

    def entry(self, record: dict, what: str) -> dict:
        """The entry ``record`` cites, once its path leads to its block's root and every member signed that block."""
        check_inclusion(self, record, what)
        if int(record["height"]) not in self.cosigned:
            check_cosigned(self, int(record["height"]), what)
            self.cosigned.add(int(record["height"]))
        try:
            entry = decode_entry(record["entry"].encode("utf-8"))
        except ValueError:
            raise EvidenceError(f"{what} is not a JSON entry") from None
        if not isinstance(entry, dict):
            raise EvidenceError(f"{what} is not an entry object")
        return entry


def read_chain(bundle: dict) -> tuple[dict[int, Block], dict, dict[int, dict[str, bytes]]]:
    """The cited blocks' headers and signatures, and the genesis record, as values; EvidenceError if not readable."""
    try:
        part = bundle["chain"]
        headers, signatures = {}, {}
        for key, cited in part["blocks"].items():
            header = header_block(cited["header"])
            if header.height != int(key):
                raise ValueError(f"block {key}'s header says height {header.height}")
            headers[header.height] = header
            signatures[header.height] = {m: base64.b64decode(s, validate=True) for m, s in cited["signatures"].items()}
        genesis = part["genesis"]
        if 0 not in headers:
            raise ValueError("no genesis block")
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise EvidenceError(f"the bundle's chain part is not readable ({type(error).__name__}: {error})") from None
    return headers, genesis, signatures


def check_genesis_hash(genesis: Block, expected: str) -> None:
    """The bundle's genesis block must be the one the reader trusts (its hash, or a prefix of 16 hex digits or more)."""
    expected = expected.strip().lower()
    if len(expected) < MIN_GENESIS_DIGITS:
        raise EvidenceError(f"--genesis {expected!r}: give the genesis hash, or at least its first {MIN_GENESIS_DIGITS} hex digits")
    found = genesis.hash().hex()
    if genesis.height != 0 or genesis.previous != GENESIS_PREVIOUS:
        raise EvidenceError("the bundle's first header is not a genesis block (height 0, no previous block)")
    if not found.startswith(expected):
        raise EvidenceError(f"the bundle's genesis is {found}, not the expected {expected}: it cites another chain")


def check_replica_blocks(chain: AnchoredChain, replica: list[Block], whose: str) -> None:
    """Every cited block is block of that height in a member's replica: the bundle's blocks are of that one chain."""
    if not replica or replica[0].hash() != chain.headers[0].hash():
        raise EvidenceError(f"{whose} is of another chain than the bundle's")
    for height, header in sorted(chain.headers.items()):
        if height >= len(replica) or replica[height].hash() != header.hash():
            raise EvidenceError(f"block {height} in the bundle is not block {height} of {whose}: it is from another chain")


def check_inclusion(chain: AnchoredChain | dict[int, Block], record: dict, what: str) -> None:
    """``record``'s entry, at its index, with its audit path, gives its block's Merkle root."""
    headers = chain.headers if isinstance(chain, AnchoredChain) else chain
    try:
        height, index, entry = int(record["height"]), int(record["index"]), record["entry"].encode("utf-8")
        leads = height in headers and path_leads_to_root(entry, index, record["audit_path"], headers[height])
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise EvidenceError(f"{what} is not a readable record ({type(error).__name__}: {error})") from None
    if height not in headers:
        raise EvidenceError(f"{what} cites block {height}, whose header the bundle does not carry")
    if not leads:
        raise EvidenceError(f"{what}: its audit path does not lead to block {height}'s Merkle root (an altered "
                            f"entry, or a path from another block)")


def check_cosigned(chain: AnchoredChain, height: int, what: str = "") -> None:
    """Every member in the genesis signed block ``height``'s hash with its key there."""
    block_hash = chain.headers[height].hash()
    signatures = chain.signatures.get(height, {})
    for member, key in sorted(chain.members.items()):
        if member not in signatures:
            raise EvidenceError(f"block {height}{f' ({what})' if what else ''} carries no signature from member {member!r}")
        if not signature_valid(block_hash, signatures[member], key):
            raise EvidenceError(f"block {height}: the signature of member {member!r} does not verify")


def anchored_chain(bundle: dict, expected_genesis: str) -> AnchoredChain:
    """The bundle's chain part, checked: the genesis the reader named, the header links, the genesis entry
    and its signatures. Raises EvidenceError naming the first failure."""
    headers, genesis_record, signatures = read_chain(bundle)
    check_genesis_hash(headers[0], expected_genesis)
    check_inclusion(headers, genesis_record, "the genesis entry")
    if (int(genesis_record["height"]), int(genesis_record["index"])) != (0, 0):
        raise EvidenceError("the genesis record is not the first entry of block 0")
    raw = genesis_record["entry"].encode("utf-8")
    try:
        members = genesis_members(Block(0, GENESIS_PREVIOUS, 0, b"", (raw,)))
        genesis = decode_entry(raw)
    except (LedgerError, ValueError) as error:
        raise EvidenceError(f"the genesis entry does not list the members: {error}") from None
    if genesis.get("kind") != "scoring_start":
        raise EvidenceError(f"the genesis starts a {genesis.get('kind')!r} chain, not a model's scoring chain")
    chain = AnchoredChain(genesis, members, headers, signatures)
    check_cosigned(chain, 0, "the genesis")
    return chain


def check_format(bundle: object, kind: str) -> None:
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise EvidenceError(f"not a fedscore evidence bundle (format {FORMAT})")
    if bundle.get("kind") != kind:
        raise EvidenceError(f"a {bundle.get('kind')!r} bundle, not a {kind} bundle")
