"""The scoring chain of a trained model: what each entry records, and how a member checks it.

Every model that serves gets its own chain, replicated by the card center
and the partners (the coordinator has no part in scoring). Its genesis
entry (`scoring_start`) binds it to the training chain's head and repeats
the training genesis' members and fee contract. Then one `scoring` entry per
scored request, many to a block; and from time to time a
`scoring_settlement` of the requests since the previous one.

A scoring entry holds no personal data in clear: the applicant as a digest
salted with a secret only the card center holds, the consent token
encrypted with a key only the card center holds, and the token's SHA-256,
so a dispute can be opened (the card center decrypts the token and anyone
checks it against the digest) without the chain saying who applied.

A partner signs a block only if every request that lists it as a
contributor is one it answered, with the consent it checked. The card
center signs only requests it served. Either refuses a request id twice.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from nacl.signing import VerifyKey

from fedscore.ledger.settlement import FeeContract, settlement_message

REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


@dataclass
class ScoringFacts:
    """What one member knows first-hand about one model's scoring."""

    member: str
    public_key: str                           # hex
    role: str                                 # "card_center" or "partner"
    job_id: str
    members: dict[str, dict]                  # {name: {"role", "key"}} from the training genesis
    fees: dict
    training_head: str                        # hex hash of the settled training chain's last block
    answered: dict[str, str] = field(default_factory=dict)   # request id -> consent digest, not yet on the chain

    @property
    def partners(self) -> list[str]:
        return sorted(n for n, m in self.members.items() if m["role"] == "partner")

    @property
    def card_center(self) -> str:
        return next(n for n, m in self.members.items() if m["role"] == "card_center")


@dataclass
class ScoringSeen:
    """The chain so far, summarised: request ids on it, and requests per partner since the last settlement."""

    started: bool = False
    requests: set[str] = field(default_factory=set)
    unsettled: dict[str, int] = field(default_factory=dict)
    settled_requests: int = 0
    settlements: int = 0

    def add(self, entry: dict) -> None:
        kind = entry.get("kind")
        if kind == "scoring_start":
            self.started = True
        elif kind == "scoring":
            self.requests.add(entry["request_id"])
            for name in entry["contributors"]:
                self.unsettled[name] = self.unsettled.get(name, 0) + 1
        elif kind == "scoring_settlement":
            self.settled_requests += sum(line["requests"] for line in entry["lines"])
            self.unsettled = {}
            self.settlements += 1

    def copy(self) -> "ScoringSeen":
        return ScoringSeen(self.started, set(self.requests), dict(self.unsettled), self.settled_requests, self.settlements)


def scoring_start_entry(facts: ScoringFacts, job_name: str) -> dict:
    return {
        "kind": "scoring_start", "job_id": facts.job_id, "job_name": job_name, "training_head": facts.training_head,
        "members": facts.members, "fees": facts.fees,
    }


def scoring_entry(
    request_id: str, time_ms: int, applicant: str, consent: str, consent_digest: str,
    contributors: list[str], missing: list[str],
) -> dict:
    return {
        "kind": "scoring", "request_id": request_id, "time_ms": time_ms, "applicant": applicant,
        "consent": consent, "consent_digest": consent_digest,
        "contributors": sorted(contributors), "missing": sorted(missing),
    }


def scoring_settlement_body(genesis: dict, seen: ScoringSeen) -> dict:
    """The settlement of every request since the last one: per_request fen per contributing partner."""
    contract = FeeContract.from_dict(genesis["fees"])
    members = genesis["members"]
    payer = next(n for n, m in sorted(members.items()) if m["role"] == "card_center")
    lines = []
    for payee in sorted(n for n, m in members.items() if m["role"] == "partner"):
        count = seen.unsettled.get(payee, 0)
        lines.append({"payee": payee, "requests": count, "amount": count * contract.per_request})
    return {
        "kind": "scoring_settlement", "job_id": genesis["job_id"], "number": seen.settlements + 1,
        "currency": contract.currency, "payer": payer, "lines": lines, "total": sum(l["amount"] for l in lines),
    }


def audit_scoring(entry: dict, facts: ScoringFacts, genesis: dict | None, seen: ScoringSeen) -> str | None:
    """Why this member cannot sign ``entry`` on the scoring chain (None: it agrees)."""
    kind = entry.get("kind")
    me = facts.member
    if genesis is None:
        if kind != "scoring_start":
            return "the first block must start the model's scoring"
        if entry.get("job_id") != facts.job_id:
            return f"the scoring chain is for job {entry.get('job_id')!r}, not {facts.job_id!r}"
        if entry.get("training_head") != facts.training_head:
            return "the training head is not that of this member's settled training chain"
        if entry.get("members") != facts.members:
            return "the members are not those of the training chain's genesis (names, roles and keys)"
        if entry.get("fees") != facts.fees:
            return "the fee contract is not the job's"
        return None
    if kind == "scoring_start":
        return "a second scoring start"
    if kind == "scoring":
        request = entry["request_id"]
        if not isinstance(request, str) or not REQUEST_ID.match(request):
            return f"request id {request!r} is not one fedscore issues"
        if request in seen.requests:
            return f"request {request} is already on the chain"
        contributors, missing = entry["contributors"], entry["missing"]
        if sorted(set(contributors) | set(missing)) != facts.partners or set(contributors) & set(missing):
            return f"request {request} must list every partner once, as contributor or missing"
        if facts.role == "card_center":
            if facts.answered.get(request) != entry["consent_digest"]:
                return f"request {request} was not served here with that consent"
        elif me in contributors and facts.answered.get(request) != entry["consent_digest"]:
            return f"request {request} lists {me!r} as a contributor, but it never answered it with that consent"
        return None
    if kind == "scoring_settlement":
        body = {k: v for k, v in entry.items() if k != "signatures"}
        if body != scoring_settlement_body(genesis, seen):
            return "the settlement does not follow from the fee contract and the requests since the last one"
        for signer in [body["payer"], *(line["payee"] for line in body["lines"])]:
            try:
                VerifyKey(bytes.fromhex(genesis["members"][signer]["key"])).verify(
                    settlement_message(body), bytes.fromhex(entry.get("signatures", {}).get(signer, ""))
                )
            except Exception:
                return f"the settlement lacks a valid signature from {signer!r}"
        return None
    return f"unknown entry kind {kind!r} on a scoring chain"
