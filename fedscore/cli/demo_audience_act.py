"""What the demo does with its audience model while the consortium serves: a marketing campaign at ecommerce.

The audience model was trained (card center's labels, ecommerce's columns) right after the main job. Now
the card center hands ecommerce its part of it, asks how many of ecommerce's users (most of whom it has never
seen) would reach the card's approval score, per shopping preference, asks once more without segments, and
then once too often: the partner's privacy budget refuses it. It starts a campaign on the first answer,
records one conversion, and settles the fees on the pair's audience chain.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from fedscore.plural import plural

if TYPE_CHECKING:
    from fedscore.daemons.launcher import LocalConsortium

AUDIENCE_JOB = "audience-job.toml"
AUDIENCE_REPORT = "audience-report.json"
PARTNER = "ecommerce"
SEGMENT = "preference"
USERS = "ecommerce_users.csv"
POLICY = {"users": USERS, "id_column": "id", "segments": [SEGMENT], "min_cell": 50, "budget": 2.0,
          "window_days": 30, "max_epsilon": 1.0}   # ecommerce's [party.audience] in the demo
QUERIES = ((1.0, (SEGMENT,)), (1.0, ()), (0.5, (SEGMENT,)))   # (ε, segments): the third is over the budget


def audience_settings() -> dict[str, dict]:
    """The demo consortium's [party.audience] tables: ecommerce answers audience queries."""
    return {PARTNER: dict(POLICY)}


def audience_summary(report: dict) -> dict:
    """What the demo keeps of the audience model's training report: its job, its validation figures, its time."""
    keys = ("job_id", "aligned_rows", "test_rows", "test_auc", "test_ks", "mean_pd", "observed_default_rate", "brier",
            "seconds")
    return {key: report.get(key) for key in keys}


def audience_model_line(report: dict) -> str:
    return (f"audience model {report['job_id']} (card center's labels, ecommerce's columns only, on "
            f"{report['aligned_rows']} shared customers): test AUC {report['test_auc']:.4f}, KS {report['test_ks']:.4f}; "
            f"mean P(default) {report['mean_pd']:.4f} vs observed {report['observed_default_rate']:.4f}, Brier "
            f"{report['brier']:.4f}  (training {report['seconds']:.0f} s)")


def run_campaign(consortium: LocalConsortium, folder: Path, min_points: float, conversion_applicant: str) -> dict:
    """Hand over, query (the last query refused by the budget), start a campaign, record a conversion, settle."""
    from fedscore.errors import FedscoreError
    from fedscore.job_file import load_job, load_scoring
    from fedscore.transport.clients.audience import AudienceClient

    started = time.perf_counter()
    job = folder / AUDIENCE_JOB
    spec, _ = load_job(job)
    addresses = {p.name: p.address for p in consortium.spec.parties}
    spec = replace(spec, parties=tuple(replace(p, address=addresses[p.name]) for p in spec.parties))
    client = AudienceClient(spec.card_center.address, spec.card_center.name, consortium.card_center_identity)
    try:
        handed, _ = client.handover(spec, "", load_scoring(job).to_json())
        answers, refused = [], None
        for epsilon, segments in QUERIES:
            body = {"model": handed["model"], "min_points": min_points, "segments": list(segments), "epsilon": epsilon}
            try:
                answers.append(client.query(spec, body)[0])
            except FedscoreError as error:
                refused = {"epsilon": epsilon, "segments": list(segments), "error": str(error)}
        campaign, _ = client.campaign(spec, answers[0]["query_id"])
        conversion, _ = client.conversion(spec, campaign["campaign_id"], conversion_applicant)
        settlement, reply = client.settle(spec)
    finally:
        client.close()
    return {"job": str(job), "model": handed["model"], "job_id": handed["job_id"], "partner": PARTNER,
            "min_points": min_points, "answers": answers, "refused": refused, "campaign": campaign,
            "conversion": conversion, "settlement": settlement, "chain_id": reply.chain_id, "blocks": reply.blocks,
            "head": reply.head, "policy": POLICY, "seconds": round(time.perf_counter() - started, 3)}


def campaign_lines(done: dict | None) -> str:
    from fedscore.cli.audience import answer_lines

    if done is None:
        return "no audience campaign ran"
    first = done["answers"][0]
    lines = [f"audience at {done['partner']} (its users, most never seen by the card center, scored at home by the "
             f"audience model; only noisy counts come back), score >= {done['min_points']:g}:"]
    lines += ["  " + line for line in answer_lines({**first, "chain": _chain(done)})[:-1]]
    if done["refused"] is not None:
        lines.append(f"  a further query (ε {done['refused']['epsilon']:g}) refused: {done['refused']['error']}")
    campaign = done["campaign"]
    settled = done["settlement"]
    lines.append(f"  campaign {campaign['campaign_id']}: {campaign['members']} users billed, the audience file stays at "
                 f"{done['partner']}; {plural(1, 'conversion')} recorded")
    lines.append(f"  audience settlement #{settled['number']}: {settled['payer']} owes {done['partner']} "
                 f"{settled['total'] / 100:.2f} {settled['currency']}; audience chain {done['chain_id']}: "
                 f"{plural(done['blocks'], 'block')}, head {done['head'][:16]}…")
    return "\n".join(lines)


def _chain(done: dict) -> dict:
    return {"chain_id": done["chain_id"], "blocks": done["blocks"], "head": done["head"]}
