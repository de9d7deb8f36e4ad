"""Check an identity verification's dispute evidence: the unsealed record, its entry and its inclusion proof.

    python bench/verification.py [--block-entries 500] [--files 2] [--repeat 200] [--smoke]

A model's scoring chain as the demo's consortium keeps it (a card center and
two partners), whose block holds the verification among --block-entries
scoring entries (a full block at the default batch size, so the audit path is
as long as it gets). Prints the evidence part's size in bytes (JSON) and the
median time to check it (fedscore.protocol.scoring.verification_evidence:
record digest, verifier's signature, the evidence files' SHA-256, the Merkle
path and every member's signature on the block and the genesis). Last line
(see figures.py): verification_check_ms=... verification_part_bytes=...
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import time

from nacl.signing import SigningKey

from fedscore.ledger.block import make_block, sign
from fedscore.ledger.scoring_rules import scoring_entry
from fedscore.protocol.scoring.consent import applicant_digest
from fedscore.protocol.scoring.secrets import ScoringSecrets
from fedscore.protocol.scoring.verification import chain_entry, make_record
from fedscore.protocol.scoring.verification_evidence import check_verification_part, verification_part

from common import parse_with_smoke
from figures import Figure, print_figures

MEMBERS = {"card_center": "card_center", "bureau": "partner", "ecommerce": "partner"}
EVIDENCE_BYTES = 200_000   # a photo's worth per evidence file


def signed_by_all(block, keys: dict[str, SigningKey]):
    return block.with_signatures({name: sign(block, key) for name, key in keys.items()})


def chain(block_entries: int, files: dict[str, bytes], secrets: ScoringSecrets) -> tuple[list, dict[str, bytes]]:
    """Genesis, then one block of scoring entries with the verification in the middle, signed by every member."""
    keys = {name: SigningKey.generate() for name in MEMBERS}
    start = {"kind": "scoring_start", "job_id": "bench", "job_name": "bench", "training_head": "00" * 32,
             "members": {n: {"role": r, "key": bytes(keys[n].verify_key).hex()} for n, r in MEMBERS.items()},
             "fees": {"currency": "CNY", "per_step": 0, "per_overlap_row": 0, "per_request": 2}}
    genesis = signed_by_all(make_block(None, [start]), keys)
    requests = [scoring_entry(os.urandom(16).hex(), 1, os.urandom(32).hex(), os.urandom(200).hex(), os.urandom(32).hex(),
                              {p: {"tag": os.urandom(16).hex(), "mark": os.urandom(32).hex()} for p in ("bureau", "ecommerce")})
                for _ in range(block_entries - 1)]
    record = make_record(SigningKey.generate(), "acme-id", "A-1001", "face-match",
                         {name: hashlib.sha256(data).hexdigest() for name, data in files.items()})
    verification = chain_entry(record, "A-1001", secrets, time.time_ns() // 1_000_000)
    middle = len(requests) // 2
    block = signed_by_all(make_block(genesis, requests[:middle] + [verification] + requests[middle:]), keys)
    return [genesis, block], {n: bytes(k.verify_key) for n, k in keys.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block-entries", type=int, default=500)
    parser.add_argument("--files", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=200)
    args = parse_with_smoke(parser, "a small block, a few checks: a second", block_entries=20, repeat=5)
    secrets = ScoringSecrets(os.urandom(32), os.urandom(32))
    files = {f"evidence-{i}.jpg": os.urandom(EVIDENCE_BYTES) for i in range(args.files)}
    blocks, members = chain(args.block_entries, files, secrets)
    part = verification_part(blocks, secrets, applicant_id="A-1001")
    size = len(json.dumps(part).encode("utf-8"))
    runs = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        check_verification_part(part, members, files, applicant_digest("A-1001"), blocks[0].hash().hex())
        runs.append(time.perf_counter() - started)
    print(f"{len(members)} members, a block of {args.block_entries} entries, {args.files} evidence files of "
          f"{EVIDENCE_BYTES // 1000} kB; median of {args.repeat} checks")
    print_figures([Figure("verification_check_ms", statistics.median(runs) * 1000),
                   Figure("verification_part_bytes", size)])


if __name__ == "__main__":
    main()
