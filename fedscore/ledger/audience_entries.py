"""What an audience chain's entries hold, and what each member knows first-hand to check them against.

The entries' constructors and the shape each must have: these fields, these
formats, nothing more. The query is checked field by field, as the partner's
AudienceQuery.to_dict() writes it, and against the policy the genesis states
(segment columns exposed, how many at most). The rules, which read entries
against the chain and a member's own record, are in
fedscore.ledger.audience_rules.
"""
from __future__ import annotations

import hashlib
import math
import re
import secrets
from dataclasses import dataclass, field

from fedscore.job import JOB_ID_PATTERN
from fedscore.ledger.block import decode_entry, encode_entry

QUERY_ID = re.compile(r"^q[0-9a-f]{31}$")
CAMPAIGN_ID = re.compile(r"^c[0-9a-f]{31}$")
CONVERSION_ID = re.compile(r"^k[0-9a-f]{31}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
KEYS = {
    "audience_start": {"kind", "chain_id", "card_center", "partner", "members", "fees", "policy"},
    "audience_model": {"kind", "job_id", "training_head", "part_digest", "model_digest", "time_ms"},
    "audience_query": {"kind", "query", "answer_digest", "epsilon", "spent", "total", "time_ms"},
    "campaign": {"kind", "campaign_id", "query_id", "members", "time_ms"},
    "conversion": {"kind", "conversion_id", "campaign_id", "applicant", "time_ms"},
}
QUERY_KEYS = {"query_id", "model", "min_points", "segments", "epsilon", "unseen_only"}
POLICY_KEYS = {"segments", "min_cell", "budget", "window_days", "max_epsilon", "max_segments", "min_epsilon",
               "min_points_gap"}


def audience_chain_id(card_center: str, partner: str) -> str:
    """The one chain of this pair: a name, then 8 hex digits, as a job id is (it is the Block's job_id)."""
    return "audience-" + hashlib.sha256(f"{card_center}\n{partner}".encode()).hexdigest()[:8]


def new_conversion_id() -> str:
    return "k" + secrets.token_hex(16)[:31]


def entry_digest(entry: dict) -> str:
    return hashlib.sha256(encode_entry(entry)).hexdigest()


def entry_id(entry: dict) -> str:
    """The id an entry is known by (ids of different kinds never collide): a model's digest, a query's,
    a campaign's or a conversion's id."""
    kind = entry.get("kind")
    if kind == "audience_model":
        return entry["model_digest"]
    if kind == "audience_query":
        return entry["query"]["query_id"]
    if kind == "campaign":
        return entry["campaign_id"]
    if kind == "conversion":
        return entry["conversion_id"]
    raise KeyError(f"an {kind!r} entry has no id")


@dataclass
class AudienceFacts:
    """What one member of an audience chain knows first-hand."""

    member: str
    role: str                       # "card_center" or "partner"
    chain_id: str
    card_center: str
    partner: str
    members: dict[str, dict]        # {name: {"role", "key"}}: exactly the two
    fees: dict                      # FeeContract.to_dict()
    policy: dict                    # the partner's AudiencePolicy.to_dict()
    sent: dict[str, str] = field(default_factory=dict)
    # card center: entry id -> digest (entry_digest) of an entry it made and will propose; until on the chain
    answered: dict[str, str] = field(default_factory=dict)
    # partner: query id -> digest of the answer it gave; model digest -> "" for a model it holds;
    # campaign id -> query id for a campaign it made (queries and campaigns until on the chain)
    models: set[str] = field(default_factory=set)   # partner: digests of the models it holds
    billed: dict[str, int] = field(default_factory=dict)
    # partner, optional: campaign id -> members it billed; a campaign entry must then bill exactly these
    asked: dict[str, str] = field(default_factory=dict)
    # partner, optional: query id -> digest (entry_digest) of the query dict it answered; the entry must then hold it
    answered_at: dict[str, int] = field(default_factory=dict)
    # partner, optional: query id -> when it answered (ms); the entry may not be dated earlier (but for clock skew)
    totals: dict[str, int] = field(default_factory=dict)
    # partner, optional: query id -> the total it answered; the entry must state it (campaigns bill it)
    held: dict[str, dict] = field(default_factory=dict)
    # partner, optional: model digest -> {"job_id", "part_digest", "training_head"} of a model it holds; the entry
    # must state all three (kept after the model is on the chain: a model stays held)


# -- entries ----------------------------------------------------------------------------------------

def canonical(entry: dict) -> dict:
    """The entry exactly as every member reads it back from a block (tuples become lists)."""
    return decode_entry(encode_entry(entry))


def audience_start_entry(facts: AudienceFacts) -> dict:
    return canonical({
        "kind": "audience_start", "chain_id": facts.chain_id, "card_center": facts.card_center,
        "partner": facts.partner, "members": facts.members, "fees": facts.fees, "policy": facts.policy,
    })


def audience_model_entry(job_id: str, training_head: str, part_digest: str, model_digest: str, time_ms: int) -> dict:
    return canonical({"kind": "audience_model", "job_id": job_id, "training_head": training_head,
                       "part_digest": part_digest, "model_digest": model_digest, "time_ms": time_ms})


def audience_query_entry(query: dict, answer_digest: str, spent: float, time_ms: int, total: int) -> dict:
    """``query``: AudienceQuery.to_dict() (or anything with to_dict); its ε is repeated at the top level.
    ``total``: the answer's total, which a campaign of this query bills."""
    query = query.to_dict() if hasattr(query, "to_dict") else query
    return canonical({"kind": "audience_query", "query": query, "answer_digest": answer_digest,
                       "epsilon": query["epsilon"], "spent": spent, "total": total, "time_ms": time_ms})


def campaign_entry(campaign_id: str, query_id: str, members: int, time_ms: int) -> dict:
    return canonical({"kind": "campaign", "campaign_id": campaign_id, "query_id": query_id, "members": members,
                       "time_ms": time_ms})


def conversion_entry(conversion_id: str, campaign_id: str, applicant: str, time_ms: int) -> dict:
    return canonical({"kind": "conversion", "conversion_id": conversion_id, "campaign_id": campaign_id,
                       "applicant": applicant, "time_ms": time_ms})


# -- shapes -----------------------------------------------------------------------------------------

def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _hex64(value: object) -> bool:
    return isinstance(value, str) and bool(HEX64.match(value))


def _id(pattern: re.Pattern, value: object) -> bool:
    return isinstance(value, str) and bool(pattern.match(value))


def policy_problem(policy: object) -> str | None:
    """The policy a genesis states: these settings, these types, nothing more."""
    if not isinstance(policy, dict) or set(policy) != POLICY_KEYS:
        return f"the audience policy must hold exactly {sorted(POLICY_KEYS)}"
    segments = policy["segments"]
    if not isinstance(segments, list) or not all(isinstance(s, str) and s for s in segments):
        return "the policy's segments must be a list of column names"
    if not all(_count(policy[k]) for k in ("min_cell", "window_days", "max_segments")) or policy["window_days"] < 1:
        return "the policy's min_cell, window_days and max_segments must be whole numbers (window_days at least 1)"
    if not all(_number(policy[k]) and policy[k] > 0 for k in ("budget", "max_epsilon")):
        return "the policy's budget and max_epsilon must be positive numbers"
    if not _number(policy["min_epsilon"]) or not 0 < policy["min_epsilon"] <= policy["max_epsilon"]:
        return "the policy's min_epsilon must be a number above 0 and at most its max_epsilon"
    if not _number(policy["min_points_gap"]) or policy["min_points_gap"] < 0:
        return "the policy's min_points_gap must be a non-negative number"
    return None


def query_problem(query: object, policy: dict) -> str | None:
    """A query as the chain records it: AudienceQuery.to_dict()'s fields and formats, segments the policy exposes."""
    if not isinstance(query, dict) or set(query) != QUERY_KEYS:
        return f"its query must hold exactly {sorted(QUERY_KEYS)}"
    if not _id(QUERY_ID, query["query_id"]):
        return f"query id {query['query_id']!r} is not one fedscore issues"
    if not _hex64(query["model"]):
        return "the query's model must be a SHA-256 hex digest"
    if not _number(query["min_points"]) or not _number(query["epsilon"]):
        return "the query's min_points and epsilon must be numbers"
    if not isinstance(query["unseen_only"], bool):
        return "the query's unseen_only must be true or false"
    segments = query["segments"]
    if not isinstance(segments, list) or not all(isinstance(s, str) for s in segments) or len(set(segments)) != len(segments):
        return "the query's segments must be a list of distinct column names"
    hidden = [s for s in segments if s not in policy["segments"]]
    if hidden:
        return f"the query names segment column {hidden[0]!r}, which the partner does not expose"
    if len(segments) > policy["max_segments"]:
        return f"the query names {len(segments)} segment columns; the policy allows {policy['max_segments']}"
    return None


def entry_problem(entry: dict, policy: dict) -> str | None:
    """The shape every dated audience entry must have: these fields, these formats, nothing more."""
    kind = entry["kind"]
    if set(entry) != KEYS[kind]:
        return f"an {kind} entry with fields other than the protocol's"
    if isinstance(entry["time_ms"], bool) or not isinstance(entry["time_ms"], int) or entry["time_ms"] <= 0:
        return "its time is not a positive integer of milliseconds"
    if kind == "audience_model":
        if not isinstance(entry["job_id"], str) or not JOB_ID_PATTERN.fullmatch(entry["job_id"]):
            return f"job id {entry['job_id']!r} is not one fedscore issues"
        if not all(_hex64(entry[k]) for k in ("training_head", "part_digest", "model_digest")):
            return "the training head, part digest and model digest must be SHA-256 hex"
    elif kind == "audience_query":
        problem = query_problem(entry["query"], policy)
        if problem:
            return problem
        if not _hex64(entry["answer_digest"]):
            return "the answer digest must be SHA-256 hex"
        if not _number(entry["epsilon"]) or entry["epsilon"] != entry["query"]["epsilon"]:
            return "its epsilon is not the query's"
        if not _number(entry["spent"]):
            return "the budget spent must be a number"
        if not _count(entry["total"]):
            return "the answer's total must be a whole, non-negative number"
    elif kind == "campaign":
        if not _id(CAMPAIGN_ID, entry["campaign_id"]) or not _id(QUERY_ID, entry["query_id"]):
            return "its campaign id or query id is not one fedscore issues"
        if not _count(entry["members"]):
            return "the members billed must be a whole, non-negative number"
    else:
        if not _id(CONVERSION_ID, entry["conversion_id"]) or not _id(CAMPAIGN_ID, entry["campaign_id"]):
            return "its conversion id or campaign id is not one fedscore issues"
        if not _hex64(entry["applicant"]):
            return "the applicant must be a salted SHA-256 hex digest"
    return None
