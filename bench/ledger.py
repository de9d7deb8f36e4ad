"""Append and verify an audit chain: N blocks co-signed by 3 members, in a real SQLite replica.

    python bench/ledger.py [--blocks 10000] [--repeat 3] [--smoke]

Prints the append rate (each block: signed by the coordinator, its proposer,
then checked and signed by every other member, committed to one replica) and
the verification rate of the whole stored chain (read back, every link,
Merkle root and signature checked) on every core, beside the same
verification in one process; medians of --repeat verifications. Goal: at
least 10 000 blocks/s verified. Last line (see figures.py):
ledger_verify_blocks_per_second=... ledger_append_blocks_per_second=...
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from nacl.signing import SigningKey

from fedscore.ledger.block import sign
from fedscore.ledger.entries import Facts
from fedscore.ledger.member import LedgerMember
from fedscore.ledger.store import LedgerStore
from fedscore.ledger.training_rules import TrainingRules
from fedscore.ledger.verify import verify_chain

from common import parse_with_smoke
from figures import Figure, print_figures

MEMBERS = {"coordinator": "coordinator", "card_center": "card_center", "bureau": "partner"}
VERIFY_GOAL = 10_000   # blocks/s


def timed_verification(path: Path, repeat: int, workers: int) -> tuple[float, int]:
    """(median seconds, blocks) to read the stored chain back and verify it on ``workers`` processes (0: every core)."""
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        store = LedgerStore(path)
        summary = verify_chain(store.blocks(), workers=workers)
        store.close()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs), summary.blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    # 600 blocks: above the size verification spreads over processes
    args = parse_with_smoke(parser, "a few hundred blocks, once: seconds", blocks=600, repeat=1)
    keys = {name: SigningKey.generate() for name in MEMBERS}
    with tempfile.TemporaryDirectory(prefix="fedscore-ledger-") as tmp:
        path = Path(tmp) / "ledger.sqlite"
        facts = Facts("bureau", bytes(keys["bureau"].verify_key).hex(), role="partner", members=frozenset(MEMBERS))
        facts.digests = {f"{height}/0": {} for height in range(1, args.blocks)}  # the steps it took part in
        replica = LedgerMember("bureau", keys["bureau"], path, TrainingRules(facts))
        start = {
            "kind": "job_start", "job_id": "bench", "job_name": "bench", "job_digest": "00" * 32,
            "paillier_fingerprint": "00" * 32, "fees": {"currency": "CNY", "per_step": 1, "per_overlap_row": 0},
            "members": {n: {"role": r, "key": bytes(keys[n].verify_key).hex()} for n, r in MEMBERS.items()},
        }
        started = time.perf_counter()
        for height in range(args.blocks):
            entry = start if height == 0 else {
                "kind": "step", "epoch": height, "batch": 0, "rows": 21000, "loss": 0.5, "seconds": 1.0,
                "digests": {f"message/{i}": f"{height * 8 + i:064x}" for i in range(8)},
            }
            block = replica.propose([entry])
            block = block.with_signatures({"coordinator": sign(block, keys["coordinator"])})   # the proposer first
            signatures = {n: sign(block, k) for n, k in keys.items() if n != "bureau"}
            signatures["bureau"] = replica.sign(block)   # the replica's own check before it signs
            replica.commit(block.with_signatures(signatures))
        append_seconds = time.perf_counter() - started
        replica.close()

        seconds, blocks = timed_verification(path, args.repeat, workers=0)
        one_process, _ = timed_verification(path, args.repeat, workers=1)
    print(f"appended {args.blocks} blocks in {append_seconds:.1f} s (each signed by 3 members and committed to one "
          f"replica after checking every signature); verified {blocks} blocks in {seconds:.2f} s on every core, "
          f"{one_process:.2f} s in one process (medians of {args.repeat})")
    print_figures([
        Figure("ledger_verify_blocks_per_second", blocks / seconds, baseline=blocks / one_process,
               baseline_label="one process", at_least=VERIFY_GOAL),
        Figure("ledger_append_blocks_per_second", args.blocks / append_seconds),
    ])


if __name__ == "__main__":
    main()
