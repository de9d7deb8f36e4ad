"""Evidence bundles: their size and the time to check them, on a scoring chain built in process.

    python bench/dispute.py [--requests 10000] [--per-block 500] [--repeat 20] [--smoke]

Builds a model's scoring chain as its three members keep it (a card center and two partners, every block
co-signed, the daemon's default of up to 500 entries a block, one settlement at the end; the bureau answers
nine requests in ten), then writes the consent bundle of one request and the fee bundle of the settlement
for the bureau, and checks each as `fedscore audit check-evidence` does: the consent bundle against the
genesis, the fee bundle by anyone, then by the bureau: under its key and against its replica. The training's Paillier key
plays no part. Sizes are of the JSON file `audit dispute` writes; times are medians of --repeat checks.
--smoke: the demo's size (10 requests, one block). Last line (see figures.py):
dispute_consent_bundle_bytes=... dispute_consent_check_ms=... dispute_fee_bundle_bytes=... dispute_fee_check_ms=...
dispute_fee_partner_check_ms=...
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

from nacl.signing import SigningKey

from fedscore.ledger.block import encode_entry, make_block, sign
from fedscore.ledger.consent_evidence import check_consent_bundle, consent_bundle
from fedscore.ledger.fee_evidence import check_fee_bundle, fee_bundle
from fedscore.ledger.scoring_rules import ScoringSeen, mark, scoring_entry
from fedscore.ledger.settlement import countersign, scoring_settlement_body, signers
from fedscore.protocol.scoring.consent import ConsentPolicy, applicant_digest, certify_applicant, give_consent
from fedscore.protocol.scoring.secrets import ScoringSecrets

from common import parse_with_smoke
from figures import Figure, print_figures

MEMBERS = {"card_center": "card_center", "bureau": "partner", "ecommerce": "partner"}
JOB = "default-credit-0123abcd"


def build_chain(requests: int, per_block: int) -> tuple[list, ScoringSecrets, ConsentPolicy, dict[str, str]]:
    """(blocks, the card center's secrets, its consent policy, request id -> applicant id)."""
    keys = {name: SigningKey.generate() for name in MEMBERS}
    issuer, secrets = SigningKey.generate(), ScoringSecrets(bytes(range(32)), bytes(range(32, 64)))
    genesis = {"kind": "scoring_start", "job_id": JOB, "job_name": "default-credit", "training_head": "ef" * 32,
               "fees": {"currency": "CNY", "per_step": 500, "per_overlap_row": 1, "per_request": 2},
               "members": {n: {"role": r, "key": bytes(keys[n].verify_key).hex()} for n, r in MEMBERS.items()}}
    pair_keys = {p: secrets.pair_key(JOB, p) for p in ("bureau", "ecommerce")}
    seen, blocks, applicants = ScoringSeen(dict(pair_keys)), [], {}
    now_ms = time.time_ns() // 1_000_000

    def append(entries: list[dict]) -> None:
        block = make_block(blocks[-1] if blocks else None, entries)
        blocks.append(block.with_signatures({n: sign(block, k) for n, k in keys.items()}))
        for entry in entries:
            seen.add(entry)

    append([genesis])
    pending = []
    for number in range(requests):
        applicant, request_id = f"A-{number}", f"{number:032x}"
        key = SigningKey.generate()
        token = give_consent(key, certify_applicant(issuer, applicant, bytes(key.verify_key)), bytes(issuer.verify_key),
                             applicant, "card_center", issued_at=now_ms // 1000 - 60)
        answered = {"bureau": number % 10 != 0, "ecommerce": number % 10 < 7}
        tags = {p: secrets.tag(request_id, p) for p in pair_keys}
        marks = {p: {"tag": tags[p], "mark": mark(pair_keys[p], tags[p], answered[p])} for p in pair_keys}
        pending.append(scoring_entry(request_id, now_ms, secrets.salted_applicant(applicant),
                                     secrets.seal_consent(token.to_text()), token.digest(), marks))
        applicants[request_id] = applicant
        if len(pending) == per_block:
            append(pending)
            pending = []
    if pending:
        append(pending)
    body = scoring_settlement_body(genesis, seen)
    append([{**body, "signatures": {s: countersign(keys[s], encode_entry(body)).hex() for s in signers(body)}}])
    return blocks, secrets, ConsentPolicy(frozenset({bytes(issuer.verify_key)})), applicants


def median_ms(check, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        check()
        runs.append(time.perf_counter() - started)
    return statistics.median(runs) * 1000


def size(bundle: dict) -> int:
    """As `fedscore audit dispute` writes it."""
    return len((json.dumps(bundle, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--per-block", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=20)
    args = parse_with_smoke(parser, "the demo's size: 10 requests, one block", requests=10, repeat=5)
    started = time.perf_counter()
    blocks, secrets, policy, applicants = build_chain(args.requests, args.per_block)
    print(f"chain: {len(blocks)} blocks, {args.requests} requests, built in {time.perf_counter() - started:.1f} s")
    genesis = blocks[0].hash().hex()
    request = sorted(applicants)[len(applicants) // 2]
    entry = next(e for b in blocks for e in b.decoded() if e.get("request_id") == request)
    consent = consent_bundle(blocks, request, secrets.open_consent(entry["consent"]),
                             applicant_digest(applicants[request]), policy)
    fees = fee_bundle(blocks, "bureau", 1, secrets.pair_key(JOB, "bureau"))
    key = secrets.pair_key(JOB, "bureau")
    consent_ms = median_ms(lambda: check_consent_bundle(consent, genesis, applicants[request]), args.repeat)
    fee_ms = median_ms(lambda: check_fee_bundle(fees, genesis), args.repeat)
    partner_ms = median_ms(lambda: check_fee_bundle(fees, genesis, key, blocks), max(1, args.repeat // 4))
    print(f"fee bundle: {len(fees['billed'])} requests billed to the bureau")
    print_figures([
        Figure("dispute_consent_bundle_bytes", size(consent)),
        Figure("dispute_consent_check_ms", consent_ms),
        Figure("dispute_fee_bundle_bytes", size(fees)),
        Figure("dispute_fee_check_ms", fee_ms),
        Figure("dispute_fee_partner_check_ms", partner_ms),
    ])


if __name__ == "__main__":
    main()
