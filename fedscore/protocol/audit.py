"""Which events of a job go on the audit chain, and how a block gets every member's signature."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from fedscore.config import JobSpec
from fedscore.ledger.block import Block, encode_entry
from fedscore.ledger.entries import Facts
from fedscore.ledger.member import LedgerMember
from fedscore.ledger.settlement import settlement_body
from fedscore.protocol.training.fanout import call_each
from fedscore.protocol.training.session import Step


class LedgerHandle(Protocol):
    """How the coordinator reaches another member's replica."""

    def propose_block(self, block: Block) -> bytes: ...
    def commit_block(self, block: Block) -> None: ...


class SettlementSigner(Protocol):
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


def last_step(entries: list[dict]) -> Step | None:
    """The last training step a chain records (None before the first): where a resumed job goes on from."""
    for entry in reversed(entries):
        if entry.get("kind") == "step":
            return Step(entry["epoch"], entry["batch"])
    return None


def forget_steps_off_chain(facts: Facts, on_chain: set[str]) -> None:
    """Drop what a member recorded of steps the chain does not hold (they will be done again), and
    mark the chain's steps as taken part in (a restarted member vouched for them before it died)."""
    for key in set(facts.digests) - on_chain:
        del facts.digests[key]
    for key in set(facts.losses) - on_chain:
        del facts.losses[key]
    for key in on_chain:
        facts.digests.setdefault(key, {})


def job_start_entry(job_id: str, spec: JobSpec, members: dict[str, dict], paillier_fingerprint: str) -> dict:
    return {
        "kind": "job_start", "job_id": job_id, "job_name": spec.name, "job_digest": spec.digest(),
        "members": members, "paillier_fingerprint": paillier_fingerprint, "fees": spec.fees.to_dict(),
    }


def alignment_entry(aligned_rows: int, overlaps: dict[str, int]) -> dict:
    return {"kind": "alignment", "aligned_rows": aligned_rows, "overlaps": overlaps}


def step_entry(step: Step, rows: int, loss: float, seconds: float, digests: dict[str, str]) -> dict:
    return {
        "kind": "step", "epoch": step.epoch, "batch": step.batch, "rows": rows, "loss": loss,
        "seconds": round(seconds, 6), "digests": dict(sorted(digests.items())),
    }


def job_end_entry(model_digests: dict[str, str]) -> dict:
    return {"kind": "job_end", "models": dict(sorted(model_digests.items()))}


def settlement_entry(proposer: LedgerMember, signers: Mapping[str, SettlementSigner]) -> dict:
    """The settlement the chain implies, signed by the payer and every payee (each recomputes it first)."""
    body = settlement_body(proposer.entries())
    encoded = encode_entry(body)   # sent as the canonical body; each signer signs settlement_message(body)
    signatures = call_each(signers, lambda name, s: s.sign_settlement(encoded), "member")
    return {**body, "signatures": {name: sig.hex() for name, sig in sorted(signatures.items())}}
