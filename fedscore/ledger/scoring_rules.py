"""The scoring chain's rules: what each entry of a trained model's chain records, and when a member agrees to it.

Every model that serves gets its own chain, replicated by the card center
and the partners (the coordinator has no part in scoring); the card center
proposes its blocks. Its genesis entry (`scoring_start`) binds it to the
training chain's head and repeats the training genesis' members and fee
contract. Then one `scoring` entry per scored request, many to a block; and
from time to time a `scoring_settlement` of the requests since the previous.

A scoring entry holds no personal data in clear: the applicant as a digest
salted with a secret only the card center holds, the consent token sealed
with a key only the card center holds, and the token's SHA-256, so a dispute
can be opened (the card center opens the token and anyone checks it against
the digest) without the chain saying who applied.

Nor does it tell one partner about another. Each partner is asked under its
own tag for the request (an HMAC only the card center can link to the
request), and the entry carries, per partner, that tag and a mark: an HMAC,
under a key the card center shares with that partner alone, of the tag and
whether the partner contributed. A partner finds its own tag and reads its
own mark; the other partners' marks are opaque to it, so it cannot learn
whether they hold the applicant it was asked about.

A partner signs a block only if every entry that marks it as a contributor
names a tag it answered, with the consent it checked, no tag of its own
twice, and no entry marks as not contributing a request its own journal
says it answered before the request's deadline: it bills from its own
record, not from the card center's word. Only an answer it gave after the
deadline may be marked as not contributing; it is counted as unbilled. The
card center signs only entries it made itself. Settlements: each payee
checks its own line, and that no answer it gave in time is still missing
from the chain; the card center checks every line
(fedscore.ledger.settlement).

A `verification` entry records that the card center's verification system
saw an applicant (fedscore.protocol.scoring.verification): the applicant
salted as above, the verifier's signed record sealed under the card center's
key, the record's SHA-256, an id and a time. A partner cannot read it and
signs it once it is well formed and new: it is billed to nobody and changes
no settlement, so signing it costs a partner nothing, and what the partners'
signatures add is what the record needs later, that it existed, unchanged,
when the block was signed (the card center cannot alter or back-date it).
Whether it says what it claims is checked from the record itself, the
verifier's signature and the evidence files, when a dispute opens it. The
card center signs only verifications it made itself, as with requests.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass, field

from fedscore.ledger import settlement
from fedscore.ledger.block import encode_entry
from fedscore.ledger.member import SummaryReview

REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")
VERIFICATION_ID = re.compile(r"^v[0-9a-f]{31}$")   # never a request id: one namespace of entry ids, no collision
TAG = re.compile(r"^[0-9a-f]{32}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
HEX = re.compile(r"^(?:[0-9a-f]{2})+$")
SETTLE_GRACE_MS = 300_000   # a partner's answer must be on the chain this long after its deadline before a settlement
ENTRY_KEYS = {"kind", "request_id", "time_ms", "applicant", "consent", "consent_digest", "partners"}
VERIFICATION_KEYS = {"kind", "verification_id", "time_ms", "applicant", "record", "record_digest"}
MAX_SEALED_RECORD = 16_384   # hex digits of a sealed verification record (16 evidence files fit in half)
MAX_CLOCK_SKEW_MS = 300_000  # a verification entry may not be dated further ahead of a member's clock
PENDING_KINDS = ("scoring", "verification")   # what the card center journals and batches onto the chain


def partner_tag(secret: bytes, request_id: str, partner: str) -> str:
    """The name partner k knows request r by: unlinkable to r, or to its tags at other partners, without the secret."""
    return hmac.new(secret, f"tag\n{request_id}\n{partner}".encode(), hashlib.sha256).hexdigest()[:32]


def pair_key(secret: bytes, job_id: str, partner: str) -> bytes:
    """The key the card center shares with one partner for one model's marks."""
    return hmac.new(secret, f"pair\n{job_id}\n{partner}".encode(), hashlib.sha256).digest()


def mark(key: bytes, tag: str, contributed: bool) -> str:
    return hmac.new(key, f"{tag}\n{'1' if contributed else '0'}".encode(), hashlib.sha256).hexdigest()


def entry_id(entry: dict) -> str:
    """A pending entry's id: its request's, or its verification's (the two formats never meet)."""
    return entry["request_id"] if entry.get("kind") == "scoring" else entry["verification_id"]


def entry_digest(entry: dict) -> str:
    return hashlib.sha256(encode_entry(entry)).hexdigest()


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
    pair_keys: dict[str, bytes] = field(default_factory=dict)   # partner -> mark key (a partner: its own only)
    answered: dict[str, str] = field(default_factory=dict)
    # card center: entry id (a request's or a verification's) -> digest of the entry it made;
    # partner: its tag -> consent digest; until on the chain
    on_time: dict[str, int] = field(default_factory=dict)
    # a partner's answers given before the request's deadline (tag -> deadline, unix ms): an entry must bill them
    unbilled: list[str] = field(default_factory=list)
    # a partner's answers the chain recorded as not contributing, until its scorer logs them (durably)

    @property
    def partners(self) -> list[str]:
        return sorted(n for n, m in self.members.items() if m["role"] == "partner")

    @property
    def card_center(self) -> str:
        return next(n for n, m in self.members.items() if m["role"] == "card_center")


def contributed(entry: dict, partner: str, key: bytes) -> bool | None:
    """Whether ``entry`` marks ``partner`` as a contributor (None: the mark is neither value)."""
    own = entry["partners"][partner]
    if hmac.compare_digest(own["mark"], mark(key, own["tag"], True)):
        return True
    if hmac.compare_digest(own["mark"], mark(key, own["tag"], False)):
        return False
    return None


class Layered:
    """A set seen through: this block's additions over the committed chain's, without copying the latter."""

    def __init__(self, base):
        self.base = base
        self.added: set[str] = set()

    def __contains__(self, item: object) -> bool:
        return item in self.added or item in self.base

    def add(self, item: str) -> None:
        self.added.add(item)


@dataclass
class ScoringSeen:
    """The chain so far, as far as this member can read it: entry ids (requests' and verifications', which
    never collide), the tags of partners whose mark keys it holds, and their contributions since the last
    settlement. A verification is not the last entry a settlement follows: it bills nothing."""

    keys: dict[str, bytes]
    requests: set[str] = field(default_factory=set)
    tags: set[str] = field(default_factory=set)
    unsettled: dict[str, int] = field(default_factory=dict)
    settlements: int = 0
    last_kind: str = ""

    def add(self, entry: dict) -> None:
        kind = entry.get("kind")
        if kind == "verification":
            self.requests.add(entry["verification_id"])
            return
        self.last_kind = kind
        if kind == "scoring":
            self.requests.add(entry["request_id"])
            for partner, key in self.keys.items():
                self.tags.add(entry["partners"][partner]["tag"])
                if contributed(entry, partner, key):
                    self.unsettled[partner] = self.unsettled.get(partner, 0) + 1
        elif kind == "scoring_settlement":
            self.unsettled = {}
            self.settlements += 1

    def copy(self) -> "ScoringSeen":
        """For checking a proposed block: O(1), whatever the chain's length."""
        return ScoringSeen(self.keys, Layered(self.requests), Layered(self.tags), dict(self.unsettled), self.settlements,
                           self.last_kind)


def scoring_start_entry(facts: ScoringFacts, job_name: str) -> dict:
    return {
        "kind": "scoring_start", "job_id": facts.job_id, "job_name": job_name, "training_head": facts.training_head,
        "members": facts.members, "fees": facts.fees,
    }


def scoring_entry(request_id: str, time_ms: int, applicant: str, consent: str, consent_digest: str,
                  partners: dict[str, dict[str, str]]) -> dict:
    return {
        "kind": "scoring", "request_id": request_id, "time_ms": time_ms, "applicant": applicant,
        "consent": consent, "consent_digest": consent_digest, "partners": dict(sorted(partners.items())),
    }


def verification_entry(verification_id: str, time_ms: int, applicant: str, record: str, record_digest: str) -> dict:
    return {
        "kind": "verification", "verification_id": verification_id, "time_ms": time_ms, "applicant": applicant,
        "record": record, "record_digest": record_digest,
    }


def verification_problem(entry: dict) -> str | None:
    """The shape every verification entry must have: these fields, these formats, nothing more."""
    if set(entry) != VERIFICATION_KEYS:
        return "a verification entry with fields other than the protocol's"
    if not isinstance(entry["verification_id"], str) or not VERIFICATION_ID.match(entry["verification_id"]):
        return f"verification id {entry['verification_id']!r} is not one fedscore issues"
    if isinstance(entry["time_ms"], bool) or not isinstance(entry["time_ms"], int) or entry["time_ms"] <= 0:
        return "its time is not a positive integer of milliseconds"
    if not all(isinstance(entry[k], str) and HEX64.match(entry[k]) for k in ("applicant", "record_digest")):
        return "the applicant and record digests must be SHA-256 hex"
    record = entry["record"]
    if not isinstance(record, str) or not HEX.match(record) or len(record) > MAX_SEALED_RECORD:
        return f"the sealed record must be hex, at most {MAX_SEALED_RECORD} digits"
    return None


def entry_problem(entry: dict, partners: list[str]) -> str | None:
    """The shape every scoring entry must have: these fields, these formats, nothing more."""
    if set(entry) != ENTRY_KEYS:
        return "a scoring entry with fields other than the protocol's"
    if not isinstance(entry["request_id"], str) or not REQUEST_ID.match(entry["request_id"]):
        return f"request id {entry['request_id']!r} is not one fedscore issues"
    if isinstance(entry["time_ms"], bool) or not isinstance(entry["time_ms"], int) or entry["time_ms"] <= 0:
        return "its time is not a positive integer of milliseconds"
    if not all(isinstance(entry[k], str) and HEX64.match(entry[k]) for k in ("applicant", "consent_digest")):
        return "the applicant and consent digests must be SHA-256 hex"
    if not isinstance(entry["consent"], str) or not HEX.match(entry["consent"]) or len(entry["consent"]) > 2048:
        return "the sealed consent must be hex"
    table = entry["partners"]
    if not isinstance(table, dict) or sorted(table) != partners:
        return "it must name every partner exactly once"
    for value in table.values():
        well_formed = (
            isinstance(value, dict) and set(value) == {"tag", "mark"}
            and isinstance(value["tag"], str) and bool(TAG.match(value["tag"]))
            and isinstance(value["mark"], str) and bool(HEX64.match(value["mark"]))
        )
        if not well_formed:
            return "each partner needs a tag and a mark, nothing else"
    return None


def objection(entry: dict, facts: ScoringFacts, genesis: dict | None, seen: ScoringSeen) -> str | None:
    """Why this member cannot sign ``entry`` on the scoring chain (None: it agrees)."""
    kind = entry.get("kind")
    if genesis is None:
        return _scoring_start(entry, facts) if kind == "scoring_start" else "the first block must start the model's scoring"
    if kind == "scoring_start":
        return "a second scoring start"
    if kind == "scoring":
        return _scoring(entry, facts, seen)
    if kind == "verification":
        return _verification(entry, facts, seen)
    if kind == "scoring_settlement":
        body = {k: v for k, v in entry.items() if k != "signatures"}
        return settlement.scoring_settlement_problem(body, genesis, seen) or settlement.signature_problem(
            entry, genesis["members"])
    return f"unknown entry kind {kind!r} on a scoring chain"


def _scoring_start(entry: dict, facts: ScoringFacts) -> str | None:
    if entry.get("job_id") != facts.job_id:
        return f"the scoring chain is for job {entry.get('job_id')!r}, not {facts.job_id!r}"
    if entry.get("training_head") != facts.training_head:
        return "the training head is not that of this member's settled training chain"
    if entry.get("members") != facts.members:
        return "the members are not those of the training chain's genesis (names, roles and keys)"
    if entry.get("fees") != facts.fees:
        return "the fee contract is not the job's"
    return None


def _scoring(entry: dict, facts: ScoringFacts, seen: ScoringSeen) -> str | None:
    problem = entry_problem(entry, facts.partners)
    if problem:
        return problem
    request = entry["request_id"]
    if request in seen.requests:
        return f"request {request} is already on the chain"
    if facts.role == "card_center":
        if facts.answered.get(request) != entry_digest(entry):
            return f"request {request} is not an entry this card center made"
        return None
    me = facts.member
    tag = entry["partners"][me]["tag"]
    if tag in seen.tags:
        return f"its request {tag} is already on the chain"
    verdict = contributed(entry, me, facts.pair_keys[me])
    if verdict is None:
        return f"its mark on request {tag} is not one the card center and {me!r} agreed"
    if verdict and facts.answered.get(tag) != entry["consent_digest"]:
        return f"request {tag} marks {me!r} as a contributor, but it never answered it with that consent"
    if not verdict and tag in facts.on_time:
        return (f"request {tag} marks {me!r} as not contributing, but its journal says it answered it before "
                f"the request's deadline ({facts.on_time[tag]} ms): that answer is billed")
    return None


def _verification(entry: dict, facts: ScoringFacts, seen: ScoringSeen) -> str | None:
    problem = verification_problem(entry)
    if problem:
        return problem
    ident = entry["verification_id"]
    if ident in seen.requests:
        return f"verification {ident} is already on the chain"
    if entry["time_ms"] > time.time_ns() // 1_000_000 + MAX_CLOCK_SKEW_MS:
        return f"verification {ident} is dated in the future"
    if facts.role == "card_center" and facts.answered.get(ident) != entry_digest(entry):
        return f"verification {ident} is not an entry this card center made"
    return None   # a partner: well formed and new is all it can know, and all it needs (see the module's doc)


def unrecorded_answer(facts: ScoringFacts, now_ms: int) -> str | None:
    """Why a partner will not settle yet: an answer it gave in time is still not on the chain, though its
    deadline passed SETTLE_GRACE_MS ago (a card center settles only after putting every entry it holds on the
    chain, so a settlement without it would leave that answer unpaid). None: every such answer is recorded."""
    if facts.role != "partner":
        return None
    overdue = sorted(tag for tag, deadline in list(facts.on_time.items()) if deadline < now_ms - SETTLE_GRACE_MS)
    if not overdue:
        return None
    more = f" (and {len(overdue) - 1} more)" if len(overdue) > 1 else ""
    return (f"refuses to sign the scoring settlement: request {overdue[0]}{more}, which {facts.member!r} answered "
            "before its deadline, is not on the chain")


def forget_recorded(entry: dict, facts: ScoringFacts) -> None:
    """An entry is on the chain: what this member kept about it until then can go (a partner notes
    an answer the chain marks as not contributing as unbilled: it was late, or it would have refused the block)."""
    if entry.get("kind") == "verification" and facts.role == "card_center":
        facts.answered.pop(entry["verification_id"], None)
    if entry.get("kind") != "scoring":
        return
    if facts.role == "card_center":
        facts.answered.pop(entry["request_id"], None)
        return
    me = facts.member
    tag = entry["partners"].get(me, {}).get("tag")
    facts.on_time.pop(tag, None)
    if facts.answered.pop(tag, None) is not None and not contributed(entry, me, facts.pair_keys[me]):
        facts.unbilled.append(tag)


class ScoringRules:
    """One member's rules for a model's scoring chain. It keeps the genesis entry and a summary
    (`seen`) only, not every entry: scoring adds one entry per request."""

    proposer_role = "card_center"

    def __init__(self, facts: ScoringFacts):
        self.facts = facts
        self.seen = ScoringSeen(dict(facts.pair_keys))
        self.genesis: dict | None = None

    def remember(self, entry: dict) -> None:
        if self.genesis is None:
            self.genesis = entry
        self.seen.add(entry)
        forget_recorded(entry, self.facts)   # on the chain now: no need to remember it

    def entries(self) -> list[dict]:
        """The genesis entry (the only one kept)."""
        return [] if self.genesis is None else [self.genesis]

    def review(self) -> SummaryReview:
        return SummaryReview(objection, self.facts, self.genesis, self.seen.copy())

    def settlement_body(self) -> dict:
        return settlement.scoring_settlement_body(self.genesis, self.seen)

    def settlement_refusal(self, body: bytes) -> str | None:
        now_ms = time.time_ns() // 1_000_000
        return settlement.scoring_refusal(body, self.genesis, self.seen) or unrecorded_answer(self.facts, now_ms)
