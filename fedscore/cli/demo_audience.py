"""The demo's marketing-audience files: a model the e-commerce partner can run alone, and its whole user base.

Beside the main job, `fedscore demo` writes what an audience campaign needs (fedscore.protocol.audience):

- ``card_center_labels.csv``: the card center's ids and labels only. Trained with it, the model's features
  are all the partner's, so the partner can score any of its users without the card center.
- ``ecommerce_users.csv``: every user the e-commerce partner holds — the card center's customers it shares
  and the ~2 500 the card center never saw — with the partner's columns and a ``preference`` segment
  (shopping, sport, music, travel), the column the partner exposes to audience queries. It is not a
  feature: the audience job trains on ``ecommerce.csv``, the same users without it.
- ``audience-job.toml``: the two-party job, with the main job's binning and key size.

While the scoring daemons serve, the demo then runs a campaign (``run_campaign``): the card center hands
ecommerce its part of the trained model, asks how many of ecommerce's users would reach the card's approval
score, per preference, asks once more about the users it never saw, and then once too often: ecommerce's
privacy budget refuses it. It starts a campaign on the first answer, records one conversion, and settles the
fees on the pair's audience chain.

Preferences are drawn from a seeded generator, once per bundled applicant, so a user keeps the same one
whatever ``--rows`` the demo is given.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fedscore.plural import plural

if TYPE_CHECKING:
    from fedscore.daemons.launcher import LocalConsortium

AUDIENCE_JOB_FILE = "audience-job.toml"
AUDIENCE_REPORT = "audience-report.json"
PARTNER = "ecommerce"
LABELS_FILE = "card_center_labels.csv"
USERS_FILE = "ecommerce_users.csv"
SEGMENT = "preference"
PREFERENCES = ("shopping", "sport", "music", "travel")
PREFERENCE_SHARES = (0.40, 0.25, 0.20, 0.15)
PREFERENCE_SEED = 618
AUDIENCE_EPOCHS = 20   # held-out AUC within 0.003 of 30 epochs' (plaintext descent on the demo data), two thirds the time

# What an audience campaign costs the card center, in fen (the job's [fees], fedscore.ledger.settlement.FeeContract):
# per query answered, per audience member of a campaign (the query's noisy total), per conversion.
AUDIENCE_FEES = {"per_query": 2000, "per_audience_member": 5, "per_conversion": 3000}

AUDIENCE_JOB = """\
# The audience model: the card center brings its labels only, the e-commerce partner every feature, so the
# partner can score any of its users alone (its whole user base: ecommerce_users.csv, with the segment column).
[job]
name = "ecommerce-audience"
epochs = {epochs}
batch_size = 0          # every step over every training row: with no card-center columns, steps over changing
                        # subsets of rows would let the partner solve its gradients for the labels
learning_rate = 1.0
momentum = 0.8
l2 = 0.0
validation = 0.3
seed = 42
key_bits = {key_bits}

{binning}
[fees]                  # what the card center pays the partner, in fen, settled on the audit chain
currency = "CNY"
per_step = 500          # per training step
per_overlap_row = 1     # per applicant the card center shares with the partner
{audience_fees}
[scoring]               # the scorecard an audience query's --min-points is in: 600 points at odds 1:1, 20 to double
offset = 600
pdo = 20

[coordinator]
address = "127.0.0.1:50060"     # used without --local

[[parties]]
name = "card_center"
data = "{labels}"
id = "id"
label = "y"
address = "127.0.0.1:50061"

[[parties]]
name = "ecommerce"
data = "ecommerce.csv"
id = "id"
address = "127.0.0.1:50063"
"""

FEE_WORDING = {"per_query": "per audience query answered", "per_audience_member": "per member of a campaign's audience",
               "per_conversion": "per application arriving with a campaign's id"}


def audience_fee_lines() -> str:
    """The audience fees as [fees] lines, each with what it is paid for."""
    return "".join(f"{name} = {value}{' ' * (21 - len(name) - len(str(value)))}# {FEE_WORDING[name]}\n"
                   for name, value in AUDIENCE_FEES.items())


def binning_table(job_text: str) -> str:
    """The main job's [binning] table, as written in its job file, so both models cut columns alike."""
    lines = job_text[job_text.index("\n[binning]") + 1:].splitlines(keepends=True)
    end = next((i for i, line in enumerate(lines) if line.startswith("[") and not line.startswith("[binning")), len(lines))
    return "".join(lines[:end]).rstrip("\n") + "\n"


def preferences(positions: np.ndarray, total: int, seed: int = PREFERENCE_SEED) -> np.ndarray:
    """Each user's preference segment: one draw per bundled applicant (``total``), read at ``positions``."""
    draws = np.random.default_rng(seed).choice(len(PREFERENCES), size=total, p=PREFERENCE_SHARES)
    return np.asarray(PREFERENCES, dtype=object)[draws[positions]]


def write_audience(folder: Path, data: pd.DataFrame, held: dict[str, np.ndarray], job_text: str, key_bits: int,
                   columns: dict[str, list[str]], id_column: str, label: str, total: int,
                   epochs: int = AUDIENCE_EPOCHS) -> Path:
    """Write the card center's labels, the partner's user base with its segment and the audience job into
    ``folder`` (beside the main job's files: the job trains on the partner's ecommerce.csv); returns the job file.
    ``columns``: each party's feature columns; ``total``: applicants in the bundled data (for the segments)."""
    center = data.iloc[held["card_center"]]
    labels = pd.DataFrame({"id": center[id_column].to_numpy(), "y": center[label].to_numpy()})
    labels.sample(frac=1.0, random_state=11).to_csv(folder / LABELS_FILE, index=False)
    users = data.iloc[held["ecommerce"]][[id_column, *columns["ecommerce"]]].rename(columns={id_column: "id"})
    users[SEGMENT] = preferences(held["ecommerce"], total)
    users.sample(frac=1.0, random_state=13).to_csv(folder / USERS_FILE, index=False)
    job = folder / AUDIENCE_JOB_FILE
    job.write_text(AUDIENCE_JOB.format(epochs=epochs, key_bits=key_bits, binning=binning_table(job_text),
                                       audience_fees=audience_fee_lines(), labels=LABELS_FILE))
    return job


POLICY = {"users": USERS_FILE, "id_column": "id", "segments": [SEGMENT], "min_cell": 100, "budget": 2.0,
          "window_days": 30, "max_epsilon": 1.0}   # ecommerce's [party.audience] in the demo
# (ε, points above the card's approval score, unseen only): every user at the approval score, per preference;
# then only those the card center never saw, at a stricter score (small cells: some suppressed); then one query
# too many for the budget
QUERIES = ((1.0, 0.0, False), (1.0, 40.0, True), (0.5, 0.0, False))


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
    job = folder / AUDIENCE_JOB_FILE
    spec, _ = load_job(job)
    addresses = {p.name: p.address for p in consortium.spec.parties}
    spec = replace(spec, parties=tuple(replace(p, address=addresses[p.name]) for p in spec.parties))
    client = AudienceClient(spec.card_center.address, spec.card_center.name, consortium.card_center_identity)
    try:
        handed, _ = client.handover(spec, "", load_scoring(job).to_json())
        answers, refused = [], None
        for epsilon, above, unseen_only in QUERIES:
            body = {"model": handed["model"], "min_points": min_points + above, "segments": [SEGMENT],
                    "epsilon": epsilon, "unseen_only": unseen_only}
            try:
                answers.append({**client.query(spec, body)[0], "min_points": body["min_points"], "unseen_only": unseen_only})
            except FedscoreError as error:
                refused = {**body, "error": str(error)}
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
    lines = [f"marketing audience at {done['partner']}: its whole user base scored at home by the audience model "
             f"{done['model'][:16]}…; only noisy counts come back"]
    for answer in done["answers"]:
        lines += ["  " + line for line in answer_lines(answer)]
    if done["refused"] is not None:
        lines.append(f"  one more query (ε {done['refused']['epsilon']:g}) refused: {done['refused']['error']}")
    campaign, settled = done["campaign"], done["settlement"]
    lines.append(f"  campaign {campaign['campaign_id']} on query {campaign['query_id']}: {campaign['members']} users "
                 f"billed; the audience file stays at {done['partner']}; {plural(1, 'conversion')} recorded")
    lines.append(f"  audience settlement #{settled['number']}: {settled['payer']} owes {done['partner']} "
                 f"{settled['total'] / 100:.2f} {settled['currency']}; audience chain {done['chain_id']}: "
                 f"{plural(done['blocks'], 'block')}, head {done['head'][:16]}…")
    return "\n".join(lines)

