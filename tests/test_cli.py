"""The `fedscore` command as a user runs it: exit codes, one-line errors, help with examples, output modes."""
from __future__ import annotations

import argparse
import io
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from fedscore.cli.exits import (EXIT_ERROR, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL, EXIT_TERMINATED,
                                EXIT_UNVERIFIED, Terminated)
from fedscore.cli.app import build_parser, main
from fedscore.cli.commands import _print_report, check_arguments
from fedscore.daemons.config import load_party_config
from fedscore.errors import InternalError
from fedscore.model.data import load_party_table
from fedscore.cli.progress import ProgressView, clock, eta_seconds
from fedscore.protocol.training.driver import Progress
from fedscore.transport.clients.base import Peer
from fedscore.transport.clients.party import PartyClient
from fedscore.transport.tls import TlsIdentity

from conftest import breast_parties, write_job

ROOT = Path(__file__).resolve().parent.parent


def fedscore(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fedscore", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


# -- run: human, --json, --quiet ----------------------------------------------------


def test_run_local_prints_a_summary_on_stdout_and_progress_on_stderr(breast_folder):
    job = write_job(breast_folder, breast_parties(), epochs=2, batch_size=150)
    done = fedscore("run", job, "--local", "--report", breast_folder / "out.json")
    assert done.returncode == 0, done.stderr
    report = json.loads((breast_folder / "out.json").read_text())
    assert report["epochs"] == 2 and report["parties"][0]["name"] == "guest"
    assert done.stdout.startswith(f"trained 2 epochs on {report['train_rows']} of {report['aligned_rows']} aligned rows")
    # stderr is not a terminal here: plain lines, one per event, with the time left
    lines = done.stderr.splitlines()
    assert any(re.fullmatch(r"epoch 1/2 step 1/4  loss \S+  epoch eta \d:\d\d:\d\d  training eta \d:\d\d:\d\d", l) for l in lines)
    assert any(re.fullmatch(r"epoch 1/2  loss \S+\s+\S+ s  training eta \d:\d\d:\d\d", l) for l in lines)
    assert any(l.startswith("epoch 2/2  loss ") for l in lines)
    assert f"{report['aligned_rows']} applicants held by every party (aligned in" in done.stderr
    assert "epoch 1/2" not in done.stdout and "\x1b[" not in done.stderr   # no progress on stdout, no terminal codes in a log


def test_run_json_prints_the_report_and_nothing_else_on_stdout(breast_folder):
    job = write_job(breast_folder, breast_parties(), epochs=2)
    done = fedscore("run", job, "--local", "--json", "--report", breast_folder / "out.json")
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)   # the whole of stdout is one document
    assert printed == json.loads((breast_folder / "out.json").read_text())
    assert printed["epochs"] == 2 and len(printed["loss"]) == 2 and printed["ledger_head"]
    assert "epoch 2/2" in done.stderr    # progress still shows, on stderr


def test_run_quiet_prints_nothing_at_all(breast_folder):
    job = write_job(breast_folder, breast_parties(), epochs=1)
    done = fedscore("run", job, "--local", "--quiet", "--report", breast_folder / "out.json")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
    assert json.loads((breast_folder / "out.json").read_text())["epochs"] == 1


def test_demo_json_quiet_prints_only_the_report_and_scoring_summary(tmp_path):
    workdir = tmp_path / "demo"
    done = fedscore("demo", "--workdir", workdir, "--epochs", "1", "--key-bits", "512", "--rows", "3000", "--workers", "1",
                    "--json", "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    printed = json.loads(done.stdout)
    assert printed["report"] == json.loads((workdir / "report.json").read_text())
    scoring = printed["scoring"]
    scored = pd.read_csv(workdir / "scored.csv", keep_default_na=False)
    assert scoring["rows"] == scoring["scored"] == len(scored) == 10 and scoring["failed"] == 0
    assert scoring["output"] == str(workdir / "scored.csv") and scoring["settlement"]["number"] == 1
    assert scoring["job_id"] == printed["report"]["job_id"]


# -- score: the applicants file checked first, answers of stable types ---------------


class NoDaemons:
    def __init__(self, *args, **kwargs):
        raise AssertionError("a daemon was started, or the model opened, before the applicants file was checked")


@pytest.mark.parametrize("local", [True, False])
def test_score_names_a_file_without_the_id_column_before_starting_anything(breast_folder, monkeypatch, capsys, local):
    parties = breast_parties()
    parties[0]["address"] = "127.0.0.1:9"   # remote: the card center's daemon would be called here
    job = write_job(breast_folder, parties)
    (breast_folder / "applicants.csv").write_text("customer;consent;x0\nc-1;token;1.5\n")
    monkeypatch.setattr("fedscore.cli.runner.LocalConsortium", NoDaemons)
    monkeypatch.setattr("fedscore.cli.runner.ScoringClient", NoDaemons)
    monkeypatch.chdir(breast_folder)
    given = Path("applicants.csv")   # named as the user gave it
    flags = ["--local"] if local else ["--insecure"]
    assert main(["score", "--job", str(job), "--input", str(given), "--output", "out.csv", "--quiet", *flags]) == EXIT_ERROR
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == ("fedscore: error: applicants file applicants.csv lacks column 'id' (needs id, consent and the "
                     "model's features; read as semicolon-separated, the header has 3 columns: 'customer', 'consent', 'x0')")
    assert not (breast_folder / "state").exists() and not (breast_folder / "out.csv").exists()


def test_a_semicolon_applicants_file_reads_as_its_comma_twin(tmp_path):
    from fedscore.cli.runner import read_applicants

    (tmp_path / "comma.csv").write_text("id,LIMIT_BAL,EDUCATION,consent\n 007,50000,university,t1\n8,,2,t2\n")
    (tmp_path / "semicolon.csv").write_text("id;LIMIT_BAL;EDUCATION;consent\n 007;50000;university;t1\n8;;2;t2\n")
    comma = read_applicants(tmp_path / "comma.csv", ("id",), ["EDUCATION"], "LIMIT_BAL")
    semicolon = read_applicants(tmp_path / "semicolon.csv", ("id",), ["EDUCATION"], "LIMIT_BAL")
    pd.testing.assert_frame_equal(comma[0], semicolon[0])
    assert comma[1] == semicolon[1] == ["EDUCATION", "LIMIT_BAL"]
    assert semicolon[0]["id"].tolist() == [" 007", "8"]   # ids exactly as written
    with pytest.raises(Exception, match="lacks the model's feature column 'AGE'"):
        read_applicants(tmp_path / "semicolon.csv", ("id",), ["EDUCATION", "AGE"], "LIMIT_BAL")


class Reply:
    """A Score reply as the card center gives it: the credit limit an integer (int64 on the wire)."""

    def __init__(self, limit: int):
        self.probability, self.score, self.decision, self.credit_limit = 0.0625, 680.0, "approve", limit
        self.reasons, self.partners_missing, self.request_id = ["PAY_0: paid late"], [], "r-1"


class OneFails:
    def score(self, applicant, features, consent, job_id):
        from fedscore.errors import DeniedError

        if applicant == "bad":
            raise DeniedError("the consent is not certified for this applicant")
        return Reply(160_000)


def test_credit_limits_stay_integers_in_the_output_file_and_on_stdout_when_a_row_fails(tmp_path, capsys):
    from fedscore.cli.commands import print_scored
    from fedscore.cli.runner import score_rows

    frame = pd.DataFrame({"id": ["good", "bad"], "x": ["1", "2"], "consent": ["t", "t"]})
    scored = score_rows(OneFails(), "job-0000aaaa", frame, ("id",), ["x"], concurrency=1)
    text = scored.to_csv(index=False)
    assert text.splitlines()[1:] == [
        "good,0.0625,680.0,approve,160000,PAY_0: paid late,,r-1,",
        "bad,,,,,,,,the consent is not certified for this applicant",
    ]
    print_scored({"table": scored})
    printed = capsys.readouterr().out
    assert "160000  " in printed and "160000.0" not in printed
    assert scored["credit_limit"].dtype == "Int64" and scored["score"].dtype == "float64"


@pytest.mark.parametrize("arguments, message", [
    (["--epochs", "0"], "demo --epochs 0 --key-bits 512: job 'default-credit': epochs must be between 1 and 100000, got 0"),
    (["--key-bits", "1000"], "key_bits must be one of 512, 768, 1024, 1536, 2048, 3072, 4096, got 1000"),
    (["--rows", "900"], "demo --rows 900: only 495 applicants would be held by every party, fewer than the job's min_overlap of 500"),
    (["--rows", "0"], "demo --rows 0: the bundled data has 30000 applicants; give 1 to 30000"),
    (["--workers", "-1"], "demo --workers -1: give 0 (every core) or a positive number of processes"),
])
def test_demo_refuses_bad_arguments_before_writing_anything(tmp_path, monkeypatch, capsys, arguments, message):
    monkeypatch.setattr("fedscore.cli.runner.LocalConsortium", NoDaemons)
    workdir = tmp_path / "demo"
    assert main(["demo", "--workdir", str(workdir), "--key-bits", "512", "--quiet", *arguments]) == EXIT_ERROR
    assert message in capsys.readouterr().err
    assert not workdir.exists()


# -- exit codes --------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda parties: parties[1].update(label="y"), "exactly one party must carry the label; 2 do (guest, host)"),
        (lambda parties: parties[0].update(id="customer"), "party 'guest': breast_hetero_guest.csv: id column 'customer' not found"),
    ],
)
def test_user_errors_exit_2_with_one_line(breast_folder, change, message):
    parties = breast_parties()
    change(parties)
    done = fedscore("run", write_job(breast_folder, parties), "--local", "--report", breast_folder / "out.json", "--json")
    assert done.returncode == EXIT_ERROR == 2
    lines = done.stderr.strip().splitlines()    # progress lines, then the error: one line, last
    assert [l for l in lines if l.startswith("fedscore:")] == lines[-1:]
    assert lines[-1].startswith("fedscore: error: ") and message in lines[-1]
    assert done.stdout == ""        # --json prints no document for a failed run
    assert not (breast_folder / "out.json").exists()


def test_run_without_addresses_asks_for_local(breast_folder):
    done = fedscore("run", write_job(breast_folder, breast_parties()), "--tls", breast_folder / "certs" / "guest")
    assert done.returncode == 2
    assert "no address for the coordinator; add it, or use --local" in done.stderr


def test_a_bad_command_line_exits_2():
    assert fedscore("run").returncode == 2
    assert fedscore("score", "--job", "job.toml").returncode == 2


@pytest.mark.parametrize(
    "raised, code, line",
    [
        (InternalError("party 'x': a bug"), 1, "fedscore: internal error: party 'x': a bug"),
        (PermissionError(13, "Permission denied", "out.json"), 2, "fedscore: error: [Errno 13] Permission denied: 'out.json'"),
        (KeyboardInterrupt(), 130, "fedscore: interrupted"),
        (Terminated(), 143, "fedscore: stopped by SIGTERM"),
    ],
)
def test_each_failure_has_its_exit_code(monkeypatch, capsys, raised, code, line):
    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setattr("fedscore.cli.runner.run_job_file", fail)
    assert main(["run", "job.toml", "--local", "--quiet"]) == code
    assert capsys.readouterr().err.strip() == line


def _daemons_of(state: Path) -> list[int]:
    """Live processes whose command line names a config under ``state``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(state) in command and " serve" in command.replace("\0", " "):
                found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_a_local_run_and_its_daemons(breast_folder, sig, code):
    job = write_job(breast_folder, breast_parties(), epochs=500)
    state = breast_folder / "state"
    # SIGINT's default action even when the suite itself runs in the background, where a shell starts it ignored
    # (and Python keeps an ignored SIGINT ignored)
    process = subprocess.Popen([sys.executable, "-m", "fedscore", "run", str(job), "--local", "--state", str(state)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in process.stderr:     # plain progress: wait until training runs
            if re.match(r"epoch\s+1/500  loss", line):
                break
        else:
            pytest.fail("the run ended before training")
        assert _daemons_of(state), "the daemons should be up while training"
        process.send_signal(sig)
        _, rest = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == code
    assert rest.strip().splitlines()[-1] == ("fedscore: interrupted" if sig == signal.SIGINT else "fedscore: stopped by SIGTERM")
    deadline = time.monotonic() + 10
    while _daemons_of(state) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _daemons_of(state) == []


def test_exit_codes_are_documented_in_help_and_readme():
    codes = [EXIT_OK, EXIT_INTERNAL, EXIT_ERROR, EXIT_UNVERIFIED, EXIT_PARTIAL,
             EXIT_INTERRUPTED, EXIT_TERMINATED]
    shown = fedscore("--help").stdout
    listed = shown[shown.index("exit codes:"):]
    assert [int(m) for m in re.findall(r"^  (\d+)\s", listed, flags=re.M)] == codes
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("### Exit codes"):]
    table = table[: table.index("\n#", 1)]
    assert [int(m) for m in re.findall(r"^\| `(\d+)` \|", table, flags=re.M)] == codes


# -- help: every parser has an example of its own that parses ---------------------------


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def _examples(parser: argparse.ArgumentParser) -> list[str]:
    return [line.removeprefix("example: ") for line in (parser.epilog or "").splitlines() if line.startswith("example: fedscore ")]


def test_every_command_and_subcommand_has_an_example_the_command_accepts():
    """Each example parses, and passes the checks the command makes before any work (--tls or --insecure
    against running daemons, --state only with --local, ...)."""
    parsers = list(_parsers(build_parser()))
    assert {p.prog for p in parsers} >= {
        "fedscore", "fedscore run", "fedscore demo", "fedscore score", "fedscore audit", "fedscore audit verify",
        "fedscore audit show", "fedscore audit prove", "fedscore audit check-proof", "fedscore audit balances",
        "fedscore coordinator", "fedscore coordinator serve", "fedscore party", "fedscore party serve",
        "fedscore init", "fedscore init party", "fedscore certs", "fedscore certs init", "fedscore serve",
    }
    for parser in parsers:
        examples = _examples(parser)
        assert examples, f"{parser.prog} has no example"
        for example in examples:
            assert example.startswith(parser.prog + " "), f"{parser.prog}: example {example!r} is for another command"
            args = build_parser().parse_args(shlex.split(example)[1:])   # exits (fails the test) if it does not parse
            assert callable(args.handler)
            check_arguments(args)   # raises ConfigError (exit 2) for a combination the command refuses


@pytest.mark.parametrize("command, refusal", [
    ("score --job job.toml --input a.csv --output b.csv", "score against running daemons needs the card center's member folder (--tls DIR)"),
    ("run job.toml --json", "run against running daemons needs the card center's member folder (--tls DIR)"),
    ("status --job job.toml", "status against running daemons needs a member's folder (--tls DIR)"),
    ("run job.toml --tls certs/card_center --insecure", "--tls and --insecure contradict each other"),
    ("run job.toml --local --tls certs/card_center", "--local makes its own identities"),
    ("score --job job.toml --input a.csv --output b.csv --insecure --state s", "use it with --local"),
])
def test_a_combination_the_command_would_refuse_exits_2_before_any_work(tmp_path, command, refusal):
    done = fedscore(*shlex.split(command), cwd=tmp_path)    # job.toml does not even exist: nothing was read
    assert done.returncode == EXIT_ERROR, done.stderr
    assert done.stderr.startswith("fedscore: error: ") and refusal in done.stderr and len(done.stderr.splitlines()) == 1


def _ledger_for_examples(folder: Path) -> None:
    """What the audit examples read: a finished job's replica at the examples' path, and a proof from it."""
    from test_ledger import build_chain
    from fedscore.cli.examples import LEDGER
    from fedscore.cli.audit import prove_entry

    members, _ = build_chain(folder / "built")
    for member in members.values():
        member.close()
    (folder / LEDGER).parent.mkdir(parents=True)
    shutil.copy(members["bureau"].path, folder / LEDGER)
    (folder / "proof.json").write_text(prove_entry(folder / LEDGER, "5:0"))


CHEAP = ("fedscore audit", "fedscore certs", "fedscore init")   # examples that run here in a moment
NEEDS_SCORING = ("fedscore audit dispute", "fedscore audit check-evidence")   # need a scoring chain: test_dispute runs them


def test_the_examples_of_cheap_commands_run_as_shown(tmp_path, monkeypatch, capsys):
    """Each in a fresh folder holding only what it reads (a ledger, a proof, the member folder it names)."""
    from fedscore.crypto.certs import init_consortium

    ran = []
    for parser in _parsers(build_parser()):
        for number, example in enumerate(_examples(parser)):
            if not example.startswith(CHEAP) or example.startswith(NEEDS_SCORING) or "--help" in example:
                continue
            folder = tmp_path / f"{parser.prog.replace(' ', '-')}-{number}"
            folder.mkdir()
            if example.startswith("fedscore audit"):
                _ledger_for_examples(folder)
            for member in re.findall(r"--tls-dir consortium-certs/(\S+)", example):
                init_consortium(folder / "consortium-certs", [member])
            monkeypatch.chdir(folder)
            code = main(shlex.split(example)[1:])
            printed = capsys.readouterr()
            if "--head" in example:   # another chain's head: it runs, and finds this one ends elsewhere
                assert code == EXIT_UNVERIFIED and "not the expected" in printed.err, (example, printed.err)
            else:
                assert code == EXIT_OK, (example, printed.err)
            ran.append(example)
    assert any("init party acme_bureau --dir parties/acme_bureau" in e for e in ran)   # parties/ made on the way
    assert {e.split()[2] for e in ran if e.startswith("fedscore audit ")} == {
        "verify", "show", "prove", "check-proof", "balances"}


def test_every_option_of_every_command_says_what_it_is_for():
    for parser in _parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"


@pytest.mark.parametrize("command", [[], ["run"], ["demo"], ["party", "serve"], ["audit", "check-proof"], ["init", "party"]])
def test_help_shows_an_example(command):
    done = fedscore(*command, "--help")
    assert done.returncode == 0 and "example: fedscore" in done.stdout


# -- progress rendering -------------------------------------------------------------


def test_eta_is_the_mean_pace_times_the_work_left():
    assert eta_seconds(30.0, 3, 12) == pytest.approx(90.0)
    assert eta_seconds(30.0, 0, 12) is None and eta_seconds(30.0, 3, None) is None
    assert clock(3725.4) == "1:02:05" and clock(None) == "-:--:--"


def _training_events(view: ProgressView) -> None:
    view(Progress("align", message="private set intersection between the card center and each partner"))
    view(Progress("align", seconds=2.0, message="569 applicants held by every party"))
    view(Progress("step", 1, 2, 0.69, 10.0, step=1, steps=4))   # the first step took 10 s: 7 steps left of 8
    view(Progress("step", 1, 2, 0.60, 10.0, step=2, steps=4))


def test_plain_progress_is_one_line_per_event_with_the_time_left():
    stream = io.StringIO()
    with ProgressView("plain", stream, plain_every=3600) as view:
        _training_events(view)
        view(Progress("epoch", 1, 2, 0.55, 40.0))
        view(Progress("evaluate", seconds=0.5))
        view.scoring(0, 3)
        view.scoring(3, 3)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "private set intersection between the card center and each partner ..."
    assert lines[1] == "569 applicants held by every party (aligned in 2.0 s)"
    # the first step prints at once, with the time left from its own duration; the second is thinned out
    assert lines[2] == "epoch 1/2 step 1/4  loss 0.690000  epoch eta 0:00:30  training eta 0:01:10"
    assert lines[3].startswith("epoch 1/2  loss 0.550000    40.0 s  training eta ")
    assert lines[4] == "evaluated through masked scores in 0.5 s"
    assert re.fullmatch(r"scoring: 3/3 applicants  \d+\.\d s", lines[5])
    assert len(lines) == 6


def test_bars_on_a_terminal_show_steps_epochs_and_the_time_left():
    stream = io.StringIO()
    with ProgressView("bars", stream) as view:
        _training_events(view)
        view.scoring(1, 4)
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stream.getvalue())
    assert "569 applicants held by every party (aligned in 2.0 s)" in shown
    assert "training steps" in shown and "2/8" in shown
    assert "epoch 1/2  loss 0.6000" in shown and "2/4" in shown
    assert "scoring applicants" in shown and "1/4" in shown
    # the first step started 10 s ago: training 2 of 8 steps, 30 s left; the epoch 2 of 4, 10 s left
    assert "2/8 0:00:10 eta 0:00:30" in shown and "2/4 0:00:10 eta 0:00:10" in shown


def test_quiet_progress_prints_nothing():
    stream = io.StringIO()
    with ProgressView("off", stream) as view:
        _training_events(view)
        view.note("a line")
        view.scoring(3, 3)
    assert stream.getvalue() == ""


# -- init party ---------------------------------------------------------------------


@pytest.mark.parametrize("role, identity", [("partner", "copied into tls/"), ("card_center", "--tls-dir")])
def test_init_party_makes_a_folder_a_daemon_serves_as_it_is(tmp_path, role, identity):
    certs = fedscore("certs", "init", "--consortium", tmp_path / "certs", "--members", "acme")
    assert certs.returncode == 0, certs.stderr
    folder = tmp_path / "acme"
    tls = ["--tls-dir", tmp_path / "certs" / "acme"] if identity == "--tls-dir" else []
    done = fedscore("init", "party", "acme", "--dir", folder, "--role", role, "--listen", "127.0.0.1:0", *tls,
                    "--card-center", "bank", "--card-center", "cardco")
    assert done.returncode == 0, done.stderr
    assert f"fedscore party serve --config {folder / 'party.toml'}" in done.stdout
    assert (folder / "state").is_dir() and (folder / "README.md").is_file() and (folder / "data" / "README.md").is_file()
    if identity == "copied into tls/":   # what the README asks for when the identity comes later
        assert "fedscore certs init --consortium DIR --members acme" in (folder / "README.md").read_text()
        shutil.copytree(tmp_path / "certs" / "acme", folder / "tls")
    config = load_party_config(folder / "party.toml")
    assert config.name == "acme" and config.data_dir == folder / "data" and config.state_dir == folder / "state"
    assert config.card_centers == ("bank", "cardco")   # the members whose jobs it takes
    assert config.tls_dir.resolve() == (tmp_path / "certs" / "acme").resolve() if tls else config.tls_dir == folder / "tls"
    # the stub has the shape a job reads: the label only for the card center
    table = load_party_table(folder / "data" / "acme.csv", ["id"], "y" if role == "card_center" else None, party="acme")
    assert table.feature_names == ["feature_1", "feature_2"] and (table.labels is not None) == (role == "card_center")

    ready = tmp_path / "ready"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "fedscore", "party", "serve", "--config", str(folder / "party.toml"), "--ready-file", str(ready)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert daemon.poll() is None, daemon.stderr.read()
            assert time.monotonic() < deadline, "the daemon did not come up"
            time.sleep(0.05)
        address = ready.read_text().split()[0]
        client = PartyClient(Peer("acme", address, tls=TlsIdentity.load(tmp_path / "certs" / "coordinator")))
        try:
            reply = client.ping()      # over mutual TLS, as the coordinator
        finally:
            client.close()
        assert reply.name == "acme" and reply.role == "party"
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    assert daemon.returncode == 0


def test_init_party_refuses_an_existing_folder(tmp_path):
    folder = tmp_path / "acme"
    folder.mkdir()
    (folder / "party.toml").write_text("# mine\n")
    done = fedscore("init", "party", "acme", "--dir", folder)
    assert done.returncode == 2
    assert done.stderr.strip() == f"fedscore: error: {folder} already exists; refusing to overwrite it (choose another --dir, or remove it)"
    assert [p.name for p in folder.iterdir()] == ["party.toml"] and (folder / "party.toml").read_text() == "# mine\n"
    assert [p.name for p in tmp_path.iterdir()] == ["acme"]     # no staging folder left behind
    bad = fedscore("init", "party", "9lives", "--dir", tmp_path / "other")
    assert bad.returncode == 2 and "party name '9lives'" in bad.stderr and not (tmp_path / "other").exists()


def test_init_party_makes_missing_parent_folders_but_still_refuses_a_non_empty_one(tmp_path):
    done = fedscore("init", "party", "acme", "--dir", "a/b/acme", "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a" / "b" / "acme" / "party.toml").is_file()
    assert [p.name for p in (tmp_path / "a" / "b").iterdir()] == ["acme"]    # no staging folder left
    again = fedscore("init", "party", "acme", "--dir", "a/b/acme", cwd=tmp_path)
    assert again.returncode == 2 and "a/b/acme already exists; refusing to overwrite it" in again.stderr


# -- messages -------------------------------------------------------------------------


def test_counts_of_one_are_singular(capsys):
    from fedscore.plural import plural

    assert [plural(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]
    assert plural(1, "entry", "entries") == "1 entry" and plural(3, "entry", "entries") == "3 entries"
    report = {"epochs": 1, "train_rows": 1, "aligned_rows": 1, "auc": 0.5, "ks": 0.0, "parties": []}
    _print_report(report)
    assert capsys.readouterr().out.startswith("trained 1 epoch on 1 of 1 aligned row: AUC")


def test_an_error_names_a_file_as_it_was_given(tmp_path):
    (tmp_path / "t1").mkdir()
    (tmp_path / "t1" / "job.toml").write_text('[job]\nname = "x"\nepochs = "many"\n')
    done = fedscore("run", "t1/job.toml", "--local", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("fedscore: error: job file t1/job.toml "), done.stderr
    config = tmp_path / "t2" / "party.toml"
    config.parent.mkdir()
    config.write_text('[party]\nname = "x"\nworkers = "all"\n')
    served = fedscore("party", "serve", "--config", "t2/party.toml", cwd=tmp_path)
    assert served.returncode == 2 and "party config t2/party.toml" in served.stderr, served.stderr
    data = tmp_path / "t3" / "bank.csv"
    data.parent.mkdir()
    data.write_text("customer,x\n1,2\n")
    with pytest.raises(Exception, match=r"^party 'bank': t3/bank.csv: id column 'id' not found"):
        load_party_table(data, ["id"], party="bank", shown="t3/bank.csv")   # as the job's `data` names it
    with pytest.raises(Exception, match=f"^{re.escape(str(data))}: id column"):
        load_party_table(data, ["id"])
