"""Batch scoring through real daemons over mutual TLS: each applicant of a batch is scored as if it came alone
(the same answer as a single call and as the offline model), gets its own chain entry at every member, and
fails alone; too large a batch is refused whole; the HTTPS endpoint does the same. And what keeps it fast:
a batch reaches each partner in one call, and the chain's upkeep never makes a request wait for the disk."""
from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from fedscore.cli.demo import SPLIT
from fedscore.daemons.launcher import LocalConsortium
from fedscore.errors import DataError
from fedscore.files import read_json_lines
from fedscore.job_file import load_job, load_scoring
from fedscore.ledger.store import LedgerStore
from fedscore.ledger.verify import verify_chain
from fedscore.proto import fedscore_pb2 as pb
from fedscore.protocol.scoring.journal import Journal
from fedscore.transport.clients.scoring import PartialScoreSender, ScoringClient
from fedscore.transport.tls import TlsIdentity

from test_scoring_daemons import expected_answers, tls_socket, trained  # noqa: F401  (trained: the fixture)

PARTIES = ("card_center", "bureau", "ecommerce")


def requests_of(folder: Path, frame: pd.DataFrame) -> list[tuple[str, dict[str, float], str]]:
    spec, _ = load_job(folder / "job.toml")
    features = [c for c in SPLIT["card_center"] if c not in spec.protected]
    return [(str(r["id"]), {c: float(r[c]) for c in features}, r["consent"]) for r in frame.to_dict("records")]


def scoring_entries(folder: Path, party: str) -> list[dict]:
    """The `scoring` entries on ``party``'s replica of the scoring chain (checked whole first)."""
    store = LedgerStore(next((folder / "state" / party / "jobs").glob("*/scoring.sqlite")), read_only=True)
    try:
        blocks = list(store.blocks())
    finally:
        store.close()
    verify_chain(blocks)
    return [e for b in blocks for e in b.decoded() if e["kind"] == "scoring"]


def same_answer(reply: pb.ScoreReply, want) -> bool:
    return (reply.probability, reply.score, reply.decision, reply.credit_limit, tuple(reply.reasons),
            tuple(reply.partners_missing)) == (want.probability, want.score, want.decision, want.credit_limit,
                                               tuple(want.reasons), tuple(want.partners_missing))


def test_a_batch_scores_each_applicant_as_a_single_call_and_the_offline_model_do(trained):
    spec, base = load_job(trained / "job.toml")
    settings = load_scoring(trained / "job.toml")
    applicants = pd.read_csv(trained / "test-applicants.csv", dtype=str)
    work = requests_of(trained, applicants)
    expected = expected_answers(trained, applicants)
    with LocalConsortium(spec, base, trained / "state", 1, settings.consent_issuers) as consortium:
        client = ScoringClient(consortium.spec.card_center.address, consortium.spec.card_center.name,
                               consortium.card_center_identity)
        job_id = client.open_scoring(consortium.spec, settings.to_json()).job_id
        before = {p: len(scoring_entries(trained, p)) for p in PARTIES}

        batch = client.score_batch(work, job_id)   # all 120 in one call: both partners, one partner, none
        assert batch.job_id == job_id and len(batch.results) == len(work) == 120
        assert all(not r.error for r in batch.results), [r.error for r in batch.results if r.error][:3]
        for (applicant, features, consent), result in zip(work, batch.results):
            assert same_answer(result.answer, expected[applicant]), applicant   # the offline sums, to the bit
            single = client.score(applicant, features, consent, job_id)        # the consent's second use
            assert same_answer(single, expected[applicant]) and single.request_id != result.answer.request_id
        missing = [tuple(r.answer.partners_missing) for r in batch.results]
        assert missing.count(()) >= 60 and missing.count(("bureau", "ecommerce")) >= 10   # strangers are scored too

        # bad items fail alone: someone else's consent, no applicant id, a feature sent twice; the rest are scored
        (a, fa, ca), (b, fb, cb), (c, fc, cc), (d, fd, cd) = work[60:64]
        mixed = client.score_batch([(a, fa, ca), (b, fb, ca), (c, fc, cc), ("  ", fd, cd)], job_id)
        twice = pb.ScoreRequest(applicant_id=d, features=fd, text_features={"LIMIT_BAL": "x"}, consent=cd)
        raw = client._call("ScoreBatch", pb.ScoreBatchRequest(job_id=job_id, applicants=[twice]))
        assert [r.error_class for r in mixed.results] == ["", "ConsentError", "", "DataError"]
        assert "not certified for this applicant" in mixed.results[1].error
        assert "no applicant id" in mixed.results[3].error
        assert raw.results[0].error_class == "DataError" and "more than once" in raw.results[0].error
        assert same_answer(mixed.results[0].answer, expected[a]) and same_answer(mixed.results[2].answer, expected[c])
        scored_ids = [r.answer.request_id for r in (*batch.results, *mixed.results) if not r.error]

        # too large a batch, or an empty one, is refused whole, saying why; nothing of it reaches the chain
        with pytest.raises(DataError, match="at most 300 applicants .*this one holds 301"):
            client.score_batch([work[0]] * 301, job_id)
        with pytest.raises(DataError, match="no applicants"):
            client.score_batch([], job_id)
        client.settle(job_id)
        client.close_scoring(job_id)
        client.close()

    # one entry per scored applicant, at the card center and at each partner, and none for the refused ones
    for party in PARTIES:
        entries = scoring_entries(trained, party)
        assert len(entries) - before[party] == 120 + 120 + 2, party   # the batch, the single calls, the mixed batch
        ids = [e["request_id"] for e in entries]
        assert len(set(ids)) == len(ids) and set(scored_ids) <= set(ids)


def post(address: str, path: str, document: object, identity: TlsIdentity) -> tuple[int, dict]:
    connection = http.client.HTTPConnection(*address.split(":"), timeout=60)
    connection.sock = tls_socket(address, identity)
    try:
        connection.request("POST", path, json.dumps(document), {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_the_https_batch_endpoint_answers_each_applicant_and_refuses_what_it_must(trained):
    spec, base = load_job(trained / "job.toml")
    settings = replace(load_scoring(trained / "job.toml"), max_batch_applicants=8)   # a card center's own cap
    applicants = pd.read_csv(trained / "test-applicants.csv", dtype=str).iloc[80:86]
    work = requests_of(trained, applicants)
    expected = expected_answers(trained, applicants)
    with LocalConsortium(spec, base, trained / "state", 1, settings.consent_issuers) as consortium:
        client = ScoringClient(consortium.spec.card_center.address, consortium.spec.card_center.name,
                               consortium.card_center_identity)
        job_id = client.open_scoring(consortium.spec, settings.to_json()).job_id
        address, me = consortium.http_addresses["card_center"], consortium.card_center_identity
        items = [{"applicant_id": a, "features": f, "consent": c} for a, f, c in work]
        items[2] = {**items[2], "consent": items[3]["consent"]}        # someone else's consent
        items[4] = {**items[4], "features": "lots"}                     # malformed: refused alone
        status, answer = post(address, "/v1/score/batch", {"applicants": items, "job_id": job_id}, me)
        assert status == 200 and answer["job_id"] == job_id and len(answer["results"]) == 6
        results = answer["results"]
        assert (results[2]["error_class"], results[2]["status"]) == ("ConsentError", 403)
        assert (results[4]["error_class"], results[4]["status"]) == ("DataError", 400)
        assert results[4]["error"] == "applicant 5 of the batch: features must be an object of feature name to number"
        for k in (0, 1, 3, 5):
            got, want = results[k], expected[work[k][0]]
            assert (got["probability"], got["score"], got["decision"], got["credit_limit"], got["reasons"],
                    got["partners_missing"]) == (want.probability, want.score, want.decision, want.credit_limit,
                                                 list(want.reasons), list(want.partners_missing))
        assert len({results[k]["request_id"] for k in (0, 1, 3, 5)}) == 4

        status, refused = post(address, "/v1/score/batch", {"applicants": items * 2}, me)
        assert status == 400 and "at most 8 applicants" in refused["error"] and refused["error_class"] == "DataError"
        status, refused = post(address, "/v1/score/batch", [items[0]], me)
        assert status == 400 and '"applicants"' in refused["error"]
        status, refused = post(address, "/v1/score/batch", {"applicants": items[:1]}, consortium.identity("bureau"))
        assert status == 403 and "refused 'bureau'" in refused["error"]
        client.settle(job_id)
        on_chain = {e["request_id"] for e in scoring_entries(trained, "card_center")}
        assert {results[k]["request_id"] for k in (0, 1, 3, 5)} <= on_chain
        client.close_scoring(job_id)
        client.close()


class RecordingPartner:
    """A partner's scoring client that records each call's items; the first call waits until released, so
    that what is submitted meanwhile queues up."""

    def __init__(self):
        self.peer = type("Peer", (), {"name": "bureau", "label": "partner 'bureau'", "address": "-"})()
        self.calls: list[list[str]] = []
        self.release = threading.Event()

    def partial_scores(self, items, timeout):
        self.calls.append([item.tag for item in items])
        if len(self.calls) == 1:
            self.release.wait(10)
        return [pb.PartialScoreResult(known=True, partial_score=float(len(item.tag))) for item in items]


def test_a_batch_goes_to_a_partner_in_one_call_never_split_and_may_share_it_with_others():
    partner = RecordingPartner()
    sender = PartialScoreSender(partner)
    try:
        first = sender.submit(pb.PartialScoreItem(tag="first"), 5.0)
        while not partner.calls:   # the first call is on the wire: the rest queue behind it
            time.sleep(0.001)
        big = sender.submit_many([pb.PartialScoreItem(tag=f"big-{k}") for k in range(PartialScoreSender.MAX_ITEMS + 88)], 5.0)
        small = sender.submit_many([pb.PartialScoreItem(tag=f"small-{k}") for k in range(300)], 5.0)
        single = sender.submit(pb.PartialScoreItem(tag="single"), 5.0)
        partner.release.set()
        answers = [f.result(5) for f in (first, *big, *small, single)]
    finally:
        sender.close()
    assert answers[0] == 5.0 and answers[-1] == 6.0
    assert [len(call) for call in partner.calls] == [1, PartialScoreSender.MAX_ITEMS + 88, 301]
    assert partner.calls[2][:300] == [f"small-{k}" for k in range(300)] and partner.calls[2][300] == "single"


def test_pruning_a_journal_keeps_requests_journalled_meanwhile_and_never_makes_them_wait_for_the_disk(tmp_path):
    journal = Journal(tmp_path / "pending.jsonl")
    for k in range(6):
        journal.append({"request_id": f"r{k}", "on_chain": k % 2 == 0})
    rewrite = journal._temporary

    def slow_disk(data: bytes) -> str:   # while the pruned copy goes to disk, requests are journalled
        assert not journal.lock.locked()
        journal.append({"request_id": "late", "on_chain": True})   # kept although keep() would drop it
        return rewrite(data)

    journal._temporary = slow_disk
    kept = journal.keep_only(lambda record: not record["on_chain"])
    journal.append({"request_id": "after", "on_chain": False})
    journal.close()
    on_disk = [r["request_id"] for r in read_json_lines(tmp_path / "pending.jsonl")]
    assert [r["request_id"] for r in kept] == ["r1", "r3", "r5", "late"]
    assert on_disk == ["r1", "r3", "r5", "late", "after"]
    assert [p.name for p in tmp_path.iterdir()] == ["pending.jsonl"]   # no temporary file left behind
