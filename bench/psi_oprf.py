"""PSI speed: maintained PSI libraries (OPRF class and others) beside our ECDH core, same ids, same machine.

    python bench/psi_oprf.py [--rows 1000000] [--overlap 0.8] [--runs 3] [--oprf-python PY] [--smoke]

Two parties of ``--rows`` ids each (``--overlap`` of them shared), each party a process of its own on loopback:

- ours: fedscore.crypto.psi's core as alignment runs it (each side hashes and blinds its ids with X25519, the
  card center re-blinds the partner's list while the partner re-blinds the card center's, the card center
  intersects), its messages carried by a pipe; loading the ids is not timed.
- spu (secretflow's PSI, `pip install spu`): RR22 and KKRT16 (OPRF class) and ECDH on Curve25519, each over spu's
  own link, in the clear and with mutual TLS from certificates made like a consortium's (one CA, one certificate
  per member); timed from both links being up, reading and writing its CSV files included.
- openmined-psi (`pip install openmined-psi`): ECDH on P-256 with a compressed set; it has no link, its messages
  are bytes (carried by a pipe), so it could ride our own connections.

A library is run in ``--oprf-python`` or $FEDSCORE_OPRF_PYTHON (an interpreter of a separate environment: spu
pins numpy < 2 and its own jax) or in this one if it imports here; where it imports nowhere, a line says how to
install it and it is skipped.
Prints each variant's median seconds, ids/s (both parties' ids over that time), ours ÷ theirs (how many times
faster than ours), the peak memory of the larger party and what the partner's side learned.
Last line (see figures.py): psi_oprf_ours_ids_per_second=... psi_oprf_best_ids_per_second=...
psi_oprf_best_peak_mib=... ("best": the fastest variant usable over mutual TLS).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common import parse_with_smoke, peak_mib
from figures import Figure, number, print_figures

from fedscore.crypto import psi
from fedscore.crypto.certs import init_consortium
from fedscore.protocol.alignment import psi_domain

BENCH_DIR = Path(__file__).resolve().parent
PARTIES = ("card_center", "partner")
GOAL_SECONDS_AT_1M = 45                        # issue goal for 1 000 000 × 1 000 000
GOAL_IDS_PER_SECOND = 2_000_000 / GOAL_SECONDS_AT_1M
ADOPTION_GAIN = 1.5                            # adopt only a measured gain of at least this much
IMPORTS = {"spu": "import spu.psi", "openmined": "import private_set_intersection.python"}
INSTALLS = {"spu": "spu", "openmined": "openmined-psi"}
SPU_PROTOCOLS = ("rr22", "kkrt", "ecdh")
_TRACE = re.compile(r"Trace has been written to (\S*/psi_[A-Za-z0-9_-]+\.trace)")


@dataclass
class Variant:
    name: str
    library: str                       # "ours", "spu" or "openmined"
    protocol: str = ""
    tls: bool = False
    mutual_tls: bool = False           # usable between members: runs with mutual TLS, or rides our connections
    seconds: list[float] = field(default_factory=list)
    peaks: list[float] = field(default_factory=list)
    partner_learned: str = ""
    failed: str = ""


def write_ids(folder: Path, rows: int, overlap: float) -> int:
    """card_center.csv and partner.csv, one column "id"; ``overlap`` of the rows are the same ids."""
    shared = int(rows * overlap)
    center = [str(i) for i in range(shared)] + [str(10**9 + i) for i in range(rows - shared)]
    partner = [str(i) for i in range(shared)] + [f"P-{i}" for i in range(rows - shared)]
    for name, ids in zip(PARTIES, (center, partner)):
        (folder / f"{name}.csv").write_text("id\n" + "\n".join(ids) + "\n")
    return shared


def our_party(rank: int, folder: Path, pipe, results) -> None:
    """One side of fedscore's ECDH PSI (protocol/alignment.py), the card center at rank 0."""
    ids = (folder / f"{PARTIES[rank]}.csv").read_text().splitlines()[1:]
    secret, domain = psi.new_secret(), psi_domain("psi-oprf-bench")
    pipe.send("loaded")
    pipe.recv()          # the other party has read its ids too: both clocks start together
    started = time.perf_counter()
    mine = psi.hash_and_blind_all(secret, domain, ids)
    if rank == 1:
        pipe.send_bytes(mine)
        pipe.send_bytes(psi.blind_all(secret, pipe.recv_bytes()))   # the card center's ids, re-blinded
        found = -1
    else:
        theirs = pipe.recv_bytes()
        pipe.send_bytes(mine)
        theirs_double = np.frombuffer(psi.blind_all(secret, theirs), dtype=f"S{psi.POINT_BYTES}")
        mine_double = np.frombuffer(pipe.recv_bytes(), dtype=f"S{psi.POINT_BYTES}")
        found = len(np.intersect1d(mine_double, theirs_double, assume_unique=True))
    results.put((rank, time.perf_counter() - started, found, peak_mib(os.getpid())))


def run_ours(folder: Path) -> dict:
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    ends = context.Pipe()
    processes = [context.Process(target=our_party, args=(rank, folder, ends[rank], results)) for rank in range(2)]
    for process in processes:
        process.start()
    answers = dict((rank, rest) for rank, *rest in (results.get() for _ in processes))
    for process in processes:
        process.join()
    return {"seconds": max(a[0] for a in answers.values()), "intersection": answers[0][1],
            "partner_learned": answers[1][1], "peak_mib": [answers[r][2] for r in range(2)]}


def find_interpreter(library: str, oprf_python: str | None) -> str | None:
    """The first of this interpreter and ``oprf_python`` where ``library`` imports."""
    for interpreter in dict.fromkeys([sys.executable, *([oprf_python] if oprf_python else [])]):
        try:
            if subprocess.run([interpreter, "-c", IMPORTS[library]], capture_output=True, timeout=300).returncode == 0:
                return interpreter
        except (OSError, subprocess.TimeoutExpired):
            continue
    where = "this interpreter" + (f" or {oprf_python}" if oprf_python else "")
    print(f"{library}: not importable from {where}; skipped. To measure it, install it into an environment of its "
          f"own (python3 -m venv ENV && ENV/bin/pip install {INSTALLS[library]}) and pass --oprf-python ENV/bin/python")
    return None


def run_library(interpreter: str, variant: Variant, folder: Path, consortium: Path, timeout: float) -> dict:
    """One run of a library's two parties (oprf_parties.py) in ``interpreter``; its trace files removed."""
    command = [interpreter, "-c", f"import sys; sys.path.insert(0, {str(BENCH_DIR)!r}); import oprf_parties; "
               "oprf_parties.main(sys.argv[1:])", "--library", variant.library, "--folder", str(folder)]
    command += ["--protocol", variant.protocol] if variant.protocol else []
    command += ["--tls", str(consortium)] if variant.tls else []
    work = folder / "work"
    work.mkdir(exist_ok=True)
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TMPDIR": str(work)})   # spu's working folders go in ours
    output = done.stdout + done.stderr
    for trace in _TRACE.findall(output):       # spu writes a trace file per party outside TMPDIR
        Path(trace).unlink(missing_ok=True)
    answers = [line for line in done.stdout.splitlines() if line.startswith('{"seconds"')]
    if done.returncode or not answers:
        tail = "\n    ".join(output.strip().splitlines()[-8:])
        raise RuntimeError(f"exit code {done.returncode}:\n    {tail}")
    return json.loads(answers[-1])


def variants(libraries: list[str], protocols: list[str]) -> list[Variant]:
    chosen = [Variant("ours: ECDH X25519 (libsodium), 1 process a party", "ours", mutual_tls=True)]
    if "spu" in libraries:
        for protocol in protocols:
            chosen += [Variant(f"spu {protocol.upper()}, its own link in the clear", "spu", protocol),
                       Variant(f"spu {protocol.upper()}, its own link, mutual TLS", "spu", protocol, True, True)]
    if "openmined" in libraries:
        chosen.append(Variant("openmined-psi ECDH P-256 + GCS (no link: rides ours)", "openmined", mutual_tls=True))
    return chosen


def report(measured: list[Variant], rows: int) -> tuple[Variant, Variant | None]:
    ours = measured[0]
    ours_median = statistics.median(ours.seconds)
    print(f"\n{'variant':<56} {'seconds':>8} {'ids/s':>9} {'ours÷it':>8} {'peak MiB':>9}  partner learns")
    for variant in measured:
        if variant.failed or not variant.seconds:
            print(f"{variant.name:<56} {'failed' if variant.failed else 'skipped':>8}  {variant.failed[:200]}")
            continue
        seconds = statistics.median(variant.seconds)
        print(f"{variant.name:<56} {seconds:>8.2f} {number(2 * rows / seconds):>9} {ours_median / seconds:>8.2f} "
              f"{max(variant.peaks):>9.0f}  {variant.partner_learned}")
    usable = [v for v in measured[1:] if v.mutual_tls and v.seconds and not v.failed]
    best = min(usable, key=lambda v: statistics.median(v.seconds)) if usable else None
    if best is not None:
        gain = ours_median / statistics.median(best.seconds)
        print(f"fastest usable over mutual TLS: {best.name}, ×{gain:.1f} ours; adoption threshold ×{ADOPTION_GAIN}: "
              f"{'met' if gain >= ADOPTION_GAIN else 'not met'}")
    return ours, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="ids per party")
    parser.add_argument("--overlap", type=float, default=0.8, help="share of each party's ids the other holds too")
    parser.add_argument("--runs", type=int, default=1, help="runs of every variant; medians are reported")
    parser.add_argument("--oprf-python", default=os.environ.get("FEDSCORE_OPRF_PYTHON"),
                        help="a Python interpreter of a separate environment where spu and/or openmined-psi are "
                             "installed (default: $FEDSCORE_OPRF_PYTHON)")
    parser.add_argument("--libraries", default="spu,openmined", help="comma-separated: spu, openmined")
    parser.add_argument("--protocols", default=",".join(SPU_PROTOCOLS), help="spu's protocols: rr22, kkrt, ecdh")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one library run may take")
    args = parse_with_smoke(parser, "2 000 ids a party, one run: seconds", rows=2000, runs=1)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)

    with tempfile.TemporaryDirectory(prefix="fedscore-psi-oprf-") as tmp:
        folder = Path(tmp)
        shared = write_ids(folder, args.rows, args.overlap)
        consortium = folder / "consortium"
        init_consortium(consortium, list(PARTIES))
        libraries = [name for name in args.libraries.split(",") if name]
        interpreters = {name: find_interpreter(name, args.oprf_python) for name in libraries}
        measured = variants([name for name in libraries if interpreters[name]], args.protocols.split(","))
        print(f"{args.rows} × {args.rows} ids, {shared} shared; {args.runs} run(s) of {len(measured)} variant(s)",
              flush=True)
        for run in range(args.runs):
            for variant in measured:
                if variant.failed:
                    continue
                try:
                    result = run_ours(folder) if variant.library == "ours" else run_library(
                        interpreters[variant.library], variant, folder, consortium, args.timeout)
                except (RuntimeError, subprocess.TimeoutExpired) as error:
                    variant.failed = str(error)
                    print(f"run {run + 1}: {variant.name}: failed: {error}", flush=True)
                    continue
                if result["intersection"] != shared:
                    variant.failed = f"found {result['intersection']} shared ids, {shared} expected"
                    print(f"run {run + 1}: {variant.name}: {variant.failed}", flush=True)
                    continue
                variant.seconds.append(result["seconds"])
                variant.peaks.append(max(result["peak_mib"]))
                variant.partner_learned = ("nothing" if result["partner_learned"] == -1
                                           else f"the intersection ({result['partner_learned']})")
                print(f"run {run + 1}: {variant.name}: {result['seconds']:.2f} s, peak "
                      f"{' / '.join(f'{m:.0f}' for m in result['peak_mib'])} MiB", flush=True)

    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ours, best = report(measured, args.rows)
    ours_rate = 2 * args.rows / statistics.median(ours.seconds)
    best_rate = 2 * args.rows / statistics.median(best.seconds) if best else float("nan")
    print_figures([
        Figure("psi_oprf_ours_ids_per_second", ours_rate, at_least=GOAL_IDS_PER_SECOND),
        Figure("psi_oprf_best_ids_per_second", best_rate, ours_rate, "our ECDH core"),
        Figure("psi_oprf_best_peak_mib", max(best.peaks) if best else float("nan"), max(ours.peaks), "our ECDH core"),
    ])


if __name__ == "__main__":
    main()
