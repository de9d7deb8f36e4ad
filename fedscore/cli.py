"""The `fedscore` command.

Exit codes: 0 success; 2 a problem the user can fix (a job file, a data file,
a party that does not answer), named on one line; 3 a ledger that does not
verify (the first bad block is named); 1 an internal error; 130 interrupted.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedscore import __version__
from fedscore.errors import FedscoreError, InternalError
from fedscore.protocol.training import Progress

EXAMPLES = {
    "run": "example: fedscore run examples/default_credit/job.toml --local --report report.json",
    "demo": "example: fedscore demo --workdir fedscore-demo",
    "coordinator": "example: fedscore coordinator serve --config coordinator/coordinator.toml",
    "party": "example: fedscore party serve --config parties/bureau/party.toml",
    "audit": "example: fedscore audit verify fedscore-demo/state/bureau/jobs/<job id>/ledger.sqlite",
    "certs": "example: fedscore certs init --consortium consortium-certs --members card_center,bureau,ecommerce",
    "score": "example: fedscore score --job fedscore-demo/job.toml --local --input fedscore-demo/applicants.csv --output scored.csv",
}


class ProgressPrinter:
    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    def __call__(self, event: Progress) -> None:
        if self.quiet:
            return
        if event.stage == "epoch":
            width = len(str(event.epochs))
            print(
                f"epoch {event.epoch:>{width}}/{event.epochs}  loss {event.loss:.6f}  {event.seconds:6.1f} s",
                flush=True,
            )
        elif event.stage == "align" and event.seconds:
            print(f"{event.message} (aligned in {event.seconds:.1f} s)", flush=True)
        elif event.stage == "evaluate":
            print(f"evaluated through masked scores in {event.seconds:.1f} s", flush=True)
        elif event.message:
            print(f"{event.message} ...", flush=True)


def _print_report(report: dict) -> None:
    test = f", test AUC {report['test_auc']:.4f}, test KS {report['test_ks']:.4f}" if report.get("test_auc") else ""
    print(f"trained {report['epochs']} epochs on {report['train_rows']} of {report['aligned_rows']} aligned rows: AUC {report['auc']:.4f}, KS {report['ks']:.4f}{test}")
    for party in report["parties"]:
        print(f"  {party['name']:<14} {party['role']:<12} model: {party['model']}")


def cmd_run(args: argparse.Namespace) -> int:
    from fedscore.report import html_path
    from fedscore.runner import run_job_file

    report = run_job_file(
        args.job, local=args.local, report_path=args.report, state_dir=args.state,
        workers=args.workers, progress=ProgressPrinter(args.quiet), align_only=args.align_only,
        tls_dir=args.tls, insecure=args.insecure,
    )
    if args.align_only:
        if not args.quiet:
            overlaps = ", ".join(f"{name} {count}" for name, count in report["overlaps"].items())
            print(f"aligned {report['aligned_rows']} applicants held by every party (card center shares: {overlaps})")
        return 0
    if not args.quiet:
        _print_report(report)
        if args.report:
            print(f"report: {args.report} (page: {html_path(args.report)})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from fedscore.demo import summary_table, write_demo
    from fedscore.report import html_path
    from fedscore.runner import run_job_file, score_file

    workdir: Path = args.workdir
    job = write_demo(workdir, epochs=args.epochs, key_bits=args.key_bits, rows=args.rows)
    print(f"demo consortium in {workdir}: card_center, bureau, ecommerce; {args.key_bits}-bit Paillier keys", flush=True)
    report_path = workdir / "report.json"
    report = run_job_file(
        job, local=True, report_path=report_path, workers=args.workers, progress=ProgressPrinter(False)
    )
    _print_report(report)
    print()
    print(summary_table(report))
    print(f"\nreport: {report_path}, page: {html_path(report_path)}  (training {report['seconds']:.0f} s)")
    print("\nscoring new applicants online (each signed a consent; partners check it before answering):", flush=True)
    scored = score_file(job, workdir / "applicants.csv", workdir / "scored.csv", local=True, settle=True, workers=1)
    print_scored(scored)
    print(f"answers: {workdir / 'scored.csv'}  (scoring chain: {scored['ledger']})")
    _print_scoring_settlement(scored["settlement"])
    return 0


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
    from fedscore.runner import score_file

    result = score_file(
        args.job, args.input, args.output, local=args.local, state_dir=args.state, job_id=args.job_id or "",
        settle=args.settle, workers=args.workers, concurrency=args.concurrency, tls_dir=args.tls, insecure=args.insecure,
    )
    if not args.quiet:
        print_scored(result)
        print(f"scored {result['scored']} of {result['rows']} applicants with model {result['job_id']} in {result['seconds']:.1f} s: {args.output}")
        if result["settlement"]:
            _print_scoring_settlement(result["settlement"])
    if result["failed"]:
        print(f"fedscore: {result['failed']} applicant(s) not scored; first: {result['first_error']}", file=sys.stderr)
        return 2
    return 0


def _print_scoring_settlement(settlement: dict) -> None:
    owed = ", ".join(f"{l['payee']} {l['amount'] / 100:.2f} for {l['requests']} requests" for l in settlement["lines"])
    print(f"scoring settlement #{settlement['number']}: {settlement['payer']} owes {owed} {settlement['currency']}")


def cmd_serve(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from fedscore.config import load_coordinator_config, load_party_config
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
    from fedscore import audit_cli
    from fedscore.ledger.verify import LedgerError

    try:
        if args.action == "verify":
            print(audit_cli.verify(args.ledger, args.head))
        elif args.action == "show":
            print(audit_cli.show(args.ledger))
        elif args.action == "prove":
            print(audit_cli.prove_entry(args.ledger, args.entry))
        elif args.action == "check-proof":
            print(audit_cli.check_proof_file(args.proof))
        else:
            print(audit_cli.show_balances(args.ledger))
    except LedgerError as error:
        print(f"fedscore: ledger is broken: {error}", file=sys.stderr)
        return 3
    return 0


def _add_tls_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--tls", type=Path, metavar="DIR",
                         help="the card center's member folder (cert.pem, key.pem, ca.pem) for calling running daemons")
    command.add_argument("--insecure", action="store_true",
                         help="plaintext, no authentication (daemons started with --insecure): debugging only")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedscore",
        description="Federated credit scoring: train one logistic regression across a card center and its partners.",
    )
    parser.add_argument("--version", action="version", version=f"fedscore {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a training job", epilog=EXAMPLES["run"])
    run.add_argument("job", type=Path, help="job file (TOML)")
    run.add_argument("--local", action="store_true", help="start the coordinator and every party daemon here")
    run.add_argument("--report", type=Path, help="write the JSON report here, and its HTML page beside it (same name, .html)")
    run.add_argument("--state", type=Path, help="with --local: state folder (default: state/ beside the job file)")
    run.add_argument("--workers", type=int, default=0, help="with --local: processes per party for Paillier work (0 = every core)")
    run.add_argument("--quiet", action="store_true", help="print nothing but errors")
    run.add_argument("--align-only", action="store_true", help="only find the applicants every party holds, then stop")
    _add_tls_arguments(run)
    run.set_defaults(handler=cmd_run)

    demo = commands.add_parser("demo", help="train the bundled three-party consortium", epilog=EXAMPLES["demo"])
    demo.add_argument("--workdir", type=Path, default=Path("fedscore-demo"), help="where the parties' files go (default: ./fedscore-demo)")
    demo.add_argument("--epochs", type=int, default=10)
    demo.add_argument("--key-bits", type=int, default=2048)
    demo.add_argument("--rows", type=int, default=None, help="use only the first N applicants")
    demo.add_argument("--workers", type=int, default=0, help="processes per party for Paillier work (0 = every core)")
    demo.set_defaults(handler=cmd_demo)

    score = commands.add_parser("score", help="score new applicants with a trained model", epilog=EXAMPLES["score"])
    score.add_argument("--job", type=Path, required=True, help="the job file the model was trained with")
    score.add_argument("--input", type=Path, required=True, help="applicants CSV: the card center's id and feature columns and a consent column")
    score.add_argument("--output", type=Path, required=True, help="where the answers go (CSV)")
    score.add_argument("--local", action="store_true", help="start every party daemon here from the job's trained state")
    score.add_argument("--state", type=Path, help="with --local: state folder (default: state/ beside the job file)")
    score.add_argument("--job-id", help="the trained job to score with (default: the card center's newest of this job)")
    score.add_argument("--settle", action="store_true", help="settle the scoring fees on the chain afterwards")
    score.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    score.add_argument("--workers", type=int, default=1, help="with --local: processes per party for Paillier work")
    score.add_argument("--quiet", action="store_true", help="print nothing but errors")
    _add_tls_arguments(score)
    score.set_defaults(handler=cmd_score)

    audit = commands.add_parser("audit", help="verify and read a ledger replica", epilog=EXAMPLES["audit"])
    audit_actions = audit.add_subparsers(dest="action", required=True)
    for action, text in [
        ("verify", "check every block; exit 0 with a summary, 3 naming the first bad block"),
        ("show", "print blocks and entries"),
        ("prove", "print an inclusion proof (JSON) for one entry"),
        ("balances", "what each member owes and is owed"),
    ]:
        sub = audit_actions.add_parser(action, help=text, epilog=EXAMPLES["audit"].replace("verify", action))
        sub.add_argument("ledger", type=Path, help="a member's ledger.sqlite")
        if action == "prove":
            sub.add_argument("entry", help="HEIGHT:INDEX, e.g. 5:0")
        if action == "verify":
            sub.add_argument("--head", help="the head hash the job report gives: a truncated or replaced chain fails too")
        sub.set_defaults(handler=cmd_audit)
    check = audit_actions.add_parser(
        "check-proof", help="verify an inclusion proof offline", epilog="example: fedscore audit check-proof proof.json"
    )
    check.add_argument("proof", type=Path)
    check.set_defaults(handler=cmd_audit)

    certs = commands.add_parser("certs", help="make the consortium's CA and each member's TLS identity",
                                epilog=EXAMPLES["certs"])
    certs_actions = certs.add_subparsers(dest="action", required=True)
    init = certs_actions.add_parser(
        "init", help="create the CA (if absent) and a key and certificate for each member that lacks one",
        epilog=EXAMPLES["certs"],
    )
    init.add_argument("--consortium", type=Path, required=True, help="folder for the CA and one folder per member")
    init.add_argument("--members", required=True, help="comma-separated member names (the coordinator is always added)")
    init.add_argument("--days", type=int, default=825, help="certificate lifetime in days (default 825)")
    init.set_defaults(handler=cmd_certs)

    for role in ("coordinator", "party"):
        group = commands.add_parser(role, help=f"run a {role} daemon")
        actions = group.add_subparsers(dest="action", required=True)
        serve = actions.add_parser("serve", help=f"serve as a {role} daemon until stopped", epilog=EXAMPLES[role])
        serve.add_argument("--config", type=Path, required=True, help=f"{role} config (TOML)")
        serve.add_argument("--listen", help="host:port to listen on (overrides the config)")
        serve.add_argument("--ready-file", type=Path, help="write host:port here once serving")
        serve.add_argument("--insecure", action="store_true", help="plaintext, no peer authentication: debugging only")
        serve.set_defaults(handler=cmd_serve, role=role)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "insecure", False) and args.command in ("run", "score"):
        from fedscore.transport.tls import INSECURE_WARNING

        print(f"fedscore: WARNING: {INSECURE_WARNING}", file=sys.stderr, flush=True)
    try:
        return args.handler(args)
    except InternalError as error:
        print(f"fedscore: internal error: {error}", file=sys.stderr)
        return 1
    except FedscoreError as error:
        print(f"fedscore: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedscore: interrupted", file=sys.stderr)
        return 130
