"""Monitoring a served model: the card center's scoring log, its training baseline, and `fedscore monitor`.

The drift is driven through the real CardCenterScorer (in process, the breast split's two-party model): the
scored applicants are the training population, or it with one of the card center's features shifted, or a
partner's data feed broken; the monitor must stay quiet on the first and name what moved on the others. The
PSI is checked against a plain numpy computation on the same numbers. One test goes through real daemons.
"""
from __future__ import annotations

import dataclasses
import json
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedscore.cli.app import main
from fedscore.cli.exits import EXIT_ALERT, EXIT_ERROR, EXIT_OK
from fedscore.model.validation import DECISIONS
from fedscore.monitoring.alerts import Thresholds
from fedscore.monitoring.baseline import (BASELINE_FILE, expected_decisions, load_baseline, training_baseline,
                                          valued_feature, write_baseline)
from fedscore.monitoring.review import review
from fedscore.monitoring.scoring_log import (LOG_FOLDER, PartnerReply, ScoringLog, day_of, log_record, own_buckets,
                                             read_log)
from fedscore.protocol.scoring.offline import log_odds, partial_scores
from fedscore.protocol.scoring.scorecard import Answer, ScoringPolicy, decision, points, probability

from conftest import write_job
from test_scoring import Consortium

JOB_ID = "job-1"
PER = 150


# -- a served model with its baseline, in process ---------------------------------------


class Served:
    """The breast split's model served in process, its card center's folder laid out as a daemon's
    (state/guest/jobs/job-1: model.json, monitoring-baseline.json, scoring-log/), and a job file naming it."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.consortium = Consortium(folder / "consortium")
        center = self.consortium.center_model
        self.model = dataclasses.replace(center, job_name="test-job")
        self.model_dir = folder / "state" / "guest" / "jobs" / JOB_ID
        self.model_dir.mkdir(parents=True)
        (self.model_dir / "model.json").write_text(self.model.to_json())
        guest, host = self.consortium.guest, self.consortium.host.set_index("id").loc[self.consortium.guest["id"]]
        partner = self.consortium.partners["host"].model
        # served: the host's partial score, and the mirror's (the same) for the applicants the mirror holds
        mirrored = guest["id"].isin(self.consortium.host["id"].iloc[::2]).to_numpy()
        self.training_log_odds = (log_odds(center, guest[center.features].to_numpy(),
                                           {"host": (partner, host[partner.features].to_numpy())})
                                  + mirrored * partial_scores(partner, host[partner.features].to_numpy()))
        features = {name: valued_feature(guest[name].to_numpy()) for name in center.features}
        self.baseline = training_baseline(JOB_ID, self.training_log_odds, features, {"host": 1.0, "mirror": 0.5})
        write_baseline(self.model_dir, self.baseline)
        self.log = self.consortium.center.scoring_log = ScoringLog(self.model_dir / LOG_FOLDER,
                                                                   own_buckets(self.model, self.model_dir))
        self.job = write_job(folder, [{"name": "guest", "data": "g.csv", "id": "id", "label": "y"},
                                      {"name": "host", "data": "h.csv", "id": "id"}])
        with self.job.open("a") as handle:   # the model's own policy, for the expected decisions
            handle.write('\n[scoring]\nlimit_basis = "x0"\nlimit_step = 1\n')

    def score(self, rows, **shift: float) -> list:
        guest = self.consortium.guest
        results = []
        for row in rows:
            values = {name: float(guest[name].iloc[row]) + shift.get(name, 0.0) for name in self.model.features}
            results.append(self.consortium.score(int(row), **values))
        self.log.flush()
        return results

    def monitor(self, *options: str, capsys=None) -> tuple[int, dict]:
        code = main(["monitor", "--job", str(self.job), "--json", *options])
        document = json.loads(capsys.readouterr().out) if capsys is not None else {}
        return code, document

    def close(self) -> None:
        self.log.close()
        self.consortium.stop_center()
        for partner in self.consortium.partners.values():
            partner.stop()


@pytest.fixture
def served(tmp_path):
    served = Served(tmp_path)
    yield served
    served.close()


def sample(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).choice(569, count, replace=False)


# -- the log the scorer writes ------------------------------------------------------------


def test_the_scorer_logs_each_answered_request_without_the_applicant_or_a_partial_score(served):
    rows = sample(40)
    scored = served.score(rows)
    text = "".join(p.read_text() for p in (served.model_dir / LOG_FOLDER).glob("*.jsonl"))
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["request_id"] for line in lines] == [s.request_id for s in scored]   # one line per request, in order
    guest = served.consortium.guest
    for line, result, row in zip(lines, scored, rows):
        assert set(line) == {"time_ms", "request_id", "probability", "score", "decision", "bins", "partners"}
        assert line["probability"] == result.answer.probability and line["decision"] == result.answer.decision
        edges = served.baseline["features"]
        assert line["bins"] == {name: int(np.searchsorted(edges[name]["edges"], guest[name].iloc[row], side="right"))
                                for name in served.model.features}
        assert set(line["partners"]) == {"host", "mirror"}
        for name, reply in line["partners"].items():
            assert set(reply) == {"answered", "ms"}                      # never the partial score itself
            assert reply["answered"] == (result.partial_scores[name] is not None)
            assert reply["ms"] is not None and 0 <= reply["ms"] < 500
    assert not all(line["partners"]["mirror"]["answered"] for line in lines)   # the mirror holds every other applicant
    for result, row in zip(scored, rows):
        assert str(guest["id"].iloc[row]) not in {line["request_id"] for line in lines}
        for partial in result.partial_scores.values():
            assert partial is None or repr(partial) not in text
    assert '"id"' not in text and "applicant" not in text


def test_a_log_line_cut_short_by_a_crash_is_skipped_and_old_days_are_deleted(tmp_path):
    answer = Answer(0.1, 650.0, "approve", 0, (), ())
    log = ScoringLog(tmp_path / LOG_FOLDER, keep_days=30)
    day = 86_400_000
    for days in (0, 20, 45):
        log.write(log_record(1_767_225_600_000 + days * day, f"r{days}", answer, {}, {}))
    log.close()
    kept = sorted(p.stem for p in (tmp_path / LOG_FOLDER).glob("*.jsonl"))
    assert kept == ["2026-01-21", "2026-02-15"]   # the first day is more than 30 days before the newest
    with (tmp_path / LOG_FOLDER / "2026-02-15.jsonl").open("a") as handle:
        handle.write('{"time_ms": 17672')   # a torn last line
    assert [r["request_id"] for r in read_log(tmp_path / LOG_FOLDER)] == ["r20", "r45"]
    assert [r["request_id"] for r in read_log(tmp_path / LOG_FOLDER, since="2026-02-01")] == ["r45"]
    # a request still in flight when its model closed is not logged: the closed log opens no file again
    log.write(log_record(1_767_225_600_000 + 46 * day, "late", answer, {}, {}))
    assert log._handle is None and not (tmp_path / LOG_FOLDER / "2026-02-16.jsonl").exists()


# -- drift through the real scorer ----------------------------------------------------------


def test_an_unchanged_population_raises_no_alert(served, capsys):
    served.score(sample(2 * PER, seed=1))
    code, document = served.monitor("--per", str(PER), capsys=capsys)
    assert code == EXIT_OK, document["alerts"]
    assert document["alerts"] == [] and document["requests"] == 2 * PER
    assert [p["requests"] for p in document["periods"]] == [PER, PER]
    assert all(p["psi"] < 0.1 for p in document["periods"])


def test_shifting_one_own_feature_raises_the_psi_and_its_csi_alert(served, capsys):
    served.score(sample(PER, seed=2))
    served.score(sample(PER, seed=3), x3=2.0)   # x3 has a large weight in the model: scores move with it
    code, document = served.monitor("--per", str(PER), capsys=capsys)
    assert code == EXIT_ALERT
    first, second = document["periods"]
    assert first["psi_reading"] == "stable" and second["psi_reading"] == "significant shift"
    alerts = [(a["period"], a["kind"], a["subject"]) for a in document["alerts"]]
    assert (second["period"], "psi", "score") in alerts
    assert {subject for _, kind, subject in alerts if kind == "csi"} == {"x3"}   # only the feature that moved
    assert second["worst_feature"] == "x3" and all(period == second["period"] for period, _, _ in alerts)
    assert main(["monitor", "--job", str(served.job), "--per", str(PER)]) == EXIT_ALERT
    shown = capsys.readouterr().out
    assert "ALERT" in shown and "CSI of x3" in shown and "x3" in shown.splitlines()[3]


def test_a_partner_whose_data_feed_broke_is_flagged(served, capsys):
    served.score(sample(PER, seed=4))
    host = served.consortium.partners["host"]

    def knows_nobody(tag, digest, consent, timeout):
        future: Future = Future()
        future.set_result(None)
        return future

    host.ask_partial_score = knows_nobody
    served.score(sample(PER, seed=5))
    code, document = served.monitor("--per", str(PER), capsys=capsys)
    assert code == EXIT_ALERT
    flagged = [(a["period"], a["subject"]) for a in document["alerts"] if a["kind"] == "answer_rate"]
    assert flagged == [(document["periods"][1]["period"], "host")]   # not the mirror, not the first period
    assert document["periods"][0]["partners"]["host"]["answer_rate"] == 1.0
    assert document["periods"][1]["partners"]["host"]["answer_rate"] == 0.0


def test_the_psi_equals_a_plain_numpy_computation(served, capsys):
    served.score(sample(PER, seed=6), x0=0.7)
    code, document = served.monitor("--per", str(PER), capsys=capsys)
    logged = np.array([r["probability"] for r in read_log(served.model_dir / LOG_FOLDER)])
    training = 1.0 / (1.0 + np.exp(-served.training_log_odds))
    edges = np.unique(np.quantile(training, np.arange(1, 10) / 10))
    expected = np.histogram(training, np.r_[-np.inf, edges, np.inf])[0] / len(training)
    actual = np.histogram(logged, np.r_[-np.inf, edges, np.inf])[0] / len(logged)
    expected, actual = np.maximum(expected, 1e-4), np.maximum(actual, 1e-4)
    psi = float(np.sum((actual - expected) * np.log(actual / expected)))
    assert document["periods"][0]["psi"] == pytest.approx(psi, abs=1e-6)
    assert psi > 0.01   # a real shift, not two zeros compared


# -- per day, from log lines written as the scorer writes them ------------------------------------


def synthetic_log(folder: Path, baseline: dict, days: dict[int, dict], seed: int = 0) -> None:
    """Log lines for each day (offset from 2026-01-01): {"requests", "shift", "bureau_rate", "bureau_late"}."""
    rng = np.random.default_rng(seed)
    policy = ScoringPolicy()
    log = ScoringLog(folder)
    edges = baseline["features"]["x"]["edges"]
    for day, spec in days.items():
        start = 1_767_225_600_000 + day * 86_400_000
        for i in range(spec["requests"]):
            x = rng.normal(spec.get("shift", 0.0), 1.0)
            u = -1.5 + 0.8 * x + rng.normal(0.0, 0.6)
            score = points(u, policy)
            answered = rng.random() < spec.get("bureau_rate", 0.8)
            late = spec.get("bureau_late", False)
            replies = {"bureau": PartnerReply(answered and not late, None if late else float(rng.uniform(5, 30)))}
            answer = Answer(probability(u), score, decision(score, policy), 0, (), ())
            log.write(log_record(start + i * 1000, f"{day}-{i}", answer,
                                 {"x": int(np.searchsorted(edges, x, side="right"))}, replies))
    log.close()


def synthetic_baseline(seed: int = 9) -> dict:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, 20_000)
    u = -1.5 + 0.8 * x + rng.normal(0.0, 0.6, len(x))
    return training_baseline("synthetic", u, {"x": valued_feature(x)}, {"bureau": 0.8})


def test_days_are_judged_one_by_one_and_a_partner_that_stopped_answering_is_flagged(tmp_path):
    baseline = synthetic_baseline()
    synthetic_log(tmp_path / "log", baseline, {0: {"requests": 400}, 1: {"requests": 400},
                                                2: {"requests": 400, "bureau_late": True}, 3: {"requests": 40}})
    document = review(read_log(tmp_path / "log"), baseline, ScoringPolicy(), Thresholds())
    assert [p["period"] for p in document["periods"]] == ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]
    assert [p["judged"] for p in document["periods"]] == [True, True, True, False]   # 40 requests: too few to judge
    assert [(a["period"], a["kind"], a["subject"]) for a in document["alerts"]] == [("2026-01-03", "answer_rate", "bureau")]
    stopped = document["periods"][2]["partners"]["bureau"]
    assert stopped == {"asked": 400, "answered": 0, "late": 400, "answer_rate": 0.0, "median_ms": None, "p95_ms": None}
    healthy = document["periods"][0]["partners"]["bureau"]
    assert 5 <= healthy["median_ms"] <= healthy["p95_ms"] <= 30
    # from the day it stopped on, the only reference is the rate the alignment found: still flagged
    alone = review(read_log(tmp_path / "log", since="2026-01-03"), baseline, ScoringPolicy(), Thresholds())
    assert [(a["period"], a["kind"]) for a in alone["alerts"]] == [("2026-01-03", "answer_rate")]


def test_the_expected_decision_shares_are_those_of_the_training_population():
    rng = np.random.default_rng(4)
    u = rng.normal(-1.4, 1.1, 50_000)
    baseline = training_baseline("j", u, {}, {})
    for policy in (ScoringPolicy(), ScoringPolicy(approve_at=640, review_at=600), ScoringPolicy(offset=650, pdo=40)):
        decided = [decision(points(v, policy), policy) for v in u.tolist()]
        plain = {d: decided.count(d) / len(u) for d in DECISIONS}
        assert expected_decisions(baseline, policy) == pytest.approx(plain, abs=0.005)


def test_a_decision_mix_that_moved_is_flagged_and_thresholds_come_from_the_job_file(tmp_path):
    baseline = synthetic_baseline()
    synthetic_log(tmp_path / "log", baseline, {0: {"requests": 500, "shift": 0.6}})
    document = review(read_log(tmp_path / "log"), baseline, ScoringPolicy(), Thresholds())
    kinds = {(a["kind"], a["subject"]) for a in document["alerts"]}
    assert ("decisions", "approve") in kinds and ("psi", "score") not in kinds   # PSI 0.1–0.25: a note only
    assert [(n["kind"], n["subject"]) for n in document["notes"]][:1] == [("psi", "score")]
    lenient = Thresholds(decision_shift=0.5, csi_alert=1.0, csi_watch=0.9)
    assert review(read_log(tmp_path / "log"), baseline, ScoringPolicy(), lenient)["alerts"] == []


# -- the command: exit codes and bad input -----------------------------------------------------


def test_monitor_names_what_is_missing_and_exits_2(served, capsys, tmp_path):
    assert main(["monitor", "--job", str(served.job)]) == EXIT_ERROR   # nothing scored yet
    assert "no scoring log" in capsys.readouterr().err
    served.score(sample(3))
    (served.model_dir / BASELINE_FILE).unlink()
    assert main(["monitor", "--job", str(served.job)]) == EXIT_ERROR
    assert "no monitoring baseline" in capsys.readouterr().err
    assert main(["monitor", "--job", str(served.job), "--state", str(tmp_path / "nowhere")]) == EXIT_ERROR
    assert "no card center state" in capsys.readouterr().err
    with served.job.open("a") as handle:
        handle.write("\n[monitoring]\npsi_alrt = 0.3\n")
    assert main(["monitor", "--job", str(served.job)]) == EXIT_ERROR
    assert "unknown setting 'psi_alrt'" in capsys.readouterr().err


def test_monitor_thresholds_in_the_job_file_change_the_verdict_and_the_page_is_written(served, capsys, tmp_path):
    served.score(sample(PER, seed=7), x3=2.0)
    assert main(["monitor", "--job", str(served.job), "--quiet"]) == EXIT_ALERT
    with served.job.open("a") as handle:
        handle.write("\n[monitoring]\npsi_alert = 50.0\npsi_watch = 40.0\ncsi_alert = 50.0\ncsi_watch = 40.0\n"
                     "decision_shift = 1.0\n")
    page = tmp_path / "monitor.html"
    assert main(["monitor", "--job", str(served.job), "--html", str(page), "--quiet"]) == EXIT_OK
    html = page.read_text()
    assert html.count("<img") == 4 and "Model monitoring" in html
    assert capsys.readouterr().out == ""


# -- through real daemons ------------------------------------------------------------------------


def test_a_served_model_logs_each_answered_request_and_the_monitor_reads_it(tmp_path):
    """The demo consortium trained by its daemons writes the baseline; scoring through the card center's
    daemon writes one log line per answered request, with no applicant id, digest or partial score."""
    from fedscore.cli.demo import bundled_data, issuer_key, party_rows, write_applicants, write_demo
    from fedscore.cli.monitor import run_monitor
    from fedscore.cli.runner import run_job_file, score_file
    from fedscore.protocol.scoring.consent import applicant_digest

    rows = 3000
    job = write_demo(tmp_path, epochs=2, key_bits=512, rows=rows)
    run_job_file(job, local=True, workers=1)
    folder = next((tmp_path / "state" / "card_center" / "jobs").glob("*/model.json")).parent
    baseline = load_baseline(folder)
    assert set(baseline["partners"]) == {"bureau", "ecommerce"} and 0 < min(baseline["partners"].values()) < 1
    assert sum(baseline["score"]["shares"]) == pytest.approx(1.0, abs=1e-4)
    assert set(baseline["features"]) == {"LIMIT_BAL", "EDUCATION"}   # its own model's columns, protected ones out

    data = bundled_data().head(rows)
    held = party_rows(len(data))
    everyone = np.intersect1d(np.intersect1d(held["card_center"], held["bureau"]), held["ecommerce"])
    chosen = np.random.default_rng(0).choice(everyone, 300, replace=False)
    applicants = tmp_path / "unchanged.csv"
    write_applicants(applicants, data, sorted(chosen.tolist()), issuer_key())
    result = score_file(job, applicants, tmp_path / "scored.csv", local=True)
    assert result["failed"] == 0

    texts = "".join(p.read_text() for p in (folder / LOG_FOLDER).glob("*.jsonl"))
    lines = [json.loads(line) for line in texts.splitlines()]
    scored = pd.read_csv(tmp_path / "scored.csv", dtype=str, keep_default_na=False)
    assert sorted(line["request_id"] for line in lines) == sorted(scored["request_id"])
    assert all(set(reply) == {"answered", "ms"} for line in lines for reply in line["partners"].values())
    assert all(set(line["partners"]) == {"bureau", "ecommerce"} and line["bins"].keys() == baseline["features"].keys()
               for line in lines)
    for applicant in scored["id"]:
        assert f'"{applicant}"' not in texts and applicant_digest(applicant).hex() not in texts
    assert all(day_of(line["time_ms"]) == (folder / LOG_FOLDER / f"{day_of(line['time_ms'])}.jsonl").stem for line in lines)

    assert main(["monitor", "--job", str(job), "--per", "300", "--quiet"]) == EXIT_OK
    shifted = tmp_path / "shifted.csv"
    others = np.setdiff1d(everyone, chosen)[:300]
    frame = data.copy()
    frame["LIMIT_BAL"] = 10_000   # every applicant asks for the smallest limit
    write_applicants(shifted, frame, sorted(others.tolist()), issuer_key())
    assert score_file(job, shifted, tmp_path / "scored2.csv", local=True)["failed"] == 0
    document = run_monitor(job, per=300)
    assert [p["requests"] for p in document["periods"]] == [300, 300]
    assert {a["subject"] for a in document["alerts"] if a["kind"] == "csi"} == {"LIMIT_BAL"}
    assert {a["period"] for a in document["alerts"]} == {document["periods"][1]["period"]}
    assert main(["monitor", "--job", str(job), "--per", "300", "--quiet"]) == EXIT_ALERT


def test_a_partner_down_for_longer_than_it_was_up_stays_flagged(tmp_path):
    baseline = synthetic_baseline()
    days = {0: {"requests": 200}, **{day: {"requests": 200, "bureau_late": True} for day in range(1, 6)}}
    synthetic_log(tmp_path / "log", baseline, days)
    document = review(read_log(tmp_path / "log"), baseline, ScoringPolicy(), Thresholds())
    flagged = [a["period"] for a in document["alerts"] if a["kind"] == "answer_rate"]
    assert flagged == [p["period"] for p in document["periods"][1:]]
    assert all(a["threshold"] == document["periods"][0]["partners"]["bureau"]["answer_rate"]
               for a in document["alerts"])   # judged against the one healthy day, not against the days it was down
