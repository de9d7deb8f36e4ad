"""The `fedscore` commands: each handler takes the parsed arguments, prints its result and returns its exit code.

A result goes to stdout (a summary, or with ``--json`` one JSON document and nothing else); progress and
errors go to stderr. The modules that do the work are imported inside each handler, so `fedscore --help`
stays fast.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fedscore.cli.exits import EXIT_ERROR, EXIT_OK, EXIT_PARTIAL
from fedscore.errors import ConfigError, UnverifiedError
from fedscore.plural import plural


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse (exit 2) an argument combination the command would refuse or ignore, before any work starts.

    main calls it first for every command, and a test calls it for every example the help shows.
    """
    command = args.command
    if command in ("run", "score", "status"):
        if args.tls is not None and args.insecure:
            raise ConfigError(f"{command}: --tls and --insecure contradict each other; give one")
        local = getattr(args, "local", False)
        if local and args.tls is not None:
            raise ConfigError(f"{command}: --tls is for daemons already running; --local makes its own identities")
        if not local and args.tls is None and not args.insecure:
            who = "a member's folder" if command == "status" else "the card center's member folder"
            also = "" if command == "status" else "; or add --local to start them here"
            raise ConfigError(f"{command} against running daemons needs {who} (--tls DIR), "
                              f"or --insecure for daemons started with --insecure{also}")
        if getattr(args, "state", None) is not None and not local:
            raise ConfigError(f"{command}: --state names the state of daemons --local starts; use it with --local")


def _print_json(document: object) -> None:
    print(json.dumps(document, indent=2))


def _print_report(report: dict) -> None:
    test = f", test AUC {report['test_auc']:.4f}, test KS {report['test_ks']:.4f}" if report.get("test_auc") else ""
    print(f"trained {plural(report['epochs'], 'epoch')} on {report['train_rows']} of "
          f"{plural(report['aligned_rows'], 'aligned row')}: AUC {report['auc']:.4f}, KS {report['ks']:.4f}{test}")
    for warning in report.get("warnings") or []:
        print(f"warning: {warning}")
    for party in report["parties"]:
        print(f"  {party['name']:<14} {party['role']:<12} model: {party['model']}")


def cmd_run(args: argparse.Namespace) -> int:
    from fedscore.cli.progress import ProgressView
    from fedscore.cli.runner import run_job_file
    from fedscore.report.build import html_path

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
        print(f"aligned {plural(report['aligned_rows'], 'applicant')} held by every party (card center shares: {overlaps})")
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
    print(f"fedscore: {plural(result['failed'], 'applicant')} not scored; first: {result['first_error']}", file=sys.stderr)
    return EXIT_PARTIAL


def cmd_demo(args: argparse.Namespace) -> int:
    from fedscore.cli.demo import check_arguments, summary_table, write_demo
    from fedscore.cli.demo_audience import (AUDIENCE_JOB_FILE, AUDIENCE_REPORT, audience_model_line, audience_settings,
                                                audience_summary, campaign_lines)
    from fedscore.cli.progress import ProgressView
    from fedscore.cli.runner import run_job_file, score_file
    from fedscore.report.build import html_path

    check_arguments(args.epochs, args.key_bits, args.rows, args.workers)   # before anything is written
    human = not (args.quiet or args.json)
    workdir: Path = args.workdir
    report_path = workdir / "report.json"
    scored_path = workdir / "scored.csv"
    with ProgressView.for_stderr(args.quiet) as view:
        view.stage("writing each party's data and the job file")
        job = write_demo(workdir, epochs=args.epochs, key_bits=args.key_bits, rows=args.rows)
        if args.serve:
            from fedscore.cli.serve import check_job_ports

            check_job_ports(job, args.http)   # now, not after training
        view.note(f"demo consortium in {workdir}: card_center, bureau, ecommerce; {args.key_bits}-bit Paillier keys")
        report = run_job_file(job, local=True, report_path=report_path, workers=args.workers, progress=view,
                              observer=True)
        view.stage("training the audience model: the card center's labels, ecommerce's columns only")
        audience_model = run_job_file(workdir / AUDIENCE_JOB_FILE, local=True, report_path=workdir / AUDIENCE_REPORT,
                                      workers=args.workers, progress=view)
    if human:
        _print_report(report)
        print()
        print(summary_table(report))
        print(f"\nreport: {report_path}, page: {html_path(report_path)}  (training {report['seconds']:.0f} s)")
        print(audience_model_line(audience_model))
        print("\nscoring new applicants online (each signed a consent; partners check it before answering):", flush=True)
    from fedscore.cli.demo import demo_dispute, dispute_lines
    from fedscore.cli.demo_consortium import (monitor_lines, monitor_review, observer_line, verification_line,
                                              while_scoring_runs)

    with ProgressView.for_stderr(args.quiet) as view:
        view.stage("starting the party daemons from the trained state")
        scored = score_file(job, workdir / "applicants.csv", scored_path, local=True, settle=True, workers=1,
                            progress=view.scoring, observer=True, while_running=while_scoring_runs(job, workdir),
                            audience=audience_settings())
    verification, observed, audience = scored.pop("verification"), scored.pop("observer"), scored.pop("audience")
    monitor = monitor_review(job)
    evidence = None if verification is None else Path(verification["evidence_dir"])
    dispute = demo_dispute(workdir, scored["table"], evidence)
    document = {"report": report, "scoring": scoring_summary(scored, scored_path), "verification": verification,
                "observer": observed, "monitor": monitor, "dispute": dispute,
                "audience": {"training": audience_summary(audience_model), **audience}}
    if args.json and not args.serve:
        _print_json(document)
    elif human:
        print_scored(scored)
        print(f"answers: {scored_path}  (scoring chain: {scored['ledger']})")
        _print_scoring_settlement(scored["settlement"])
        print("\n" + "\n".join([verification_line(verification), observer_line(observed), monitor_lines(monitor)]))
        print("\n" + campaign_lines(audience))
        print("\n" + dispute_lines(dispute))
    if args.serve:
        _serve(args, job, lambda serving: _print_json({**document, "serving": serving}))
    return _partial(scored)


def _serve(args: argparse.Namespace, job: Path, print_document) -> None:
    """Serve ``job``'s model until Ctrl-C; once ready, ``print_document`` with --json, else the commands."""
    from fedscore.cli.serve import format_ready, serve_until_stopped

    def ready(document: dict) -> None:
        if args.json:
            print_document(document)
        elif not args.quiet:
            print(("\n" if args.command == "demo" else "") + format_ready(document))

    own = args.command == "serve"   # the demo serves its own job's state, with one worker per party
    serve_until_stopped(job, ready, state_dir=args.state if own else None, job_id=(args.job_id or "") if own else "",
                        http_listen=args.http, workers=args.workers if own else 1, quiet=args.quiet)


def cmd_serve_job(args: argparse.Namespace) -> int:
    _serve(args, args.job, _print_json)
    return EXIT_OK


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
        print(f"scored {result['scored']} of {plural(result['rows'], 'applicant')} with model {result['job_id']} "
              f"in {result['seconds']:.1f} s: {args.output}")
        if result["settlement"]:
            _print_scoring_settlement(result["settlement"])
    return _partial(result)


def _print_scoring_settlement(settlement: dict) -> None:
    owed = ", ".join(f"{l['payee']} {l['amount'] / 100:.2f} for {plural(l['requests'], 'request')}" for l in settlement["lines"])
    print(f"scoring settlement #{settlement['number']}: {settlement['payer']} owes {owed} {settlement['currency']}")


def cmd_serve(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from fedscore.daemons.config import load_coordinator_config, load_party_config
    from fedscore.daemons.server import serve

    loader = load_party_config if args.role == "party" else load_coordinator_config
    config = loader(args.config)
    if args.listen:
        config = replace(config, listen=args.listen)
    return serve(args.role, config, args.ready_file, insecure=args.insecure, lifeline_fd=args.lifeline_fd)


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


def cmd_dispute(args: argparse.Namespace) -> int:
    from fedscore.cli.dispute import dispute_command

    return dispute_command(args)


def cmd_check_evidence(args: argparse.Namespace) -> int:
    from fedscore.cli.dispute import check_evidence_command

    return check_evidence_command(args)


def cmd_status(args: argparse.Namespace) -> int:
    from fedscore.job_file import load_job
    from fedscore.cli.observer import format_observer, observer_status, observer_target, observers_exit
    from fedscore.cli.status import consortium_status, format_status, status_document, status_exit
    from fedscore.transport.tls import TlsIdentity

    tls = None if args.insecure else TlsIdentity.load(args.tls)
    if args.job is None and not args.observer:
        raise ConfigError("status: give --job (the members it names) or --observer NAME=HOST:PORT, or both")
    members = consortium_status(load_job(args.job)[0], tls) if args.job is not None else []
    if args.job is not None and not members:
        raise ConfigError(f"job file {args.job}: no addresses to ask (status reads running daemons)")
    observers = [observer_status(*observer_target(text), tls) for text in args.observer]
    if args.json:
        _print_json({**status_document(members), **({"observers": observers} if observers else {})})
    elif not args.quiet:
        print("\n".join([format_status(members)] * bool(members) + [format_observer(o) for o in observers]))
    return max(status_exit(members), observers_exit(observers))   # 3 (a fork, an alarm) over 2 (one down) over 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from fedscore.cli.exits import EXIT_ALERT
    from fedscore.cli.monitor import format_monitor, monitor_json, run_monitor, write_monitor_page

    document = run_monitor(args.job, args.state, args.job_id or "", args.since, args.per)
    if args.html:
        write_monitor_page(args.html, document)
    if args.json:
        print(monitor_json(document))
    elif not args.quiet:
        print(format_monitor(document))
        if args.html:
            print(f"page: {args.html}")
    return EXIT_ALERT if document["alerts"] else EXIT_OK


def cmd_init_party(args: argparse.Namespace) -> int:
    from fedscore.cli.scaffold import init_party

    folder = args.dir if args.dir is not None else Path(args.name)
    written = init_party(args.name, folder, args.role, args.listen, args.tls_dir, tuple(args.card_center))
    if not args.quiet:
        print(f"party {args.name!r} ({args.role}) in {folder}:")
        for path in written:
            print(f"  {path}")
        identity = "" if args.tls_dir else f", its TLS identity (from `fedscore certs init`) in {folder / 'tls'}"
        print(f"next: put the data in {folder / 'data'}{identity}, then: fedscore party serve --config {folder / 'party.toml'}")
        print(f"(see {folder / 'README.md'})")
    return EXIT_OK


def cmd_verification(args: argparse.Namespace) -> int:
    """`fedscore verification keygen|record` (fedscore.cli.verification)."""
    from fedscore.cli.verification import verification_command

    return verification_command(args)


def cmd_audience(args: argparse.Namespace) -> int:
    """`fedscore audience handover|query|campaign|conversion|settle` (fedscore.cli.audience)."""
    from fedscore.cli.audience import audience_command

    return audience_command(args)
