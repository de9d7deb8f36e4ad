"""The audience chain between a card center and one partner: each rule broken once, and the member who
refuses it says why; a correct chain settles with both signatures, verifies and balances."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from fedscore.errors import ConfigError, PeerError, ProtocolError
from fedscore.job import JOB_ID_PATTERN
from fedscore.job_file import load_job
from fedscore.ledger import settlement
from fedscore.ledger.audience_rules import (
    DAY_MS, MAX_CLOCK_SKEW_MS, AudienceFacts, AudienceRules, audience_chain_id, audience_model_entry,
    audience_query_entry, audience_start_entry, campaign_entry, conversion_entry, entry_digest, entry_id,
    new_conversion_id,
)
from fedscore.ledger.block import encode_entry, sign
from fedscore.ledger.cosign import append_block, settlement_entry
from fedscore.ledger.member import LedgerMember
from fedscore.ledger.settlement import FeeContract, balances
from fedscore.ledger.verify import LedgerError, verify_chain
from fedscore.transport.codec import spec_from_proto, spec_to_proto

from conftest import write_job
from test_chain_rules import Replica   # the partner's replica reached in-process, as the card center reaches it

KEYS = {"bank": SigningKey(b"\x21" * 32), "shop": SigningKey(b"\x22" * 32)}
ROLES = {"bank": "card_center", "shop": "partner"}
FEES = FeeContract(per_query=500, per_audience_member=2, per_conversion=300).to_dict()
POLICY = {"segments": ["category", "region"], "min_cell": 10, "budget": 1.0, "window_days": 30,
          "max_epsilon": 0.5, "max_segments": 2, "min_epsilon": 0.1, "min_points_gap": 10.0}
MODEL = hashlib.sha256(b"the assembled audience model").hexdigest()


class Chain:
    """An audience chain at the card center ``bank`` (the proposer) and the partner ``shop``."""

    def __init__(self, folder: Path, policy: dict = POLICY, partner_policy: dict | None = None):
        self.center = self._member(folder, "bank", policy)
        self.shop = self._member(folder, "shop", partner_policy or policy)
        self.partners = {"shop": Replica(self.shop)}

    @staticmethod
    def _member(folder: Path, name: str, policy: dict) -> LedgerMember:
        members = {n: {"role": ROLES[n], "key": bytes(k.verify_key).hex()} for n, k in KEYS.items()}
        policy = {**policy, "segments": tuple(policy["segments"])}   # as a frozen policy's to_dict may give them
        facts = AudienceFacts(name, ROLES[name], audience_chain_id("bank", "shop"), "bank", "shop", members, FEES,
                              policy)
        return LedgerMember(name, KEYS[name], folder / name / "audience.sqlite", AudienceRules(facts))

    def start(self) -> "Chain":
        append_block(self.center, self.partners, [audience_start_entry(self.center.rules.facts)])
        return self

    def made(self, *entries: dict) -> list[dict]:
        """Entries the card center made: it will sign these, and only these."""
        for entry in entries:
            if entry["kind"] != "audience_settlement":   # a settlement is checked against the chain, not sent
                self.center.rules.facts.sent[entry_id(entry)] = entry_digest(entry)
        return list(entries)

    def record(self, *entries: dict) -> None:
        append_block(self.center, self.partners, self.made(*entries))

    def refused_by_shop(self, entries: list[dict], reason: str) -> None:
        """The card center made and signed the block; the partner refuses it, saying ``reason``."""
        block = self.center.propose(self.made(*entries))
        block = block.with_signatures({"bank": sign(block, KEYS["bank"])})
        with pytest.raises(LedgerError, match=f"member 'shop' refuses it: .*{reason}"):
            self.shop.sign(block)
        assert self.shop.height == self.center.height   # nothing recorded

    def model(self, digest: str = MODEL, held: bool = True) -> dict:
        if held:
            self.shop.rules.facts.models.add(digest)
        return audience_model_entry("ad-model-0123abcd", "ab" * 32, "cd" * 32, digest, now_ms())

    def query(self, epsilon: float = 0.25, time_ms: int | None = None, answered: bool = True,
              segments: tuple[str, ...] = ("category",), spent: float | None = None, model: str = MODEL,
              min_points: float = 620, unseen_only: bool = True, total: int = 2480) -> dict:
        """A query the partner answered (``answered``), stating the ε spent the chain implies unless ``spent``."""
        time_ms = now_ms() if time_ms is None else time_ms
        query_id = "q" + hashlib.sha256(f"{time.perf_counter_ns()}".encode()).hexdigest()[:31]
        query = {"query_id": query_id, "model": model, "min_points": min_points, "segments": list(segments),
                 "epsilon": epsilon, "unseen_only": unseen_only}
        answer = hashlib.sha256(f"answer {query_id}".encode()).hexdigest()
        if answered:
            self.shop.rules.facts.answered[query_id] = answer
        implied = self.center.rules.query_spent(time_ms, epsilon)
        return audience_query_entry(query, answer, implied if spent is None else spent, time_ms, total)

    def campaign(self, query: dict, members: int | None = None, made: bool = True) -> dict:
        """A campaign of ``query`` billing ``members`` (its answer's total unless given)."""
        campaign_id = "c" + hashlib.sha256(query["query"]["query_id"].encode()).hexdigest()[:31]
        if made:
            self.shop.rules.facts.answered[campaign_id] = query["query"]["query_id"]
        members = query["total"] if members is None else members
        return campaign_entry(campaign_id, query["query"]["query_id"], members, now_ms())


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def conversion(campaign: dict, conversion_id: str | None = None) -> dict:
    applicant = hashlib.sha256(f"salted applicant {time.perf_counter_ns()}".encode()).hexdigest()
    return conversion_entry(conversion_id or new_conversion_id(), campaign["campaign_id"], applicant, now_ms())


@pytest.fixture
def chain(tmp_path) -> Chain:
    return Chain(tmp_path).start()


def test_a_correct_chain_is_signed_by_both_settles_verifies_and_balances(chain):
    assert JOB_ID_PATTERN.fullmatch(chain.center.rules.facts.chain_id)
    assert audience_chain_id("bank", "shop") != audience_chain_id("shop", "bank")
    model = chain.model()   # made first: an entry dated before the one it follows is refused as back-dated
    first = chain.query(0.25)
    chain.record(model, first)
    second = chain.query(0.5)
    assert second["spent"] == 0.75   # this query's ε and the earlier one's, in the window
    chain.record(second)
    campaign = chain.campaign(second, members=2480)
    chain.record(campaign, conversion(campaign), conversion(campaign))
    for member in (chain.center, chain.shop):
        assert member.rules.seen.unsettled == {"queries": 2, "audience_members": 2480, "conversions": 2}
        assert member.rules.seen.spent(now_ms(), 30) == 0.75
    assert not chain.center.rules.facts.sent and not chain.shop.rules.facts.answered   # on the chain: forgotten

    entry = settlement_entry(chain.center, chain.partners)
    assert sorted(entry["signatures"]) == ["bank", "shop"]
    amount = 2 * 500 + 2480 * 2 + 2 * 300
    assert entry["lines"] == [{"payee": "shop", "queries": 2, "audience_members": 2480, "conversions": 2,
                               "amount": amount}]
    assert entry["total"] == amount and entry["number"] == 1 and entry["payer"] == "bank"
    chain.record(entry)
    for member in (chain.center, chain.shop):
        summary = verify_chain(member.store.blocks())
        assert summary.blocks == 5 and summary.members == {n: bytes(k.verify_key) for n, k in KEYS.items()}
        recorded = [e for block in member.store.blocks() for e in block.decoded()]
        assert balances(recorded) == {"bank": {"owes": amount, "owed": 0}, "shop": {"owes": 0, "owed": amount}}
        assert balances(recorded + [recorded[-1]]) == balances(recorded)   # a settlement counts once
    # the next settlement starts from nothing, and is number 2
    assert chain.center.rules.settlement_body()["lines"][0]["amount"] == 0
    assert chain.center.rules.settlement_body()["number"] == 2


def test_the_partner_refuses_a_model_it_does_not_hold(chain):
    chain.refused_by_shop([chain.model("ee" * 32, held=False)], f"model {'ee' * 32} is not one 'shop' holds")
    chain.record(chain.model())
    chain.refused_by_shop([chain.model()], f"model {MODEL} is already on the chain")


def test_the_partner_refuses_a_query_it_did_not_answer_or_whose_answer_was_altered(chain):
    chain.record(chain.model())
    unanswered = chain.query(answered=False)
    ident = unanswered["query"]["query_id"]
    chain.refused_by_shop([unanswered], f"query {ident} is not one 'shop' answered with that answer")
    altered = chain.query()
    altered = {**altered, "answer_digest": "00" * 32}
    chain.refused_by_shop([altered], "is not one 'shop' answered with that answer")
    # the partner that kept the query it answered refuses another query under the same id
    honest = chain.query()
    ident = honest["query"]["query_id"]
    chain.shop.rules.facts.asked[ident] = entry_digest(honest["query"])
    lowered = {**honest, "query": {**honest["query"], "min_points": 400}}
    chain.refused_by_shop([lowered], f"query {ident} is not the query 'shop' answered")
    chain.record(honest)


def test_a_query_on_a_model_not_on_the_chain_or_a_segment_not_exposed_is_refused(chain):
    chain.refused_by_shop([chain.query()], f"names model {MODEL}, which is not on the chain")
    chain.record(chain.model())
    chain.refused_by_shop([chain.query(segments=("income",))],
                          "the query names segment column 'income', which the partner does not expose")


def test_epsilon_above_the_policy_maximum_or_below_its_minimum_is_refused(chain):
    """The least ε bounds the queries a budget buys: a bisection by tiny ε would otherwise be nearly free."""
    chain.record(chain.model())
    chain.refused_by_shop([chain.query(0.75)], r"spends ε 0.75; the policy allows at least 0.1 and at most 0.5")
    chain.refused_by_shop([chain.query(0.05)], r"spends ε 0.05; the policy allows at least 0.1 and at most 0.5")
    chain.refused_by_shop([chain.query(0.0)], "spends ε 0.0")
    chain.record(chain.query(0.1))   # the least is allowed


def test_a_spent_that_does_not_follow_from_the_chain_is_refused_by_both(chain):
    chain.record(chain.model(), chain.query(0.5))
    understated = chain.query(0.25, spent=0.25)   # leaves the earlier query out of the window
    reason = r"states ε 0.25 spent in the 30 days to its time; the chain's queries there and its own ε make 0.75"
    chain.refused_by_shop([understated], reason)
    with pytest.raises(LedgerError, match=f"member 'bank' refuses it: .*{reason}"):
        append_block(chain.center, chain.partners, [understated])   # the card center checks its own proposal too


def test_the_budget_refuses_a_query_that_would_exceed_it_and_frees_up_as_the_window_slides(tmp_path, monkeypatch):
    clock = [time.time_ns()]
    monkeypatch.setattr(time, "time_ns", lambda: clock[0])
    chain = Chain(tmp_path).start()
    chain.record(chain.model(), chain.query(0.5))
    clock[0] += 10 * DAY_MS * 1_000_000
    chain.record(chain.query(0.5))
    over = chain.query(0.25)
    assert over["spent"] == 1.25
    chain.refused_by_shop([over], r"would bring the ε spent in 30 days to 1.25, over the budget of 1.0")
    clock[0] += 25 * DAY_MS * 1_000_000   # the first query (35 days ago) has left the window; the second has not
    again = chain.query(0.5)
    assert again["spent"] == 1.0
    chain.record(again)
    assert chain.shop.rules.seen.spent(now_ms(), 30) == 1.0


def test_back_dated_and_future_dated_entries_are_refused(chain):
    chain.record(chain.model())
    chain.record(chain.query(0.25))
    last = chain.shop.rules.seen.last_time_ms
    back = chain.query(0.25, time_ms=last - 1000)
    chain.refused_by_shop([back], f"is dated {last - 1000} ms, before the entry before it \\({last} ms\\): "
                                  "entries may not be back-dated")
    ahead = chain.query(0.25, time_ms=now_ms() + 600_000)
    chain.refused_by_shop([ahead], "is dated in the future")
    # within one block too: each entry follows the one before it
    first, second = chain.query(0.25, time_ms=now_ms()), chain.query(0.25, time_ms=last)
    chain.refused_by_shop([first, second], "entries may not be back-dated")


def test_a_query_dated_before_the_budget_window_is_refused(tmp_path, monkeypatch):
    """Entries that waited long enough could otherwise take a query's ε out of every later window."""
    clock = [time.time_ns()]
    monkeypatch.setattr(time, "time_ns", lambda: clock[0])
    chain = Chain(tmp_path).start()
    chain.record(chain.model())
    clock[0] += 31 * DAY_MS * 1_000_000
    old = chain.query(0.5, time_ms=chain.shop.rules.seen.last_time_ms)   # not back-dated: no earlier than the model
    assert old["spent"] == 0.5
    chain.refused_by_shop([old], "is dated before the 30-day budget window that ends now")


def test_the_partner_refuses_a_campaign_it_did_not_make(chain):
    model = chain.model()
    query = chain.query()
    chain.record(model, query)
    forged = chain.campaign(query, made=False)
    chain.refused_by_shop([forged], f"campaign {forged['campaign_id']} is not one 'shop' made for query "
                                    f"{query['query']['query_id']}")
    campaign = chain.campaign(query)
    chain.shop.rules.facts.billed[campaign["campaign_id"]] = 2000
    chain.refused_by_shop([campaign], "bills 2480 members; 'shop' billed 2000")
    chain.shop.rules.facts.billed[campaign["campaign_id"]] = 2480
    chain.record(chain.campaign(query, members=2480))
    chain.refused_by_shop([chain.campaign(query)], "is already on the chain")


def test_conversions_need_a_campaign_on_the_chain_and_a_new_id(chain):
    model = chain.model()
    query = chain.query()
    chain.record(model, query)
    campaign = chain.campaign(query)
    chain.refused_by_shop([conversion(campaign)], f"names campaign {campaign['campaign_id']}, which is not on the chain")
    chain.record(campaign)
    first = conversion(campaign)
    chain.refused_by_shop([first, conversion(campaign, first["conversion_id"])],
                          f"conversion {first['conversion_id']} is already on the chain")
    chain.record(first)
    chain.refused_by_shop([conversion(campaign, first["conversion_id"])], "is already on the chain")
    assert chain.shop.rules.seen.unsettled["conversions"] == 1


def test_the_card_center_signs_only_entries_it_made(chain):
    chain.record(chain.model())
    entry = chain.query()
    with pytest.raises(LedgerError, match=f"member 'bank' refuses it: audience_query {entry['query']['query_id']} "
                                          "is not an entry this card center made"):
        chain.center.sign(chain.center.propose([entry]))
    chain.made(entry)
    altered = {**entry, "query": {**entry["query"], "min_points": 500}}
    with pytest.raises(LedgerError, match="is not an entry this card center made"):
        chain.center.sign(chain.center.propose([altered]))
    chain.center.sign(chain.center.propose([entry]))


def test_the_partner_countersigns_only_the_settlement_the_chain_implies(chain):
    model = chain.model()
    query = chain.query(total=50)
    chain.record(model, query)
    campaign = chain.campaign(query)
    chain.record(campaign, conversion(campaign))
    honest = chain.center.rules.settlement_body()
    assert honest["total"] == 500 + 50 * 2 + 300
    line = honest["lines"][0]
    refusals = {
        encode_entry({**honest, "lines": [{**line, "audience_members": 60, "amount": line["amount"] + 20}],
                      "total": honest["total"] + 20}): "the settlement's line for 'shop' does not follow",
        encode_entry({**honest, "lines": [{**line, "amount": 1}], "total": 1}): "does not follow from the contract",
        encode_entry({**honest, "total": honest["total"] + 1}): "the settlement's amounts do not add up",
        encode_entry({**honest, "number": 2}): "the settlement's chain, number, currency or payer is not the chain's",
        encode_entry({**honest, "payer": "shop"}): "number, currency or payer is not the chain's",
        encode_entry({**honest, "lines": []}): "the settlement must have one line, for the partner 'shop'",
        b"[]": "not an object",
        b"{settle": r"it is not readable \(JSONDecodeError\)",
    }
    for body, reason in refusals.items():
        with pytest.raises(ProtocolError, match=f"^party 'shop': refuses to sign the audience settlement: .*{reason}"):
            chain.shop.countersign_settlement(body)
    signature = chain.shop.countersign_settlement(encode_entry(honest))
    assert settlement.signature_valid(honest, signature, bytes(KEYS["shop"].verify_key))
    # a settlement block the partner did not countersign is refused, however the card center signed it
    lone = {**honest, "signatures": {"bank": KEYS["bank"].sign(settlement.settlement_message(honest)).signature.hex()}}
    chain.refused_by_shop([lone], "the settlement lacks a valid signature from 'shop'")


def test_the_genesis_must_be_the_pair_the_contract_and_the_partners_policy(tmp_path):
    stricter = {**POLICY, "budget": 0.5}
    chain = Chain(tmp_path, partner_policy=stricter)
    start = audience_start_entry(chain.center.rules.facts)
    block = chain.center.propose([start])
    with pytest.raises(LedgerError, match="member 'shop' refuses it: the audience policy is not the partner's"):
        chain.shop.sign(block.with_signatures({"bank": sign(block, KEYS["bank"])}))
    renamed = {**start, "chain_id": audience_chain_id("bank", "mall")}
    block = chain.center.propose([renamed])
    with pytest.raises(LedgerError, match="member 'bank' refuses it: the audience chain is 'audience-"):
        chain.center.sign(block)
    block = chain.center.propose([{**start, "kind": "scoring_start"}])
    with pytest.raises(LedgerError, match="member 'bank' refuses it: the first block must start the audience chain"):
        chain.center.sign(block)
    block = chain.center.propose([chain.model()])
    with pytest.raises(LedgerError, match="member 'bank' refuses it: the genesis names no single card_center"):
        chain.center.sign(block)


def test_the_job_file_fees_carry_the_audience_prices_onto_the_wire(tmp_path):
    parties = [{"name": "bank", "data": "c.csv", "id": "id", "label": "y"}, {"name": "shop", "data": "s.csv", "id": "id"}]
    path = write_job(tmp_path, parties)
    path.write_text(path.read_text() + "\n[fees]\nper_query = 500\nper_audience_member = 2\nper_conversion = 300\n")
    spec, _ = load_job(path)
    assert spec.fees.to_dict() == FEES
    assert spec_from_proto(spec_to_proto(spec)).fees == spec.fees
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="per_conversion must be a whole, non-negative number"):
            FeeContract.from_dict({"per_conversion": bad})
    with pytest.raises(ConfigError, match="unknown setting 'per_click'"):
        FeeContract.from_dict({"per_click": 1})


@pytest.mark.parametrize("change, reason", [
    (lambda e: {**e, "note": "x"}, "an audience_query entry with fields other than the protocol's"),
    (lambda e: {**e, "query": {**e["query"], "query_id": "q123"}}, "query id 'q123' is not one fedscore issues"),
    (lambda e: {**e, "query": {**e["query"], "min_points": float("nan")}}, "min_points and epsilon must be numbers"),
    (lambda e: {**e, "query": {**e["query"], "unseen_only": "yes"}}, "unseen_only must be true or false"),
    (lambda e: {**e, "query": {**e["query"], "segments": ["category", "category"]}}, "a list of distinct column names"),
    (lambda e: {**e, "query": {**e["query"], "user_ids": ["u1"]}}, "its query must hold exactly"),
    (lambda e: {**e, "epsilon": 0.1}, "its epsilon is not the query's"),
    (lambda e: {**e, "time_ms": True}, "its time is not a positive integer of milliseconds"),
    (lambda e: {**e, "answer_digest": "AB" * 32}, "the answer digest must be SHA-256 hex"),
    (lambda e: {**e, "total": -1}, "the answer's total must be a whole, non-negative number"),
    (lambda e: {**e, "total": 2480.0}, "the answer's total must be a whole, non-negative number"),
    (lambda e: {key: value for key, value in e.items() if key != "total"}, "with fields other than the protocol's"),
])
def test_malformed_query_entries_are_refused(chain, change, reason):
    chain.record(chain.model())
    chain.refused_by_shop([change(chain.query())], reason)


def test_malformed_models_campaigns_and_conversions_are_refused(chain):
    chain.refused_by_shop([{**chain.model(), "job_id": "no id"}], "job id 'no id' is not one fedscore issues")
    model = chain.model()
    query = chain.query()
    chain.record(model, query)
    chain.refused_by_shop([{**chain.campaign(query), "members": -1}], "the members billed must be a whole")
    campaign = chain.campaign(query)
    chain.record(campaign)
    chain.refused_by_shop([{**conversion(campaign), "applicant": "alice"}], "the applicant must be a salted SHA-256")
    chain.refused_by_shop([conversion(campaign, "v" + "0" * 31)], "its conversion id or campaign id is not one")


def test_the_partner_refuses_a_model_whose_job_training_head_or_part_is_forged(chain):
    """The digest alone is not enough: the entry says which training and which part the model came from."""
    assembled = {"job_id": "ad-model-0123abcd", "training_head": "ab" * 32, "part_digest": "cd" * 32}
    chain.shop.rules.facts.held[MODEL] = dict(assembled)
    honest = chain.model(held=False)   # held, by its origin, though not among the plain digests
    for key, forged in (("job_id", "ad-model-ffffffff"), ("training_head", "ee" * 32), ("part_digest", "ff" * 32)):
        chain.refused_by_shop([{**honest, key: forged}],
                              f"model {MODEL} states {key} '{forged}'; 'shop' assembled it from '{assembled[key]}'")
    chain.record(honest)
    assert chain.shop.rules.facts.held == {MODEL: assembled}   # a model stays held once on the chain


def test_a_campaign_billing_more_members_than_its_querys_answer_counted_is_refused_by_both(chain):
    model = chain.model()
    query = chain.query(total=2480)
    chain.record(model, query)
    inflated = chain.campaign(query, members=2481)
    reason = (f"campaign {inflated['campaign_id']} bills 2481 members; the answer to query "
              f"{query['query']['query_id']} on the chain counted 2480")
    chain.refused_by_shop([inflated], reason)
    with pytest.raises(LedgerError, match=f"member 'bank' refuses it: {reason}"):
        append_block(chain.center, chain.partners, [inflated])
    chain.record(chain.campaign(query))
    assert chain.shop.rules.seen.unsettled["audience_members"] == 2480


def test_the_partner_refuses_a_query_stating_another_total_than_it_answered(chain):
    chain.record(chain.model())
    query = chain.query(total=3000)
    ident = query["query"]["query_id"]
    chain.shop.rules.facts.totals[ident] = 2480
    chain.refused_by_shop([query], f"query {ident} states a total of 3000; 'shop' answered 2480")
    chain.shop.rules.facts.totals[ident] = 3000
    chain.record(query)
    assert ident not in chain.shop.rules.facts.totals   # on the chain: forgotten
    assert chain.shop.rules.seen.queries[ident]["total"] == 3000


def test_queries_dated_ahead_count_in_the_epsilon_spent_now(chain):
    """Dating queries ahead (within the clock skew allowed) must not free budget for queries answered meanwhile."""
    chain.record(chain.model())
    ahead = now_ms() + MAX_CLOCK_SKEW_MS - 60_000
    chain.record(chain.query(0.5, time_ms=ahead))
    now = now_ms()
    assert now < ahead
    assert chain.shop.rules.seen.spent(now, 30) == 0.5 and chain.center.rules.seen.spent(now, 30) == 0.5
    assert chain.center.rules.query_spent(now, 0.5) == 1.0
    chain.record(chain.query(0.5, time_ms=ahead))
    assert chain.center.rules.query_spent(now_ms(), 0.25) == 1.25   # over the budget of 1.0: a check now refuses
    over = chain.query(0.25, time_ms=ahead)
    chain.refused_by_shop([over], r"would bring the ε spent in 30 days to 1.25, over the budget of 1.0")


def test_the_partner_refuses_a_query_dated_before_it_answered_it(tmp_path, monkeypatch):
    """Back-dating a query (though not before the entry before it) would move its ε towards leaving the window."""
    clock = [time.time_ns()]
    monkeypatch.setattr(time, "time_ns", lambda: clock[0])
    chain = Chain(tmp_path).start()
    chain.record(chain.model())
    model_time = chain.shop.rules.seen.last_time_ms
    clock[0] += 3_600_000 * 1_000_000   # an hour later, the partner answers
    answered = now_ms()
    back = chain.query(0.25, time_ms=model_time)
    ident = back["query"]["query_id"]
    chain.shop.rules.facts.answered_at[ident] = answered
    chain.refused_by_shop([back], f"query {ident} is dated {model_time} ms, before 'shop' answered it "
                                  f"\\({answered} ms\\): a query may not be back-dated")
    skewed = chain.query(0.25, time_ms=answered - MAX_CLOCK_SKEW_MS)   # the card center's clock may lag this much
    chain.shop.rules.facts.answered_at[skewed["query"]["query_id"]] = answered
    late = chain.query(0.25, time_ms=answered - MAX_CLOCK_SKEW_MS - 1)
    chain.shop.rules.facts.answered_at[late["query"]["query_id"]] = answered
    chain.refused_by_shop([late], "a query may not be back-dated")
    chain.record(skewed)
    assert not chain.shop.rules.facts.answered_at.keys() & {skewed["query"]["query_id"]}   # on the chain: forgotten


def test_a_nearby_cut_off_on_the_same_model_is_refused_by_both_and_the_same_cut_off_is_not(tmp_path, monkeypatch):
    clock = [time.time_ns()]
    monkeypatch.setattr(time, "time_ns", lambda: clock[0])
    chain = Chain(tmp_path).start()
    other = hashlib.sha256(b"another audience model").hexdigest()
    chain.record(chain.model(), chain.model(other))
    first = chain.query(0.1, min_points=620)
    chain.record(first)
    near = chain.query(0.1, min_points=625.5)
    reason = (f"query {near['query']['query_id']}: its cut-off 625.5 is within 10 points of query "
              f"{first['query']['query_id']}'s \\(620\\) on the same model: the users between the two would be "
              "counted by subtraction; ask for the same cut-off or one at least 10 points away")
    chain.refused_by_shop([near], reason)
    with pytest.raises(LedgerError, match=f"member 'bank' refuses it: {reason}"):
        append_block(chain.center, chain.partners, [near])
    chain.refused_by_shop([chain.query(0.1, min_points=611)], "its cut-off 611 is within 10 points")
    chain.record(chain.query(0.1, min_points=620))    # the same cut-off: a repeat, which the budget pays for
    chain.record(chain.query(0.1, min_points=630))    # as far as the gap: allowed
    chain.record(chain.query(0.1, min_points=625, model=other))           # another model
    chain.record(chain.query(0.1, min_points=625, unseen_only=False))     # other users (all, not the unseen)
    chain.refused_by_shop([chain.query(0.1, min_points=626, unseen_only=False)], "its cut-off 626 is within")
    clock[0] += 31 * DAY_MS * 1_000_000   # the earlier queries have left the window
    chain.record(chain.query(0.1, min_points=625))


def test_a_policy_gap_of_zero_refuses_no_cut_off(tmp_path):
    chain = Chain(tmp_path, policy={**POLICY, "min_points_gap": 0.0}).start()
    chain.record(chain.model(), chain.query(0.1, min_points=620))
    chain.record(chain.query(0.1, min_points=620.5))


@pytest.mark.parametrize("change, reason", [
    ({"min_epsilon": 0.6}, "min_epsilon must be a number above 0 and at most its max_epsilon"),
    ({"min_epsilon": 0.0}, "min_epsilon must be a number above 0"),
    ({"min_epsilon": "0.1"}, "min_epsilon must be a number"),
    ({"min_points_gap": -1.0}, "min_points_gap must be a non-negative number"),
    ({"min_points_gap": float("inf")}, "min_points_gap must be a non-negative number"),
])
def test_a_genesis_policy_with_a_bad_least_epsilon_or_cut_off_gap_is_refused(tmp_path, change, reason):
    chain = Chain(tmp_path, policy={**POLICY, **change})
    block = chain.center.propose([audience_start_entry(chain.center.rules.facts)])
    with pytest.raises(LedgerError, match=f"member 'bank' refuses it: the policy's {reason}"):
        chain.center.sign(block)
    partial = {k: v for k, v in POLICY.items() if k != "min_points_gap"}
    chain = Chain(tmp_path / "old", policy=partial)
    block = chain.center.propose([audience_start_entry(chain.center.rules.facts)])
    with pytest.raises(LedgerError, match="member 'bank' refuses it: the audience policy must hold exactly"):
        chain.center.sign(block)


def test_an_applicant_converts_once_per_campaign(chain):
    """A conversion reported twice (a retried call, a duplicate application) is billed once: the chain refuses a
    second conversion of the same applicant digest in one campaign, whatever its id."""
    model = chain.model()
    query = chain.query()
    chain.record(model, query)
    campaign = chain.campaign(query)
    chain.record(campaign)
    first = conversion(campaign)
    chain.record(first)
    again = {**conversion(campaign), "applicant": first["applicant"]}
    chain.refused_by_shop([again], "already has a conversion of this applicant")
    assert chain.center.rules.conversion_of(campaign["campaign_id"], first["applicant"]) == first["conversion_id"]


class LostReply(Replica):
    """The partner signs the block, but its reply never reaches the card center (once)."""

    lost = 1

    def propose_block(self, block):
        signature = super().propose_block(block)
        if self.lost:
            self.lost -= 1
            raise PeerError("partner 'shop' did not answer in time")
        return signature


def test_a_block_whose_reply_was_lost_is_proposed_again_unchanged_even_after_a_restart(chain, tmp_path):
    """The partner signs one block per height: the card center keeps the block it proposed (on disk too) and
    proposes that same block again, so the pair is never stuck with a signature for a block nobody committed."""
    from types import SimpleNamespace

    from fedscore.daemons.party.audience import AudienceChain
    from fedscore.daemons.party.audience_card_center import CardCenterAudience
    from fedscore.protocol.scoring.batcher import block_from_json

    chain.record(chain.model())
    acts = CardCenterAudience(SimpleNamespace(name="bank", label="party 'bank'", config=None))
    flaky = LostReply(chain.shop)
    pair = AudienceChain(chain.center.rules.facts.chain_id, "bank", "shop", chain.center, peer=flaky)
    with pytest.raises(PeerError):
        acts.append(pair, chain.made(chain.query())[0])
    assert pair.pending is not None and pair.pending_path.is_file()
    height = chain.center.height
    assert chain.shop.height == height   # signed at the partner, committed nowhere
    other = chain.center.propose(chain.made(chain.query(min_points=700))).with_signatures({})
    with pytest.raises(LedgerError, match="already signed another block at this height"):
        chain.shop.sign(other.with_signatures({"bank": sign(other, KEYS["bank"])}))

    # the card center restarts: a fresh replica of its chain and the pending block read back from its file
    chain.center.close()
    center = LedgerMember("bank", KEYS["bank"], chain.center.path, chain.center.rules.__class__(chain.center.rules.facts))
    restarted = AudienceChain(pair.chain_id, "bank", "shop", center, peer=Replica(chain.shop),
                              pending=block_from_json(pair.pending_path.read_text()))
    acts.resend(restarted)
    assert center.height == chain.shop.height == height + 1 and restarted.pending is None
    assert not restarted.pending_path.exists()
    assert center.head.hash() == chain.shop.head.hash()
