"""The `fedscore` command line: its parser (each parser's examples are in fedscore.cli.examples) and `main`.

Output: a command's result goes to stdout (a summary, or with ``--json`` one
JSON document and nothing else); progress and errors go to stderr, so a
script can pipe the result while a person watches the bars. ``--quiet``
leaves only errors. Exit codes are in fedscore.cli.exits (and the README);
the handlers are in fedscore.cli.commands.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from fedscore import __version__
from fedscore.cli.commands import (check_arguments, cmd_audit, cmd_certs, cmd_demo, cmd_init_party, cmd_run, cmd_score,
                                   cmd_serve, cmd_serve_job, cmd_status)
from fedscore.cli.examples import EXAMPLES
from fedscore.cli.exits import EXIT_CODES, Terminated, exit_for
from fedscore.cli.observer import cmd_init_observer, cmd_observer_serve
from fedscore.errors import FedscoreError


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def epilog(path: str) -> str:
    lines = [f"example: {command}" for command in EXAMPLES[path]]
    return "\n".join(lines + (["", EXIT_CODES] if path == "" else []))


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


def _block_hash(text: str) -> str:
    """A block hash, or its first 16 hex digits or more (as the demo prints it): anything else is a mistyped
    command (exit 2), not a chain that fails to verify (exit 3)."""
    from fedscore.cli.audit import HEAD_PREFIX_DIGITS

    value = text.strip().removesuffix("…").removesuffix("...").lower()   # as the demo prints it, ellipsis and all
    if not HEAD_PREFIX_DIGITS <= len(value) <= 64 or any(c not in "0123456789abcdef" for c in value):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a block hash: give the 64 hex digits the job report prints, or at least the first "
            f"{HEAD_PREFIX_DIGITS}")
    return value


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
    demo.add_argument("--epochs", type=int, default=30, help="passes over the training rows (default: %(default)s)")
    demo.add_argument("--key-bits", type=int, default=2048,
                      help="Paillier key size; fewer bits train faster and protect less (default: %(default)s)")
    demo.add_argument("--rows", type=int, default=None, help="use only the first N applicants")
    demo.add_argument("--workers", type=int, default=0, help="processes per party for Paillier work (0 = every core)")
    demo.add_argument("--serve", action="store_true", help="then serve the model until Ctrl-C, as `fedscore serve` does")
    demo.add_argument("--http", default="127.0.0.1:8443", metavar="HOST:PORT", help="with --serve: the HTTPS endpoint (default: %(default)s)")
    _output_options(demo, '{"report": the report, "scoring": the scoring summary} (with --serve, "serving" too, once ready)')
    demo.set_defaults(handler=cmd_demo)

    serve = commands.add(
        "serve", "serve a trained model: its consortium's daemons on the job file's addresses until Ctrl-C",
        description="Start the coordinator and every party daemon from the job's trained state, on the addresses\n"
                    "the job file gives and the card center's HTTPS endpoint on --http; open the job's newest\n"
                    "model for scoring; print ready-to-paste curl (HTTPS) and gRPC health commands. Ctrl-C or\n"
                    "SIGTERM stops every daemon (exit 0).",
    )
    serve.add_argument("job", type=Path, help="the job file the model was trained with (its addresses are listened on)")
    serve.add_argument("--state", type=Path, help="state folder of the trained job (default: state/ beside the job file)")
    serve.add_argument("--job-id", help="the trained job to serve (default: the card center's newest of this job)")
    serve.add_argument("--http", default="127.0.0.1:8443", metavar="HOST:PORT", help="the card center's HTTPS endpoint (default: %(default)s)")
    serve.add_argument("--workers", type=int, default=1, help="processes per party for Paillier work")
    _output_options(serve, "the addresses and commands, once serving")
    serve.set_defaults(handler=cmd_serve_job)

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
        sub.add_argument("ledger", type=Path, help="a member's ledger.sqlite (or scoring.sqlite)" + (
            "; or an observer's replica or state folder (an alarm it records fails too)" if action == "verify" else ""))
        if action == "prove":
            sub.add_argument("entry", help="HEIGHT:INDEX, e.g. 5:0")
        if action == "verify":
            sub.add_argument("--head", type=_block_hash, metavar="HEX",
                             help="the head hash the job report gives (or its first 16 hex digits or more): "
                                  "a truncated or replaced chain fails too")
        _output_options(sub, "the result")
        sub.set_defaults(handler=cmd_audit)
    check = actions.add("check-proof", "verify an inclusion proof offline; exit 3 if it does not verify")
    check.add_argument("proof", type=Path, help="a proof file, as `fedscore audit prove` prints it")
    _output_options(check, "the result")
    check.set_defaults(handler=cmd_audit)
    from fedscore.cli.commands import cmd_check_evidence, cmd_dispute

    dispute = actions.add(
        "dispute", "the card center: write the evidence bundle of a disputed request or of a partner's fees",
        description="Write one JSON evidence bundle from the card center's own state (its daemon config names it):\n"
                    "with --applicant, the consent of that applicant's request, opened from the chain, with its\n"
                    "proof; with --settlement and --partner, every request that settlement billed to the partner,\n"
                    "with proofs. The bundle is checked as a reader would check it before the command ends\n"
                    "(exit 3 naming what fails).",
    )
    dispute.add_argument("--config", type=Path, required=True, help="the card center's party config (its state folder and consent policy)")
    dispute.add_argument("--applicant", help="the disputing applicant's id, as the card center's records give it")
    dispute.add_argument("--request", metavar="ID", help="the disputed request's id (the request_id of its answer); "
                                                         "may be left out when the applicant has one request")
    dispute.add_argument("--settlement", type=int, metavar="N", help="a fee dispute: the scoring settlement's number")
    dispute.add_argument("--partner", help="a fee dispute: the partner whose billed requests to list")
    dispute.add_argument("--job-id", help="the model whose scoring chain to read (default: the newest with one)")
    dispute.add_argument("--with-verification", type=Path, metavar="DIR",
                         help="a consent dispute: add the applicant's newest identity verification from the chain, "
                              "and copy the evidence files it names from DIR beside the bundle, to hand over with it")
    dispute.add_argument("--output", type=Path, help="where the bundle goes (default: dispute-REQUEST.json or "
                                                     "fees-JOB-N-PARTNER.json here)")
    _output_options(dispute, "where the bundle is, its size and what it shows")
    dispute.set_defaults(handler=cmd_dispute)
    evidence = actions.add("check-evidence", "check an evidence bundle offline; exit 0 with what it shows, 3 naming "
                                             "the first thing that fails")
    evidence.add_argument("bundle", type=Path, help="a bundle, as `fedscore audit dispute` writes it")
    evidence.add_argument("--genesis", type=_block_hash, required=True, metavar="HEX",
                          help="the hash of the scoring chain's genesis block you trust (or its first 16 hex digits or more)")
    evidence.add_argument("--applicant", help="a consent bundle: the id of the applicant it must be about")
    evidence.add_argument("--party-config", type=Path, metavar="TOML",
                          help="a fee bundle: the billed partner's own config, to check each request's mark under its "
                               "key and the blocks against its replica")
    evidence.add_argument("--files", type=Path, metavar="DIR",
                          help="a bundle with an identity verification: the folder of evidence files handed over with "
                               "it; each must have the SHA-256 the verifier signed")
    evidence.add_argument("--replica", type=Path, metavar="LEDGER",
                          help="any member's (or an observer's) scoring.sqlite: each cited block must be its block at that height")
    _output_options(evidence, "what the bundle shows")
    evidence.set_defaults(handler=cmd_check_evidence)

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
        serve.add_argument("--lifeline-fd", type=int, metavar="FD",
                           help="stop when this inherited pipe closes (how --local daemons end with their launcher)")
        serve.set_defaults(handler=cmd_serve, role=role)

    observer = commands.add("observer", "run an observer daemon: a regulator's replica of the chains")
    observe = _Parsers(observer.add_subparsers(dest="action", required=True, metavar="ACTION"), "observer").add(
        "serve", "follow every chain the configured members let this observer read, until stopped",
        description="Read every chain the members in the config let this observer read (their configs name it in\n"
                    "`observers`), check each block as members do, keep a replica of each, and record an alarm\n"
                    "when two members serve different validly signed blocks at one height. Serves the gRPC\n"
                    "health service and its status (`fedscore status --observer`) on --listen.",
    )
    observe.add_argument("--config", type=Path, required=True, help="observer config (TOML)")
    observe.add_argument("--listen", help="host:port to listen on (overrides the config)")
    observe.add_argument("--ready-file", type=Path, help="write host:port here once serving")
    observe.add_argument("--insecure", action="store_true", help="plaintext, no peer authentication: debugging only")
    observe.add_argument("--lifeline-fd", type=int, metavar="FD", help="stop when this inherited pipe closes")
    observe.set_defaults(handler=cmd_observer_serve)

    status = commands.add("status", "show each member of a job: up or not, its jobs, steps and chain head",
                          description="Ask every daemon a job file names for its health (the standard gRPC health\n"
                                      "service) and state: its jobs, their last step and its chain's head.\n"
                                      "Exit 0 when every member serves, 2 otherwise, 3 when two hold different blocks at one height\n"
                                      "or an observer (--observer) recorded an alarm.")
    status.add_argument("--job", type=Path, help="job file with the coordinator's and parties' addresses")
    status.add_argument("--observer", action="append", default=[], metavar="NAME=HOST:PORT",
                        help="an observer daemon to ask too: its chains, heads and alarms (an alarm exits 3)")
    status.add_argument("--tls", type=Path, metavar="DIR", help="any member's folder (cert.pem, key.pem, ca.pem) to ask as")
    status.add_argument("--insecure", action="store_true", help="plaintext, for daemons started with --insecure")
    _output_options(status, "every member's status")
    status.set_defaults(handler=cmd_status)

    from fedscore.cli.commands import cmd_monitor
    from fedscore.cli.monitor import since_day

    monitor = commands.add(
        "monitor", "watch a served model: score and feature stability, partner health, decision mix",
        description="Read the card center's scoring log of the job's model against the training population's\n"
                    "baseline beside the model: PSI of the scores and CSI of each own feature, each partner's\n"
                    "answer rate and reply times, the decision mix, per day (UTC) or per N requests. Thresholds:\n"
                    "the job file's [monitoring] table. Exit 0 with no alert, 4 when one fired, 2 on bad input.",
    )
    monitor.add_argument("--job", type=Path, required=True, help="the job file the model was trained with")
    monitor.add_argument("--state", type=Path, help="the run's state folder, or the card center daemon's own "
                                                    "(default: state/ beside the job file)")
    monitor.add_argument("--job-id", help="the trained job to monitor (default: the card center's newest of this job)")
    monitor.add_argument("--since", type=since_day, metavar="DATE", help="only requests from this UTC day on (YYYY-MM-DD)")
    monitor.add_argument("--per", type=int, default=0, metavar="N", help="periods of N requests each, instead of days")
    monitor.add_argument("--html", type=Path, metavar="OUT", help="also write an HTML page with the plots here")
    _output_options(monitor, "the monitoring document (periods, readings, alerts)")
    monitor.set_defaults(handler=cmd_monitor)

    init = commands.add("init", "make the files a new member starts from")
    whats = _Parsers(init.add_subparsers(dest="what", required=True, metavar="WHAT"), "init")
    party = whats.add(
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
    party.add_argument("--card-center", action="append", default=[], metavar="NAME",
                       help="a member whose jobs this party takes as partner (repeat for several; "
                            "none: it takes no job until card_centers in its config names one)")
    party.add_argument("--quiet", action="store_true", help="print nothing but errors")
    party.set_defaults(handler=cmd_init_party)
    observer_init = whats.add("observer", "make a new observer's folder: its config and state folder")
    observer_init.add_argument("name", help="the observer's name, as its certificate gives it (e.g. regulator)")
    observer_init.add_argument("--dir", type=Path, help="the folder to make (default: ./NAME); must not exist, or be empty")
    observer_init.add_argument("--listen", default="127.0.0.1:50090", help="host:port of its status service (default: %(default)s)")
    observer_init.add_argument("--tls-dir", type=Path, metavar="DIR", help="its member folder from `fedscore certs init` (default: tls/)")
    observer_init.add_argument("--member", action="append", default=[], metavar="NAME=HOST:PORT",
                               help="a member to read from (repeat for each)")
    observer_init.add_argument("--quiet", action="store_true", help="print nothing but errors")
    observer_init.set_defaults(handler=cmd_init_observer)

    from fedscore.cli.commands import cmd_verification

    verification = commands.add("verification", "record identity verifications on a model's scoring chain")
    steps = _Parsers(verification.add_subparsers(dest="action", required=True, metavar="ACTION"), "verification")
    keygen = steps.add("keygen", "make an identity verifier's Ed25519 key and print the config line to trust it")
    keygen.add_argument("--name", required=True, help="the verifier's name, as the card center's `verifiers` will list it")
    keygen.add_argument("--out", type=Path, required=True, help="the key file to write (owner-only; never overwritten)")
    _output_options(keygen, "the key file, name and public key")
    keygen.set_defaults(handler=cmd_verification)
    recording = steps.add(
        "record", "sign a verification as the verifier and send it to the card center",
        description="Sign a verification record (the applicant's digest, the method, now, the verifier's name and\n"
                    "key, each evidence file's SHA-256) with the verifier's key and send it to the card center,\n"
                    "which checks it against its trusted verifiers and puts it on the model's scoring chain.\n"
                    "The evidence files are read here; only their digests are sent.",
    )
    recording.add_argument("--job", type=Path, required=True, help="the job file the served model was trained with")
    recording.add_argument("--applicant", required=True, help="the applicant's id (only its digest is signed)")
    recording.add_argument("--method", required=True, help="how the applicant was verified, e.g. face-match, bank-account")
    recording.add_argument("--verifier", required=True, help="the verifier's name in the card center's `verifiers`")
    recording.add_argument("--verifier-key", type=Path, required=True, metavar="KEYFILE",
                           help="the verifier's key file (`fedscore verification keygen`)")
    recording.add_argument("--evidence", type=Path, nargs="+", required=True, metavar="FILE",
                           help="the evidence files (photos, documents); their SHA-256 is signed, they stay here")
    recording.add_argument("--job-id", help="the served model (default: the card center's newest of this job)")
    recording.add_argument("--local", action="store_true", help="start every party daemon here from the job's trained state")
    recording.add_argument("--state", type=Path, help="with --local: state folder (default: state/ beside the job file)")
    _add_tls_arguments(recording)
    _output_options(recording, "the verification id, model and record digest")
    recording.set_defaults(handler=cmd_verification)

    from fedscore.cli.commands import cmd_audience

    audience = commands.add("audience", "marketing audiences: a partner counts its users with an audience model",
                            description="Ask the partner an audience job names about its own users, through the card\n"
                                        "center's running daemon: hand the trained model over, query noisy counts\n"
                                        "per segment, start a campaign, record conversions, settle the fees. Each\n"
                                        "act is a block of the pair's audience chain, co-signed by both.")
    acts = _Parsers(audience.add_subparsers(dest="action", required=True, metavar="ACTION"), "audience")
    handover = acts.add("handover", "send the partner the card center's part of a trained audience model")
    handover.add_argument("--job-id", help="the trained model (default: the card center's newest of this job)")
    query = acts.add("query", "ask the partner how many of its users reach a score, per segment (noisy counts)")
    query.add_argument("--model", required=True, help="the audience model's digest (`audience handover` prints it)")
    query.add_argument("--min-points", type=float, required=True, help="the cut-off: users scoring at least this many points")
    query.add_argument("--segment", action="append", default=[], metavar="COLUMN",
                       help="a segment column the partner exposes (repeat for two; none: one count)")
    query.add_argument("--epsilon", type=float, default=0.5,
                       help="the privacy cost of this query, spent from the budget (default: %(default)s)")
    query.add_argument("--unseen-only", action="store_true",
                       help="count only the partner's users the card center never saw (not aligned in the model's job)")
    campaign = acts.add("campaign", "start a campaign on an answered query; the audience stays at the partner")
    campaign.add_argument("--query", required=True, metavar="QUERY_ID", help="the answered query (`audience query` prints it)")
    conversion = acts.add("conversion", "record an application that arrived with a campaign id")
    conversion.add_argument("--campaign", required=True, metavar="CAMPAIGN_ID", help="the campaign id the application carried")
    conversion.add_argument("--applicant", required=True, help="the applicant's id (only a salted digest goes on the chain)")
    settle = acts.add("settle", "settle the audience fees since the last settlement (both sides sign)")
    for act in (handover, query, campaign, conversion, settle):
        act.add_argument("--job", type=Path, required=True, help="the audience job file (the card center and one partner)")
        _add_tls_arguments(act)
        _output_options(act, "the answer")
        act.set_defaults(handler=cmd_audience)
    return parser


CLIENT_COMMANDS = ("run", "demo", "serve", "score", "status", "verification", "audience")   # commands that call daemons (not daemons themselves)


def quiet_grpc() -> None:
    """Keep gRPC's C core from logging on stderr (handshake failures, reconnects): a command names what failed
    in its own one line. The core reads its verbosity when grpc is imported, so it is set only around that
    import: daemons started from here (--local) keep the environment they would have had, and their logs."""
    if "grpc" in sys.modules or "GRPC_VERBOSITY" in os.environ:   # already loaded, or the user chose
        return
    os.environ["GRPC_VERBOSITY"] = "NONE"
    try:
        import grpc  # noqa: F401
    finally:
        del os.environ["GRPC_VERBOSITY"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in CLIENT_COMMANDS:
        quiet_grpc()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        check_arguments(args)
        if getattr(args, "insecure", False) and args.command in ("run", "score"):
            from fedscore.transport.tls import INSECURE_WARNING

            print(f"fedscore: WARNING: {INSECURE_WARNING}", file=sys.stderr, flush=True)
        return args.handler(args)
    except (FedscoreError, OSError, KeyboardInterrupt, Terminated) as error:
        code, line = exit_for(error)
        print(line, file=sys.stderr)
        return code
    finally:
        signal.signal(signal.SIGTERM, previous)
