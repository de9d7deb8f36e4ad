"""Answer an audience query at a partner: score its whole user base with the audience model, count per segment,
add noise, check budget and cut-offs, record the answer.

    python bench/audience.py [--users 200000] [--earlier 5] [--repeat 5] [--smoke]

A partner's user base of --users rows (12 numeric columns, as the demo's e-commerce partner holds, and a
preference segment of 4 values) in a CSV, and a binned audience model (10 bins a column) over it. Each run
answers one query through fedscore.protocol.audience.partner.AudiencePartner, after --earlier queries in the
window (each recorded on the chain, as the card center does before its next query; the cut-off check compares
the new query with each), reading the users file as the daemon does for every query. The baseline, measured in
the same run on the same loaded users, is the plain way to get the counts: the model's points with numpy and
one np.bincount, no noise, no budget, no cut-off check, nothing recorded.
Also prints the time to read the users file alone. Medians of --repeat runs. Last line (see figures.py):
audience_answer_ms=... audience_users_per_second=... audience_read_ms=...
"""
from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fedscore.job import Binning
from fedscore.model.binning import fit_binner
from fedscore.model.model_file import PartyModel
from fedscore.protocol.audience.model import AudienceModel, CardCenterPart, assemble
from fedscore.protocol.audience.partner import AudiencePartner
from fedscore.protocol.audience.policy import AudiencePolicy
from fedscore.protocol.audience.query import AudienceQuery, new_query_id
from fedscore.protocol.audience.users import UserBase, load_user_base

from common import parse_with_smoke
from figures import Figure, print_figures

FEATURES = [f"BILL_AMT{i}" for i in range(1, 7)] + [f"PAY_AMT{i}" for i in range(1, 7)]
SEGMENT = "preference"
PREFERENCES = ["shopping", "sport", "music", "travel"]


def write_users(path: Path, rows: int, rng: np.random.Generator) -> None:
    frame = pd.DataFrame({"id": [f"u{i:09d}" for i in range(rows)]})
    for name in FEATURES:
        frame[name] = np.round(rng.lognormal(9, 1.2, rows), 2)
    frame[SEGMENT] = rng.choice(PREFERENCES, size=rows, p=[0.4, 0.25, 0.2, 0.15])
    frame.to_csv(path, index=False)


def audience_model(users: pd.DataFrame, rng: np.random.Generator) -> AudienceModel:
    """A binned model over the users' columns with random weights: what is timed does not depend on the weights."""
    binner = fit_binner([users[name].to_numpy() for name in FEATURES], FEATURES, Binning())
    weights = rng.normal(0, 0.3, sum(f.size for f in binner.features)).tolist()
    partner = PartyModel(job_id="audience-0123abcd", job_name="audience", party="ecommerce", role="partner",
                         id_columns=["id"], features=binner.names, mean=[], scale=[], weights=weights,
                         bins=binner.to_json())
    part = CardCenterPart(job_id="audience-0123abcd", job_name="audience", card_center="card_center",
                          partner="ecommerce", intercept=-1.3, calibration={"slope": 1.0, "intercept": 0.0},
                          offset=600.0, pdo=20.0, min_score=300.0, max_score=850.0)
    return assemble(partner, part)


def plaintext_counts(model: AudienceModel, users: UserBase, cut: float) -> np.ndarray:
    """The baseline: the counts per segment value, computed the plain way."""
    inside = model.points(users) >= cut
    values, codes = np.unique(users.segments[SEGMENT], return_inverse=True)
    return np.bincount(codes[inside], minlength=len(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--earlier", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5)
    args = parse_with_smoke(parser, "2 000 users, one earlier query, two runs: seconds", users=2_000, earlier=1, repeat=2)
    rng = np.random.default_rng(3)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "users.csv"
        write_users(path, args.users, rng)
        model = audience_model(pd.read_csv(path), rng)
        read_runs = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            users = load_user_base(path, "id", list(model.partner_model.features), [SEGMENT], "ecommerce")
            read_runs.append(time.perf_counter() - started)
        points = model.points(users)
        cuts = np.quantile(points, np.linspace(0.05, 0.95, args.earlier + args.repeat + 1))
        policy = AudiencePolicy(users="users.csv", segments=(SEGMENT,), budget=1000.0, max_epsilon=1.0,
                                min_points_gap=0.0)   # quantile cut-offs may be close: the check runs, refuses none

        def reads_users(audience: AudienceModel) -> UserBase:   # as the daemon does: the file read for every query
            return load_user_base(path, "id", list(audience.partner_model.features), [SEGMENT], "ecommerce")

        partner = AudiencePartner("ecommerce", "card_center", policy, Path(folder) / "state", reads_users,
                                  lambda audience: set(), rng=random.Random(5))
        partner.accept_model(model.part, model.partner_model)
        now = int(time.time() * 1000)

        def query(cut: float) -> AudienceQuery:
            return AudienceQuery(new_query_id(), model.digest(), float(cut), (SEGMENT,), 0.5)

        for cut in cuts[:args.earlier]:
            asked = query(cut)
            partner.answer(asked, 0.0, now)
            partner.recorded(asked.query_id)
        answer_runs, plain_runs = [], []
        for cut in cuts[args.earlier:args.earlier + args.repeat]:
            asked = query(cut)
            started = time.perf_counter()
            partner.answer(asked, 0.0, now)
            answer_runs.append(time.perf_counter() - started)
            partner.recorded(asked.query_id)
            started = time.perf_counter()
            plaintext_counts(model, users, float(cut))
            plain_runs.append(time.perf_counter() - started)
        partner.close()
    answer_ms = statistics.median(answer_runs) * 1000
    print(f"{args.users} users, 12 binned columns, {len(PREFERENCES)} segment values; {args.earlier} earlier "
          f"queries in the window; median of {args.repeat} answers (the users file read for each, as the daemon does)")
    print_figures([
        Figure("audience_answer_ms", answer_ms, statistics.median(plain_runs) * 1000, "plaintext counts with numpy"),
        Figure("audience_users_per_second", args.users / (answer_ms / 1000)),
        Figure("audience_read_ms", statistics.median(read_runs) * 1000),
    ])


if __name__ == "__main__":
    main()
