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
from fedscore.ledger.block import sign
from fedscore.ledger.cosign import append_block, settlement_entry
from fedscore.ledger.member import LedgerMember
from fedscore.ledger.scoring_rules import ScoringFacts, ScoringRules, contributed, mark, scoring_start_entry
from fedscore.ledger.settlement import balances
from fedscore.ledger.store import LedgerStore
from fedscore.ledger.verify import LedgerError, verify_chain
from fedscore.model.model_file import PartyModel
from fedscore.ledger.cosign import append_block
from fedscore.protocol.scoring.batcher import EntryBatcher
from fedscore.protocol.scoring.card_center import CardCenterScorer
from fedscore.protocol.scoring.consent import (
    ConsentPolicy,
    ConsentToken,
    applicant_digest,
    certify_applicant,
    check_consent,
    give_consent,
)
from fedscore.files import read_json_lines
from fedscore.protocol.scoring.journal import Journal, now_ms
from fedscore.protocol.scoring.offline import offline_answer
from fedscore.protocol.scoring.partner import PartnerScorer
from fedscore.protocol.scoring.scorecard import ScoringPolicy
from fedscore.protocol.scoring.secrets import ScoringSecrets
from fedscore.protocol.scoring.sources import CsvSource

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


KEYS = {"guest": SigningKey(bytes([1]) * 32), "host": SigningKey(bytes([2]) * 32), "mirror": SigningKey(bytes([3]) * 32)}
POLICY = ScoringPolicy(limit_basis="x0", limit_step=1)


def facts(name: str, role: str) -> ScoringFacts:
    members = {n: {"role": "card_center" if n == "guest" else "partner", "key": bytes(k.verify_key).hex()} for n, k in KEYS.items()}
    return ScoringFacts(name, members[name]["key"], role, "job-1", members, FEES, "ef" * 32)


class InProcessPartner:
    """A partner reached without a network: its scorer and its replica of the scoring chain."""

    def __init__(self, name: str, folder: Path, pair_key: bytes, model: PartyModel, held: Path):
        self.name, self.folder, self.pair_key, self.model, self.held = name, folder, pair_key, model, held
        self.delay = 0.0
        self.answer_override = None
        self.fail_proposals = 0
        self.fail_commits = 0
        self.start()

    def start(self) -> None:
        """(Re)start: the replica and the journal from disk, as a daemon does."""
        partner_facts = facts(self.name, "partner")
        partner_facts.pair_keys = {self.name: self.pair_key}
        self.member = LedgerMember(self.name, KEYS[self.name], self.folder / self.name / "scoring.sqlite", ScoringRules(partner_facts))
        self.scorer = PartnerScorer(
            self.model, CsvSource(self.held, ["id"], self.model.features, party=self.name, raw_values=self.model.binned), "guest",
            ConsentPolicy(TRUSTED), partner_facts, Journal(self.folder / self.name / "answers.jsonl"),
            on_chain=self.member.rules.seen.tags.__contains__,
        )

    def stop(self) -> None:
        self.member.close()
        self.scorer.journal.close()

    def ask_partial_score(self, tag, digest, consent, timeout):
        future: Future = Future()
        if self.delay > timeout:
            return future        # never answers in time
        try:
            value = self.scorer.partial_score(tag, digest, consent, now_ms() + int(timeout * 1000))
            future.set_result(value if self.answer_override is None or value is None else self.answer_override)
        except Exception as error:
            future.set_exception(error)
        return future

    def propose_block(self, block):
        if self.fail_proposals:
            self.fail_proposals -= 1
            raise PeerError(f"partner {self.name!r} did not answer")
        return self.member.sign(block)

    def commit_block(self, block):
        if self.fail_commits:
            self.fail_commits -= 1
            raise PeerError(f"partner {self.name!r} did not answer")
        self.member.commit(block)
        self.scorer.forget_committed()

    def sign_settlement(self, body: bytes) -> bytes:
        return self.member.countersign_settlement(body)


class Consortium:
    """A card center and two partners ("host" holds the host columns; "mirror" holds the same file), in process."""

    policy = POLICY

    def __init__(self, folder: Path, timeout: float = 0.5):
        self.folder, self.timeout = folder, timeout
        center_model, partner_model, self.guest, self.host = models()
        self.center_model = center_model
        self.secrets = ScoringSecrets.load_or_create(folder / "guest" / "secrets")
        held = DATA / "breast_hetero_host.csv"
        mirror_rows = folder / "mirror.csv"
        if not mirror_rows.exists():   # the mirror partner holds every other applicant only
            self.host.iloc[::2].to_csv(mirror_rows, index=False)
        self.partners = {
            "host": InProcessPartner("host", folder, self.secrets.pair_key("job-1", "host"), partner_model, held),
            "mirror": InProcessPartner("mirror", folder, self.secrets.pair_key("job-1", "mirror"), partner_model, mirror_rows),
        }
        self.start_center()

    def start_center(self) -> None:
        center_facts = facts("guest", "card_center")
        center_facts.pair_keys = {n: p.pair_key for n, p in self.partners.items()}
        self.member = LedgerMember("guest", KEYS["guest"], self.folder / "guest" / "scoring.sqlite", ScoringRules(center_facts))
        self.center = CardCenterScorer(
            self.center_model, self.policy, self.partners, ConsentPolicy(TRUSTED), self.secrets, center_facts,
            Journal(self.folder / "guest" / "pending.jsonl"), timeout=self.timeout,
            on_chain=self.member.rules.seen.requests.__contains__,
        )
        if self.member.height == 0:
            append_block(self.member, self.partners, [scoring_start_entry(center_facts, "test")])
        self.batcher = EntryBatcher(self.center, self.member, self.partners, self.sync,
                                    self.folder / "guest" / "proposal.json", 7, 60)

    def sync(self) -> None:
        for partner in self.partners.values():
            for block in self.member.store.blocks(partner.member.height):
                partner.commit_block(block)

    def stop_center(self) -> None:
        self.member.close()
        self.center.journal.close()

    def score(self, row: int, applicant: str | None = None, **features):
        name, values = request_for(self.guest, row, self.center_model.features)
        applicant = applicant or name
        return self.center.score(applicant, {**values, **features}, consent_for(applicant).to_text())


def request_for(frame: pd.DataFrame, row: int, columns: list[str]) -> tuple[str, dict[str, float]]:
    return str(frame["id"].iloc[row]), {c: float(frame[c].iloc[row]) for c in columns}


def test_online_answers_equal_the_offline_model_row_by_row(tmp_path):
    c = Consortium(tmp_path)
    rows = {name: pd.read_csv(p.held).set_index("id") for name, p in c.partners.items()}
    for row in range(0, len(c.guest), 23):
        applicant, features = request_for(c.guest, row, c.center_model.features)
        scored = c.center.score(applicant, features, consent_for(applicant).to_text())
        partners = {
            name: (p.model, rows[name].loc[int(applicant), p.model.features].to_numpy() if int(applicant) in rows[name].index else None)
            for name, p in c.partners.items()
        }
        assert scored.answer == offline_answer(c.center_model, list(features.values()), partners, POLICY)
    assert len(c.center.pending) == len(range(0, len(c.guest), 23))


def test_a_partner_that_does_not_know_the_applicant_is_late_or_answers_nonsense_is_listed(tmp_path):
    c = Consortium(tmp_path)
    stranger = c.score(0, applicant="nobody-here")
    assert stranger.answer.partners_missing == ("host", "mirror") and set(stranger.partial_scores.values()) == {None}
    c.partners["mirror"].answer_override = float("nan")
    nonsense = c.score(0)
    assert nonsense.answer.partners_missing == ("mirror",) and np.isfinite(nonsense.answer.probability)
    late = Consortium(tmp_path / "late", timeout=0.05)
    late.partners["host"].delay = 1.0
    scored = late.score(0)
    assert scored.answer.partners_missing == ("host",)
    # the chain marks host as not contributing, and only host can read that mark
    entry = late.center.pending[-1]
    assert set(entry) == {"kind", "request_id", "time_ms", "applicant", "consent", "consent_digest", "partners"}
    host_key, mirror_key = (late.partners[n].pair_key for n in ("host", "mirror"))
    assert contributed(entry, "host", host_key) is False and contributed(entry, "mirror", mirror_key) is True
    assert contributed(entry, "mirror", host_key) is None   # host cannot tell whether mirror holds the applicant


def test_a_partner_does_not_answer_after_the_deadline(tmp_path):
    c = Consortium(tmp_path)
    applicant, _ = request_for(c.guest, 0, c.center_model.features)
    with pytest.raises(DataError, match="arrived after its deadline"):
        c.partners["host"].scorer.partial_score("a" * 32, applicant_digest(applicant), consent_for(applicant).to_text(), now_ms() - 1)
    assert c.partners["host"].scorer.facts.answered == {}


def test_requests_without_a_valid_consent_are_refused_before_any_partner_is_asked(tmp_path):
    c = Consortium(tmp_path)
    applicant, features = request_for(c.guest, 5, c.center_model.features)
    with pytest.raises(ConsentError, match="given to 'rival'"):
        c.center.score(applicant, features, consent_for(applicant, card_center="rival").to_text())
    with pytest.raises(ConsentError, match="not certified for this applicant"):
        c.center.score(applicant, features, consent_for("someone-else").to_text())
    # the partner refuses on its own too, whatever the card center does
    with pytest.raises(ConsentError, match="partner 'host' refuses"):
        c.partners["host"].scorer.partial_score("a" * 32, applicant_digest(applicant), consent_for("someone-else").to_text(),
                                                now_ms() + 1000)
    assert c.center.pending == [] and c.partners["host"].scorer.facts.answered == {}


def test_a_grpc_request_sending_a_feature_twice_is_refused():
    from fedscore.proto import fedscore_pb2 as pb
    from fedscore.transport import codec

    request = pb.ScoreRequest(features={"x0": 1.0, "x3": 2.0}, text_features={"x3": "two"}, missing_features=["x5"])
    with pytest.raises(DataError, match="sends feature 'x3' more than once"):
        codec.request_features(request)
    assert codec.request_features(pb.ScoreRequest(features={"x0": 1.0}, text_features={"x3": "two"}, missing_features=["x5"])) == {
        "x0": 1.0, "x3": "two", "x5": None}


@pytest.mark.parametrize("features, message", [
    ({"x0": 1.0, "x3": 2.0, "x5": 3.0}, "lacks the card center's feature 'x7'"),
    ({"x0": 1.0, "x3": 2.0, "x5": 3.0, "x7": float("nan")}, "'x7' must be a finite number"),
    ({"x0": 1.0, "x3": 2.0, "x5": 3.0, "x7": True}, "'x7' must be a finite number"),
    ({"x0": 1.0, "x3": 2.0, "x5": 3.0, "x7": 1.0, "x9": 1.0}, "does not use: 'x9'"),
    ({"x0": 1.0, "x3": 2.0, "x5": 3.0, "x7": 1.0, "x9": "lots"}, "does not use: 'x9'"),
    ({"x0": 1.0, "x3": 2.0, "x5": 3.0, "x7": 1.0, "x9": 1.0, "x1": 2.0}, "has features the model does not use: 'x1', 'x9'$"),
    ({"x0": 1.0, "x3": 2.0}, r"lacks the card center's features 'x5', 'x7' \(needs x0, x3, x5, x7\)$"),
    ({"x0": 1.0, "x3": 2.0, "x5": 3.0, "X7": 1.0},
     r"^the request has 'X7', which the model does not use; it lacks 'x7' \(needs x0, x3, x5, x7\)$"),
])
def test_malformed_requests_name_the_field_and_no_partner_is_asked(tmp_path, features, message):
    c = Consortium(tmp_path)
    with pytest.raises(DataError, match=message):
        c.center.score("1", features, consent_for("1").to_text())
    assert all(p.scorer.facts.answered == {} for p in c.partners.values())


def test_the_scoring_chain_records_requests_without_personal_data_and_settles_fees(tmp_path):
    c = Consortium(tmp_path)
    tokens = []
    for row in range(40):
        applicant, features = request_for(c.guest, row, c.center_model.features)
        tokens.append((applicant, consent_for(applicant).to_text()))
        c.center.score(applicant, features, tokens[-1][1])
    billed = {name: sum(contributed(e, name, p.pair_key) for e in c.center.pending) for name, p in c.partners.items()}
    assert c.batcher.flush() == 40
    assert c.member.height == 1 + 6   # the genesis, then blocks of at most 7 entries
    assert (tmp_path / "guest" / "pending.jsonl").read_text() == ""
    assert all(p.scorer.facts.answered == {} and p.member.height == 7 for p in c.partners.values())

    settlement = {}

    def make_entry():
        settlement.update(settlement_entry(c.member, c.partners))
        return settlement

    c.batcher.append_after_pending(make_entry)
    assert settlement["lines"] == [{"payee": n, "requests": billed[n], "amount": billed[n] * 3} for n in ("host", "mirror")]
    assert 0 < billed["mirror"] < billed["host"]
    for replica in ("guest", "host", "mirror"):
        blocks = list(LedgerStore(tmp_path / replica / "scoring.sqlite").blocks())
        verify_chain(blocks)
        stored = b"".join(e for b in blocks for e in b.entries)
        for applicant, token in tokens:   # neither the id nor the consent token is on the chain in clear
            assert f'"{applicant}"'.encode() not in stored and token.encode() not in stored
    entries = [e for b in LedgerStore(tmp_path / "host" / "scoring.sqlite").blocks() for e in b.decoded()]
    total = 3 * sum(billed.values())
    assert balances(entries)["guest"] == {"owes": total, "owed": 0}
    # a dispute: the card center opens the sealed consent, and it is the token the chain's digest names
    first = entries[1]
    opened = c.secrets.open_consent(first["consent"])
    assert opened == tokens[0][1] and ConsentToken.from_text(opened).digest() == first["consent_digest"]
    assert first["applicant"] == c.secrets.salted_applicant(tokens[0][0])


def test_partners_refuse_entries_that_bill_them_wrongly_or_break_the_format(tmp_path):
    c = Consortium(tmp_path)
    c.score(0)
    entry = dict(c.center.pending[0])
    host = c.partners["host"]

    def proposed(entries):   # as the card center would propose them (its signature, without its own checks)
        block = c.member.propose(entries)
        return block.with_signatures({"guest": sign(block, KEYS["guest"])})

    tag = entry["partners"]["host"]["tag"]
    invented = {**entry, "request_id": "f" * 32, "partners": {**entry["partners"], "host": {
        "tag": "e" * 32, "mark": mark(host.pair_key, "e" * 32, True)}}}
    with pytest.raises(LedgerError, match="never answered it"):
        host.member.sign(proposed([invented]))
    forged = {**entry, "request_id": "d" * 32, "partners": {**entry["partners"], "host": {"tag": tag, "mark": "00" * 32}}}
    with pytest.raises(LedgerError, match="not one the card center and 'host' agreed"):
        host.member.sign(proposed([forged]))
    with pytest.raises(LedgerError, match="fields other than the protocol's"):
        host.member.sign(proposed([{**entry, "request_id": "c" * 32, "applicant_id": "42"}]))
    with pytest.raises(LedgerError, match="every partner exactly once"):
        host.member.sign(proposed([{**entry, "request_id": "b" * 32, "partners": {"host": entry["partners"]["host"]}}]))
    with pytest.raises(LedgerError, match="its request .* is already on the chain"):
        twice = {**entry, "request_id": "a" * 32}
        host.member.sign(proposed([entry, twice]))


def test_a_block_one_partner_refused_is_proposed_again_unchanged_and_lagging_members_catch_up(tmp_path):
    c = Consortium(tmp_path)
    for row in range(5):
        c.score(row)
    c.partners["mirror"].fail_proposals = 1      # host signs, mirror is away
    with pytest.raises(PeerError):
        c.batcher.flush()
    c.partners["mirror"].fail_commits = 1        # next time mirror signs but misses the commit
    assert c.batcher.flush() == 5                # the same block again: host does not refuse it
    assert (c.member.height, c.partners["host"].member.height, c.partners["mirror"].member.height) == (2, 2, 1)
    c.score(6)
    assert c.batcher.flush() == 1                # mirror is sent the block it missed first
    assert {p.member.head.hash() for p in c.partners.values()} == {c.member.head.hash()}


def test_nothing_is_lost_or_recorded_twice_across_restarts_and_a_torn_journal(tmp_path):
    c = Consortium(tmp_path)
    for row in range(10):
        c.score(row)
    c.partners["mirror"].fail_proposals = 1
    with pytest.raises(PeerError):
        c.batcher.flush()                        # block 1 of 7 entries is proposed, not co-signed
    # the card center dies mid-write of one more entry; every daemon restarts
    c.stop_center()
    with (tmp_path / "guest" / "pending.jsonl").open("a") as journal:
        journal.write('{"kind": "scoring", "request_id": "cut sho')
    for partner in c.partners.values():
        partner.stop()
        partner.start()
    c.start_center()
    assert c.center.pending_count() == 3 and c.batcher.has_proposal   # 7 in the saved proposal, 3 waiting
    c.score(11)                                  # appended after the torn line was cut off
    assert c.batcher.flush() == 11
    assert len(c.member.rules.seen.requests) == 11
    # restart again: nothing of it is proposed twice
    c.stop_center()
    c.start_center()
    assert c.center.pending_count() == 0 and not c.batcher.has_proposal and c.batcher.flush() == 0


def test_json_lines_reader_skips_what_a_crash_or_a_hand_left_unreadable(tmp_path, caplog):
    path = tmp_path / "records.jsonl"
    assert read_json_lines(path) == []
    path.write_bytes(b'{"a": 1}\n[2]\n\n{"b": 3}\n{"c": \xe9}\n{"d": 4')   # not an object, empty, not UTF-8, torn
    assert read_json_lines(path) == [{"a": 1}, {"b": 3}]
    assert [r.getMessage() for r in caplog.records] == [
        f"records.jsonl line {n} is not readable; skipped" for n in (2, 3, 5, 6)
    ]


def test_a_consent_allows_a_few_checks_not_more_even_across_a_restart(tmp_path):
    c = Consortium(tmp_path)
    applicant, features = request_for(c.guest, 3, c.center_model.features)
    token = consent_for(applicant).to_text()
    for _ in range(2):
        c.center.score(applicant, features, token)
    c.stop_center()
    with (tmp_path / "guest" / "consent-uses.jsonl").open("a") as uses:
        uses.write('{"digest": "cut sho')                            # a crash mid-write: this line alone is lost
    c.start_center()
    c.center.score(applicant, features, token)                      # the third use, after a restart
    with pytest.raises(ConsentError, match="used 3 times; it allows 3"):
        c.center.score(applicant, features, token)
    # each partner counts for itself, so calling it directly gains nothing either
    with pytest.raises(ConsentError, match="partner 'host' refuses .* used 3 times"):
        c.partners["host"].scorer.partial_score("9" * 32, applicant_digest(applicant), token, now_ms() + 1000)


# -- a binned, calibrated scorecard served online -------------------------------------


class BinnedConsortium(Consortium):
    """The same set-up with binned models: "host" holds the bureau's rows (empty cells, text), "mirror" every
    other one of them."""

    policy = ScoringPolicy(limit_basis="LIMIT_BAL")

    def __init__(self, folder: Path, timeout: float = 0.5):
        from test_offline_scoring import scorecard_data

        self.folder, self.timeout = folder, timeout
        self.cards = scorecard_data(folder)
        self.center_model, self.guest = self.cards.center, self.cards.guest
        self.secrets = ScoringSecrets.load_or_create(folder / "guest" / "secrets")
        mirror_rows = folder / "mirror.csv"
        pd.read_csv(self.cards.bureau_csv).iloc[::2].to_csv(mirror_rows, index=False)
        self.held = {"host": self.cards.held, "mirror": pd.read_csv(mirror_rows).set_index("id")}
        self.partners = {
            name: InProcessPartner(name, folder, self.secrets.pair_key("job-1", name), self.cards.bureau, path)
            for name, path in (("host", self.cards.bureau_csv), ("mirror", mirror_rows))
        }
        self.start_center()

    def request(self, row: int) -> tuple[str, dict[str, object]]:
        from test_offline_scoring import CENTER_FEATURES, center_values

        return str(self.guest["id"].iloc[row]), dict(zip(CENTER_FEATURES, center_values(self.cards, row)))

    def offline(self, applicant: str, features: dict[str, object]):
        from test_offline_scoring import BUREAU_FEATURES, raw

        partners = {
            name: (self.cards.bureau, [raw(held.loc[applicant, c]) for c in BUREAU_FEATURES] if applicant in held.index else None)
            for name, held in self.held.items()
        }
        return partners, offline_answer(self.center_model, [features[c] for c in self.center_model.features], partners, self.policy)


def test_binned_calibrated_online_answers_equal_the_offline_model_row_by_row(tmp_path):
    from fedscore.protocol.scoring.offline import partial_score

    c = BinnedConsortium(tmp_path)
    checked = incomplete = 0
    for row in range(0, len(c.guest), 9):
        applicant, features = c.request(row)
        scored = c.center.score(applicant, features, consent_for(applicant).to_text())
        partners, expected = c.offline(applicant, features)
        assert scored.answer == expected
        for name, (model, values) in partners.items():   # what each partner returned is the offline partial score
            assert scored.partial_scores[name] == (None if values is None else partial_score(model, values))
            incomplete += values is not None and any(v is None for v in values)
        incomplete += any(v is None for v in features.values())
        checked += 1
    assert checked == len(range(0, len(c.guest), 9)) and incomplete > 5   # missing values were scored, not refused
    assert len(c.center.pending) == checked


def test_binned_requests_take_numbers_text_and_null_as_data(tmp_path):
    c = BinnedConsortium(tmp_path)
    applicant, features = c.request(100)
    odd = {**features, "EDUCATION": "a school never seen", "AGE": None, "PAY_0": "-1"}
    scored = c.center.score(applicant, odd, consent_for(applicant).to_text())
    assert scored.answer == c.offline(applicant, odd)[1]
    assert all(not line.startswith("SEX") and "points" not in line for line in scored.answer.reasons)


DROP = object()   # the key is left out of the request


@pytest.mark.parametrize("change, message", [
    ({"EDUCATON": "university", "EDUCATION": DROP}, "the request has 'EDUCATON', which the model does not use; it lacks 'EDUCATION'"),
    ({"EDUCATION": DROP}, "lacks the card center's feature 'EDUCATION'"),
    ({"INCOME": 1.0}, "does not use: 'INCOME'"),
    ({"LIMIT_BAL": None}, "'LIMIT_BAL' must be a finite number"),
    ({"LIMIT_BAL": "lots"}, "'LIMIT_BAL' must be a finite number"),
    ({"AGE": [30]}, "'AGE' must be a number, text or null"),
    ({"AGE": True}, "'AGE' must be a number, text or null"),
])
def test_binned_requests_still_refuse_a_missing_key_and_name_an_unknown_one(tmp_path, change, message):
    c = BinnedConsortium(tmp_path)
    applicant, features = c.request(3)
    request = {name: value for name, value in {**features, **change}.items() if value is not DROP}
    with pytest.raises(DataError, match=message):
        c.center.score(applicant, request, consent_for(applicant).to_text())
    assert all(p.scorer.facts.answered == {} for p in c.partners.values())
