"""Every example under examples/ runs as written, and so does the code the docs mark as runnable.

- examples/notebook_api.py runs as it is (it takes no options; about 20 s).
- examples/default_credit/job.toml runs through `fedscore run --local`, from a copy of the example's folder
  whose only change is `key_bits = 512` (at 2048 bits the job takes about 3 minutes on two cores; the key size
  changes timings, not the model), with `--workers 1`.
- examples/approval_client.py runs in its self-contained mode: it trains a small consortium of its own and
  scores one applicant over HTTPS and over gRPC.
- docs/*.md: a ```python block right after `<!-- runnable -->` runs as a script from the repository root;
  after `<!-- runnable: report -->`, in the folder where the job example wrote report.json; after
  `<!-- excerpt: PATH -->`, it must appear in PATH as it is.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DOCS = ROOT / "docs"
TESTED_EXAMPLES = {"notebook_api.py", "approval_client.py", "default_credit/job.toml"}


def run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    assert done.returncode == 0, f"{' '.join(args)} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def test_every_example_is_run_here():
    found = {str(p.relative_to(EXAMPLES)) for p in [*EXAMPLES.glob("*.py"), *EXAMPLES.glob("*/*.toml")]}
    assert found == TESTED_EXAMPLES, "an example was added or removed: run it in tests/test_examples.py"


# -- examples/notebook_api.py ------------------------------------------------------------------


def test_notebook_api_compares_two_splits_on_the_same_applicants():
    out = run(["examples/notebook_api.py"], ROOT, timeout=180).stdout
    rows = re.findall(r"^(card center \+ [a-z +]+?)\s+(\d+)\s+(\d+)\s+([0-9.]+)$", out, re.MULTILINE)
    assert [r[0] for r in rows] == ["card center + bureau", "card center + bureau + ecommerce"], out
    (_, aligned_two, test_two, auc_two), (_, aligned_three, test_three, auc_three) = rows
    assert int(aligned_two) > int(aligned_three) > 100      # a second partner can only shrink the intersection
    assert test_two == test_three                            # both scored on the same held-out applicants
    assert 0.5 < float(auc_two) < 1 and 0.5 < float(auc_three) < 1
    weights = out.split("bureau's weights")[1].split("first held-out applicants")[0]
    assert all(f"PAY_{i}" in weights for i in (0, 2, 3, 4, 5, 6))
    assert re.search(r"p_good\s+p_bad", out.split("first held-out applicants")[1])


# -- examples/default_credit/job.toml ------------------------------------------------------------


@pytest.fixture(scope="module")
def job_run(tmp_path_factory) -> Path:
    """The job example's folder, copied, with a 512-bit key; trained with --local; returns the folder."""
    folder = tmp_path_factory.mktemp("default_credit") / "default_credit"
    shutil.copytree(EXAMPLES / "default_credit", folder)
    job = folder / "job.toml"
    text = job.read_text()
    assert text.count("\nkey_bits = 2048") == 1 and text.count("\nepochs = 30") == 1
    job.write_text(text.replace("\nkey_bits = 2048", "\nkey_bits = 512").replace("\nepochs = 30", "\nepochs = 10"))
    done = run(["-m", "fedscore", "run", "job.toml", "--local", "--report", "report.json", "--workers", "1"], folder)
    (folder / "stdout.txt").write_text(done.stdout)
    return folder


@pytest.mark.slow
def test_the_job_example_trains_and_writes_its_report(job_run):
    summary = (job_run / "stdout.txt").read_text()
    found = re.search(r"trained 10 epochs on (\d+) of (\d+) aligned rows: AUC ([0-9.]+), KS ([0-9.]+), "
                      r"test AUC ([0-9.]+), test KS ([0-9.]+)", summary)
    assert found, summary
    assert "report: report.json (page: report.html)" in summary
    report = json.loads((job_run / "report.json").read_text())
    assert (report["train_rows"], report["aligned_rows"]) == (int(found[1]), int(found[2]))
    assert round(report["test_auc"], 4) == float(found[5])
    assert 0.5 < report["local_only_test_auc"] < report["test_auc"] < 1   # the partners add to the card center alone
    assert report["epochs"] == 10 and report["key_bits"] == 512 and len(report["loss"]) == 10
    assert report["loss"][-1] < report["loss"][0]   # from the card center's secret start, not log 2 at zero
    assert {p["name"]: p["role"] for p in report["parties"]} == {
        "card_center": "card_center", "bureau": "partner", "ecommerce": "partner"}
    for party in report["parties"]:
        assert Path(party["model"]).is_file() and Path(party["report"]).is_file()
    page = (job_run / "report.html").read_text()
    assert page.lstrip().lower().startswith("<!doctype html") and "data:image/png;base64," in page
    # the fees the job file states, settled on the chain
    for line in report["settlement"]["lines"]:
        assert line["amount"] == 500 * line["steps"] + line["overlap_rows"] and line["steps"] == report["steps"]


@pytest.mark.slow
def test_every_replica_of_the_job_example_verifies_against_the_reports_head(job_run):
    report = json.loads((job_run / "report.json").read_text())
    assert set(report["ledgers"]) == {"coordinator", "card_center", "bureau", "ecommerce"}
    for member, ledger in report["ledgers"].items():
        out = run(["-m", "fedscore", "audit", "verify", ledger, "--head", report["ledger_head"]], job_run, 60).stdout
        assert out.startswith(f"ok: {report['ledger_blocks']} blocks"), (member, out)
    balances = json.loads(run(["-m", "fedscore", "audit", "balances", report["ledgers"]["bureau"], "--json"], job_run, 60).stdout)
    assert balances["members"]["card_center"]["owes"] == report["settlement"]["total"]
    assert sum(m["net"] for m in balances["members"].values()) == 0


# -- examples/approval_client.py -----------------------------------------------------------------


def test_approval_client_gets_one_answer_over_https_and_grpc_and_a_refusal_for_a_foreign_consent():
    out = run(["examples/approval_client.py"], ROOT, timeout=300).stdout
    https, grpc_answer, https_refused, grpc_refused = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert (https["via"], https["status"], grpc_answer["via"], grpc_answer["status"]) == ("https", 200, "grpc", "OK")
    fields = ("job_id", "probability", "score", "decision", "credit_limit", "reasons", "partners_missing")
    assert {f: https[f] for f in fields} == {f: grpc_answer[f] for f in fields}
    assert https["request_id"] != grpc_answer["request_id"]            # two requests, two chain entries
    assert 0 < https["probability"] < 1 and 300 <= https["score"] <= 850
    assert https["decision"] in {"approve", "review", "decline"}
    assert (https_refused["status"], grpc_refused["status"]) == (403, "PERMISSION_DENIED")
    assert "not certified for this applicant" in https_refused["error"] == grpc_refused["error"]


# -- code in docs/*.md ------------------------------------------------------------------------------

MARKER = re.compile(r"^<!-- (runnable|runnable: report|excerpt: (\S+)) -->$")


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    kind: str        # "runnable", "runnable: report" or "excerpt"
    path: str        # the excerpt's file
    code: str

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def marked_blocks() -> list[Block]:
    """Every ```python block right after a marker, in every page; a marker before anything else is an error."""
    blocks = []
    for page in sorted(DOCS.glob("*.md")):
        lines = page.read_text().splitlines()
        for number, line in enumerate(lines):
            found = MARKER.match(line.strip())
            if not found:
                continue
            where = f"{page.name}:{number + 1}"
            assert number + 1 < len(lines) and lines[number + 1].strip() == "```python", f"{where}: a marker must precede a ```python block"
            end = next((i for i in range(number + 2, len(lines)) if lines[i].strip() == "```"), None)
            assert end is not None, f"{where}: the block is not closed"
            kind = "excerpt" if found[2] else found[1]
            blocks.append(Block(page.name, number + 1, kind, found[2] or "", "\n".join(lines[number + 2:end]) + "\n"))
    return blocks


BLOCKS = marked_blocks()
RUNNABLE = [b for b in BLOCKS if b.kind.startswith("runnable")]
EXCERPTS = [b for b in BLOCKS if b.kind == "excerpt"]


def test_the_docs_mark_code_to_run():
    pages = {b.page for b in RUNNABLE}
    assert {"data-scientist.md", "job-file.md", "partner-operator.md", "approval-integrator.md"} <= pages
    assert any(b.kind == "runnable: report" for b in RUNNABLE) and len(EXCERPTS) >= 2


# a block that reads the job example's report needs its training run: the slow tier
@pytest.mark.parametrize("block", [pytest.param(b, marks=pytest.mark.slow) if b.kind == "runnable: report" else b
                                   for b in RUNNABLE], ids=str)
def test_runnable_doc_code_runs(block, tmp_path, request):
    script = tmp_path / f"{Path(block.page).stem}_{block.line}.py"
    script.write_text(block.code)
    if block.kind == "runnable: report":
        run([str(script)], request.getfixturevalue("job_run"), timeout=120)
        return
    before = sorted(p.name for p in ROOT.iterdir())
    run([str(script)], ROOT, timeout=120)
    assert sorted(p.name for p in ROOT.iterdir()) == before, f"{block} left files in the repository root"


@pytest.mark.parametrize("block", EXCERPTS, ids=str)
def test_doc_excerpts_are_the_examples_code(block):
    assert block.code in (ROOT / block.path).read_text(), f"{block}: not found as it is in {block.path}"
