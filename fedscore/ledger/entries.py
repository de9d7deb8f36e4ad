"""What each entry records, and how a member checks it against what it saw itself.

A member signs a block only if every entry agrees with its own first-hand
record (its `Facts`): its key and the job in the genesis entry, the digests
of the messages it sent and received in each step, the loss the coordinator
decrypted, its own model file's digest, and a settlement it recomputes from
its own replica. What it cannot know (messages between two other members) it
leaves to those members, who check them in turn.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from nacl.signing import VerifyKey

from fedscore.ledger.settlement import settlement_body, settlement_message


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def step_key(epoch: int, batch: int) -> str:
    return f"{epoch}/{batch}"


@dataclass
class Facts:
    """What one member knows first-hand about one job."""

    member: str
    public_key: str                                   # hex
    role: str = ""
    members: frozenset[str] = frozenset()            # every member of the job, the coordinator included
    job_digest: str = ""
    paillier_fingerprint: str = ""
    fees: dict | None = None
    aligned_rows: int | None = None
    overlaps: dict[str, int] | None = None
    digests: dict[str, dict[str, str]] = field(default_factory=dict)   # step key -> message -> hex
    losses: dict[str, float] = field(default_factory=dict)
    model_digest: str | None = None

    def record(self, epoch: int, batch: int, message: str, data: bytes) -> None:
        self.digests.setdefault(step_key(epoch, batch), {})[message] = digest(data)


@dataclass
class Seen:
    """What the chain so far holds, kept up to date entry by entry (so checks stay O(1) per entry)."""

    kinds: set[str] = field(default_factory=set)
    steps: set[str] = field(default_factory=set)

    def add(self, entry: dict) -> None:
        self.kinds.add(entry.get("kind"))
        if entry.get("kind") == "step":
            self.steps.add(step_key(entry.get("epoch"), entry.get("batch")))

    def copy(self) -> "Seen":
        return Seen(set(self.kinds), set(self.steps))


def audit(entry: dict, facts: Facts, chain: list[dict], seen: Seen) -> str | None:
    """Why this member cannot sign ``entry`` (None: it agrees). ``chain``: the entries before it, ``seen``: their summary."""
    kind = entry.get("kind")
    me = facts.member
    if chain and kind == "job_start":
        return "a second job start"
    if not chain and kind != "job_start":
        return "the first block must start the job"
    if "settlement" in seen.kinds:
        return "the job is already settled; nothing may follow its settlement"
    if kind != "settlement" and "job_end" in seen.kinds:
        return "the job has ended; only its settlement may follow"
    if kind == "job_start":
        mine = entry.get("members", {}).get(me, {})
        if mine.get("key") != facts.public_key:
            return f"the genesis entry does not list {me!r} with its own signing key"
        if facts.role and mine.get("role") != facts.role:
            return f"the genesis entry gives {me!r} the role {mine.get('role')!r}, not {facts.role!r}"
        if facts.members and set(entry.get("members", {})) != facts.members:
            return "the genesis entry's members are not the job's parties and its coordinator"
        if facts.job_digest and entry.get("job_digest") != facts.job_digest:
            return "the job digest is not that of the job this member received"
        if facts.paillier_fingerprint and entry.get("paillier_fingerprint") != facts.paillier_fingerprint:
            return "the Paillier key fingerprint is not that of the key this member received"
        if facts.fees is not None and entry.get("fees") != facts.fees:
            return "the fee contract is not the job's"
    elif kind == "alignment":
        if facts.aligned_rows is not None and entry.get("aligned_rows") != facts.aligned_rows:
            return f"aligned rows {entry.get('aligned_rows')} where this member aligned {facts.aligned_rows}"
        if facts.overlaps is not None and entry.get("overlaps") != facts.overlaps:
            return "the overlaps are not those this member computed"
        # A partner cannot recount its overlap with the card center (PSI does not tell it); it can bound it.
        mine = entry.get("overlaps", {}).get(me)
        if facts.aligned_rows is not None and facts.role == "partner" and (mine is None or mine < facts.aligned_rows):
            return "its overlap is recorded below the rows it aligned"
    elif kind == "step":
        key = step_key(entry.get("epoch", -1), entry.get("batch", -1))
        if key not in facts.digests:
            return f"step {key} never happened here"
        if key in seen.steps:
            return f"step {key} is already on the chain"
        recorded = entry.get("digests", {})
        for message, value in sorted(facts.digests.get(key, {}).items()):
            if recorded.get(message) != value:
                return f"digest of {message} in step {key} differs from what this member sent or received"
        if key in facts.losses and entry.get("loss") != facts.losses[key]:
            return f"loss of step {key} is not the one decrypted"
    elif kind == "job_end":
        if facts.model_digest is not None and entry.get("models", {}).get(me) != facts.model_digest:
            return "the model digest is not that of this member's model file"
        if seen.steps != set(facts.digests):
            return "the steps on the chain are not the steps this member took part in"
    elif kind == "settlement":
        body = {k: v for k, v in entry.items() if k != "signatures"}
        if body != settlement_body(chain):
            return "the settlement does not follow from the fee contract and the recorded steps and overlaps"
        members = chain[0]["members"]
        signers = [body["payer"], *(line["payee"] for line in body["lines"])]
        for signer in signers:
            try:
                VerifyKey(bytes.fromhex(members[signer]["key"])).verify(
                    settlement_message(body), bytes.fromhex(entry.get("signatures", {}).get(signer, ""))
                )
            except Exception:
                return f"the settlement lacks a valid signature from {signer!r}"
    else:
        return f"unknown entry kind {kind!r}"
    return None
