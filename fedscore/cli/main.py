"""The `fedscore` command.

Output: a command's result goes to stdout (a summary, or with ``--json`` one
JSON document and nothing else); progress and errors go to stderr, so a
script can pipe the result while a person watches the bars. ``--quiet``
leaves only errors. Exit codes are in EXIT_CODES (and the README).
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from fedscore import __version__
from fedscore.errors import ConfigError, FedscoreError, InternalError, UnverifiedError

EXIT_OK = 0
# the codes fedscore's errors exit with are their classes' own (fedscore.errors); named here for the contract
EXIT_INTERNAL = InternalError.exit_code       # 1: a bug, no input explains it
EXIT_ERROR = FedscoreError.exit_code          # 2: a problem to fix, named on one line (argparse's bad command line too)
EXIT_UNVERIFIED = UnverifiedError.exit_code   # 3: a ledger or inclusion proof that does not verify
EXIT_PARTIAL = 4        # done, but some applicants were not scored
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143   # SIGTERM (128 + SIGTERM)

EXIT_CODES = f"""\
exit codes:
  {EXIT_OK:<4} done
  {EXIT_INTERNAL:<4} internal error: a bug to report
  {EXIT_ERROR:<4} a problem to fix, named on one line: the command line, a job, config or data
       file, a party that does not answer
  {EXIT_UNVERIFIED:<4} a ledger or inclusion proof that does not verify (the first bad block is named)
  {EXIT_PARTIAL:<4} partly done: some applicants were not scored (the first is named; each row's
       error is in the output file)
  {EXIT_INTERRUPTED:<4} interrupted (Ctrl-C)
  {EXIT_TERMINATED:<4} stopped by SIGTERM
  daemons that --local started are stopped on any exit."""

LEDGER = "fedscore-demo/state/bureau/jobs/JOB_ID/ledger.sqlite"

# Examples for every command and subcommand, by command path; a test checks each parser shows its own.
EXAMPLES: dict[str, list[str]] = {
    "": [
        "fedscore demo",
        "fedscore run examples/default_credit/job.toml --local --report report.json",
        "fedscore init party acme_bureau --dir parties/acme_bureau",
    ],
    "run": [
        "fedscore run examples/default_credit/job.toml --local --report report.json",
        "fedscore run examples/default_credit/job.toml --local --align-only",
        "fedscore run examples/default_credit/job.toml --json --quiet",
    ],
    "status": [
        "fedscore status --job examples/default_credit/job.toml --tls certs/card_center",
        "fedscore status --job examples/default_credit/job.toml --tls certs/bureau --json",
    ],
    "demo": [
        "fedscore demo --workdir fedscore-demo",
        "fedscore demo --epochs 2 --key-bits 1024 --rows 5000 --json",
    ],
    "score": [
        "fedscore score --job fedscore-demo/job.toml --local --input fedscore-demo/applicants.csv --output scored.csv",
        "fedscore score --job fedscore-demo/job.toml --input fedscore-demo/applicants.csv --output scored.csv --settle --json",
    ],
    "audit": [f"fedscore audit verify {LEDGER}"],
    "audit verify": [f"fedscore audit verify {LEDGER} --head HEAD_HASH", f"fedscore audit verify {LEDGER} --quiet"],
    "audit show": [f"fedscore audit show {LEDGER}"],
    "audit prove": [f"fedscore audit prove {LEDGER} 5:0"],
    "audit check-proof": ["fedscore audit check-proof proof.json"],
    "audit balances": [f"fedscore audit balances {LEDGER} --json"],
    "certs": ["fedscore certs init --consortium consortium-certs --members card_center,bureau,ecommerce"],
    "certs init": [
        "fedscore certs init --consortium consortium-certs --members card_center,bureau,ecommerce",
        "fedscore certs init --consortium consortium-certs --members acme_bureau --days 365",
    ],
    "coordinator": ["fedscore coordinator serve --config coordinator/coordinator.toml"],
    "coordinator serve": ["fedscore coordinator serve --config coordinator/coordinator.toml"],
    "party": ["fedscore party serve --config parties/bureau/party.toml"],
    "party serve": [
        "fedscore party serve --config parties/bureau/party.toml",
        "fedscore party serve --config parties/bureau/party.toml --listen 0.0.0.0:50062",
    ],
    "init": ["fedscore init party acme_bureau --dir parties/acme_bureau"],
    "init party": [
        "fedscore init party acme_bureau --dir parties/acme_bureau",
        "fedscore init party my_bank --role card_center --listen 127.0.0.1:50071 --tls-dir consortium-certs/my_bank",
    ],
}


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so it unwinds like Ctrl-C (daemons started here are stopped)."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def epilog(path: str) -> str:
    lines = [f"example: {command}" for command in EXAMPLES[path]]
    return "\n".join(lines + (["", EXIT_CODES] if path == "" else []))


def _print_json(document: object) -> None:
    print(json.dumps(document, indent=2))


def _print_report(report: dict) -> None:
    test = f", test AUC {report['test_auc']:.4f}, test KS {report['test_ks']:.4f}" if report.get("test_auc") else ""
    print(f"trained {report['epochs']} epochs on {report['train_rows']} of {report['aligned_rows']} aligned rows: AUC {report['auc']:.4f}, KS {report['ks']:.4f}{test}")
    for party in report["parties"]:
        print(f"  {party['name']:<14} {party['role']:<12} model: {party['model']}")


def cmd_run(args: argparse.Namespace) -> int:
    from fedscore.cli.progress import ProgressView
    from fedscore.report.build import html_path
    from fedscore.cli.runner import run_job_file

    with ProgressView.for_stderr(args.quiet) as view:
        report = run_job_file(
            args.job, local=args.local, report_path=args.report, state_dir=args.state,
            workers=args.workers, progress=view, align_only=args.align_only,
            tls_dir=args.tls, insecure=args.insecure,
        )
    if args.json:
        _print_json(report)
    elif args.quiet:
        pass
    elif args.align_only:
        overlaps = ", ".join(f"{name} {count}" for name, count in report["overlaps"].items())
        print(f"aligned {report['aligned_rows']} applicants held by every party (card center shares: {overlaps})")
    else:
        _print_report(report)
        if args.report:
            print(f"report: {args.report} (page: {html_path(args.report)})")
    return EXIT_OK


def scoring_summary(result: dict, output: Path) -> dict:
    """What `score --json` prints: the counts, the model, the settlement; the rows are in the output file."""
    return {**{key: value for key, value in result.items() if key != "table"}, "output": str(output)}


def _partial(result: dict) -> int:
    """EXIT_PARTIAL, naming the first applicant not scored on stderr, when any was not."""
    if not result["failed"]:
        return EXIT_OK
    print(f"fedscore: {result['failed']} applicant(s) not scored; first: {result['first_error']}", file=sys.stderr)
    return EXIT_PARTIAL


def cmd_demo(args: argparse.Namespace) -> int:
    from fedscore.cli.demo import summary_table, write_demo
    from fedscore.cli.progress import ProgressView
    from fedscore.report.build import html_path
    from fedscore.cli.runner import run_job_file, score_file

    human = not (args.quiet or args.json)
    workdir: Path = args.workdir
    report_path = workdir / "report.json"
    scored_path = workdir / "scored.csv"
    with ProgressView.for_stderr(args.quiet) as view:
        view.stage("writing each party's data and the job file")
        job = write_demo(workdir, epochs=args.epochs, key_bits=args.key_bits, rows=args.rows)
        view.note(f"demo consortium in {workdir}: card_center, bureau, ecommerce; {args.key_bits}-bit Paillier keys")
        report = run_job_file(job, local=True, report_path=report_path, workers=args.workers, progress=view)
    if human:
        _print_report(report)
        print()
        print(summary_table(report))
        print(f"\nreport: {report_path}, page: {html_path(report_path)}  (training {report['seconds']:.0f} s)")
        print("\nscoring new applicants online (each signed a consent; partners check it before answering):", flush=True)
    with ProgressView.for_stderr(args.quiet) as view:
        view.stage("starting the party daemons from the trained state")
        scored = score_file(job, workdir / "applicants.csv", scored_path, local=True, settle=True, workers=1,
                            progress=view.scoring)
    if args.json:
        _print_json({"report": report, "scoring": scoring_summary(scored, scored_path)})
    elif human:
        print_scored(scored)
        print(f"answers: {scored_path}  (scoring chain: {scored['ledger']})")
        _print_scoring_settlement(scored["settlement"])
    return _partial(scored)


def print_scored(result: dict, limit: int = 20) -> None:
    table = result["table"]
    print(f"{'applicant':<12}{'P(default)':>11}{'score':>7}  {'decision':<9}{'limit':>9}  reasons / partners missing")
    for row in table.head(limit).itertuples():
        if row.error:
            print(f"{row.id:<12}  refused: {row.error}")
            continue
        notes = "; ".join(filter(None, [row.reasons, f"missing: {row.partners_missing}" if row.partners_missing else ""]))
        print(f"{row.id:<12}{row.probability:>11.3f}{row.score:>7.0f}  {row.decision:<9}{row.credit_limit:>9}  {notes}")
    if len(table) > limit:
        print(f"... {len(table) - limit} more")


def cmd_score(args: argparse.Namespace) -> int:
    from fedscore.cli.progress import ProgressView
    from fedscore.cli.runner import score_file

    with ProgressView.for_stderr(args.quiet) as view:
        view.stage("starting the party daemons from the trained state" if args.local else "opening the model at the card center")
        result = score_file(
            args.job, args.input, args.output, local=args.local, state_dir=args.state, job_id=args.job_id or "",
            settle=args.settle, workers=args.workers, concurrency=args.concurrency, progress=view.scoring,
            tls_dir=args.tls, insecure=args.insecure,
        )
    if args.json:
        _print_json(scoring_summary(result, args.output))
    elif not args.quiet:
        print_scored(result)
        print(f"scored {result['scored']} of {result['rows']} applicants with model {result['job_id']} in {result['seconds']:.1f} s: {args.output}")
        if result["settlement"]:
            _print_scoring_settlement(result["settlement"])
    return _partial(result)


def _print_scoring_settlement(settlement: dict) -> None:
    owed = ", ".join(f"{l['payee']} {l['amount'] / 100:.2f} for {l['requests']} requests" for l in settlement["lines"])
    print(f"scoring settlement #{settlement['number']}: {settlement['payer']} owes {owed} {settlement['currency']}")


def cmd_serve(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from fedscore.daemons.config import load_coordinator_config, load_party_config
    from fedscore.daemons.server import serve

    loader = load_party_config if args.role == "party" else load_coordinator_config
    config = loader(args.config)
    if args.listen:
        config = replace(config, listen=args.listen)
    return serve(args.role, config, args.ready_file, insecure=args.insecure)


def cmd_certs(args: argparse.Namespace) -> int:
    from fedscore.crypto.certs import init_consortium

    members = [m.strip() for m in args.members.split(",") if m.strip()]
    folders = init_consortium(args.consortium, members, days=args.days)
    print(f"consortium CA: {args.consortium / 'ca'} (keep ca.key offline; it is needed only to admit members)")
    for name, folder in folders.items():
        print(f"  {name:<14} {folder}  -> tls_dir of its daemon's config")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from fedscore.cli import audit

    text, document = {
        "verify": (audit.verify, audit.verify_document),
        "show": (audit.show, audit.show_document),
        "prove": (audit.prove_entry, audit.prove_document),
        "check-proof": (audit.check_proof_file, audit.check_proof_document),
        "balances": (audit.show_balances, audit.balances_document),
    }[args.action]
    target = args.proof if args.action == "check-proof" else args.ledger
    extra = {"prove": [getattr(args, "entry", "")], "verify": [getattr(args, "head", None)]}.get(args.action, [])
    try:
        if args.json:
            _print_json(document(target, *extra))
        else:
            shown = text(target, *extra)
            if not args.quiet:
                print(shown)
    except UnverifiedError as error:
        if args.json:
            _print_json({"ok": False, "error": str(error), "block": getattr(error, "height", None)})
        raise   # main names it and exits EXIT_UNVERIFIED
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from fedscore.job_file import load_job
    from fedscore.cli.status import consortium_status, format_status
    from fedscore.transport.tls import TlsIdentity

    spec, _ = load_job(args.job)
    if not args.insecure and args.tls is None:
        raise ConfigError("status needs a member's TLS folder (--tls DIR), or --insecure against plaintext daemons")
    members = consortium_status(spec, None if args.insecure else TlsIdentity.load(args.tls))
    if not members:
        raise ConfigError(f"job file {args.job.name}: no addresses to ask (status reads running daemons)")
    if args.json:
        _print_json(members)
    elif not args.quiet:
        print(format_status(members))
    return EXIT_OK if all(m["health"] == "SERVING" for m in members) else EXIT_ERROR


def cmd_init_party(args: argparse.Namespace) -> int:
    from fedscore.cli.scaffold import init_party

    folder = args.dir if args.dir is not None else Path(args.name)
    written = init_party(args.name, folder, args.role, args.listen, args.tls_dir)
    if not args.quiet:
        print(f"party {args.name!r} ({args.role}) in {folder}:")
        for path in written:
            print(f"  {path}")
        identity = "" if args.tls_dir else f", its TLS identity (from `fedscore certs init`) in {folder / 'tls'}"
        print(f"next: put the data in {folder / 'data'}{identity}, then: fedscore party serve --config {folder / 'party.toml'}")
        print(f"(see {folder / 'README.md'})")
    return EXIT_OK


class _Parsers:
    """Builds parsers that all keep their epilog's line breaks and carry their own examples."""

    def __init__(self, subparsers: argparse._SubParsersAction, path: str):
        self.subparsers = subparsers
        self.path = path

    def add(self, name: str, help: str, **kwargs) -> argparse.ArgumentParser:
        path = f"{self.path} {name}".strip()
        return self.subparsers.add_parser(
            name, help=help, description=kwargs.pop("description", help[0].upper() + help[1:] + "."),
            epilog=epilog(path), formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs,
        )


def _add_tls_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--tls", type=Path, metavar="DIR",
                         help="the card center's member folder (cert.pem, key.pem, ca.pem) for calling running daemons")
    command.add_argument("--insecure", action="store_true",
                         help="plaintext, no authentication (daemons started with --insecure): debugging only")


def _output_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors (with --json: the document only)")
    parser.add_argument("--json", action="store_true", help=f"print {what} as one JSON document on stdout, and nothing else there")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedscore",
        description="Federated credit scoring: train one logistic regression across a card center and its partners.",
        epilog=epilog(""), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fedscore {__version__}")
    commands = _Parsers(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"), "")

    run = commands.add("run", "run a training job")
    run.add_argument("job", type=Path, help="job file (TOML)")
    run.add_argument("--local", action="store_true", help="start the coordinator and every party daemon here")
    run.add_argument("--report", type=Path, help="write the JSON report here, and its HTML page beside it (same name, .html)")
    run.add_argument("--state", type=Path, help="with --local: state folder (default: state/ beside the job file)")
    run.add_argument("--workers", type=int, default=0, help="with --local: processes per party for Paillier work (0 = every core)")
    run.add_argument("--align-only", action="store_true", help="only find the applicants every party holds, then stop")
    _add_tls_arguments(run)
    _output_options(run, "the report (with --align-only: the counts)")
    run.set_defaults(handler=cmd_run)

    demo = commands.add("demo", "train the bundled three-party consortium, then score new applicants")
    demo.add_argument("--workdir", type=Path, default=Path("fedscore-demo"), help="where the parties' files go (default: ./fedscore-demo)")
    demo.add_argument("--epochs", type=int, default=10)
    demo.add_argument("--key-bits", type=int, default=2048)
    demo.add_argument("--rows", type=int, default=None, help="use only the first N applicants")
    demo.add_argument("--workers", type=int, default=0, help="processes per party for Paillier work (0 = every core)")
    _output_options(demo, '{"report": the report, "scoring": the scoring summary}')
    demo.set_defaults(handler=cmd_demo)

    score = commands.add("score", "score new applicants with a trained model")
    score.add_argument("--job", type=Path, required=True, help="the job file the model was trained with")
    score.add_argument("--input", type=Path, required=True, help="applicants CSV: the card center's id and feature columns and a consent column")
    score.add_argument("--output", type=Path, required=True, help="where the answers go (CSV)")
    score.add_argument("--local", action="store_true", help="start every party daemon here from the job's trained state")
    score.add_argument("--state", type=Path, help="with --local: state folder (default: state/ beside the job file)")
    score.add_argument("--job-id", help="the trained job to score with (default: the card center's newest of this job)")
    score.add_argument("--settle", action="store_true", help="settle the scoring fees on the chain afterwards")
    score.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    score.add_argument("--workers", type=int, default=1, help="with --local: processes per party for Paillier work")
    _add_tls_arguments(score)
    _output_options(score, "the summary (counts, model, settlement, first error)")
    score.set_defaults(handler=cmd_score)

    audit = commands.add("audit", "verify and read a ledger replica")
    actions = _Parsers(audit.add_subparsers(dest="action", required=True, metavar="ACTION"), "audit")
    for action, text in [
        ("verify", "check every block; exit 0 with a summary, 3 naming the first bad block"),
        ("show", "print blocks and entries"),
        ("prove", "print an inclusion proof (JSON) for one entry"),
        ("balances", "what each member owes and is owed"),
    ]:
        sub = actions.add(action, text)
        sub.add_argument("ledger", type=Path, help="a member's ledger.sqlite (or scoring.sqlite)")
        if action == "prove":
            sub.add_argument("entry", help="HEIGHT:INDEX, e.g. 5:0")
        if action == "verify":
            sub.add_argument("--head", help="the head hash the job report gives: a truncated or replaced chain fails too")
        _output_options(sub, "the result")
        sub.set_defaults(handler=cmd_audit)
    check = actions.add("check-proof", "verify an inclusion proof offline; exit 3 if it does not verify")
    check.add_argument("proof", type=Path)
    _output_options(check, "the result")
    check.set_defaults(handler=cmd_audit)

    certs = commands.add("certs", "make the consortium's CA and each member's TLS identity")
    init_certs = _Parsers(certs.add_subparsers(dest="action", required=True, metavar="ACTION"), "certs").add(
        "init", "create the CA (if absent) and a key and certificate for each member that lacks one"
    )
    init_certs.add_argument("--consortium", type=Path, required=True, help="folder for the CA and one folder per member")
    init_certs.add_argument("--members", required=True, help="comma-separated member names (the coordinator is always added)")
    init_certs.add_argument("--days", type=int, default=825, help="certificate lifetime in days (default 825)")
    init_certs.set_defaults(handler=cmd_certs)

    for role in ("coordinator", "party"):
        group = commands.add(role, f"run a {role} daemon")
        serve = _Parsers(group.add_subparsers(dest="action", required=True, metavar="ACTION"), role).add(
            "serve", f"serve as a {role} daemon until stopped"
        )
        serve.add_argument("--config", type=Path, required=True, help=f"{role} config (TOML)")
        serve.add_argument("--listen", help="host:port to listen on (overrides the config)")
        serve.add_argument("--ready-file", type=Path, help="write host:port here once serving")
        serve.add_argument("--insecure", action="store_true", help="plaintext, no peer authentication: debugging only")
        serve.set_defaults(handler=cmd_serve, role=role)

    status = commands.add("status", "show each member of a job: up or not, its jobs, steps and chain head",
                          description="Ask every daemon a job file names for its health (the standard gRPC health\n"
                                      "service) and state: its jobs, their last step and its chain's head.\n"
                                      "Exit 0 when every member serves, 2 otherwise.")
    status.add_argument("--job", type=Path, required=True, help="job file with the coordinator's and parties' addresses")
    status.add_argument("--tls", type=Path, metavar="DIR", help="any member's folder (cert.pem, key.pem, ca.pem) to ask as")
    status.add_argument("--insecure", action="store_true", help="plaintext, for daemons started with --insecure")
    _output_options(status, "every member's status")
    status.set_defaults(handler=cmd_status)

    init = commands.add("init", "make the files a new member starts from")
    party = _Parsers(init.add_subparsers(dest="what", required=True, metavar="WHAT"), "init").add(
        "party", "make a new party's folder: config, state folder, data stub and next steps",
        description="Make a new party's folder: a config `fedscore party serve --config` takes as it is\n"
                    "(once its TLS identity from `fedscore certs init` is in tls/, or named by --tls-dir),\n"
                    "a state folder, a data folder with a stub CSV and a README on its columns, and a\n"
                    "README of next steps. An existing folder is never overwritten.",
    )
    party.add_argument("name", help="the party's name, as the job file will give it (letters, digits, '-', '_')")
    party.add_argument("--dir", type=Path, help="the folder to make (default: ./NAME); must not exist, or be empty")
    party.add_argument("--role", choices=["card_center", "partner"], default="partner",
                       help="card_center holds the labels; partner (default) holds extra columns")
    party.add_argument("--listen", default="127.0.0.1:50061", help="host:port the daemon will listen on (default: %(default)s)")
    party.add_argument("--tls-dir", type=Path, metavar="DIR",
                       help="this party's member folder from `fedscore certs init` (default: the config expects tls/ in the folder)")
    party.add_argument("--quiet", action="store_true", help="print nothing but errors")
    party.set_defaults(handler=cmd_init_party)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "insecure", False) and args.command in ("run", "score"):
        from fedscore.transport.tls import INSECURE_WARNING

        print(f"fedscore: WARNING: {INSECURE_WARNING}", file=sys.stderr, flush=True)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return args.handler(args)
    except (FedscoreError, OSError, KeyboardInterrupt, Terminated) as error:
        code, line = exit_for(error)
        print(line, file=sys.stderr)
        return code
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_for(error: BaseException) -> tuple[int, str]:
    """The exit code for what ended a command, and the one line on stderr that says so.

    A fedscore error's class owns its code (fedscore.errors), whether raised here or rebuilt from a daemon's answer.
    """
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "fedscore: interrupted"
    if isinstance(error, Terminated):
        return EXIT_TERMINATED, "fedscore: stopped by SIGTERM"
    if isinstance(error, OSError):   # a path that cannot be read or written: the user's to fix
        return EXIT_ERROR, f"fedscore: error: {error}"
    code = error.exit_code if isinstance(error, FedscoreError) else EXIT_INTERNAL
    what = {EXIT_INTERNAL: "internal error", EXIT_UNVERIFIED: "does not verify"}.get(code, "error")
    return code, f"fedscore: {what}: {error}"
