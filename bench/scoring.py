"""Online scoring through the real daemons: single-applicant latency and sustained throughput.

    python bench/scoring.py [--workdir DIR] [--requests 2000] [--seconds 15] [--clients 1] [--concurrency 16]
                            [--batch 100 | 0] [--smoke]

Trains the demo consortium (card center + bureau + e-commerce, 2048-bit keys,
first 8 000 applicants, one epoch) unless the work folder already holds a
trained model, then starts the three party daemons on loopback and scores
applicants through the card center's gRPC Score method: each request checks
the applicant's consent at the card center and at both partners, asks both
partners for their partial scores in parallel, and records a scoring entry
that is co-signed into the chain in batches in the background.

Latency: one client, one request at a time. Throughput: a client process
keeping many requests in flight (asyncio gRPC), for a fixed time; the load
generator runs on the same 2 cores as the daemons. With --batch N the
throughput run sends ScoreBatch calls of N applicants each (--concurrency
calls in flight), as an approval system scoring in batches does; each
applicant still has its own consent, checked by every party, and its own
chain entry. Goals: p99 ≤ 10 ms, 1 000 applicants/s sustained. Last line
(see figures.py):
    scoring_p99_ms=<sequential p99> scoring_per_second=<sustained> ...
Mutual TLS unless --insecure (the plaintext figure to compare with).
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fedscore.job_file import load_job, load_scoring
from fedscore.daemons.launcher import LocalConsortium
from fedscore.cli.demo import PROTECTED, SPLIT, bundled_data, issuer_key, party_rows, write_applicants, write_demo
from fedscore.cli.runner import submit
from fedscore.transport.clients.scoring import ScoringClient

from figures import Figure, print_figures

ROWS = 8000
REQUESTS = 45_000     # warm-up, sequential and sustained requests, each with a consent of its own
WARM_UP = 200
GOAL_P99_MS, GOAL_PER_SECOND = 10.0, 1000.0
CLIENT_START_SECONDS = 300.0   # for the load generator's processes to import and read their requests


def prepare(workdir: Path, count: int, rows: int = ROWS, key_bits: int = 2048, consents: int = REQUESTS) -> Path:
    """The demo consortium's files (unless the work folder holds a trained model) and the applicants to score."""
    job = workdir / "job.toml"
    if not trained(workdir):
        job = write_demo(workdir, epochs=1, key_bits=key_bits, rows=rows)
    data = bundled_data().head(rows)
    held = party_rows(len(data))
    outside = np.setdiff1d(np.arange(len(data)), held["card_center"])
    positions = np.concatenate([outside, held["card_center"]])[:count]
    # applicants repeat, consents do not: each request carries its own (a consent allows three checks)
    started = time.perf_counter()
    write_applicants(workdir / "bench-applicants.csv", data, np.resize(positions, consents).tolist(), issuer_key())
    print(f"{consents} consents signed in {time.perf_counter() - started:.1f} s")
    return job


def trained(workdir: Path) -> bool:
    return bool(list((workdir / "state" / "card_center" / "jobs").glob("*/model.json")))


def train(consortium: LocalConsortium) -> None:
    started = time.perf_counter()
    report = submit(consortium.spec, consortium.coordinator_address, lambda event: None,
                    tls=consortium.card_center_identity)
    print(f"trained the model in {time.perf_counter() - started:.0f} s ({consortium.spec.key_bits}-bit keys, "
          f"{report['rows']} aligned applicants, 1 epoch)")


def requests_from(path: Path) -> list[tuple[str, dict[str, float], str]]:
    frame = pd.read_csv(path, dtype=str)
    features = [c for c in SPLIT["card_center"] if c not in PROTECTED]   # what the card center's model takes
    return [(r["id"], {c: float(r[c]) for c in features}, r["consent"]) for r in frame.to_dict("records")]


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far, user and system (proc(5) fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(address: str, job_id: str, path: str, concurrency: int, seconds: float, start, skip: int, out,
         tls_dir: str, batch: int = 0) -> None:
    """One client process: ``concurrency`` requests (or, with ``batch``, ScoreBatch calls of that many
    applicants) in flight at once (asyncio gRPC, so the load generator itself takes little of the two cores),
    scoring as fast as answers come, from when every client is ready (``start``, a barrier) until time is up.
    Puts (applicants scored, those answered with a partner missing, each call's latency, its own CPU seconds)."""
    import asyncio

    import grpc

    from fedscore.proto import fedscore_pb2 as pb
    from fedscore.proto import fedscore_pb2_grpc as pb_grpc

    from fedscore.transport.tls import TlsIdentity

    identity = TlsIdentity.load(Path(tls_dir)) if tls_dir else None   # the card center's own approval system
    work = [pb.ScoreRequest(job_id=job_id, applicant_id=a, features=f, consent=c) for a, f, c in requests_from(Path(path))[skip:]]

    start.wait()
    deadline = time.time() + seconds

    async def run() -> list[float]:
        latencies: list[float] = []
        if identity is None:
            channel = grpc.aio.insecure_channel(address)
        else:
            options = [("grpc.ssl_target_name_override", identity.name)]
            channel = grpc.aio.secure_channel(address, identity.channel_credentials(), options=options)
        async with channel:
            stub = pb_grpc.ScoringStub(channel)

            async def worker(offset: int) -> None:
                i = offset
                while time.time() < deadline and i < len(work):   # a consent is never used twice here
                    began = time.perf_counter()
                    reply = await stub.Score(work[i], timeout=30)
                    latencies.append(time.perf_counter() - began)
                    scored[0] += 1
                    scored[1] += bool(reply.partners_missing)
                    i += concurrency

            async def batcher(offset: int) -> None:
                i = offset * batch
                while time.time() < deadline and i + batch <= len(work):
                    began = time.perf_counter()
                    reply = await stub.ScoreBatch(pb.ScoreBatchRequest(job_id=job_id, applicants=work[i:i + batch]), timeout=30)
                    latencies.append(time.perf_counter() - began)
                    failed = [r.error for r in reply.results if r.error]
                    if failed:
                        raise RuntimeError(f"{len(failed)} applicants of a batch not scored; first: {failed[0]}")
                    scored[0] += batch
                    scored[1] += sum(bool(r.answer.partners_missing) for r in reply.results)
                    i += concurrency * batch

            await asyncio.gather(*((batcher if batch else worker)(k) for k in range(concurrency)))
        return latencies

    scored = [0, 0]
    began = time.process_time()
    latencies = asyncio.run(run())
    out.put((scored[0], scored[1], latencies, time.process_time() - began))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--requests", type=int, default=2000, help="sequential requests for the latency figure")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of the throughput run")
    parser.add_argument("--clients", type=int, default=1, help="client processes in the throughput run")
    parser.add_argument("--concurrency", type=int,
                        help="requests in flight per client process (16), or with --batch batch calls (4)")
    parser.add_argument("--batch", type=int, default=100,
                        help="applicants per ScoreBatch call in the throughput run (0: single Score calls)")
    parser.add_argument("--insecure", action="store_true", help="plaintext daemons, to measure what mutual TLS costs")
    parser.add_argument("--smoke", action="store_true", help="2500 applicants, 512-bit keys, a few requests: seconds")
    args = parser.parse_args()
    args.concurrency = args.concurrency or (4 if args.batch else 16)
    sizes = {"rows": ROWS, "key_bits": 2048, "consents": REQUESTS}
    if args.smoke:
        args.requests, args.seconds, args.concurrency, args.batch = 30, 2.0, 4, min(args.batch, 20)
        sizes = {"rows": 2500, "key_bits": 512, "consents": 3000}   # enough for the min_overlap and rows per column
    with tempfile.TemporaryDirectory(prefix="fedscore-bench-scoring-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        run(args, workdir, prepare(workdir, 2000, **sizes))


def run(args: argparse.Namespace, workdir: Path, job: Path) -> None:
    """Score through the daemons: one at a time, then sustained from client processes."""
    spec, base = load_job(job)
    settings = load_scoring(job)
    work = requests_from(workdir / "bench-applicants.csv")
    with LocalConsortium(spec, base, workdir / "state", 1, settings.consent_issuers, insecure=args.insecure) as consortium:
        if not trained(workdir):
            train(consortium)
        address = consortium.spec.card_center.address
        client = ScoringClient(address, consortium.spec.card_center.name, consortium.card_center_identity)
        job_id = client.open_scoring(consortium.spec, settings.to_json()).job_id
        for applicant, features, consent in work[:WARM_UP]:   # warm-up: connections, caches
            client.score(applicant, features, consent, job_id)
        latencies, missing = [], 0
        for k in range(args.requests):
            applicant, features, consent = work[WARM_UP + k]
            began = time.perf_counter()
            reply = client.score(applicant, features, consent, job_id)
            latencies.append(time.perf_counter() - began)
            missing += bool(reply.partners_missing)
        ms = np.array(latencies) * 1000
        p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
        print(f"sequential: {len(ms)} requests, p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {ms.max():.1f} ms "
              f"({missing} answered with a partner missing: applicants it does not hold)")

        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        start = context.Barrier(args.clients + 1)
        processes = [
            context.Process(target=load, args=(address, job_id, str(workdir / "bench-applicants.csv"), args.concurrency,
                                                args.seconds, start, WARM_UP + args.requests, queue,
                                                str(consortium.card_center_identity.folder) if not args.insecure else "",
                                                args.batch))
            for _ in range(args.clients)
        ]
        for p in processes:
            p.start()
        start.wait(timeout=CLIENT_START_SECONDS)
        daemons = {name: p.pid for name, p in consortium.processes.items() if name != "coordinator"}
        cpu_before = {name: cpu_seconds(pid) for name, pid in daemons.items()}
        counted = [queue.get(timeout=CLIENT_START_SECONDS + args.seconds) for _ in processes]
        for p in processes:
            p.join()
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in daemons.items()}
        cpu["load generator"] = sum(c[3] for c in counted)
        applicants, late = sum(c[0] for c in counted), sum(c[1] for c in counted)
        per_second = applicants / args.seconds
        loaded_ms = np.array([x for c in counted for x in c[2]]) * 1000
        calls = f"ScoreBatch calls of {args.batch} applicants" if args.batch else "requests"
        print(f"concurrent: {args.clients} client process(es) x {args.concurrency} {calls} in flight for {args.seconds:.0f} s: "
              f"{applicants} applicants, {per_second:.0f}/s, per call p50 {np.percentile(loaded_ms, 50):.1f} ms, "
              f"p99 {np.percentile(loaded_ms, 99):.1f} ms; {late} answered with a partner missing "
              f"({100 * late / max(applicants, 1):.1f} %; sequential: {100 * missing / len(ms):.1f} %)")
        print("CPU per applicant: " + ", ".join(f"{name} {1e6 * seconds / max(applicants, 1):.0f} µs"
                                                for name, seconds in cpu.items()))
        settled = client.settle(job_id)
        print(f"scoring chain: {settled.blocks} blocks after settling (entries batched, co-signed by 3 members)")
        client.close_scoring(job_id)
        client.close()
    print_figures([
        Figure("scoring_p99_ms", p99, at_most=GOAL_P99_MS),
        Figure("scoring_p50_ms", p50),
        Figure("scoring_per_second", per_second, at_least=GOAL_PER_SECOND),
    ])


if __name__ == "__main__":
    main()
