"""The audit chain: every kind of tampering makes verification fail and names the block."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from fedscore.errors import FedscoreError
from fedscore.ledger import merkle
from fedscore.ledger.block import make_block, sign
from fedscore.ledger.entries import Facts
from fedscore.ledger.member import LedgerMember
from fedscore.ledger.training_rules import TrainingRules
from fedscore.ledger.proofs import check_proof, prove
from fedscore.ledger.settlement import balances, settlement_body, settlement_message
from fedscore.ledger.store import LedgerStore
from fedscore.ledger.verify import LedgerError, verify_chain

MEMBERS = {"coordinator": "coordinator", "card_center": "card_center", "bureau": "partner"}
FEES = {"currency": "CNY", "per_step": 50, "per_overlap_row": 2}


def keys():
    return {name: SigningKey(bytes([i + 1]) * 32) for i, name in enumerate(MEMBERS)}


def job_start(signing_keys) -> dict:
    return {
        "kind": "job_start", "job_id": "job-1", "job_name": "test", "job_digest": "ab" * 32,
        "paillier_fingerprint": "cd" * 32, "fees": FEES,
        "members": {n: {"role": MEMBERS[n], "key": bytes(k.verify_key).hex()} for n, k in signing_keys.items()},
    }


def proposal(members: dict[str, LedgerMember], entries: list[dict]):
    """A block as the coordinator proposes it: carrying its signature (without its own checks, to test the others')."""
    block = members["coordinator"].propose(entries)
    return block.with_signatures({"coordinator": sign(block, members["coordinator"].key)})


def build_chain(folder: Path, steps: int = 4, settle: bool = True, end: bool = True) -> tuple[dict[str, LedgerMember], dict]:
    """A finished job's chain replicated at three members, built the way the coordinator builds it."""
    signing_keys = keys()
    members = {
        name: LedgerMember(
            name, key, folder / name / "ledger.sqlite",
            TrainingRules(Facts(name, bytes(key.verify_key).hex(), role=MEMBERS[name], members=frozenset(MEMBERS))),
        )
        for name, key in signing_keys.items()
    }

    def append(entries):
        block = proposal(members, entries)
        signed = block.with_signatures({name: m.sign(block) for name, m in members.items()})
        for m in members.values():
            m.commit(signed)

    append([job_start(signing_keys)])
    append([{"kind": "alignment", "aligned_rows": 900, "overlaps": {"bureau": 950}}])
    for step in range(steps):
        for m in members.values():  # every member took part in the step and kept its digests
            m.rules.facts.digests[f"{step}/0"] = {"partial/bureau": f"{step:064x}"}
        append([{"kind": "step", "epoch": step, "batch": 0, "rows": 900, "loss": 0.6 - step / 100,
                 "seconds": 1.5, "digests": {"partial/bureau": f"{step:064x}"}}])
    if not end:
        return members, signing_keys
    append([{"kind": "job_end", "models": {"card_center": "11" * 32, "bureau": "22" * 32}}])
    if not settle:
        return members, signing_keys
    body = settlement_body(members["card_center"].entries())
    signed_body = {**body, "signatures": {n: signing_keys[n].sign(settlement_message(body)).signature.hex()
                                          for n in ("card_center", "bureau")}}
    append([signed_body])
    return members, signing_keys


@pytest.fixture
def chain(tmp_path):
    members, signing_keys = build_chain(tmp_path)
    path = members["bureau"].path
    for m in members.values():
        m.close()
    return path, signing_keys


def blocks_of(path: Path):
    store = LedgerStore(path)
    try:
        return list(store.blocks())
    finally:
        store.close()


def sql(path: Path, statement: str, *args) -> None:
    db = sqlite3.connect(path)
    db.execute(statement, args)
    db.commit()
    db.close()


def test_replicas_agree_and_verify(tmp_path):
    members, _ = build_chain(tmp_path)
    heads = {name: verify_chain(m.store.blocks()) for name, m in members.items()}
    assert {s.head for s in heads.values()} == {members["bureau"].head.hash()}
    summary = heads["bureau"]
    assert (summary.blocks, summary.entries) == (8, 8)
    assert summary.line().startswith("ok: 8 blocks, 8 entries, head ")


def test_settlement_follows_the_contract_and_balances_add_up(tmp_path):
    members, _ = build_chain(tmp_path, steps=4)
    entries = members["bureau"].entries()
    settlement = entries[-1]
    assert settlement["lines"] == [{"payee": "bureau", "steps": 4, "overlap_rows": 950, "amount": 4 * 50 + 950 * 2}]
    assert balances(entries) == {"card_center": {"owes": 2100, "owed": 0}, "bureau": {"owes": 0, "owed": 2100}}


def test_members_refuse_what_they_did_not_see(tmp_path):
    members, _ = build_chain(tmp_path, steps=1, end=False)
    bureau = members["bureau"]
    bureau.rules.facts.record(1, 0, "residual/bureau", b"what the bureau really received")
    block = proposal(members,
        [{"kind": "step", "epoch": 1, "batch": 0, "rows": 900, "loss": 0.5, "seconds": 1.0,
          "digests": {"residual/bureau": "00" * 32}}]
    )
    with pytest.raises(LedgerError, match=r"block 3: member 'bureau' refuses it: digest of residual/bureau in step 1/0 differs"):
        bureau.sign(block)
    forked = make_block(list(members["coordinator"].store.blocks())[1], [{"kind": "step", "epoch": 9, "batch": 0, "digests": {}}])
    forked = forked.with_signatures({"coordinator": sign(forked, members["coordinator"].key)})
    with pytest.raises(LedgerError, match=r"block 2: member 'bureau' refuses it: it already signed another block"):
        bureau.sign(forked)
    unsigned = proposal(members, [{"kind": "job_end", "models": {}}])
    with pytest.raises(LedgerError, match="refuses to commit it: no signature from member 'bureau'"):
        bureau.commit(unsigned)
    # nobody but the proposer can put a block before a member, and no block may be empty
    stranger = proposal(members, [{"kind": "job_end", "models": {}}])
    with pytest.raises(LedgerError, match="not signed by the proposer 'coordinator'"):
        bureau.sign(stranger.with_signatures({"card_center": sign(stranger, members["card_center"].key)}))
    with pytest.raises(LedgerError, match="a block must hold entries"):
        bureau.sign(proposal(members, []))


def test_members_refuse_padded_or_duplicate_steps_and_missing_ones(tmp_path):
    signing_keys = keys()
    members = {
        name: LedgerMember(name, key, tmp_path / name / "l.sqlite",
                           TrainingRules(Facts(name, bytes(key.verify_key).hex(), role=MEMBERS[name], members=frozenset(MEMBERS))))
        for name, key in signing_keys.items()
    }
    block = proposal(members, [job_start(signing_keys)])
    signed = block.with_signatures({n: m.sign(block) for n, m in members.items()})
    for m in members.values():
        m.commit(signed)
    bureau = members["bureau"]
    bureau.rules.facts.digests["0/0"] = {"partial/bureau": "aa" * 32}
    never = proposal(members, [{"kind": "step", "epoch": 7, "batch": 0, "digests": {}}])
    with pytest.raises(LedgerError, match="step 7/0 never happened here"):
        bureau.sign(never)
    real = {"kind": "step", "epoch": 0, "batch": 0, "digests": {"partial/bureau": "aa" * 32}}
    twice = proposal(members, [real, real])
    with pytest.raises(LedgerError, match="step 0/0 is already on the chain"):
        bureau.sign(twice)
    bureau.rules.facts.digests["1/0"] = {}
    missing = proposal(members, [real, {"kind": "job_end", "models": {}}])
    with pytest.raises(LedgerError, match="steps on the chain are not the steps this member took part in"):
        bureau.sign(missing)


def test_a_forged_genesis_is_not_committed(tmp_path):
    signing_keys = keys()
    bureau = LedgerMember("bureau", signing_keys["bureau"], tmp_path / "b.sqlite",
                          TrainingRules(Facts("bureau", bytes(signing_keys["bureau"].verify_key).hex(), role="partner",
                                              members=frozenset(MEMBERS))))
    mallory = SigningKey(b"\x07" * 32)
    forged = make_block(None, [{"kind": "job_start", "job_id": "x", "fees": FEES,
                                "members": {"mallory": {"role": "card_center", "key": bytes(mallory.verify_key).hex()}}}])
    with pytest.raises(LedgerError, match="refuses to commit it: the genesis does not list its key"):
        bureau.commit(forged.with_signatures({"mallory": sign(forged, mallory)}))
    with pytest.raises(LedgerError, match="the genesis names no single coordinator"):
        bureau.sign(forged)
    wrong_role = job_start(signing_keys)
    wrong_role["members"]["bureau"]["role"] = "card_center"
    block = make_block(None, [wrong_role])
    with pytest.raises(LedgerError, match="gives 'bureau' the role 'card_center', not 'partner'"):
        bureau.sign(block.with_signatures({"coordinator": sign(block, signing_keys["coordinator"])}))


def test_a_wrong_settlement_is_refused(tmp_path):
    members, signing_keys = build_chain(tmp_path, steps=2, settle=False)
    body = settlement_body(members["bureau"].entries())
    body["lines"] = [{**body["lines"][0], "amount": body["lines"][0]["amount"] + 1}]
    body["total"] += 1
    entry = {**body, "signatures": {n: signing_keys[n].sign(settlement_message(body)).signature.hex() for n in ("card_center", "bureau")}}
    with pytest.raises(LedgerError, match="settlement does not follow from the fee contract"):
        members["bureau"].sign(proposal(members, [entry]))
    honest = settlement_body(members["bureau"].entries())
    unsigned = {**honest, "signatures": {"card_center": signing_keys["card_center"].sign(settlement_message(honest)).signature.hex()}}
    with pytest.raises(LedgerError, match="lacks a valid signature from 'bureau'"):
        members["bureau"].sign(proposal(members, [unsigned]))


def test_nothing_follows_a_settlement(tmp_path):
    members, signing_keys = build_chain(tmp_path, steps=2)
    body = {**members["bureau"].entries()[-1]}
    body.pop("signatures")
    body["lines"] = [{**body["lines"][0], "amount": body["lines"][0]["amount"] + 1}]
    body["total"] += 1
    entry = {**body, "signatures": {n: signing_keys[n].sign(settlement_message(body)).signature.hex() for n in ("card_center", "bureau")}}
    with pytest.raises(LedgerError, match="already settled; nothing may follow"):
        members["bureau"].sign(proposal(members, [entry]))
    again = members["bureau"].entries()[-1]
    with pytest.raises(LedgerError, match="already settled"):
        members["bureau"].sign(proposal(members, [again]))
    assert balances(members["bureau"].entries() + [again]) == balances(members["bureau"].entries())


@pytest.mark.parametrize(
    "tamper, height, reason",
    [
        ("UPDATE entries SET body = CAST(REPLACE(CAST(body AS TEXT), '0.58', '0.57') AS BLOB) WHERE height = 4",
         4, "Merkle root does not match"),
        ("UPDATE blocks SET merkle_root = zeroblob(32) WHERE height = 3", 3, "Merkle root does not match"),
        ("UPDATE blocks SET previous = zeroblob(32) WHERE height = 5", 5, "previous-block hash"),
        ("UPDATE blocks SET timestamp_ns = timestamp_ns + 1 WHERE height = 2", 2, "signature of member"),
        ("UPDATE signatures SET signature = zeroblob(64) WHERE height = 6 AND member = 'bureau'", 6,
         "signature of member 'bureau' does not verify"),
        ("DELETE FROM signatures WHERE height = 1 AND member = 'card_center'", 1, "no signature from member 'card_center'"),
        ("DELETE FROM blocks WHERE height = 3", 4, "height 4 where 3 was expected"),
    ],
)
def test_tampering_is_found_and_named(chain, tamper, height, reason):
    path, _ = chain
    verify_chain(blocks_of(path))
    sql(path, tamper)
    with pytest.raises(LedgerError, match=f"^block {height}: .*{reason}"):
        verify_chain(blocks_of(path))


def test_reordered_blocks_are_found(chain):
    path, _ = chain
    sql(path, "UPDATE blocks SET height = -1 WHERE height = 3")
    sql(path, "UPDATE blocks SET height = 3 WHERE height = 4")
    sql(path, "UPDATE blocks SET height = 4 WHERE height = -1")
    with pytest.raises(LedgerError, match="^block 3: "):
        verify_chain(blocks_of(path))


def test_a_block_re_signed_by_an_outsider_is_refused(chain):
    path, signing_keys = chain
    blocks = blocks_of(path)
    intruder = SigningKey(b"\x09" * 32)
    changed = make_block(blocks[5], [{"kind": "job_end", "models": {"bureau": "ee" * 32}}], blocks[6].timestamp_ns)
    forged = changed.with_signatures({**{n: sign(changed, intruder) for n in ("coordinator", "card_center")},
                                      "bureau": sign(changed, signing_keys["bureau"])})
    with pytest.raises(LedgerError, match="^block 6: the signature of member 'card_center' does not verify"):
        verify_chain(blocks[:6] + [forged])
    with pytest.raises(LedgerError, match="^block 6: signed by 'mallory'"):
        verify_chain(blocks[:6] + [forged.with_signatures({**blocks[6].signatures, "mallory": sign(changed, intruder)})])


def test_a_block_appended_to_one_replica_only_is_found(chain):
    path, signing_keys = chain
    store = LedgerStore(path)
    head = list(store.blocks())[-1]
    extra = make_block(head, [{"kind": "step", "epoch": 99, "batch": 0, "digests": {}}])
    store.append(extra.with_signatures({"bureau": sign(extra, signing_keys["bureau"])}))
    store.close()
    with pytest.raises(LedgerError, match="^block 8: no signature from member 'card_center'"):
        verify_chain(blocks_of(path))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_single_byte_corruption_of_stored_content_is_found(chain, data):
    path, _ = chain
    db = sqlite3.connect(path)
    cells = (
        [("blocks", c, h) for h in range(8) for c in ("previous", "merkle_root")]
        + [("blocks", "timestamp_ns", h) for h in range(8)]
        + [("entries", "body", h) for h in range(8)]
        + [("signatures", "signature", h) for h in range(8)]
    )
    table, column, height = data.draw(st.sampled_from(cells))
    rowid, value = db.execute(f"SELECT rowid, {column} FROM {table} WHERE height = ? LIMIT 1", (height,)).fetchone()
    if isinstance(value, int):
        bit = data.draw(st.integers(0, 62))
        corrupted = value ^ (1 << bit)
    else:
        raw = bytearray(value)
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] ^= data.draw(st.integers(1, 255))
        corrupted = bytes(raw)
    db.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (corrupted, rowid))
    db.commit()
    try:
        with pytest.raises(LedgerError, match=f"^block {height}: "):
            verify_chain(blocks_of(path))
    finally:
        db.execute(f"UPDATE {table} SET {column} = ? WHERE rowid = ?", (value, rowid))
        db.commit()
        db.close()


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13])
def test_merkle_inclusion_paths(size):
    entries = [f"entry {i}".encode() for i in range(size)]
    root = merkle.root(entries)
    for index in range(size):
        path = merkle.inclusion_path(entries, index)
        assert merkle.root_from_path(entries[index], index, size, path) == root
        assert merkle.root_from_path(b"forged", index, size, path) != root
    if size > 1:
        assert merkle.root_from_path(entries[0], 0, size, merkle.inclusion_path(entries, 0)[:-1]) != root


def test_inclusion_proof_checks_offline_and_tampered_proofs_fail(chain):
    path, _ = chain
    blocks = blocks_of(path)
    proof = json.loads(json.dumps(prove(blocks, 7, 0)))
    assert check_proof(proof).startswith("ok: entry 0 is in block 7")
    assert json.loads(proof["entry"])["kind"] == "settlement"
    for field, value in [("entry", proof["entry"].replace("2100", "2101")), ("index", 1)]:
        with pytest.raises(FedscoreError):
            check_proof({**proof, field: value})
    with pytest.raises(FedscoreError, match="lacks a valid signature from member 'bureau'"):
        check_proof({**proof, "signatures": {**proof["signatures"], "bureau": proof["signatures"]["coordinator"]}})
    forged_members = json.loads(proof["genesis"]["entry"])
    forged_members["members"] = {}
    with pytest.raises(FedscoreError):
        check_proof({**proof, "genesis": {**proof["genesis"], "entry": json.dumps(forged_members)}})
    with pytest.raises(FedscoreError, match="not a readable inclusion proof"):
        check_proof({**proof, "block": {**proof["block"], "height": "seven"}})
    with pytest.raises(FedscoreError, match="genesis"):
        check_proof({**proof, "genesis_hash": "00" * 32})
