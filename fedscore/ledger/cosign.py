"""How a block gets every member's signature, and a settlement every signature it needs.

The chain's proposer (the coordinator on a job's training chain, the card
center on a model's scoring chain) signs a block first, every other member
checks and signs it, then each commits it. A settlement is countersigned
before it goes in a block: each member it names recomputes it from its own
replica and signs the canonical body (fedscore.ledger.settlement).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from fedscore.errors import ProtocolError
from fedscore.ledger import settlement
from fedscore.ledger.block import Block, encode_entry
from fedscore.ledger.member import LedgerMember
from fedscore.ledger.verify import genesis_members
from fedscore.protocol.training.fanout import call_each


class LedgerHandle(Protocol):
    """How the proposer reaches another member's replica."""

    def propose_block(self, block: Block) -> bytes: ...
    def commit_block(self, block: Block) -> None: ...


class SettlementSigner(Protocol):
    """How the proposer asks another member to countersign a settlement (canonical JSON body)."""

    def sign_settlement(self, body: bytes) -> bytes: ...


def propose(proposer: LedgerMember, entries: list[dict]) -> Block:
    """The next block, checked and signed by its proposer (members sign only what the proposer signed)."""
    block = proposer.propose(entries)
    return block.with_signatures({proposer.name: proposer.sign(block)})


def co_sign(proposer: LedgerMember, members: Mapping[str, LedgerHandle], proposal: Block) -> Block:
    """Every member's signature on ``proposal`` (each checks it first), then the proposer commits it."""
    signatures = call_each(members, lambda name, m: m.propose_block(proposal), "member")
    signed = proposal.with_signatures({**proposal.signatures, **signatures})
    proposer.commit(signed)
    return signed


def append_block(proposer: LedgerMember, members: Mapping[str, LedgerHandle], entries: list[dict]) -> Block:
    """Propose, collect every member's signature, then commit everywhere (any failure stops the job)."""
    signed = co_sign(proposer, members, propose(proposer, entries))
    call_each(members, lambda name, m: m.commit_block(signed), "member")
    return signed


def settlement_entry(proposer: LedgerMember, signers: Mapping[str, SettlementSigner]) -> dict:
    """The settlement the proposer's replica implies, countersigned by every one of ``signers`` (each
    recomputes it from its own replica first) and by the proposer itself when it pays or is paid.

    A member that refuses or fails is named by the error (call_each); so is one whose signature does not
    verify under its key in the genesis, before the entry reaches a block every member would refuse.
    """
    body = proposer.rules.settlement_body()
    encoded = encode_entry(body)
    signatures = call_each(signers, lambda name, signer: signer.sign_settlement(encoded), "member")
    if proposer.name in settlement.signers(body):
        signatures[proposer.name] = proposer.countersign_settlement(encoded)
    keys = genesis_members(proposer.genesis)
    for name, signature in sorted(signatures.items()):
        if name not in keys or not settlement.signature_valid(body, signature, keys[name]):
            raise ProtocolError(f"member {name!r} countersigned the settlement with a signature that does not verify")
    return {**body, "signatures": {name: signature.hex() for name, signature in sorted(signatures.items())}}
