"""The audience chain's rules: what a card center and one partner record about marketing audiences, and when each signs.

One chain per (card center, partner) pair, replicated by the two of them;
the card center proposes its blocks. Its genesis (`audience_start`) states
the two members, the fee contract and the partner's audience policy (the
segments it exposes, the minimum cell, the privacy budget and its window,
the least and the most ε of one query, the least gap between nearby
cut-offs). Then, in order of time: `audience_model` (a model the partner
assembled from its own part and the card center's, by digest, with the
job, training head and part it came from), `audience_query` (a query, the
digest of the partner's answer and its total, its ε and the ε spent in the
window so far), `campaign` (the audience of an answered query, materialised
at the partner, and the members billed: the query's total), `conversion`
(an application that arrived with a campaign's id, its applicant as a
salted digest), and from time to time an `audience_settlement` of what was
billed since the last.

The budget is on the chain so both sides can audit it: a query's `spent`
is the ε of every query dated in the window that ends at its time, itself
included, and no member signs one that does not follow from the chain or
that exceeds the policy's budget; the ε spent by a given time counts the
queries dated after it too, so dating one ahead does not free budget. A
query's ε is at least the policy's least, which bounds how many queries a
budget buys. A query whose cut-off is near, but not equal to, that of an
earlier query in its window on the same model and users is refused (the
users between the two would be counted by subtraction); the refusal reads
the chain alone, never the partner's users, so it reveals nothing about
them. Entries are dated no further ahead than a member's clock allows and
never before the entry before them, so the window cannot be moved by
back-dating one.

The partner signs only what it did itself: a model it holds (from the job,
training head and part it assembled it from, when it kept them), a query it
answered with that answer and that total, dated no earlier than it answered
(but for clock skew), a campaign it made; and a conversion only for a
campaign on the chain, never twice. The card center signs only entries it
made (their digests, kept until they are on the chain). Both recompute a
settlement from the chain and the contract (fedscore.ledger.settlement).
The entries, their shapes and a member's first-hand record (`AudienceFacts`)
are in fedscore.ledger.audience_entries.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from fedscore.errors import ConfigError
from fedscore.ledger import settlement
from fedscore.ledger.audience_entries import (   # the entries' public names, used here and re-exported
    KEYS, AudienceFacts, audience_chain_id, audience_model_entry, audience_query_entry, audience_start_entry,
    campaign_entry, canonical, conversion_entry, entry_digest, entry_id, entry_problem, new_conversion_id,
    policy_problem,
)
from fedscore.ledger.member import SummaryReview
from fedscore.ledger.scoring_rules import Layered
from fedscore.protocol.audience import budget
from fedscore.protocol.audience.budget import DAY_MS
from fedscore.protocol.audience.differencing import nearby_cutoff

MAX_CLOCK_SKEW_MS = 300_000   # an entry may not be dated further ahead of a member's clock
TOLERANCE = 1e-9              # ε sums computed in another order may differ in the last bits
__all__ = [
    "AudienceFacts", "AudienceRules", "AudienceSeen", "audience_chain_id", "audience_model_entry",
    "audience_query_entry", "audience_start_entry", "campaign_entry", "conversion_entry", "entry_digest", "entry_id",
    "new_conversion_id", "objection",
]


@dataclass
class AudienceSeen:
    """The chain so far, summarised: what later entries are checked against and what the next settlement bills."""

    models: set[str] = field(default_factory=set)
    queries: dict[str, dict] = field(default_factory=dict)
    # query id -> {time_ms, epsilon, model, min_points, unseen_only, answer_digest, total}
    campaigns: dict[str, str] = field(default_factory=dict)  # campaign id -> query id
    conversions: set[str] = field(default_factory=set)
    unsettled: dict[str, int] = field(default_factory=lambda: {"queries": 0, "audience_members": 0, "conversions": 0})
    settlements: int = 0
    last_kind: str = ""
    last_time_ms: int = 0           # the latest dated entry's time: the next may not be earlier
    converted: set[str] = field(default_factory=set)   # "campaign id\napplicant digest": one conversion each

    def spent(self, now_ms: int, window_days: int) -> float:
        """ε of the queries dated after now_ms - window, those dated after now_ms included: a query dated
        ahead is spent already, or dating queries ahead would let a budget be spent twice."""
        return budget.spent(((q["time_ms"], q["epsilon"]) for q in self.queries.values()), now_ms, window_days)

    def cutoffs(self, now_ms: int, window_days: int) -> list[tuple[str, str, bool, float]]:
        """(query id, model, unseen_only, min_points) of the queries in the same window, for the cut-off rule
        (fedscore.protocol.audience.differencing); entries are never dated before the one they follow, so
        every earlier one is dated at or before now_ms."""
        start = now_ms - window_days * DAY_MS
        return [(ident, q["model"], q["unseen_only"], q["min_points"]) for ident, q in self.queries.items()
                if q["time_ms"] > start]

    def add(self, entry: dict) -> None:
        kind = entry.get("kind")
        self.last_kind = kind
        if isinstance(entry.get("time_ms"), int):
            self.last_time_ms = max(self.last_time_ms, entry["time_ms"])
        if kind == "audience_model":
            self.models.add(entry["model_digest"])
        elif kind == "audience_query":
            query = entry["query"]
            self.queries[query["query_id"]] = {
                "time_ms": entry["time_ms"], "epsilon": entry["epsilon"], "model": query["model"],
                "min_points": query["min_points"], "unseen_only": query["unseen_only"],
                "answer_digest": entry["answer_digest"], "total": entry["total"]}
            self.unsettled["queries"] += 1
        elif kind == "campaign":
            self.campaigns[entry["campaign_id"]] = entry["query_id"]
            self.unsettled["audience_members"] += entry["members"]
        elif kind == "conversion":
            self.conversions.add(entry["conversion_id"])
            self.converted.add(conversion_key(entry["campaign_id"], entry["applicant"]))
            self.unsettled["conversions"] += 1
        elif kind == "audience_settlement":
            self.unsettled = {"queries": 0, "audience_members": 0, "conversions": 0}
            self.settlements += 1

    def copy(self) -> "AudienceSeen":
        """For checking a proposed block without touching the committed summary (conversions: not copied)."""
        return AudienceSeen(set(self.models), dict(self.queries), dict(self.campaigns), Layered(self.conversions),
                            dict(self.unsettled), self.settlements, self.last_kind, self.last_time_ms,
                            Layered(self.converted))


def conversion_key(campaign_id: str, applicant: str) -> str:
    return f"{campaign_id}\n{applicant}"


# -- objections -------------------------------------------------------------------------------------

def objection(entry: dict, facts: AudienceFacts, genesis: dict | None, seen: AudienceSeen) -> str | None:
    """Why this member cannot sign ``entry`` on the audience chain (None: it agrees)."""
    kind = entry.get("kind")
    if genesis is None:
        return _start(entry, facts) if kind == "audience_start" else "the first block must start the audience chain"
    if kind == "audience_start":
        return "a second audience start"
    if kind == "audience_settlement":
        body = {k: v for k, v in entry.items() if k != "signatures"}
        return settlement.audience_settlement_problem(body, genesis, seen) or settlement.signature_problem(
            entry, genesis["members"])
    if kind not in KEYS:
        return f"unknown entry kind {kind!r} on an audience chain"
    problem = entry_problem(entry, genesis["policy"]) or _dated(entry, seen) or _on_chain(entry, genesis, seen)
    if problem:
        return problem
    ident = entry_id(entry)
    if facts.role == "card_center":
        if facts.sent.get(ident) != entry_digest(entry):
            return f"{kind} {ident} is not an entry this card center made"
        return None
    return _partner(entry, facts)


def _start(entry: dict, facts: AudienceFacts) -> str | None:
    expected = audience_chain_id(facts.card_center, facts.partner)
    if set(entry) != KEYS["audience_start"]:
        return "an audience start with fields other than the protocol's"
    if entry["chain_id"] != facts.chain_id or facts.chain_id != expected:
        return (f"the audience chain is {entry['chain_id']!r}, not {expected!r} "
                f"(card center {facts.card_center!r}, partner {facts.partner!r})")
    if (entry["card_center"], entry["partner"]) != (facts.card_center, facts.partner):
        return (f"the chain is between {facts.card_center!r} and {facts.partner!r}, "
                f"not {entry['card_center']!r} and {entry['partner']!r}")
    members = entry["members"]
    roles = {name: info.get("role") for name, info in members.items()} if isinstance(members, dict) else {}
    if roles != {facts.card_center: "card_center", facts.partner: "partner"}:
        return "the members must be exactly the card center and the partner, in those roles"
    if members != canonical(facts.members):
        return "the members are not those this member agreed (names, roles and keys)"
    try:
        settlement.FeeContract.from_dict(entry["fees"])
    except (ConfigError, TypeError) as error:
        return f"the fee contract is not one: {error}"
    if entry["fees"] != canonical(facts.fees):
        return "the fee contract is not the agreed one"
    problem = policy_problem(entry["policy"])
    if problem:
        return problem
    if entry["policy"] != canonical(facts.policy):   # a tuple of segments is a list in the entry
        return "the audience policy is not the partner's"
    return None


def _dated(entry: dict, seen: AudienceSeen) -> str | None:
    """Dated no further ahead than this member's clock allows, and not before the entry before it."""
    when = entry["time_ms"]
    if when > time.time_ns() // 1_000_000 + MAX_CLOCK_SKEW_MS:
        return f"{entry['kind']} {entry_id(entry)} is dated in the future"
    if when < seen.last_time_ms:
        return (f"{entry['kind']} {entry_id(entry)} is dated {when} ms, before the entry before it "
                f"({seen.last_time_ms} ms): entries may not be back-dated")
    return None


def _on_chain(entry: dict, genesis: dict, seen: AudienceSeen) -> str | None:
    """What follows from the chain alone: nothing twice, references to what is on it, the budget."""
    kind, ident = entry["kind"], entry_id(entry)
    if kind == "audience_model":
        return f"model {ident} is already on the chain" if ident in seen.models else None
    if kind == "audience_query":
        if ident in seen.queries:
            return f"query {ident} is already on the chain"
        if entry["query"]["model"] not in seen.models:
            return f"query {ident} names model {entry['query']['model']}, which is not on the chain"
        return _budget(entry, genesis["policy"], seen) or _nearby(entry, genesis["policy"], seen)
    if kind == "campaign":
        if ident in seen.campaigns:
            return f"campaign {ident} is already on the chain"
        if entry["query_id"] not in seen.queries:
            return f"campaign {ident} names query {entry['query_id']}, which is not on the chain"
        if entry["query_id"] in seen.campaigns.values():
            return f"query {entry['query_id']} already has a campaign on the chain"
        total = seen.queries[entry["query_id"]]["total"]
        if entry["members"] != total:
            return (f"campaign {ident} bills {entry['members']} members; the answer to query {entry['query_id']} "
                    f"on the chain counted {total}")
        return None
    if ident in seen.conversions:
        return f"conversion {ident} is already on the chain"
    if entry["campaign_id"] not in seen.campaigns:
        return f"conversion {ident} names campaign {entry['campaign_id']}, which is not on the chain"
    if conversion_key(entry["campaign_id"], entry["applicant"]) in seen.converted:
        return (f"conversion {ident}: campaign {entry['campaign_id']} already has a conversion of this applicant "
                "(an application is billed once)")
    return None


def _budget(entry: dict, policy: dict, seen: AudienceSeen) -> str | None:
    ident, epsilon, when = entry["query"]["query_id"], entry["epsilon"], entry["time_ms"]
    if not policy["min_epsilon"] <= epsilon <= policy["max_epsilon"]:
        return (f"query {ident} spends ε {epsilon}; the policy allows at least {policy['min_epsilon']} "
                f"and at most {policy['max_epsilon']}")
    window = policy["window_days"]
    if when <= time.time_ns() // 1_000_000 - window * DAY_MS:
        return f"query {ident} is dated before the {window}-day budget window that ends now"
    spent = seen.spent(when, window) + epsilon
    if abs(entry["spent"] - spent) > TOLERANCE:
        return (f"query {ident} states ε {entry['spent']} spent in the {window} days to its time; "
                f"the chain's queries there and its own ε make {spent}")
    if spent > policy["budget"] + TOLERANCE:
        return (f"query {ident} would bring the ε spent in {window} days to {spent}, over the budget of "
                f"{policy['budget']}")
    return None


def _nearby(entry: dict, policy: dict, seen: AudienceSeen) -> str | None:
    """A cut-off near an earlier query's, on the chain's queries in the window that ends at this one's time."""
    query = entry["query"]
    refusal = nearby_cutoff(query["model"], query["unseen_only"], query["min_points"],
                            seen.cutoffs(entry["time_ms"], policy["window_days"]), policy["min_points_gap"])
    return f"query {query['query_id']}: {refusal}" if refusal else None


def _partner(entry: dict, facts: AudienceFacts) -> str | None:
    """What the partner checks against its own record."""
    kind, ident = entry["kind"], entry_id(entry)
    if kind == "audience_model":
        if ident not in facts.models and ident not in facts.answered and ident not in facts.held:
            return f"model {ident} is not one {facts.member!r} holds"
        for key in ("job_id", "training_head", "part_digest") if ident in facts.held else ():
            if entry[key] != facts.held[ident].get(key):
                return (f"model {ident} states {key} {entry[key]!r}; {facts.member!r} assembled it from "
                        f"{facts.held[ident].get(key)!r}")
    elif kind == "audience_query":
        if facts.answered.get(ident) != entry["answer_digest"]:
            return f"query {ident} is not one {facts.member!r} answered with that answer"
        if ident in facts.asked and facts.asked[ident] != entry_digest(entry["query"]):
            return f"query {ident} is not the query {facts.member!r} answered"
        if ident in facts.totals and facts.totals[ident] != entry["total"]:
            return f"query {ident} states a total of {entry['total']}; {facts.member!r} answered {facts.totals[ident]}"
        if ident in facts.answered_at and entry["time_ms"] < facts.answered_at[ident] - MAX_CLOCK_SKEW_MS:
            return (f"query {ident} is dated {entry['time_ms']} ms, before {facts.member!r} answered it "
                    f"({facts.answered_at[ident]} ms): a query may not be back-dated")
    elif kind == "campaign":
        if facts.answered.get(ident) != entry["query_id"]:
            return f"campaign {ident} is not one {facts.member!r} made for query {entry['query_id']}"
        if ident in facts.billed and facts.billed[ident] != entry["members"]:
            return f"campaign {ident} bills {entry['members']} members; {facts.member!r} billed {facts.billed[ident]}"
    return None   # a conversion: on the chain's campaign, new, well formed is all a partner can know


def forget_recorded(entry: dict, facts: AudienceFacts) -> None:
    """An entry is on the chain: what this member kept about it until then can go (a model stays held)."""
    kind = entry.get("kind")
    if kind not in KEYS or kind == "audience_start":
        return
    ident = entry_id(entry)
    facts.sent.pop(ident, None)
    if kind in ("audience_query", "campaign"):
        facts.answered.pop(ident, None)
        facts.asked.pop(ident, None)
        facts.billed.pop(ident, None)
        facts.answered_at.pop(ident, None)
        facts.totals.pop(ident, None)


class AudienceRules:
    """One member's rules for an audience chain. It keeps the genesis entry and a summary (`seen`)."""

    proposer_role = "card_center"

    def __init__(self, facts: AudienceFacts):
        self.facts = facts
        self.seen = AudienceSeen()
        self.genesis: dict | None = None
        self.conversion_ids: dict[str, str] = {}

    def remember(self, entry: dict) -> None:
        if self.genesis is None:
            self.genesis = entry
        self.seen.add(entry)
        if entry.get("kind") == "conversion":
            self.conversion_ids[conversion_key(entry["campaign_id"], entry["applicant"])] = entry["conversion_id"]
        forget_recorded(entry, self.facts)

    def conversion_of(self, campaign_id: str, applicant: str) -> str | None:
        """The conversion id the chain holds for this campaign and applicant digest, if any."""
        return self.conversion_ids.get(conversion_key(campaign_id, applicant))

    def entries(self) -> list[dict]:
        """The genesis entry (the only one kept)."""
        return [] if self.genesis is None else [self.genesis]

    def review(self) -> SummaryReview:
        return SummaryReview(objection, self.facts, self.genesis, self.seen.copy())

    def query_spent(self, time_ms: int, epsilon: float) -> float:
        """The `spent` a query dated ``time_ms`` with ``epsilon`` must state, after the committed chain."""
        return self.seen.spent(time_ms, self.facts.policy["window_days"]) + epsilon

    def settlement_body(self) -> dict:
        return settlement.audience_settlement_body(self.genesis, self.seen)

    def settlement_refusal(self, body: bytes) -> str | None:
        return settlement.audience_refusal(body, self.genesis, self.seen)
