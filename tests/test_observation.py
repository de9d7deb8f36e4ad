"""The observer's replica, in process: it keeps valid chains, refuses each forged block naming who served it,
which chain, which block and why, and records two validly signed blocks at one height as a durable alarm that
`fedscore audit verify` reports (exit 3)."""
from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from fedscore.cli import main
from fedscore.ledger.block import encode_entry, make_block, sign
from fedscore.ledger.observation import AlarmsUnreadable, BlockRefused, ObserverReplica, recorded_alarms
from fedscore.ledger.scoring_rules import scoring_entry
from fedscore.ledger.settlement import countersign, settlement_body
from fedscore.ledger.verify import verify_chain

JOB_ID = "test-job-0123abcd"
ROLES = {"coordinator": "coordinator", "guest": "card_center", "host": "partner"}
KEYS = {name: SigningKey(bytes([index + 1]) * 32) for index, name in enumerate(ROLES)}
MEMBERS = {name: {"role": role, "key": bytes(KEYS[name].verify_key).hex()} for name, role in ROLES.items()}
FEES = {"currency": "CNY", "per_step": 100, "per_overlap_row": 1, "per_request": 5}
SCORING_MEMBERS = {name: info for name, info in MEMBERS.items() if name != "coordinator"}


def signed(block, signers=KEYS):
    return block.with_signatures({name: sign(block, key) for name, key in signers.items()})


def settled(body: dict, payer: str = "guest", payees=("host",)) -> dict:
    """A settlement entry signed by its payer and payees, as members countersign it."""
    signatures = {name: countersign(KEYS[name], encode_entry(body)).hex() for name in (payer, *payees)}
    return {**body, "signatures": signatures}


def step(epoch: int, batch: int) -> dict:
    return {"kind": "step", "epoch": epoch, "batch": batch, "rows": 10, "loss": 0.5, "seconds": 0.1, "digests": {}}


def training_entries() -> list[list[dict]]:
    """A job's chain, block by block: start, alignment, three steps, end, settlement."""
    start = {"kind": "job_start", "job_id": JOB_ID, "job_name": "test-job", "job_digest": "00" * 32,
             "members": MEMBERS, "paillier_fingerprint": "11" * 32, "fees": FEES}
    blocks = [[start], [{"kind": "alignment", "aligned_rows": 10, "overlaps": {"host": 10}}],
              [step(0, 0)], [step(0, 1)], [step(1, 0)], [{"kind": "job_end", "models": {"guest": "aa", "host": "bb"}}]]
    entries = [entry for block in blocks for entry in block]
    return blocks + [[settled(settlement_body(entries))]]


def chain_of(entry_blocks: list[list[dict]], signers=KEYS) -> list:
    chain, previous = [], None
    for index, entries in enumerate(entry_blocks):
        previous = signed(make_block(previous, entries, timestamp_ns=1_700_000_000_000_000_000 + index), signers)
        chain.append(previous)
    return chain


def scoring_blocks(requests: int, billed: int) -> list[list[dict]]:
    start = {"kind": "scoring_start", "job_id": JOB_ID, "job_name": "test-job", "training_head": "22" * 32,
             "members": SCORING_MEMBERS, "fees": FEES}
    scored = [scoring_entry(f"{i:032x}", 1_700_000_000_000 + i, "33" * 32, "44" * 16, "55" * 32,
                            {"host": {"tag": f"{i + 100:032x}", "mark": "66" * 32}}) for i in range(requests)]
    body = {"kind": "scoring_settlement", "job_id": JOB_ID, "number": 1, "currency": "CNY", "payer": "guest",
            "lines": [{"payee": "host", "requests": billed, "amount": billed * FEES["per_request"]}],
            "total": billed * FEES["per_request"]}
    return [[start], scored, [settled(body)]]


@pytest.fixture
def replica(tmp_path: Path):
    opened = ObserverReplica(tmp_path / "jobs" / JOB_ID / "ledger.sqlite", JOB_ID, "training")
    yield opened
    opened.close()


def test_the_observer_keeps_a_valid_training_chain_and_a_held_block_again_is_no_news(replica):
    chain = chain_of(training_entries())
    for block in chain:
        assert replica.receive(block, "coordinator") is None
    assert replica.receive(chain[3], "host") is None   # a member behind serves what is held: no news, no alarm
    assert replica.height == len(chain) and replica.head.hash() == chain[-1].hash()
    assert verify_chain(replica.store.blocks()).head == chain[-1].hash()
    assert replica.alarms() == []


def test_a_scoring_chain_is_kept_when_its_settlement_bills_at_most_the_requests_since_the_last(tmp_path):
    scoring = ObserverReplica(tmp_path / "scoring.sqlite", JOB_ID, "scoring")
    for block in chain_of(scoring_blocks(requests=3, billed=2), {n: KEYS[n] for n in SCORING_MEMBERS}):
        scoring.receive(block, "guest")
    assert scoring.height == 3
    overbilled = chain_of(scoring_blocks(requests=3, billed=4), {n: KEYS[n] for n in SCORING_MEMBERS})
    other = ObserverReplica(tmp_path / "other.sqlite", JOB_ID, "scoring")
    other.receive(overbilled[0], "guest")
    other.receive(overbilled[1], "guest")
    with pytest.raises(BlockRefused, match=r"block 2: scoring chain of job .*, served by 'guest': .*bills 'host' for 4 "
                                           r"requests, but the chain records only 3"):
        other.receive(overbilled[2], "guest")
    assert other.height == 2


def _wrong_settlement(chain):
    """A settlement that pays more than the chain implies, signed by everyone all the same."""
    blocks = training_entries()
    body = {k: v for k, v in blocks[-1][0].items() if k != "signatures"}
    body["lines"] = [{**body["lines"][0], "amount": body["lines"][0]["amount"] + 1}]
    body["total"] += 1
    return signed(make_block(chain[-2], [settled(body)], timestamp_ns=chain[-1].timestamp_ns))


FORGERIES = {
    "bad signature": (lambda chain: chain[2].with_signatures({**chain[2].signatures, "host": b"\1" * 64}),
                      "the signature of member 'host' does not verify"),
    "signature of a stranger": (lambda chain: signed(chain[2], {**KEYS, "host": SigningKey(bytes([9]) * 32)}),
                                "the signature of member 'host' does not verify"),
    "missing signature": (lambda chain: chain[2].with_signatures({k: v for k, v in chain[2].signatures.items() if k != "guest"}),
                          "no signature from member 'guest'"),
    "wrong Merkle root": (lambda chain: signed(replace(chain[2], merkle_root=bytes(32))),
                          "Merkle root does not match its entries"),
    "wrong previous hash": (lambda chain: signed(replace(chain[2], previous=bytes(32))),
                            "previous-block hash does not match the block before it"),
    "a gap": (lambda chain: chain[3], "height 3 where 2 was expected"),
    "settlement that does not follow": (_wrong_settlement, "the settlement does not follow from the fee contract"),
}


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_forged_block_is_refused_naming_the_member_chain_height_and_why(replica, forgery):
    chain = chain_of(training_entries())
    forge, reason = FORGERIES[forgery]
    bad = forge(chain)
    held = len(chain) - 1 if forgery == "settlement that does not follow" else 2
    for block in chain[:held]:
        replica.receive(block, "coordinator")
    with pytest.raises(BlockRefused) as refused:
        replica.receive(bad, "host")
    assert str(refused.value).startswith(f"block {bad.height}: training chain of job {JOB_ID}, served by 'host': ")
    assert reason in str(refused.value)
    assert replica.height == held and replica.alarms() == []   # nothing kept, and a forgery is no equivocation


def test_two_validly_signed_blocks_at_one_height_raise_a_durable_alarm_that_audit_verify_reports(tmp_path, capsys):
    path = tmp_path / "state" / "jobs" / JOB_ID / "ledger.sqlite"
    replica = ObserverReplica(path, JOB_ID, "training")
    chain = chain_of(training_entries())
    for block in chain[:4]:
        replica.receive(block, "host")
    assert main(["audit", "verify", str(path)]) == 0
    # what a coordinator that got two versions of block 3 signed (a resumed job) could commit to another member
    other = signed(make_block(chain[2], [step(0, 1), step(0, 2)], timestamp_ns=chain[3].timestamp_ns))
    forged = other.with_signatures({**other.signatures, "guest": b"\2" * 64})
    with pytest.raises(BlockRefused, match="differs from the block held at this height, and the signature of member 'guest'"):
        replica.receive(forged, "guest")   # differing, but not signed by every member: a forgery, no alarm
    assert replica.alarms() == []
    alarm = replica.receive(other, "guest")
    assert alarm is not None and (alarm.height, alarm.held, alarm.held_from, alarm.other, alarm.other_from) == (
        3, chain[3].hash(), "host", other.hash(), "guest")
    assert replica.height == 4 and replica.head.hash() == chain[3].hash()   # the first version is kept
    replica.close()

    reopened = ObserverReplica(path, JOB_ID, "training")   # durable: the alarm survives a restart
    assert reopened.alarms() == [alarm]
    reopened.close()
    assert recorded_alarms(path, JOB_ID, "training") == [alarm]
    capsys.readouterr()
    for target in (path, tmp_path / "state"):   # the replica file, or the observer's whole state folder
        assert main(["audit", "verify", str(target)]) == 3
        error = capsys.readouterr().err
        assert "EQUIVOCATION on the training chain" in error and "at block 3" in error
        assert chain[3].hash().hex()[:16] in error and other.hash().hex()[:16] in error and "'guest'" in error


def test_a_page_is_kept_up_to_a_refused_block_and_the_chain_goes_on_from_there(replica):
    """The blocks before a refused one in a page are kept; what the refused block's good entries added to the
    replica's state is forgotten (else the settlement, recomputed from it, would count a step twice)."""
    chain = chain_of(training_entries())
    bad = signed(make_block(chain[1], [step(0, 0), {"kind": "bogus"}], timestamp_ns=chain[2].timestamp_ns))
    with pytest.raises(BlockRefused, match=r"block 2: .*entry 1: unknown entry kind 'bogus'"):
        replica.receive_all([*chain[:2], bad, *chain[3:]], "host")
    assert replica.height == 2
    assert replica.receive_all(chain, "coordinator") is None   # the held two are no news; the rest, settlement too, kept
    assert replica.height == len(chain) and replica.head.hash() == chain[-1].hash()


def test_a_genesis_without_a_readable_fee_contract_is_refused(replica):
    start = {**training_entries()[0][0], "fees": {**FEES, "per_step": "a lot"}}
    with pytest.raises(BlockRefused, match=r"block 0: .*served by 'coordinator': entry 0: the genesis entry's fees: "
                                           r"per_step must be a whole, non-negative number"):
        replica.receive(chain_of([[start]])[0], "coordinator")
    assert replica.height == 0


def _fake_genesis(job_id: str = JOB_ID):
    """A genesis of ``job_id`` that 'evil' made up: members and keys of its own (itself among them), signed by them."""
    keys = {"evil": SigningKey(bytes([7]) * 32), "guest": SigningKey(bytes([8]) * 32)}
    members = {"evil": {"role": "coordinator", "key": bytes(keys["evil"].verify_key).hex()},
               "guest": {"role": "card_center", "key": bytes(keys["guest"].verify_key).hex()}}
    start = {**training_entries()[0][0], "job_id": job_id, "members": members}
    return chain_of([[start]], keys)[0]


def test_a_genesis_made_up_by_another_member_set_is_another_chain_never_an_alarm(replica):
    chain = chain_of(training_entries())
    for block in chain[:3]:
        replica.receive(block, "host")
    fake = _fake_genesis()
    with pytest.raises(BlockRefused, match=r"block 0: .*served by 'evil': 'evil' is not a member in the genesis"):
        replica.receive(fake, "evil")
    # even served by a member of the held genesis, a genesis naming other members or keys is another chain
    with pytest.raises(BlockRefused, match=r"block 0: .*served by 'guest': another chain: its genesis names another "
                                           r"job, or other members"):
        replica.receive(fake, "guest")
    other_job = chain_of([[{**training_entries()[0][0], "job_id": "other-job-0123abcd"}]])[0]   # same members, signed
    with pytest.raises(BlockRefused, match=r"block 0: .*served by 'guest': another chain: its genesis names another "
                                           r"job"):
        replica.receive(other_job, "guest")
    assert replica.alarms() == [] and replica.height == 3 and replica.head.hash() == chain[2].hash()
    with pytest.raises(BlockRefused, match=r"block 3: .*served by 'evil': 'evil' is not a member in the genesis"):
        replica.receive(chain[3], "evil")   # a chain is read only from its own members, even its valid blocks


def test_the_first_genesis_must_be_of_the_replicas_job_and_served_by_one_of_its_members(tmp_path):
    fresh = ObserverReplica(tmp_path / "ledger.sqlite", JOB_ID, "training")
    genesis = chain_of(training_entries())[0]
    with pytest.raises(BlockRefused, match=r"block 0: .*served by 'evil': its genesis does not name 'evil' as a member"):
        fresh.receive(genesis, "evil")
    with pytest.raises(BlockRefused, match=r"its genesis is of job 'other-job-0123abcd', not of job " + JOB_ID):
        fresh.receive(_fake_genesis("other-job-0123abcd"), "evil")
    assert fresh.height == 0
    assert fresh.receive(genesis, "host") is None and fresh.height == 1
    fresh.close()


def test_a_second_genesis_of_the_same_members_signed_by_them_all_is_an_equivocation(replica):
    chain = chain_of(training_entries())
    replica.receive(chain[0], "host")
    other = chain_of([[{**training_entries()[0][0], "job_digest": "77" * 32}]])[0]
    alarm = replica.receive(other, "guest")
    assert alarm is not None and (alarm.height, alarm.held, alarm.other) == (0, chain[0].hash(), other.hash())


def test_a_refusal_at_a_held_height_does_not_read_the_chain_again(replica, monkeypatch):
    chain = chain_of(training_entries())
    replica.receive_all(chain[:4], "host")
    reads = []
    monkeypatch.setattr(replica, "_load", lambda: reads.append(1))
    with pytest.raises(BlockRefused, match="differs from the block held"):
        other = signed(make_block(chain[1], [step(0, 1)], timestamp_ns=chain[2].timestamp_ns))
        replica.receive(other.with_signatures({**other.signatures, "guest": b"\2" * 64}), "guest")
    assert reads == []


def test_alarms_a_locked_replica_hides_are_an_error_not_none(tmp_path, monkeypatch):
    path = tmp_path / "ledger.sqlite"
    opened = ObserverReplica(path, JOB_ID, "training")
    opened.receive(chain_of(training_entries())[0], "host")
    opened.close()
    monkeypatch.setattr("fedscore.ledger.observation.BUSY_SECONDS", 0.05)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(AlarmsUnreadable, match="cannot read its alarms: database is locked") as error:
            recorded_alarms(path, JOB_ID, "training")
        assert error.value.exit_code == 2
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert recorded_alarms(path, JOB_ID, "training") == []
    plain = sqlite3.connect(tmp_path / "member.sqlite")   # a member's replica: no alarm table, so no alarm
    plain.execute("CREATE TABLE blocks (height INTEGER)")
    plain.close()
    assert recorded_alarms(tmp_path / "member.sqlite") == []


def test_an_observer_reads_and_keeps_an_audience_chain_and_refuses_a_settlement_the_payee_did_not_sign(tmp_path):
    """A card center and a partner's audience chain is listed by its own id (Replica service), kept on its two
    members' signatures; an audience settlement must carry the payer's and the payee's own signatures too."""
    import shutil

    from fedscore.daemons.chain_reads import ChainReads
    from fedscore.ledger.block import decode_entry
    from fedscore.ledger.cosign import settlement_entry
    from fedscore.proto import fedscore_pb2 as pb
    from fedscore.transport import codec

    from test_audience_chain import KEYS as PAIR, Chain, conversion

    pair = Chain(tmp_path / "pair").start()
    model = pair.model()
    query = pair.query()
    pair.record(model, query)
    campaign = pair.campaign(query)
    pair.record(campaign, conversion(campaign))
    pair.record(settlement_entry(pair.center, pair.partners))
    chain_id = pair.center.rules.facts.chain_id
    state = tmp_path / "bank-state"   # the card center's state: its chain with shop at audience/shop/audience.sqlite
    (state / "audience" / "shop").mkdir(parents=True)
    shutil.copy(pair.center.path, state / "audience" / "shop" / "audience.sqlite")
    reads = ChainReads(state, "party 'bank'")
    assert [(h.job_id, h.chain, h.blocks) for h in reads.list_chains().chains] == [(chain_id, "audience", 4)]
    request = pb.ChainBlocksRequest(job_id=chain_id, chain="audience")
    blocks = [codec.block_from_proto(b) for b in reads.chain_blocks(request)]
    replica = ObserverReplica(tmp_path / "observer.sqlite", chain_id, "audience")
    assert replica.receive_all(blocks[:3], "bank") is None and replica.height == 3

    body = {k: v for k, v in decode_entry(blocks[3].entries[0]).items() if k != "signatures"}
    unsigned = {**body, "signatures": {"bank": countersign(PAIR["bank"], encode_entry(body)).hex()}}   # no payee's
    forged = make_block(blocks[2], [unsigned])
    forged = forged.with_signatures({name: sign(forged, key) for name, key in PAIR.items()})
    with pytest.raises(BlockRefused, match="lacks a valid signature from 'shop'"):
        replica.receive(forged, "bank")
    assert replica.receive(blocks[3], "shop") is None and replica.height == 4
