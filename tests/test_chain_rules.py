"""One log core, two personalities: each chain refuses what the other records, and a member countersigns
only the settlement its own replica implies, on either chain."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from fedscore.errors import ProtocolError
from fedscore.ledger import settlement
from fedscore.ledger.block import encode_entry, sign
from fedscore.ledger.cosign import append_block, settlement_entry
from fedscore.ledger.entries import Facts
from fedscore.ledger.member import LedgerMember
from fedscore.ledger.scoring_rules import ScoringFacts, ScoringRules, scoring_entry, scoring_start_entry
from fedscore.ledger.training_rules import TrainingRules
from fedscore.ledger.verify import LedgerError, verify_chain

from test_ledger import build_chain, proposal

SCORING_KEYS = {"guest": SigningKey(b"\x11" * 32), "host": SigningKey(b"\x12" * 32)}
SCORING_FEES = {"currency": "CNY", "per_step": 0, "per_overlap_row": 0, "per_request": 3}
PAIR_KEY = b"\x13" * 32


class Replica:
    """Another member's replica reached in-process, as the proposer reaches it over the wire."""

    def __init__(self, member: LedgerMember):
        self.member = member

    def propose_block(self, block):
        return self.member.sign(block)

    def commit_block(self, block):
        self.member.commit(block)

    def sign_settlement(self, body: bytes) -> bytes:
        return self.member.countersign_settlement(body)


def scoring_member(folder: Path, name: str) -> LedgerMember:
    table = {n: {"role": "card_center" if n == "guest" else "partner", "key": bytes(k.verify_key).hex()}
             for n, k in SCORING_KEYS.items()}
    role = table[name]["role"]
    facts = ScoringFacts(name, table[name]["key"], role, "job-1", table, SCORING_FEES, "ef" * 32,
                         pair_keys={"host": PAIR_KEY})
    return LedgerMember(name, SCORING_KEYS[name], folder / name / "scoring.sqlite", ScoringRules(facts))


def scoring_chain(folder: Path) -> tuple[LedgerMember, dict[str, Replica]]:
    """A model's scoring chain at its card center and one partner, started the way the card center starts it."""
    center = scoring_member(folder, "guest")
    partners = {"host": Replica(scoring_member(folder, "host"))}
    append_block(center, partners, [scoring_start_entry(center.rules.facts, "test")])
    return center, partners


def proposed_by_card_center(center: LedgerMember, entries: list[dict]):
    block = center.propose(entries)
    return block.with_signatures({"guest": sign(block, SCORING_KEYS["guest"])})


def test_a_training_chain_refuses_what_a_scoring_chain_records(tmp_path):
    training, signing_keys = build_chain(tmp_path / "training", steps=1, end=False)
    center, partners = scoring_chain(tmp_path / "scoring")
    append_block(center, partners, [settlement_entry(center, partners)])
    request = scoring_entry("0" * 32, 1, "aa" * 32, "bb", "cc" * 32, {"host": {"tag": "d" * 32, "mark": "ee" * 32}})
    recorded = [entry for block in center.store.blocks() for entry in block.decoded()]
    assert [e["kind"] for e in recorded] == ["scoring_start", "scoring_settlement"]
    for entry in [*recorded, request]:
        with pytest.raises(LedgerError, match=f"member 'bureau' refuses it: unknown entry kind {entry['kind']!r}$"):
            training["bureau"].sign(proposal(training, [entry]))
    # nor does a new training replica take a scoring chain's genesis: nobody there proposes training blocks
    fresh = LedgerMember("bureau", signing_keys["bureau"], tmp_path / "fresh.sqlite",
                         TrainingRules(Facts("bureau", bytes(signing_keys["bureau"].verify_key).hex())))
    with pytest.raises(LedgerError, match="^block 0: .*the genesis names no single coordinator"):
        fresh.sign(next(center.store.blocks()))


def test_a_scoring_chain_refuses_what_a_training_chain_records(tmp_path):
    training, _ = build_chain(tmp_path / "training", steps=1)
    recorded = training["bureau"].entries()
    assert [e["kind"] for e in recorded] == ["job_start", "alignment", "step", "job_end", "settlement"]
    center, partners = scoring_chain(tmp_path / "scoring")
    host = partners["host"].member
    for entry in recorded:
        with pytest.raises(LedgerError, match=f"member 'host' refuses it: unknown entry kind {entry['kind']!r} on a scoring chain"):
            host.sign(proposed_by_card_center(center, [entry]))
    # nor does a new scoring replica take a training chain's genesis, even signed by that job's card center
    fresh = scoring_member(tmp_path / "fresh", "host")
    with pytest.raises(LedgerError, match="^block 0: member 'host' refuses it: the first block must start the model's scoring"):
        fresh.sign(next(training["bureau"].store.blocks()))


def test_a_member_countersigns_only_the_training_settlement_its_replica_implies(tmp_path):
    members, signing_keys = build_chain(tmp_path, steps=2, settle=False)
    bureau = members["bureau"]
    honest = settlement.settlement_body(bureau.entries())
    signature = bureau.countersign_settlement(encode_entry(honest))
    assert settlement.signature_valid(honest, signature, bytes(signing_keys["bureau"].verify_key))
    inflated = {**honest, "lines": [{**honest["lines"][0], "steps": 3}]}
    for body in (encode_entry(inflated), json.dumps(honest).encode()):   # a step too many; not canonical
        with pytest.raises(ProtocolError, match=r"^party 'bureau': refuses to sign a settlement that does not follow "
                                                r"from its own replica \(fee contract, recorded steps and overlaps\)$"):
            bureau.countersign_settlement(body)
    with pytest.raises(ProtocolError, match="^party 'bureau': the settlement to sign is not JSON$"):
        bureau.countersign_settlement(b"{settle")


def test_a_member_countersigns_only_the_scoring_settlement_its_replica_implies(tmp_path):
    center, partners = scoring_chain(tmp_path)
    host = partners["host"].member
    honest = center.rules.settlement_body()
    signature = host.countersign_settlement(encode_entry(honest))
    assert settlement.signature_valid(honest, signature, bytes(SCORING_KEYS["host"].verify_key))
    line = honest["lines"][0]
    refusals = {
        encode_entry({**honest, "number": 2}): "the settlement's job, number, currency or payer is not the chain's",
        encode_entry({**honest, "lines": [{**line, "requests": 1, "amount": 3}], "total": 3}):
            "the settlement's line for 'host' does not follow from the contract and the requests since the last one",
        json.dumps(honest).encode(): "not canonical JSON",
        b"[]": "not an object",
        b"{settle": r"it is not readable \(JSONDecodeError\)",
    }
    for body, reason in refusals.items():
        with pytest.raises(ProtocolError, match=f"^party 'host': refuses to sign the scoring settlement: {reason}$"):
            host.countersign_settlement(body)


def test_one_collector_gathers_settlement_signatures_on_both_chains_and_names_a_bad_signer(tmp_path):
    members, _ = build_chain(tmp_path / "training", steps=2, settle=False)
    signers = {name: Replica(members[name]) for name in ("card_center", "bureau")}
    entry = settlement_entry(members["coordinator"], signers)   # the coordinator is neither payer nor payee
    assert sorted(entry["signatures"]) == ["bureau", "card_center"]
    append_block(members["coordinator"], signers, [entry])
    assert verify_chain(members["bureau"].store.blocks()).blocks == 6 and members["bureau"].entries()[-1] == entry

    center, partners = scoring_chain(tmp_path / "scoring")

    class Forger(Replica):
        def sign_settlement(self, body: bytes) -> bytes:
            return SigningKey(b"\x09" * 32).sign(body).signature

    with pytest.raises(ProtocolError, match="^member 'host' countersigned the settlement with a signature that does not verify$"):
        settlement_entry(center, {"host": Forger(partners["host"].member)})
    entry = settlement_entry(center, partners)   # the card center pays: it signs too
    assert sorted(entry["signatures"]) == ["guest", "host"]
    append_block(center, partners, [entry])
    assert partners["host"].member.height == 2 and partners["host"].member.rules.seen.settlements == 1
