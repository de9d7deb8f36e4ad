"""Online scoring through real daemons: every answer equals the offline model; HTTP, consent and failures."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedscore.cli.status import member_status
from fedscore.job_file import load_job, load_scoring
from fedscore.daemons.launcher import LocalConsortium
from fedscore.cli.demo import ID_COLUMN, SPLIT, bundled_data, issuer_key, party_rows, write_applicants, write_demo
from fedscore.errors import DataError, DeniedError, PeerError
from fedscore.ledger.store import LedgerStore
from fedscore.ledger.verify import verify_chain
from fedscore.model.model_file import PartyModel
from fedscore.protocol.scoring.consent import certify_applicant, give_consent
from fedscore.protocol.scoring.offline import offline_answer
from fedscore.protocol.scoring.sources import CsvSource
from fedscore.cli.runner import run_job_file
from nacl.signing import SigningKey
from fedscore.transport.clients.scoring import ScoringClient
from fedscore.transport.tls import TlsIdentity

from faults import count

ROWS = 5000


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The demo consortium on its first 5000 applicants, trained for 2 epochs with 512-bit keys (tests only)."""
    folder = tmp_path_factory.mktemp("scoring")
    job = write_demo(folder, epochs=2, key_bits=512, rows=ROWS)
    run_job_file(job, local=True, workers=1)
    data = bundled_data().head(ROWS)
    held = party_rows(len(data))
    outside = np.setdiff1d(np.arange(len(data)), held["card_center"])
    bureau, ecommerce = set(held["bureau"].tolist()), set(held["ecommerce"].tolist())
    kinds = {
        "both": [i for i in outside if i in bureau and i in ecommerce][:60],
        "bureau only": [i for i in outside if i in bureau and i not in ecommerce][:15],
        "ecommerce only": [i for i in outside if i in ecommerce and i not in bureau][:15],
        "nobody": [i for i in outside if i not in bureau and i not in ecommerce][:10],
        "customers": list(held["card_center"][:20]),
    }
    write_applicants(folder / "test-applicants.csv", data, sorted(sum(kinds.values(), [])), issuer_key())
    return folder


def expected_answers(folder: Path, applicants: pd.DataFrame) -> dict[str, object]:
    """The offline answer for each applicant, from the parties' model files and their own CSVs."""
    state = folder / "state"
    models = {p: PartyModel.from_json(next((state / p / "jobs").glob("*/model.json")).read_text())
              for p in ("card_center", "bureau", "ecommerce")}
    sources = {p: CsvSource(folder / f"{p}.csv", [ID_COLUMN[p]], models[p].features, party=p) for p in ("bureau", "ecommerce")}
    policy = load_scoring(folder / "job.toml").policy
    answers = {}
    for row in applicants.itertuples(index=False):
        values = [float(getattr(row, c)) for c in models["card_center"].features]
        partners = {p: (models[p], sources[p].lookup(str(row.id))) for p in sources}
        answers[str(row.id)] = offline_answer(models["card_center"], values, partners, policy)
    return answers


def test_fedscore_score_equals_the_offline_model_on_every_row(trained):
    applicants = pd.read_csv(trained / "test-applicants.csv")
    output = trained / "scored.csv"
    done = subprocess.run(
        [sys.executable, "-m", "fedscore", "score", "--job", str(trained / "job.toml"), "--local",
         "--input", str(trained / "test-applicants.csv"), "--output", str(output), "--settle"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    scored = pd.read_csv(output, dtype={"id": str}, keep_default_na=False)
    assert list(scored.columns[:7]) == ["id", "probability", "score", "decision", "credit_limit", "reasons", "partners_missing"]
    assert len(scored) == len(applicants) == 120
    expected = expected_answers(trained, applicants)
    for row in scored.itertuples(index=False):
        want = expected[row.id]
        assert row.probability == want.probability and row.score == want.score   # the same sums, to the bit
        assert row.decision == want.decision and row.credit_limit == want.credit_limit
        assert row.reasons == "; ".join(want.reasons)
        assert row.partners_missing == ";".join(want.partners_missing)
    missing = scored["partners_missing"].value_counts().to_dict()
    assert missing[""] >= 60 and missing["ecommerce"] >= 15 and missing["bureau"] >= 15 and missing["bureau;ecommerce"] >= 10
    assert set(scored["decision"]) <= {"approve", "review", "decline"}

    # the chain: one entry per request at every member, the same head, fees per contributing partner
    replicas = {p: list(LedgerStore(next((trained / "state" / p / "jobs").glob("*/scoring.sqlite"))).blocks())
                for p in ("card_center", "bureau", "ecommerce")}
    heads = {verify_chain(blocks).head for blocks in replicas.values()}
    assert len(heads) == 1
    entries = [e for b in replicas["bureau"] for e in b.decoded()]
    requests = [e for e in entries if e["kind"] == "scoring"]
    assert sorted(e["request_id"] for e in requests) == sorted(scored["request_id"])
    settlement = [e for e in entries if e["kind"] == "scoring_settlement"][-1]
    per_request = load_job(trained / "job.toml")[0].fees.per_request
    for line in settlement["lines"]:
        answered = int((~scored["partners_missing"].str.contains(line["payee"])).sum())
        assert line["requests"] == answered and line["amount"] == answered * per_request
    assert "scoring settlement #" in done.stdout


def tls_socket(address: str, identity: TlsIdentity, server_name: str = "card_center") -> ssl.SSLSocket:
    """A connection to the HTTPS endpoint as ``identity``, expecting the server's certificate to name ``server_name``."""
    host, port = address.split(":")
    return identity.ssl_context(server=False).wrap_socket(
        socket.create_connection((host, int(port)), timeout=30), server_hostname=server_name
    )


def post(address: str, document: dict, identity: TlsIdentity) -> tuple[int, dict]:
    connection = http.client.HTTPConnection(*address.split(":"), timeout=30)
    connection.sock = tls_socket(address, identity)
    try:
        connection.request("POST", "/v1/score", json.dumps(document), {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_http_and_grpc_agree_consent_is_enforced_and_a_dead_partner_is_flagged(trained):
    spec, base = load_job(trained / "job.toml")
    settings = load_scoring(trained / "job.toml")
    applicants = pd.read_csv(trained / "test-applicants.csv", dtype=str)
    features = [c for c in SPLIT["card_center"] if c not in spec.protected]   # protected columns stay out
    with LocalConsortium(spec, base, trained / "state", 1, settings.consent_issuers) as consortium:
        client = ScoringClient(consortium.spec.card_center.address, consortium.spec.card_center.name,
                               consortium.card_center_identity)
        opened = client.open_scoring(consortium.spec, settings.to_json())
        assert list(opened.features) == features
        http_address = consortium.http_addresses["card_center"]
        me = consortium.card_center_identity
        row = applicants.iloc[0]
        values = {c: float(row[c]) for c in features}
        issuer = issuer_key()

        def fresh() -> str:   # a consent allows three checks; this test makes more than three for one applicant
            key = SigningKey.generate()
            certificate = certify_applicant(issuer, row["id"], bytes(key.verify_key))
            return give_consent(key, certificate, bytes(issuer.verify_key), row["id"], "card_center").to_text()

        by_grpc = client.score(row["id"], values, row["consent"])
        status, by_http = post(http_address, {"applicant_id": row["id"], "features": values, "consent": row["consent"]}, me)
        assert status == 200 and by_http["job_id"] == opened.job_id
        assert (by_http["probability"], by_http["score"], by_http["decision"], by_http["credit_limit"], by_http["reasons"]) == (
            by_grpc.probability, by_grpc.score, by_grpc.decision, by_grpc.credit_limit, list(by_grpc.reasons))
        assert by_http["request_id"] != by_grpc.request_id

        # someone else's consent, a missing feature, a field that is not ours
        other = applicants.iloc[1]["consent"]
        status, refused = post(http_address, {"applicant_id": row["id"], "features": values, "consent": other}, me)
        assert status == 403 and "not certified for this applicant" in refused["error"]
        with pytest.raises(DeniedError, match="not certified"):
            client.score(row["id"], values, other)
        status, bad = post(http_address, {"applicant_id": row["id"], "features": {**values, "AGE": 40}, "consent": row["consent"]}, me)
        assert status == 400 and "does not use: 'AGE'" in bad["error"]   # protected: not a model feature
        # a misspelt feature: the name sent and the name missing, the same over HTTP and gRPC (one rule)
        misspelt = {"LIMIT_BAL": values["LIMIT_BAL"], "EDUCATON": values["EDUCATION"]}
        status, bad = post(http_address, {"applicant_id": row["id"], "features": misspelt, "consent": row["consent"]}, me)
        assert status == 400 and bad["error"] == (
            "the request has 'EDUCATON', which the model does not use; it lacks 'EDUCATION' (needs LIMIT_BAL, EDUCATION)")
        with pytest.raises(DataError) as caught:
            client.score(row["id"], misspelt, row["consent"])
        assert bad["error"] in str(caught.value)
        status, bad = post(http_address, {"applicant_id": row["id"], "feature": values, "consnt": row["consent"]}, me)
        assert status == 400 and bad["error"].startswith("unknown fields 'consnt', 'feature' (expected applicant_id")
        status, bad = post(http_address, {"applicant_id": row["id"], "features": {**values, "LIMIT_BAL": "old"}, "consent": row["consent"]}, me)
        assert status == 400 and "'LIMIT_BAL' must be a finite number" in bad["error"]
        status, bad = post(http_address, {"applicant_id": row["id"], "features": values}, me)
        assert status == 400 and "consent" in bad["error"]

        # only the card center's own certificate may score; no certificate, or plaintext, gets no answer at all
        bureau = consortium.identity("bureau")
        status, refused = post(http_address, {"applicant_id": row["id"], "features": values, "consent": fresh()}, bureau)
        assert status == 403 and "refused 'bureau'" in refused["error"]
        host, port = http_address.split(":")
        anonymous = ssl.create_default_context(cadata=me.ca.decode())
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with anonymous.wrap_socket(socket.create_connection((host, int(port)), timeout=10), server_hostname="card_center") as bare:
                bare.sendall(b"GET /v1/health HTTP/1.1\r\n\r\n")
                assert bare.recv(100) == b""   # TLS 1.3: the refusal may only show at the first read
                raise ConnectionError("closed without an answer")
        with socket.create_connection((host, int(port)), timeout=10) as plain:
            plain.sendall(b"GET /v1/health HTTP/1.1\r\n\r\n")
            assert b"HTTP/1.1" not in plain.recv(100)

        # malformed HTTP gets a 400 and a closed connection; nothing sent after it is read as a request
        for raw in [
            b"POST /v1/score HTTP/1.1\r\nContent-Length: 999999\r\n\r\nGET /v1/health HTTP/1.1\r\n\r\n",
            b"POST /v1/score HTTP/1.1\r\nContent-Length: lots\r\n\r\n",
            b"POST /v1/score HTTP/1.1\r\nContent-Length: 40000\r\n\r\n" + b"[" * 20000 + b"]" * 20000,
        ]:
            with tls_socket(http_address, me) as connection:
                connection.sendall(raw)
                received = b""
                while chunk := connection.recv(65536):
                    received += chunk
            assert received.startswith(b"HTTP/1.1 400") and received.count(b"HTTP/1.1") == 1, received[:200]
        assert post(http_address, {"applicant_id": row["id"], "features": values, "consent": fresh()}, me)[0] == 200

        # a partner dies: answers go on without it, flagged; its fee entries wait, journalled
        os.killpg(consortium.processes["ecommerce"].pid, signal.SIGKILL)
        consortium.processes["ecommerce"].wait()
        started = time.perf_counter()
        after = client.score(row["id"], values, fresh())
        assert time.perf_counter() - started < 5
        assert list(after.partners_missing) == ["ecommerce"]
        with pytest.raises(PeerError, match="ecommerce"):
            client.settle(opened.job_id)
        pending = next((trained / "state" / "card_center" / "jobs").glob("*/scoring-pending.jsonl")).read_text().splitlines()
        assert after.request_id in {json.loads(line)["request_id"] for line in pending}

        # it comes back: the card center opens the model there again, sends it the blocks it missed, and the
        # waiting entries reach every replica; the settlement then goes through
        consortium.restart("ecommerce")
        again = client.score(row["id"], values, fresh())
        for attempt in range(20):   # the card center's channel reconnects within its backoff (at most 2 s)
            try:
                settled = json.loads(client.settle(opened.job_id).settlement_json)
                break
            except PeerError:
                time.sleep(0.5)
        assert settled["kind"] == "scoring_settlement" and list(again.partners_missing) in ([], ["ecommerce"])
        # each partner reports, in its status, the answers it gave that are not billed (none: all were in time)
        bureau_status = member_status("bureau", consortium.spec.party("bureau").address, "party", me)
        serving = [j for j in bureau_status["jobs"] if j["chain"] == "scoring" and j["job_id"] == opened.job_id]
        assert [j["detail"] for j in serving] == ["partner, 0 answers unbilled"]
        client.close()
    replicas = {p: list(LedgerStore(next((trained / "state" / p / "jobs").glob("*/scoring.sqlite"))).blocks())
                for p in ("card_center", "bureau", "ecommerce")}
    assert len({verify_chain(blocks).head for blocks in replicas.values()}) == 1
    on_chain = {e["request_id"] for b in replicas["card_center"] for e in b.decoded() if e["kind"] == "scoring"}
    assert {by_grpc.request_id, by_http["request_id"], after.request_id, again.request_id} <= on_chain
    count("peer kills and hangs survived")


def test_score_keeps_going_past_bad_rows_and_names_the_first(trained, tmp_path):
    applicants = pd.read_csv(trained / "test-applicants.csv", dtype=str).iloc[50:53].reset_index(drop=True)
    applicants.loc[1, "consent"] = applicants.loc[0, "consent"]     # someone else's consent
    applicants.loc[2, "LIMIT_BAL"] = "lots"    # text is data for a binned attribute, but the limit scales this one
    path = tmp_path / "bad.csv"
    applicants.to_csv(path, index=False)
    output = tmp_path / "out.csv"
    done = subprocess.run(
        [sys.executable, "-m", "fedscore", "score", "--job", str(trained / "job.toml"), "--local",
         "--input", str(path), "--output", str(output), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 4     # partly done: the others were scored
    assert done.stdout == ""        # --quiet: only the error
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "2 applicants not scored; first: row 3" in done.stderr and "not certified for this applicant" in done.stderr
    scored = pd.read_csv(output, dtype=str, keep_default_na=False)
    assert scored["error"].iloc[0] == "" and scored["decision"].iloc[0] in ("approve", "review", "decline")
    assert scored["credit_limit"].iloc[0].isdigit() and scored["credit_limit"].iloc[1:].tolist() == ["", ""]   # not 160000.0
    assert "'LIMIT_BAL' must be a finite number" in scored["error"].iloc[2]

    missing = subprocess.run(
        [sys.executable, "-m", "fedscore", "score", "--job", str(trained / "job.toml"), "--local",
         "--input", str(trained / "bureau.csv"), "--output", str(output)],
        capture_output=True, text=True, timeout=300,
    )
    assert missing.returncode == 2 and "lacks column 'id'" in missing.stderr


def test_score_json_prints_the_summary_and_quiet_prints_nothing(trained, tmp_path):
    applicants = pd.read_csv(trained / "test-applicants.csv", dtype=str)
    runs = {}
    for flag, rows in (("--json", slice(60, 63)), ("--quiet", slice(70, 73))):
        path = tmp_path / f"in{flag}.csv"
        applicants.iloc[rows].to_csv(path, index=False)
        output = tmp_path / f"out{flag}.csv"
        runs[flag] = (output, subprocess.run(
            [sys.executable, "-m", "fedscore", "score", "--job", str(trained / "job.toml"), "--local",
             "--input", str(path), "--output", str(output), "--settle", flag],
            capture_output=True, text=True, timeout=300,
        ))
    output, done = runs["--json"]
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)     # the whole of stdout is one document
    scored = pd.read_csv(output, dtype=str, keep_default_na=False)
    assert summary["rows"] == summary["scored"] == len(scored) == 3 and summary["failed"] == 0 and summary["first_error"] == ""
    assert summary["output"] == str(output) and summary["ledger"].endswith("scoring.sqlite")
    assert summary["settlement"]["payer"] == "card_center" and summary["job_id"] in summary["ledger"]
    assert "scoring: 3/3 applicants" in done.stderr     # progress on stderr
    output, done = runs["--quiet"]
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
    assert (pd.read_csv(output, dtype=str, keep_default_na=False)["error"] == "").all()


def test_state_folders_models_and_reports_are_their_owners_only(trained):
    """Models, pages and ledgers describe applicants: no other account on the machine may read them."""
    state = trained / "state"
    for party in ("card_center", "bureau", "ecommerce"):
        assert (state / party).stat().st_mode & 0o777 == 0o700, party
        job = next((state / party / "jobs").glob("*/model.json")).parent
        for name in ("model.json", "report.html", "ledger.sqlite"):
            assert (job / name).stat().st_mode & 0o077 == 0, f"{party}'s {name} is readable by others"
        assert job.stat().st_mode & 0o077 == 0, f"{party}'s job folder is readable by others"
