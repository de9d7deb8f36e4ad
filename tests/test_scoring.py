"""Online scoring in one process: consents, partial scores, answers equal to the offline model, the scoring chain."""
from __future__ import annotations

import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from nacl.signing import SigningKey

from fedscore.errors import ConsentError, DataError, PeerError
from fedscore.ledger.block import make_block
from fedscore.ledger.member import LedgerMember
from fedscore.ledger.scoring import ScoringFacts, scoring_settlement_body, scoring_start_entry
from fedscore.ledger.settlement import balances, settlement_message
from fedscore.ledger.block import encode_entry
from fedscore.ledger.store import LedgerStore
from fedscore.ledger.verify import LedgerError, verify_chain
from fedscore.model.model_file import PartyModel
from fedscore.protocol.audit import append_block
from fedscore.protocol.scoring import (
    CardCenterScorer,
    ConsentPolicy,
    EntryBatcher,
    Journal,
    PartnerScorer,
    ScoringSecrets,
)
from fedscore.scoring.consent import (
    ConsentToken,
    applicant_digest,
    certify_applicant,
    check_consent,
    give_consent,
)
from fedscore.scoring.offline import offline_answer
from fedscore.scoring.scorecard import ScoringPolicy
from fedscore.scoring.sources import CsvSource

from conftest import DATA

ISSUER = SigningKey(bytes([9]) * 32)
TRUSTED = frozenset({bytes(ISSUER.verify_key)})
FEES = {"currency": "CNY", "per_step": 0, "per_overlap_row": 0, "per_request": 3}


def consent_for(applicant: str, card_center: str = "guest", **kwargs) -> ConsentToken:
    key = SigningKey.generate()
    certificate = certify_applicant(ISSUER, applicant, bytes(key.verify_key))
    return give_consent(key, certificate, bytes(ISSUER.verify_key), applicant, card_center, **kwargs)


# -- consent -----------------------------------------------------------------------


def test_a_valid_consent_round_trips_through_text_and_checks():
    token = consent_for("A-17")
    again = ConsentToken.from_text(token.to_text())
    assert again == token
    check_consent(again, applicant_digest("  a-17 "), "guest", TRUSTED)   # the training id rule applies


@pytest.mark.parametrize("case, message", [
    ("other applicant", "not certified for this applicant"),
    ("other card center", "given to 'guest', not to 'rival'"),
    ("untrusted issuer", "issuer this party does not trust"),
    ("old", "days old"),
    ("future", "dated in the future"),
    ("other purpose", "is for 'marketing'"),
    ("flipped signature", "signature on the consent does not verify"),
    ("forged key", "not certified for this applicant"),
    ("garbage", "not one fedscore can read"),
])
def test_every_bad_consent_is_refused_saying_why(case, message):
    now = time.time()
    digest, card_center, trusted, purposes = applicant_digest("A-17"), "guest", TRUSTED, None
    token = consent_for("A-17")
    text = token.to_text()
    if case == "other applicant":
        digest = applicant_digest("A-18")
    elif case == "other card center":
        card_center = "rival"
    elif case == "untrusted issuer":
        trusted = frozenset({bytes(SigningKey.generate().verify_key)})
    elif case == "old":
        text = consent_for("A-17", issued_at=int(now) - 40 * 86_400).to_text()
    elif case == "future":
        text = consent_for("A-17", issued_at=int(now) + 3600).to_text()
    elif case == "other purpose":
        text = consent_for("A-17", purpose="marketing").to_text()
    elif case == "flipped signature":
        text = ConsentToken(**{**token.__dict__, "signature": bytes([token.signature[0] ^ 1]) + token.signature[1:]}).to_text()
    elif case == "forged key":   # the card center signs with a key of its own, under the real certificate
        forged = SigningKey.generate()
        text = give_consent(forged, token.certificate, token.issuer, "A-17", "guest").to_text()
    else:
        text = "bm90IGEgdG9rZW4"
    with pytest.raises(ConsentError, match=message):
        check_consent(ConsentToken.from_text(text), digest, card_center, trusted, **({"purposes": purposes} if purposes else {}))


# -- a two-party model over the breast split -----------------------------------------


def models() -> tuple[PartyModel, PartyModel, pd.DataFrame, pd.DataFrame]:
    guest = pd.read_csv(DATA / "breast_hetero_guest.csv")
    host = pd.read_csv(DATA / "breast_hetero_host.csv")
    rng = np.random.default_rng(3)

    def model(name, role, frame, columns, intercept=None):
        values = frame[columns].to_numpy()
        return PartyModel("job-1", "test", name, role, ["id"], columns, values.mean(0).tolist(),
                          values.std(0).tolist(), rng.normal(0, 0.8, len(columns)).tolist(), intercept)

    center = model("guest", "card_center", guest, ["x0", "x3", "x5", "x7"], intercept=-0.4)
    partner = model("host", "partner", host, ["x1", "x4", "x9", "x12", "x19"])
    return center, partner, guest, host


def facts(name: str, role: str, keys: dict[str, SigningKey]) -> ScoringFacts:
    members = {n: {"role": "card_center" if n == "guest" else "partner", "key": bytes(k.verify_key).hex()} for n, k in keys.items()}
    return ScoringFacts(name, members[name]["key"], role, "job-1", members, FEES, "ef" * 32)


class InProcessPartner:
    """A partner reached without a network: its scorer and its replica of the scoring chain."""

    def __init__(self, scorer: PartnerScorer, member: LedgerMember, delay: float = 0.0):
        self.scorer, self.member, self.delay = scorer, member, delay

    def ask_partial_score(self, request_id, digest, consent, timeout):
        future: Future = Future()
        if self.delay > timeout:
            return future        # never answers in time
        try:
            future.set_result(self.scorer.partial_score(request_id, digest, consent))
        except Exception as error:
            future.set_exception(error)
        return future

    def propose_block(self, block):
        return self.member.sign(block)

    def commit_block(self, block):
        self.member.commit(block)
        self.scorer.forget_committed()

    def sign_settlement(self, body: bytes) -> bytes:
        expected = scoring_settlement_body(self.member.entries()[0], self.member.seen)
        assert body == encode_entry(expected)
        return KEYS["host"].sign(settlement_message(expected)).signature


KEYS = {"guest": SigningKey(bytes([1]) * 32), "host": SigningKey(bytes([2]) * 32)}
POLICY = ScoringPolicy(limit_basis="x0", limit_step=1)


def build(folder: Path, timeout: float = 0.5, delay: float = 0.0):
    center_model, partner_model, guest, host = models()
    consent = ConsentPolicy(TRUSTED)
    partner_facts = facts("host", "partner", KEYS)
    partner_member = LedgerMember("host", KEYS["host"], folder / "host" / "scoring.sqlite", partner_facts)
    partner = PartnerScorer(
        partner_model, CsvSource(DATA / "breast_hetero_host.csv", ["id"], partner_model.features, party="host"),
        "guest", consent, partner_facts, Journal(folder / "host" / "answers.jsonl"),
    )
    handle = InProcessPartner(partner, partner_member, delay)
    center_facts = facts("guest", "card_center", KEYS)
    center_member = LedgerMember("guest", KEYS["guest"], folder / "guest" / "scoring.sqlite", center_facts)
    center = CardCenterScorer(
        center_model, POLICY, {"host": handle}, consent, ScoringSecrets.load_or_create(folder / "guest" / "secrets"),
        center_facts, Journal(folder / "guest" / "pending.jsonl"), timeout=timeout,
    )
    if center_member.height == 0:
        append_block(center_member, {"host": handle}, [scoring_start_entry(center_facts, "test")])
    batcher = EntryBatcher(center, center_member, lambda e: append_block(center_member, {"host": handle}, e), 7, 60)
    return center, handle, center_member, batcher, guest, host


def request_for(frame: pd.DataFrame, row: int, columns: list[str]) -> tuple[str, dict[str, float]]:
    return str(frame["id"].iloc[row]), {c: float(frame[c].iloc[row]) for c in columns}


def test_online_answers_equal_the_offline_model_row_by_row(tmp_path):
    center, handle, _, _, guest, host = build(tmp_path)
    host_rows = host.set_index("id")
    for row in range(0, len(guest), 23):
        applicant, features = request_for(guest, row, center.model.features)
        scored = center.score(applicant, features, consent_for(applicant).to_text())
        known = int(applicant) in host_rows.index
        partner_values = host_rows.loc[int(applicant), handle.scorer.model.features].to_numpy() if known else None
        expected = offline_answer(center.model, list(features.values()),
                                  {"host": (handle.scorer.model, partner_values)}, POLICY)
        assert scored.answer == expected
    assert len(center.pending) == len(range(0, len(guest), 23))


def test_a_partner_that_does_not_know_the_applicant_or_is_late_is_listed_never_silent(tmp_path):
    center, _, _, _, guest, _ = build(tmp_path)
    _, features = request_for(guest, 0, center.model.features)
    stranger = center.score("nobody-here", features, consent_for("nobody-here").to_text())
    assert stranger.answer.partners_missing == ("host",) and stranger.partial_scores == {"host": None}
    late, _, _, _, guest, _ = build(tmp_path / "late", timeout=0.05, delay=1.0)
    applicant, features = request_for(guest, 0, late.model.features)
    scored = late.score(applicant, features, consent_for(applicant).to_text())
    assert scored.answer.partners_missing == ("host",)
    assert late.pending[-1]["missing"] == ["host"] and late.pending[-1]["contributors"] == []


def test_requests_without_a_valid_consent_are_refused_before_any_partner_is_asked(tmp_path):
    center, handle, _, _, guest, _ = build(tmp_path)
    applicant, features = request_for(guest, 5, center.model.features)
    with pytest.raises(ConsentError, match="given to 'rival'"):
        center.score(applicant, features, consent_for(applicant, card_center="rival").to_text())
    with pytest.raises(ConsentError, match="not certified for this applicant"):
        center.score(applicant, features, consent_for("someone-else").to_text())
    # the partner refuses on its own too, whatever the card center does
    with pytest.raises(ConsentError, match="partner 'host' refuses"):
        handle.scorer.partial_score("a" * 32, applicant_digest(applicant), consent_for("someone-else").to_text())
    assert center.pending == [] and handle.scorer.facts.answered == {}


@pytest.mark.parametrize("features, message", [
    ({"x0": 1.0, "x3": 2.0, "x5": 3.0}, "lacks the card center's feature 'x7'"),
    ({"x0": 1.0, "x3": 2.0, "x5": 3.0, "x7": float("nan")}, "'x7' must be a finite number"),
    ({"x0": 1.0, "x3": 2.0, "x5": 3.0, "x7": 1.0, "x9": 1.0}, "does not use: 'x9'"),
])
def test_malformed_requests_name_the_field(tmp_path, features, message):
    center, *_ = build(tmp_path)
    with pytest.raises(DataError, match=message):
        center.score("1", features, consent_for("1").to_text())


def test_the_scoring_chain_records_requests_without_personal_data_and_settles_fees(tmp_path):
    center, handle, member, batcher, guest, host = build(tmp_path)
    tokens = []
    for row in range(40):
        applicant, features = request_for(guest, row, center.model.features)
        tokens.append((applicant, consent_for(applicant).to_text()))
        center.score(applicant, features, tokens[-1][1])
    contributed = sum(1 for e in center.pending if e["contributors"] == ["host"])
    assert batcher.flush() == 40
    assert member.height == 1 + 6   # the genesis, then blocks of at most 7 entries
    assert (tmp_path / "guest" / "pending.jsonl").read_text() == "" and handle.scorer.facts.answered == {}

    settlement = {}

    def make_entry():
        body = scoring_settlement_body(member.entries()[0], member.seen)
        settlement.update(body, signatures={
            "host": handle.sign_settlement(encode_entry(body)).hex(),
            "guest": KEYS["guest"].sign(settlement_message(body)).signature.hex(),
        })
        return settlement

    batcher.append_after_pending(make_entry)
    assert settlement["lines"] == [{"payee": "host", "requests": contributed, "amount": contributed * 3}]
    for replica in ("guest", "host"):
        blocks = list(LedgerStore(tmp_path / replica / "scoring.sqlite").blocks())
        verify_chain(blocks)
        stored = b"".join(e for b in blocks for e in b.entries)
        for applicant, token in tokens:   # neither the id nor the consent token is on the chain in clear
            assert f'"{applicant}"'.encode() not in stored and token.encode() not in stored
    entries = [e for b in LedgerStore(tmp_path / "host" / "scoring.sqlite").blocks() for e in b.decoded()]
    assert balances(entries) == {"guest": {"owes": contributed * 3, "owed": 0}, "host": {"owes": 0, "owed": contributed * 3}}
    # a dispute: the card center opens the sealed consent, and it is the token the chain's digest names
    first = entries[1]
    opened = center.secrets.open_consent(first["consent"])
    assert opened == tokens[0][1] and ConsentToken.from_text(opened).digest() == first["consent_digest"]
    assert first["applicant"] == center.secrets.salted_applicant(tokens[0][0])


def test_a_partner_refuses_blocks_that_bill_it_for_requests_it_never_answered(tmp_path):
    center, handle, member, batcher, guest, _ = build(tmp_path)
    applicant, features = request_for(guest, 0, center.model.features)
    center.score(applicant, features, consent_for(applicant).to_text())
    entry = dict(center.pending[0])
    invented = {**entry, "request_id": "f" * 32}
    center.facts.answered[invented["request_id"]] = invented["consent_digest"]
    with pytest.raises(LedgerError, match="never answered it"):
        handle.propose_block(member.propose([entry, invented]))
    with pytest.raises(LedgerError, match="already on the chain"):
        batcher.flush()
        handle.propose_block(make_block(member.head, [entry]))


def test_entries_waiting_for_a_block_survive_a_restart(tmp_path):
    center, handle, member, _, guest, _ = build(tmp_path)
    for row in range(5):
        applicant, features = request_for(guest, row, center.model.features)
        center.score(applicant, features, consent_for(applicant).to_text())
    member.close(), handle.member.close(), center.journal.close(), handle.scorer.journal.close()
    # both daemons restart: the card center re-reads its pending entries, the partner its answers
    center, handle, member, batcher, _, _ = build(tmp_path)
    assert len(center.pending) == 5 and len(handle.scorer.facts.answered) == 5
    waiting = {e["request_id"] for e in center.pending}
    assert batcher.flush() == 5
    assert member.seen.requests == waiting and handle.member.seen.requests == waiting
