"""`fedscore audience ...`: a card center's marketing analyst asking a partner about its users.

Each command calls the card center's running daemon (with the card center's certificate, as an approval
system does), which calls the partner the audience job names and records the act on their audience chain
(fedscore.daemons.party.audience): `handover` sends the card center's part of a trained audience model,
`query` asks for noisy counts per segment, `campaign` starts a campaign on an answered query, `conversion`
records an application that came with a campaign id, and `settle` settles the fees since the last settlement.
"""
from __future__ import annotations

import argparse
import json

from fedscore.cli.exits import EXIT_OK
from fedscore.errors import ConfigError
from fedscore.plural import plural


def audience_command(args: argparse.Namespace) -> int:
    from fedscore.cli.runner import client_identity
    from fedscore.job_file import load_job, load_scoring
    from fedscore.transport.clients.audience import AudienceClient

    if args.tls is not None and args.insecure:
        raise ConfigError(f"audience {args.action}: --tls and --insecure contradict each other; give one")
    if args.tls is None and not args.insecure:
        raise ConfigError(f"audience {args.action} needs the card center's member folder (--tls DIR), or --insecure "
                          "for daemons started with --insecure")
    spec, _ = load_job(args.job)
    center = spec.card_center
    if not center.address:
        raise ConfigError(f"job file {args.job}: no address for the card center {center.name!r}")
    client = AudienceClient(center.address, center.name, client_identity(args.tls, args.insecure, center.name))
    try:
        if args.action == "handover":
            document, reply = client.handover(spec, args.job_id or "", load_scoring(args.job).to_json())
        elif args.action == "query":
            body = query_body(args)
            document, reply = client.query(spec, body)
            document = {**document, "min_points": body["min_points"], "unseen_only": body["unseen_only"]}
        elif args.action == "campaign":
            document, reply = client.campaign(spec, args.query)
        elif args.action == "conversion":
            document, reply = client.conversion(spec, args.campaign, args.applicant)
        else:
            document, reply = client.settle(spec)
    finally:
        client.close()
    document = {**document, "chain": {"chain_id": reply.chain_id, "blocks": reply.blocks, "head": reply.head}}
    if args.json:
        print(json.dumps(document, indent=2))
    elif not args.quiet:
        print("\n".join(LINES[args.action](document)))
    return EXIT_OK


def query_body(args: argparse.Namespace) -> dict:
    return {"model": args.model, "min_points": args.min_points, "segments": list(args.segment), "epsilon": args.epsilon,
            "unseen_only": args.unseen_only}


def chain_line(document: dict) -> str:
    chain = document["chain"]
    return f"audience chain {chain['chain_id']}: {plural(chain['blocks'], 'block')}, head {chain['head'][:16]}…"


def handover_lines(document: dict) -> list[str]:
    return [f"audience model {document['job_id']} handed to {document['partner']}: model {document['model']}",
            chain_line(document)]


def answer_lines(answer: dict) -> list[str]:
    """The noisy counts as a table: one line per cell, "< k" where suppressed. ``answer`` may also carry the
    query's ``min_points`` and ``unseen_only`` (the command adds them) to say whom it counted."""
    who = "users the card center never saw" if answer.get("unseen_only") else "users"
    cut = f"scoring {answer['min_points']:g} or more" if "min_points" in answer else "at or above the cut-off"
    lines = [f"query {answer['query_id']}: about {answer['total']} {who} {cut} "
             f"(each count ± {answer['noise_bound']} at 95%, ε {answer['epsilon']:g})"]
    for cell in answer["cells"]:
        name = " / ".join(cell["segment"]) or "all users"
        count = f"< {answer['min_cell']}" if cell["count"] is None else str(cell["count"])
        lines.append(f"  {name:<24}{count:>10}")
    lines.append(f"privacy budget: ε {answer['spent']:g} of {answer['budget']:g} spent in {answer['window_days']} days")
    return lines


def campaign_lines(document: dict) -> list[str]:
    return [f"campaign {document['campaign_id']} of query {document['query_id']}: {document['members']} users billed "
            "(the audience stays at the partner)", chain_line(document)]


def conversion_lines(document: dict) -> list[str]:
    return [f"conversion {document['conversion_id']} recorded for campaign {document['campaign_id']}", chain_line(document)]


def settle_lines(entry: dict) -> list[str]:
    lines = [f"audience settlement {entry['number']}: {entry['payer']} owes {entry['total'] / 100:.2f} {entry['currency']}"]
    for line in entry["lines"]:
        lines.append(f"  {line['payee']}: {plural(line['queries'], 'query', 'queries')}, "
                     f"{plural(line['audience_members'], 'audience member')}, {plural(line['conversions'], 'conversion')}: "
                     f"{line['amount'] / 100:.2f}")
    return lines + [chain_line(entry)]


LINES = {"handover": handover_lines, "query": lambda answer: answer_lines(answer) + [chain_line(answer)], "campaign": campaign_lines,
         "conversion": conversion_lines, "settle": settle_lines}
