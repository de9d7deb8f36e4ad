"""What an observer can check of a chain's entries from the chain alone, without any member's first-hand record.

A member signs an entry only if it agrees with what it saw itself (fedscore.ledger.training_rules,
fedscore.ledger.scoring_rules); an observer saw nothing first-hand, so it checks what follows from the
chain: the order of a chain's kinds (one genesis, nothing after a training settlement), the shape of each
scoring entry and that no request is recorded twice, and every settlement recomputed from the entries
before it. A training settlement is recomputed whole (fedscore.ledger.settlement.settlement_body). A
scoring settlement is bounded: the partners' marks are HMACs under keys only the card center and each
partner hold, so an observer cannot count who contributed to which request; it checks that each line bills
at most the requests since the previous settlement, at the contract's price, that the lines add up, and
that the payer and every payee signed it. Entry kinds it has no rule for are accepted on the signatures of
every member, who each checked them against their own record. An audience chain (a card center and a
partner's, fedscore.ledger.audience_rules) is kept on its members' signatures: its budget and cut-off rules
are judged by its two members when they sign, against the time of signing, which an observer replaying the
chain later cannot re-judge; its settlements must carry the payer's and the payee's signatures.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from fedscore.ledger import settlement
from fedscore.ledger.scoring_rules import entry_problem

TRAINING_KINDS = {"job_start", "alignment", "step", "job_end", "settlement"}
GENESIS_KINDS = {"job_start": "training", "scoring_start": "scoring", "audience_start": "audience"}


def chain_of_genesis(entry: dict) -> object:
    """The id a chain goes by, from its genesis entry: a job's id, or an audience chain's own id."""
    return entry.get("chain_id") if entry.get("kind") == "audience_start" else entry.get("job_id")


@dataclass
class ObservedChain:
    """What the chain so far holds, as far as an outsider needs it to judge the next entry."""

    kind: str = ""                                      # "training", "scoring" or "audience", from the genesis entry
    genesis: dict | None = None
    entries: list[dict] = field(default_factory=list)   # a training chain's, every one (they are few)
    kinds: set[str] = field(default_factory=set)
    requests: set[str] = field(default_factory=set)     # a scoring chain's request ids
    unsettled: int = 0                                  # scoring entries since the last scoring settlement
    settlements: int = 0

    def add(self, entry: dict) -> None:
        kind = entry.get("kind")
        if self.genesis is None:
            self.genesis = entry
            self.kind = GENESIS_KINDS.get(kind, "training")
        self.kinds.add(kind)
        if self.kind == "training":
            self.entries.append(entry)
        elif kind == "scoring":
            self.requests.add(entry["request_id"])
            self.unsettled += 1
        elif kind == "scoring_settlement":
            self.unsettled = 0
            self.settlements += 1


def objection(entry: dict, chain: ObservedChain) -> str | None:
    """Why an observer cannot accept ``entry`` after ``chain`` (None: nothing the chain shows is wrong with it)."""
    kind = entry.get("kind")
    if chain.genesis is None:
        if kind not in GENESIS_KINDS:
            return "the first entry must start a job, a model's scoring or an audience chain"
        settlement.FeeContract.from_dict(entry.get("fees"), "the genesis entry's fees")   # ConfigError: refused
        return None
    if kind in GENESIS_KINDS:
        return "a second genesis entry"
    if chain.kind == "training":
        return _training(entry, chain)
    if chain.kind == "audience":
        return settlement.signature_problem(entry, chain.genesis["members"]) if kind == "audience_settlement" else None
    if kind == "scoring":
        return _scoring(entry, chain)
    if kind == "scoring_settlement":
        return _scoring_settlement(entry, chain)
    return None


def _training(entry: dict, chain: ObservedChain) -> str | None:
    kind = entry.get("kind")
    if kind not in TRAINING_KINDS:
        return f"unknown entry kind {kind!r} on a training chain"
    if "settlement" in chain.kinds:
        return "the job is already settled; nothing may follow its settlement"
    if kind != "settlement" and "job_end" in chain.kinds:
        return "the job has ended; only its settlement may follow"
    if kind != "settlement":
        return None
    body = {k: v for k, v in entry.items() if k != "signatures"}
    if body != settlement.settlement_body(chain.entries):
        return "the settlement does not follow from the fee contract and the recorded steps and overlaps"
    return settlement.signature_problem(entry, chain.genesis["members"])


def _partners(genesis: dict) -> list[str]:
    return sorted(name for name, member in genesis["members"].items() if member.get("role") == "partner")


def _scoring(entry: dict, chain: ObservedChain) -> str | None:
    problem = entry_problem(entry, _partners(chain.genesis))
    if problem:
        return problem
    if entry["request_id"] in chain.requests:
        return f"request {entry['request_id']} is already on the chain"
    return None


def _scoring_settlement(entry: dict, chain: ObservedChain) -> str | None:
    genesis = chain.genesis
    contract = settlement.FeeContract.from_dict(genesis["fees"])
    payer = next((n for n, m in sorted(genesis["members"].items()) if m.get("role") == "card_center"), None)
    body = {k: v for k, v in entry.items() if k != "signatures"}
    expected = {"kind": "scoring_settlement", "job_id": genesis["job_id"], "number": chain.settlements + 1,
                "currency": contract.currency, "payer": payer}
    if set(body) != {*expected, "lines", "total"} or {k: body[k] for k in expected} != expected:
        return f"the settlement's job, number, currency or payer is not the chain's (expected {expected})"
    lines = body["lines"]
    if not isinstance(lines, list) or [l.get("payee") if isinstance(l, dict) else None for l in lines] != _partners(genesis):
        return "the settlement must have one line per partner, in name order"
    for line in lines:
        requests, amount = line.get("requests"), line.get("amount")
        if set(line) != {"payee", "requests", "amount"} or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (requests, amount)):
            return f"the settlement's line for {line['payee']!r} is not whole, non-negative requests and amount"
        if requests > chain.unsettled:
            return (f"the settlement bills {line['payee']!r} for {requests} requests, but the chain records only "
                    f"{chain.unsettled} since the previous settlement")
        if amount != requests * contract.per_request:
            return f"the settlement's amount for {line['payee']!r} is not {requests} requests at the contract's price"
    if body["total"] != sum(line["amount"] for line in lines):
        return "the settlement's amounts do not add up"
    return settlement.signature_problem(entry, genesis["members"])
