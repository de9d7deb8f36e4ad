"""Fee bundles: the requests one scoring settlement billed to one partner, each provable on the chain.

Settlement N pays partner P for the scoring entries between settlement N-1
(or the genesis) and N whose mark for P says P contributed
(fedscore.ledger.scoring_rules). Only the card center and P hold the key that
reads P's marks, so a fee bundle is checked in two steps. Anyone, offline:
the settlement is on the chain the reader trusts, signed by its payer and
payees, and bills P for exactly as many requests as the bundle cites, each a
scoring entry between the two settlements in a co-signed block. P, with its
own key and replica: every cited request's mark says P contributed, and its
replica bills no request the bundle leaves out. The chain excerpt and its
checks are fedscore.ledger.evidence's.
"""
from __future__ import annotations

from fedscore.ledger.block import Block
from fedscore.ledger.evidence import (
    FORMAT, MIN_GENESIS_DIGITS, UNMATCHED, AnchoredChain, EvidenceError, Excerpt, anchored_chain, check_format, check_replica_blocks,
    entries_of,
)
from fedscore.ledger.scoring_rules import contributed, entry_problem
from fedscore.ledger.settlement import FeeContract, signature_problem

Position = tuple[int, int]   # (block height, entry index): chain order


def _settlement_at(blocks: list[Block], number: int) -> tuple[int, int, dict] | None:
    return next((found for found in entries_of(blocks, "scoring_settlement") if found[2].get("number") == number), None)


def billed_requests(blocks: list[Block], partner: str, number: int, pair_key: bytes) -> tuple[list, tuple, tuple | None]:
    """(the scoring entries settlement ``number`` billed to ``partner``, that settlement, the one before it or None);
    each as (height, index, entry)."""
    settled = _settlement_at(blocks, number)
    if settled is None:
        count = len(entries_of(blocks, "scoring_settlement"))
        raise LookupError(f"settlement #{number} is not on this scoring chain (it holds {count})")
    previous = _settlement_at(blocks, number - 1) if number > 1 else None
    start, end = (previous[:2] if previous else (0, 0)), settled[:2]
    billed = [found for found in entries_of(blocks, "scoring")
              if start < found[:2] < end and contributed(found[2], partner, pair_key)]
    return billed, settled, previous


def fee_bundle(blocks: list[Block], partner: str, number: int, pair_key: bytes) -> dict:
    """The fee bundle of settlement ``number`` for ``partner`` on ``blocks`` (a chain the caller verified)."""
    billed, settled, previous = billed_requests(blocks, partner, number, pair_key)
    excerpt = Excerpt(blocks)
    bundle = {
        "format": FORMAT, "kind": "fee", "partner": partner, "settlement": number,
        "settlement_record": excerpt.record(*settled[:2]),
        "previous_settlement_record": excerpt.record(*previous[:2]) if previous else None,
        "billed": [excerpt.record(height, index) for height, index, _ in billed],
    }
    return {**bundle, "chain": excerpt.document()}


# -- checking -------------------------------------------------------------------------------------

def _position(record: dict) -> Position:
    return int(record["height"]), int(record["index"])


def check_settlement(entry: dict, chain: AnchoredChain, number: int, partner: str) -> dict:
    """The settlement is number ``number`` of this chain's model, signed by all it names; returns ``partner``'s line."""
    if entry.get("kind") != "scoring_settlement" or entry.get("number") != number:
        raise EvidenceError(f"the cited settlement is not scoring settlement #{number} "
                            f"(it is a {entry.get('kind')!r} entry numbered {entry.get('number')})")
    if entry.get("job_id") != chain.genesis.get("job_id"):
        raise EvidenceError(f"settlement #{number} is for model {entry.get('job_id')!r}, not this chain's")
    problem = signature_problem(entry, chain.genesis["members"])
    if problem:
        raise EvidenceError(f"settlement #{number}: {problem}")
    line = next((line for line in entry.get("lines", []) if line.get("payee") == partner), None)
    if line is None:
        raise EvidenceError(f"settlement #{number} has no line for partner {partner!r}")
    return line


def check_previous_settlement(bundle: dict, chain: AnchoredChain, number: int) -> Position:
    """Where the billed range starts: settlement #N-1 (cited, on the chain), or the genesis for #1."""
    record = bundle.get("previous_settlement_record")
    if number == 1:
        if record is not None:
            raise EvidenceError("settlement #1 has no settlement before it, yet the bundle cites one")
        return (0, 0)
    if record is None:
        raise EvidenceError(f"the bundle does not cite settlement #{number - 1}, where the billed range starts")
    entry = chain.entry(record, f"settlement #{number - 1}")
    if entry.get("kind") != "scoring_settlement" or entry.get("number") != number - 1:
        raise EvidenceError(f"the cited previous settlement is not scoring settlement #{number - 1}")
    return _position(record)


def check_billed(records: list, chain: AnchoredChain, start: Position, end: Position, number: int) -> list[dict]:
    """Each billed record is a distinct scoring entry between the two settlements, in a co-signed block."""
    entries, seen = [], set()
    for position, record in enumerate(records):
        entry = chain.entry(record, f"billed request {position + 1}")
        request = entry.get("request_id")
        if entry.get("kind") != "scoring" or entry_problem(entry, chain.partners):
            raise EvidenceError(f"billed request {position + 1} is not a scoring entry")
        if not start < _position(record) < end:
            raise EvidenceError(f"request {request} (block {record['height']}) is not between settlement "
                                f"#{number - 1 if number > 1 else 'start'} and #{number}: that settlement did not bill it")
        if request in seen:
            raise EvidenceError(f"request {request} is cited twice")
        seen.add(request)
        entries.append(entry)
    return entries


def check_count(entries: list[dict], line: dict, chain: AnchoredChain, partner: str, number: int) -> None:
    """As many requests as settlement's line bills the partner for, at the contract's price."""
    if line.get("requests") != len(entries):
        raise EvidenceError(f"settlement #{number} bills {partner!r} for {line.get('requests')} requests; the bundle "
                            f"cites {len(entries)}")
    price = FeeContract.from_dict(chain.genesis["fees"]).per_request
    if line.get("amount") != len(entries) * price:
        raise EvidenceError(f"settlement #{number} charges {line.get('amount')} for {len(entries)} requests at "
                            f"{price} each")


def check_marks(entries: list[dict], partner: str, pair_key: bytes) -> None:
    """Under the partner's own key, every billed request's mark says it contributed."""
    for entry in entries:
        tag = entry["partners"][partner]["tag"]
        verdict = contributed(entry, partner, pair_key)
        if verdict is None:
            raise EvidenceError(f"request {entry['request_id']} ({partner}'s tag {tag}): its mark is not one "
                                f"{partner!r}'s key makes")
        if not verdict:
            raise EvidenceError(f"request {entry['request_id']} ({partner}'s tag {tag}) is not billed to "
                                f"{partner!r}: its mark says {partner!r} did not contribute")


def check_left_out(entries: list[dict], replica: list[Block], partner: str, number: int, pair_key: bytes) -> None:
    """The partner's own replica bills no request the bundle leaves out (its blocks were checked against it)."""
    own, _, _ = billed_requests(replica, partner, number, pair_key)
    cited = {entry["partners"][partner]["tag"] for entry in entries}
    left_out = sorted(found[2]["partners"][partner]["tag"] for found in own if found[2]["partners"][partner]["tag"] not in cited)
    if left_out:
        raise EvidenceError(f"the replica of {partner!r} bills request {left_out[0]} (its tag) in settlement "
                            f"#{number}, which the bundle leaves out")


def check_fee_bundle(bundle: dict, expected_genesis: str, pair_key: bytes | None = None,
                     replica: list[Block] | None = None) -> dict:
    """What a fee bundle proves; with a member's ``replica``, that its blocks are of that very chain; with the
    partner's ``pair_key`` too, that every billed request is one it answered (and no other). EvidenceError
    naming the first failure."""
    check_format(bundle, "fee")
    chain = anchored_chain(bundle, expected_genesis)
    try:
        partner, number = bundle["partner"], int(bundle["settlement"])
        records, settled_record = list(bundle["billed"]), bundle["settlement_record"]
    except (KeyError, TypeError, ValueError) as error:
        raise EvidenceError(f"the fee bundle is not readable ({type(error).__name__}: {error})") from None
    if partner not in chain.partners:
        raise EvidenceError(f"{partner!r} is not a partner of this chain ({', '.join(chain.partners)})")
    settled = chain.entry(settled_record, f"settlement #{number}")
    line = check_settlement(settled, chain, number, partner)
    start = check_previous_settlement(bundle, chain, number)
    entries = check_billed(records, chain, start, _position(settled_record), number)
    check_count(entries, line, chain, partner, number)
    if replica is not None:
        check_replica_blocks(chain, replica, "the replica given")
    if pair_key is not None:
        check_marks(entries, partner, pair_key)
        if replica is not None:
            check_left_out(entries, replica, partner, number, pair_key)
    return {
        "ok": True, "kind": "fee", "partner": partner, "settlement": number, "block": settled_record["height"],
        "requests": len(entries), "amount": line["amount"], "currency": settled.get("currency"),
        "from_block": start[0], "co_signed_by": sorted(chain.members), "genesis": chain.genesis_hash,
        "job_id": chain.genesis.get("job_id"), "request_ids": [e["request_id"] for e in entries],
        "marks_checked": pair_key is not None, "replica_checked": replica is not None,
    }


def fee_verdict(found: dict) -> str:
    """The line a person reads."""
    since = f"settlement #{found['settlement'] - 1} (block {found['from_block']})" if found["settlement"] > 1 else "the genesis"
    line = (f"settlement #{found['settlement']} (block {found['block']}) bills {found['partner']} for "
            f"{found['requests']} requests, {found['amount']} {found['currency']} (minor units); each is a scoring entry "
            f"between {since} and it, in blocks co-signed by {', '.join(found['co_signed_by'])} (scoring chain of "
            f"model {found['job_id']}, genesis {found['genesis'][:MIN_GENESIS_DIGITS]}…)")
    line += "; each block is the replica's at its height" if found["replica_checked"] else UNMATCHED
    if found["marks_checked"]:
        line += f"; under {found['partner']}'s own key every one is marked as answered by {found['partner']}"
        line += ", and its replica bills no other" if found["replica_checked"] else ""
    return line
