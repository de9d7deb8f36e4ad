"""Fee evasion on the scoring chain: a card center that marks answered requests as not contributing, asks
without a deadline, or withholds entries, and a partner that bills from its own journal all the same."""
from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import Future
from dataclasses import replace

import pytest

import test_ledger
from fedscore.daemons.config import DaemonConfig
from fedscore.daemons.party.scoring import ScoringHost
from fedscore.errors import ConfigError, DataError, ProtocolError
from fedscore.files import read_json_lines
from fedscore.job import JobSpec, PartySpec
from fedscore.job_file import ScoringSettings, parse_scoring
from fedscore.ledger.block import encode_entry, sign
from fedscore.ledger.cosign import co_sign, settlement_entry
from fedscore.ledger.scoring_rules import SETTLE_GRACE_MS, contributed, mark, unrecorded_answer
from fedscore.ledger.verify import LedgerError
from fedscore.protocol.scoring import card_center as card_center_module
from fedscore.protocol.scoring.consent import applicant_digest
from fedscore.protocol.scoring.journal import answer_deadline_ms, now_ms

from conftest import DATA
from faults import attack
from test_scoring import FEES, KEYS, TRUSTED, Consortium, consent_for, models, request_for

PER_REQUEST = FEES["per_request"]


def forge_not_contributing(monkeypatch) -> None:
    """The card center writes every partner's mark as "did not contribute", whatever the partner answered."""
    monkeypatch.setattr(card_center_module, "mark", lambda key, tag, contributed: mark(key, tag, False))


def signed_by_card_center(c: Consortium, entries: list[dict]):
    block = c.member.propose(entries)
    return block.with_signatures({"guest": sign(block, KEYS["guest"])})


def test_a_partner_refuses_a_block_that_marks_its_answers_as_not_contributing(tmp_path, monkeypatch):
    c = Consortium(tmp_path)
    forge_not_contributing(monkeypatch)
    scored = [c.score(row) for row in range(40)]
    answered = {name: sum(s.partial_scores[name] is not None for s in scored) for name in c.partners}
    assert answered["host"] == 40 and 0 < answered["mirror"] < 40   # both partners answered, in time
    forged = list(c.center.pending)
    assert not any(contributed(e, n, p.pair_key) for e in forged for n, p in c.partners.items())

    with pytest.raises(LedgerError) as refused:
        c.batcher.flush()
    recorded = {p.member.height for p in c.partners.values()} | {c.member.height}
    assert not attack(succeeded=recorded != {1})   # nothing past the genesis, at any replica
    message = str(refused.value)
    assert "as not contributing" in message and "before the request's deadline" in message
    assert any(e["partners"][n]["tag"] in message for e in forged[:7] for n in c.partners)   # it names the request
    # each partner refuses on its own, naming its own tag for the first request it answered
    for name, partner in c.partners.items():
        entry = next(e for e, s in zip(forged, scored) if s.partial_scores[name] is not None)
        with pytest.raises(LedgerError, match=f"request {entry['partners'][name]['tag']} marks {name!r} as not contributing"):
            partner.member.sign(signed_by_card_center(c, [entry]))
    host = c.partners["host"]
    host.stop()
    host.start()   # a restarted partner bills from its journal on disk just the same
    with pytest.raises(LedgerError, match=f"request {forged[0]['partners']['host']['tag']} marks 'host' as not contributing"):
        host.member.sign(signed_by_card_center(c, forged[:1]))

    # a settlement now (the requests withheld from the chain) is refused too once their deadlines are long past
    late_now = now_ms() + SETTLE_GRACE_MS + 1000
    assert unrecorded_answer(c.partners["host"].member.rules.facts, now_ms()) is None   # not yet: they may still come
    withheld = unrecorded_answer(c.partners["host"].member.rules.facts, late_now)
    assert not attack(succeeded=withheld is None)
    assert "answered before its deadline, is not on the chain" in withheld and "(and 39 more)" in withheld
    # through the countersigning path, five minutes on: the card center's settlement of nothing is refused
    zero = c.member.rules.settlement_body()
    assert zero["total"] == 0
    facts = c.partners["host"].member.rules.facts
    kept = dict(facts.on_time)
    facts.on_time.update({tag: deadline - SETTLE_GRACE_MS - 1000 for tag, deadline in kept.items()})
    with pytest.raises(ProtocolError, match="party 'host': refuses to sign the scoring settlement: request [0-9a-f]{32} "):
        c.partners["host"].sign_settlement(encode_entry(zero))
    facts.on_time.update(kept)

    # the only entries the partners sign bill what they answered; the settlement follows from them, not 0
    honest = []
    for entry, result in zip(forged, scored):
        partners = {n: {"tag": v["tag"], "mark": mark(c.partners[n].pair_key, v["tag"], result.partial_scores[n] is not None)}
                    for n, v in entry["partners"].items()}
        honest.append({**entry, "partners": partners})
    for start in range(0, 40, 10):
        signed = co_sign(c.member, c.partners, signed_by_card_center(c, honest[start:start + 10]))
        for partner in c.partners.values():
            partner.commit_block(signed)
    settlement = settlement_entry(c.member, c.partners)
    assert settlement["lines"] == [{"payee": n, "requests": answered[n], "amount": answered[n] * PER_REQUEST}
                                   for n in ("host", "mirror")]
    assert not attack(succeeded=settlement["total"] == 0)
    assert all(p.scorer.unbilled == 0 for p in c.partners.values())


class SlowSource:
    """A partner's applicant look-up that takes ``seconds``: its answer is journalled after the deadline."""

    def __init__(self, source, seconds: float):
        self.source, self.seconds = source, seconds

    def find(self, digest: bytes):
        time.sleep(self.seconds)
        return self.source.find(digest)


def answer_in_background(partner, slow: float) -> list[Future]:
    """The partner answers on its own thread, as over the wire: a card center that stops waiting goes on without it."""
    partner.scorer.source = SlowSource(partner.scorer.source, slow)
    answers: list[Future] = []

    def ask(tag, digest, consent, timeout):
        future: Future = Future()
        deadline = now_ms() + int(timeout * 1000)

        def run():
            try:
                future.set_result(partner.scorer.partial_score(tag, digest, consent, deadline))
            except Exception as error:
                future.set_exception(error)

        threading.Thread(target=run, daemon=True).start()
        answers.append(future)
        return future

    partner.ask_partial_score = ask
    return answers


def test_a_late_answer_may_be_marked_as_not_contributing_and_is_counted_unbilled_on_disk(tmp_path):
    c = Consortium(tmp_path, timeout=0.05)
    host = c.partners["host"]
    answers = answer_in_background(host, slow=0.3)
    scored = c.score(0)
    assert scored.answer.partners_missing == ("host",)        # the card center stopped waiting
    assert answers[0].result(timeout=30) is not None          # host answered all the same, after the deadline
    tag = c.center.pending[0]["partners"]["host"]["tag"]
    assert tag in host.scorer.facts.answered and tag not in host.scorer.facts.on_time
    assert c.batcher.flush() == 1                             # host signs "did not contribute" for a late answer
    assert [r["tag"] for r in read_json_lines(tmp_path / "host" / "scoring-unbilled.jsonl")] == [tag]
    assert host.scorer.unbilled == 1
    host.stop()
    host.start()                                              # the count survives a restart
    assert host.scorer.unbilled == 1


def test_a_request_without_a_deadline_is_not_answered(tmp_path):
    c = Consortium(tmp_path)
    applicant, _ = request_for(c.guest, 0, c.center_model.features)
    scorer = c.partners["host"].scorer
    for deadline in (0, None, True):
        with pytest.raises(DataError, match="carries no deadline"):
            scorer.partial_score("a" * 32, applicant_digest(applicant), consent_for(applicant).to_text(), deadline)
    assert not attack(succeeded=bool(scorer.facts.answered))


def test_scoring_settings_require_a_wait_wherever_they_are_read():
    with pytest.raises(ConfigError, match=r"\[scoring\]: timeout_ms \(the partners' deadline\) must be between 1 and 60000, got 0"):
        parse_scoring({"scoring": {"timeout_ms": 0}})
    for wait in (0, -5, float("nan"), None):   # as a card center's daemon reads them from the wire
        with pytest.raises(ConfigError, match="timeout_ms"):
            ScoringSettings(timeout_ms=wait).validate("scoring settings")
    assert ScoringSettings().validate("defaults").timeout_ms == 500


def test_partners_are_given_a_deadline_that_leaves_time_for_the_answer_to_travel_back():
    before = now_ms()
    deadline = answer_deadline_ms(0.5)
    assert before + 400 <= deadline <= now_ms() + 400     # 500 ms wait, 100 ms for the way back
    assert now_ms() + 40 - 1 <= answer_deadline_ms(0.05) <= now_ms() + 40   # a fifth of a short wait


# -- a partner opens a model only for the job it trained ---------------------------------------------------

JOB_ID = "test-0000abcd"


def trained_partner(tmp_path, monkeypatch, spec: JobSpec) -> ScoringHost:
    """Partner "bureau" with a model of JOB_ID and that job's settled training chain, trained as ``spec``."""
    start = test_ledger.job_start
    monkeypatch.setattr(test_ledger, "job_start",
                        lambda keys: {**start(keys), "job_id": JOB_ID, "job_digest": spec.digest()})
    members, keys = test_ledger.build_chain(tmp_path / "training")
    for member in members.values():
        member.close()
    folder = tmp_path / "state" / "jobs" / JOB_ID
    folder.mkdir(parents=True)
    shutil.copy(members["bureau"].path, folder / "ledger.sqlite")
    partner_model = replace(models()[1], job_id=JOB_ID, party="bureau")
    (folder / "model.json").write_text(partner_model.to_json())
    config = DaemonConfig("bureau", "localhost:0", tmp_path / "state", data_dir=DATA,
                          consent_issuers=tuple(k.hex() for k in TRUSTED))
    return ScoringHost(config, keys["bureau"])


def job(data: str) -> JobSpec:
    return JobSpec("test", (PartySpec("card_center", "breast_hetero_guest.csv", ("id",), label="y"),
                            PartySpec("bureau", data, ("id",))))


def test_a_partner_opens_a_model_only_for_the_job_digest_it_trained(tmp_path, monkeypatch):
    trained = job("breast_hetero_host.csv")
    host = trained_partner(tmp_path, monkeypatch, trained)
    other = job("another.csv")   # another data file, under the same job id
    with pytest.raises(ProtocolError) as refused:
        host.open(JOB_ID, other, "", b"\x01" * 32)
    assert not attack(succeeded=bool(host.open_models()))
    assert other.digest() in str(refused.value) and trained.digest() in str(refused.value)
    served, features, _ = host.open(JOB_ID, trained, "", b"\x01" * 32)
    assert served.role == "partner" and features == ["x1", "x4", "x9", "x12", "x19"]
    assert host.open_models() == [{"job_id": JOB_ID, "role": "partner", "blocks": 0, "unbilled": 0}]
    host.close_all()
