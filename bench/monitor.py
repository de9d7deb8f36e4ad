"""`fedscore monitor` on a long scoring log, and what the log costs a scored request.

    python bench/monitor.py [--entries 100000] [--days 10] [--repeat 3] [--smoke]

Writes a card center's folder as a daemon leaves it (a binned model of the demo's shape: five own features,
two partners; its monitoring baseline; a scoring log of ``--entries`` lines over ``--days`` UTC days, written by
the card center's own ScoringLog in its real format, a shift in one feature on the last day), then times the
whole command as an operator's cron job runs it, `python -m fedscore monitor --job JOB --state STATE --quiet`
(interpreter start and imports included), median of ``--repeat`` runs. Beside it: the same review in this
process, without start-up, and the cost of logging one request at scoring time (bins of the card center's own
values and one buffered line; ScoringLog.record), median per request over 20 000.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fedscore.job import Binning
from fedscore.model.binning import fit_binner
from fedscore.model.model_file import PartyModel
from fedscore.monitoring.alerts import Thresholds
from fedscore.monitoring.baseline import binned_feature, training_baseline, write_baseline
from fedscore.monitoring.review import review
from fedscore.monitoring.scoring_log import LOG_FOLDER, OwnBuckets, PartnerReply, ScoringLog, read_log
from fedscore.protocol.scoring.scorecard import Answer, ScoringPolicy, decision, points, probability

from common import ROOT, parse_with_smoke, two_party_job
from figures import Figure, print_figures

FEATURES = ["LIMIT_BAL", "EDUCATION", "F3", "F4", "F5"]
PARTNERS = ("bureau", "ecommerce")
DAY_MS = 86_400_000
START_MS = 1_767_225_600_000   # 2026-01-01 00:00 UTC


def columns(rng: np.random.Generator, rows: int, shift: float = 0.0) -> np.ndarray:
    return np.column_stack([rng.normal(shift if j == 0 else 0.0, 1.0, rows) for j in range(len(FEATURES))])


def card_center_folder(folder: Path, rng: np.random.Generator) -> tuple[Path, PartyModel]:
    """state/card_center/jobs/bench: a binned model, its baseline, no log yet."""
    training = columns(rng, 20_000)
    binner = fit_binner([training[:, j] for j in range(len(FEATURES))], FEATURES, Binning(max_bins=10))
    weights = rng.normal(0.0, 0.4, sum(f.size for f in binner.features)).tolist()
    model = PartyModel("bench", "bench-monitor", "card_center", "card_center", ["id"], FEATURES, [], [], weights,
                       -1.3, binner.to_json())
    model_dir = folder / "state" / "card_center" / "jobs" / "bench"
    model_dir.mkdir(parents=True)
    (model_dir / "model.json").write_text(model.to_json())
    indices = binner.bin_indices([training[:, j] for j in range(len(FEATURES))])
    features = {f.feature: binned_feature(f.labels, np.bincount(indices[:, j], minlength=f.size))
                for j, f in enumerate(binner.features)}
    log_odds = -1.3 + binner.contributions(weights, [training[:, j] for j in range(len(FEATURES))]).sum(axis=1)
    write_baseline(model_dir, training_baseline("bench", log_odds, features, {p: 0.8 for p in PARTNERS}))
    (folder / "job.toml").write_text(two_party_job("bench-monitor", key_bits=2048))   # never trained: the monitor reads its name
    return model_dir, model


def write_log(model_dir: Path, model: PartyModel, entries: int, days: int, rng: np.random.Generator) -> float:
    """``entries`` lines as the card center writes them; returns the median µs of ScoringLog.record."""
    policy = ScoringPolicy()
    log = ScoringLog(model_dir / LOG_FOLDER, OwnBuckets(model))
    per_day = entries // days
    timings = []
    for day in range(days):
        values = columns(rng, per_day, shift=1.0 if day == days - 1 else 0.0)
        log_odds = -1.3 + model.binner.contributions(model.weights, [values[:, j] for j in range(len(FEATURES))]).sum(axis=1)
        for i in range(per_day):
            u = float(log_odds[i])
            score = points(u, policy)
            answer = Answer(probability(u), score, decision(score, policy), 0, (), ())
            replies = {p: PartnerReply(bool(rng.random() < 0.8), float(rng.uniform(3, 40))) for p in PARTNERS}
            started = time.perf_counter()
            log.record(f"{day:04d}{i:028x}", answer, values[i].tolist(), replies, START_MS + day * DAY_MS + i * 500)
            timings.append(time.perf_counter() - started)
    log.close()
    return 1e6 * statistics.median(timings[:20_000])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000, help="scoring log lines")
    parser.add_argument("--days", type=int, default=10, help="UTC days they cover")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the command (the median is reported)")
    args = parse_with_smoke(parser, "2 000 lines, one run: seconds", entries=2_000, days=2, repeat=1)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="fedscore-monitor-") as tmp:
        folder = Path(tmp)
        model_dir, model = card_center_folder(folder, rng)
        record_us = write_log(model_dir, model, args.entries, args.days, rng)
        lines = sum(1 for path in (model_dir / LOG_FOLDER).glob("*.jsonl") for _ in path.open())
        size_mb = sum(p.stat().st_size for p in (model_dir / LOG_FOLDER).glob("*.jsonl")) / 1e6
        command = [sys.executable, "-m", "fedscore", "monitor", "--job", str(folder / "job.toml"),
                   "--state", str(folder / "state"), "--quiet"]
        runs, codes = [], set()
        for _ in range(args.repeat):
            started = time.perf_counter()
            codes.add(subprocess.run(command, cwd=ROOT, capture_output=True).returncode)
            runs.append(time.perf_counter() - started)
        baseline = json.loads((model_dir / "monitoring-baseline.json").read_text())
        started = time.perf_counter()
        document = review(read_log(model_dir / LOG_FOLDER), baseline, ScoringPolicy(), Thresholds())
        in_process = time.perf_counter() - started
    print(f"{lines} log lines ({size_mb:.1f} MB) over {args.days} days, {len(FEATURES)} binned own features, "
          f"{len(PARTNERS)} partners; `fedscore monitor` exit codes {sorted(codes)} (the last day's shift: "
          f"{len(document['alerts'])} alerts); command runs {', '.join(f'{r:.2f}' for r in runs)} s; "
          f"the review alone {in_process:.2f} s; logging a request {record_us:.0f} µs")
    print_figures([
        Figure("monitor_seconds", statistics.median(runs)),
        Figure("monitor_review_seconds", in_process),
        Figure("monitor_log_record_us", record_us),
    ])


if __name__ == "__main__":
    main()
