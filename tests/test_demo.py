"""The one real end-to-end run: the bundled demo consortium with 2048-bit keys, through daemons."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedscore.job_file import load_job
from fedscore.model.model_file import PartyModel
from fedscore.protocol.training.simulation import build_consortium, load_tables

from conftest import trained_weights
from test_protocol import reference


@pytest.mark.slow
def test_demo_trains_three_parties_with_2048_bit_keys(tmp_path, keypair, inline_pool):
    workdir = tmp_path / "demo"
    done = subprocess.run(
        # five epochs: the card center's secret start (one logit per row) has mostly washed out by then
        [sys.executable, "-m", "fedscore", "demo", "--workdir", str(workdir), "--epochs", "5"],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "epoch 5/5" in done.stderr     # progress on stderr, the results on stdout
    assert "card center alone" in done.stdout and "federated (3 parties)" in done.stdout

    report = json.loads((workdir / "report.json").read_text())
    page = (workdir / "report.html").read_text()
    # ROC, KS, loss, P(default) histogram, stability, weights, variance shares, reliability, points histogram
    assert "fedscore report: default-credit" in page and page.count('src="data:image/png;base64,') == 9
    assert report["scorecard"] and report["calibration"] and abs(report["mean_pd"] - report["observed_default_rate"]) < 0.03
    assert all(Path(p["report"]).is_file() for p in report["parties"])   # each party's own page
    ids = {
        name: set(pd.read_csv(workdir / f"{name}.csv")[column])
        for name, column in [("card_center", "id"), ("bureau", "customer_id"), ("ecommerce", "id")]
    }
    common = ids["card_center"] & ids["bureau"] & ids["ecommerce"]
    assert report["aligned_rows"] == report["rows"] == len(common)
    assert report["overlaps"] == {p: len(ids["card_center"] & ids[p]) for p in ("bureau", "ecommerce")}
    assert 0.85 < report["overlaps"]["bureau"] / len(ids["card_center"]) < 0.95
    assert len(ids["bureau"] - ids["card_center"]) > 1000  # partners know people the card center never saw
    assert report["key_bits"] == 2048 and report["test_rows"] == round(len(common) * 0.3)
    assert "aligned by private set intersection" in done.stdout
    assert [p["name"] for p in report["parties"]] == ["card_center", "bureau", "ecommerce"]
    # the partners' columns are worth having: well above the card center alone
    assert report["test_auc"] > report["local_only_test_auc"] + 0.04
    assert 0.55 < report["local_only_test_auc"] < 0.68

    # it ends by scoring its new applicants online, consents checked, fees settled on the scoring chain
    scored = pd.read_csv(workdir / "scored.csv", keep_default_na=False)
    assert len(scored) == 10 and (scored["error"] == "").all()
    assert scored["partners_missing"].tolist()[-2:] == ["ecommerce", "bureau;ecommerce"]
    assert "scoring settlement #1: card_center owes bureau" in done.stdout
    # then the consortium's other services: a verification, the observer, the monitor, and the dispute carrying the first
    assert "saw applicant" in done.stdout and "heads agree with every member, no alarm" in done.stdout
    assert "monitor: 10 requests scored on" in done.stdout and "with 2 evidence files matching" in done.stdout
    # and a marketing audience at ecommerce, from an audience model trained with the card center's labels only
    assert "audience model ecommerce-audience-" in done.stdout and "marketing audience at ecommerce" in done.stdout
    assert "over the budget" in done.stdout and "audience settlement #1: card_center owes ecommerce" in done.stdout

    # the same five epochs in plaintext numpy, from the card center's secret start its model file records, give
    # the same weights
    spec, base = load_job(workdir / "job.toml")
    sessions = build_consortium(spec, load_tables(spec, base), inline_pool, keypair)
    sessions.card_center.start = np.array(PartyModel.from_json(Path(report["parties"][0]["model"]).read_text()).start)
    expected, _ = reference(sessions, quantised=True)
    weights = trained_weights(report)
    for name, want in zip(["card_center", "bureau", "ecommerce"], expected):
        np.testing.assert_allclose(weights[name], want, rtol=0, atol=1e-9)


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    """The whole demo at a small size (512-bit keys, 3000 rows, one epoch), in this process, with --json."""
    import contextlib
    import io

    from fedscore.cli import main

    folder = tmp_path_factory.mktemp("small-demo") / "demo"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["demo", "--workdir", str(folder), "--epochs", "1", "--key-bits", "512", "--rows", "3000", "--json",
                     "--quiet"])
    assert code == 0
    return folder, json.loads(printed.getvalue())


def _scoring_chain(folder: Path, member: str, job_id: str) -> Path:
    return folder / "state" / member / "jobs" / job_id / "scoring.sqlite"


def test_the_demo_records_the_disputed_applicants_verification_and_its_dispute_checks_it(small_demo):
    from fedscore.cli.demo import DEMO_VERIFIER, verifier_key
    from fedscore.cli.demo_consortium import verification_line
    from fedscore.cli.dispute import check_evidence
    from fedscore.ledger.evidence import EvidenceError
    from fedscore.ledger.store import LedgerStore
    from fedscore.protocol.scoring.consent import applicant_digest

    folder, document = small_demo
    scored = pd.read_csv(folder / "scored.csv", dtype=str, keep_default_na=False)
    verification, dispute = document["verification"], document["dispute"]
    applicant = scored[scored["error"] == ""]["id"].iloc[0]
    assert verification["applicant"] == dispute["applicant"] == applicant and verification["verifier"] == DEMO_VERIFIER
    evidence = Path(verification["evidence_dir"])
    assert evidence == folder / "verifications" / applicant
    assert verification["evidence"] == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in evidence.iterdir()}
    assert len(verification["evidence"]) == 2
    # on the scoring chain every member holds, by its id
    job_id = document["scoring"]["job_id"]
    for member in ("card_center", "bureau", "ecommerce"):
        entries = [e for b in LedgerStore(_scoring_chain(folder, member, job_id), read_only=True).blocks() for e in b.decoded()]
        assert [e["verification_id"] for e in entries if e["kind"] == "verification"] == [verification["verification_id"]]
    # the dispute carries it, checked against the files handed over with the bundle
    key = bytes(verifier_key().verify_key).hex()
    assert f"{applicant_digest(applicant).hex()} consented to card_center" in dispute["verdict"]
    assert f"verified by {DEMO_VERIFIER} (key {key[:16]}" in dispute["verdict"]
    assert "by face-match" in dispute["verdict"] and "with 2 evidence files matching" in dispute["verdict"]
    handed = Path(dispute["evidence_files"])
    assert sorted(p.name for p in handed.iterdir()) == sorted(verification["evidence"])
    checked = check_evidence(Path(dispute["bundle"]), dispute["genesis"], applicant, files_dir=handed)
    assert checked["verdict"] == dispute["verdict"]
    (handed / "selfie.jpg").write_bytes(b"another face")   # a file that is not the one verified fails the check
    with pytest.raises(EvidenceError, match="selfie.jpg"):
        check_evidence(Path(dispute["bundle"]), dispute["genesis"], applicant, files_dir=handed)
    assert verification_line(verification).startswith(f"identity verification {verification['verification_id']}: "
                                                      f"{DEMO_VERIFIER} saw applicant {applicant} (face-match, 2 evidence files")


def test_the_demos_observer_holds_every_members_heads_read_from_their_files(small_demo):
    from fedscore.cli.demo_consortium import observer_line
    from fedscore.daemons.launcher import OBSERVER
    from fedscore.ledger.position import read_position_file
    from fedscore.ledger.store import LedgerStore

    folder, document = small_demo
    observed, job_id = document["observer"], document["scoring"]["job_id"]
    assert observed["observer"] == OBSERVER and observed["caught_up"] and observed["alarms"] == []
    members = {"training": ["bureau", "card_center", "coordinator", "ecommerce"],
               "scoring": ["bureau", "card_center", "ecommerce"]}   # the coordinator has no part in scoring
    for chain, name in (("training", "ledger.sqlite"), ("scoring", "scoring.sqlite")):
        files = {m: folder / "state" / m / "jobs" / job_id / name for m in members[chain]}
        heads = {read_position_file(path).head.hex() for path in files.values()}
        assert len(heads) == 1 and observed["chains"][chain]["head"] == heads.pop()
        assert observed["chains"][chain]["members"] == members[chain]
        blocks = len(list(LedgerStore(files["card_center"], read_only=True).blocks()))
        assert observed["chains"][chain]["blocks"] == blocks
        # the observer's own replica, kept in the demo's state
        replica = folder / "state" / OBSERVER / "jobs" / job_id / name
        assert read_position_file(replica).head.hex() == observed["chains"][chain]["head"]
    assert observed["chains"]["training"]["blocks"] == document["report"]["ledger_blocks"]
    training, scoring = observed["chains"]["training"]["blocks"], observed["chains"]["scoring"]["blocks"]
    assert observer_line(observed) == (f"observer {OBSERVER}: follows 2 chains (training {training} blocks, scoring "
                                       f"{scoring} blocks), heads agree with every member, no alarm")


def test_the_demos_monitor_counts_the_answered_requests_and_its_command_runs_on_the_demo_folder(small_demo, capsys):
    from fedscore.cli import main
    from fedscore.cli.demo_consortium import monitor_lines

    folder, document = small_demo
    monitor = document["monitor"]
    scored = pd.read_csv(folder / "scored.csv", dtype=str, keep_default_na=False)
    answered = int((scored["error"] == "").sum())
    assert monitor["requests"] == answered == 10 and monitor["min_requests"] == 100
    assert not monitor["judged"] and monitor["alerts"] == [] and monitor["psi"] >= 0
    lines = monitor_lines(monitor).splitlines()
    assert lines[0] == (f"monitor: {answered} requests scored on {monitor['period']}: fewer than the 100 a period needs "
                        "before its PSI means anything, so not judged yet")
    assert lines[1] == f"  fedscore monitor --job {folder / 'job.toml'}"
    capsys.readouterr()
    assert main(["monitor", "--job", str(folder / "job.toml")]) == 0   # what the demo tells its reader to run
    shown = capsys.readouterr().out
    assert f": {answered} requests, per day" in shown and "no alert" in shown


def test_the_demos_audience_counts_the_partners_users_within_the_noise_and_settles_on_its_chain(small_demo):
    """The demo's marketing audience at ecommerce, checked against plaintext on the partner's own files: every
    count within the noise, small cells suppressed, users the card center never saw counted, the third query
    refused by the budget, the settlement on both replicas of the audience chain, signed by both."""
    from fedscore.cli.demo_audience import AUDIENCE_FEES, POLICY, SEGMENT, USERS_FILE
    from fedscore.ledger.block import decode_entry
    from fedscore.ledger.settlement import balances
    from fedscore.ledger.store import LedgerStore
    from fedscore.ledger.verify import verify_chain
    from fedscore.protocol.audience.model import AudienceModel
    from fedscore.protocol.audience.users import load_user_base

    folder, document = small_demo
    audience = document["audience"]
    state = folder / "state"
    model = AudienceModel.from_json((state / "ecommerce" / "audience" / "card_center" / "models" /
                                     f"{audience['model']}.json").read_text())
    users = load_user_base(folder / USERS_FILE, "id", list(model.partner_model.features), [SEGMENT], "ecommerce")
    points = model.points(users)
    known = set(pd.read_csv(folder / "card_center_labels.csv", dtype=str)["id"].str.strip())
    never_seen = ~np.isin(users.ids, list(known))
    assert never_seen.sum() > 100   # the partner's users the card center never saw are in its user base
    slack = 20   # discrete Laplace at ε = 1: P(|noise| > 20) = 2e^{-20}/(1+e^{-1}) per cell
    first, second = audience["answers"]
    for answer, rows in ((first, np.ones(len(points), dtype=bool)), (second, never_seen)):
        inside = rows & (points >= answer["min_points"])
        for cell in answer["cells"]:
            truth = int(np.sum(inside & (users.segments[SEGMENT] == cell["segment"][0])))
            if cell["count"] is None:
                assert truth < POLICY["min_cell"] + slack
            else:
                assert cell["count"] >= POLICY["min_cell"] and abs(cell["count"] - truth) <= slack
        assert answer["total"] == sum(cell["count"] or 0 for cell in answer["cells"])
    assert np.sum(never_seen & (points >= first["min_points"])) > 0   # strangers are in the first audience too
    assert "over the budget" in audience["refused"]["error"] and second["spent"] == POLICY["budget"]

    replicas = []
    for member, other in (("card_center", "ecommerce"), ("ecommerce", "card_center")):
        store = LedgerStore(state / member / "audience" / other / "audience.sqlite", read_only=True)
        try:
            blocks = list(store.blocks())
        finally:
            store.close()
        verify_chain(blocks, workers=1)
        replicas.append([decode_entry(e) for block in blocks for e in block.entries])
    assert replicas[0] == replicas[1]
    entries = replicas[0]
    assert [e["kind"] for e in entries] == ["audience_start", "audience_model", "audience_query", "audience_query",
                                            "campaign", "conversion", "audience_settlement"]
    settled = entries[-1]
    members = first["total"]
    assert audience["campaign"]["members"] == members
    assert settled["lines"] == [{"payee": "ecommerce", "queries": 2, "audience_members": members, "conversions": 1,
                                 "amount": 2 * AUDIENCE_FEES["per_query"] + members * AUDIENCE_FEES["per_audience_member"]
                                 + AUDIENCE_FEES["per_conversion"]}]
    assert set(settled["signatures"]) == {"card_center", "ecommerce"}
    assert balances(entries) == {"card_center": {"owes": settled["total"], "owed": 0},
                                 "ecommerce": {"owes": 0, "owed": settled["total"]}}
