"""Append and verify an audit chain: N blocks co-signed by 3 members, in a real SQLite replica.

    python bench/ledger.py [--blocks 10000] [--repeat 3]

Prints the append rate (each block: proposed, checked and signed by every
member, committed to one replica) and the verification rate of the whole
stored chain (read back, every link, Merkle root and signature checked, on
every core); medians of --repeat verifications. Last line:
ledger_verify_blocks_per_second=<number>.
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
from fedscore.ledger.verify import verify_chain

MEMBERS = {"coordinator": "coordinator", "card_center": "card_center", "bureau": "partner"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    keys = {name: SigningKey.generate() for name in MEMBERS}
    with tempfile.TemporaryDirectory(prefix="fedscore-ledger-") as tmp:
        path = Path(tmp) / "ledger.sqlite"
        facts = Facts("bureau", bytes(keys["bureau"].verify_key).hex(), role="partner", members=frozenset(MEMBERS))
        facts.digests = {f"{height}/0": {} for height in range(1, args.blocks)}  # the steps it took part in
        replica = LedgerMember("bureau", keys["bureau"], path, facts)
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
            signatures = {n: sign(block, k) for n, k in keys.items() if n != "bureau"}
            signatures["bureau"] = replica.sign(block)   # the replica's own check before it signs
            replica.commit(block.with_signatures(signatures))
        append_seconds = time.perf_counter() - started
        replica.close()

        runs = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            store = LedgerStore(path)
            summary = verify_chain(store.blocks())
            store.close()
            runs.append(time.perf_counter() - started)
    seconds = statistics.median(runs)
    print(f"appended {args.blocks} blocks of {len(MEMBERS)} members in {append_seconds:.1f} s "
          f"({args.blocks / append_seconds:.0f} blocks/s: each signed by 3 members and committed to one replica after checking every signature)")
    print(f"verified {summary.blocks} blocks in {seconds:.2f} s (median of {args.repeat}; runs: "
          f"{', '.join(f'{r:.2f}' for r in runs)} s); head {summary.head.hex()}")
    print(f"ledger_verify_blocks_per_second={summary.blocks / seconds:.0f}")


if __name__ == "__main__":
    main()
