"""The training chain's rules: what each entry of a job's chain records, and when a member agrees to it.

A job's chain holds, in order: `job_start` (the genesis: members, keys,
roles, each partner's use of its job budget, the job's digest, the Paillier
key's fingerprint, the fee contract), one `alignment` (with the card
center's set size and a digest of its training labels), one `step` per training step (message digests and the
loss), `job_end` (each party's model digest), and the `settlement` the fee
contract implies (fedscore.ledger.settlement). The coordinator proposes every
block; each member signs only what agrees with its own first-hand record
(fedscore.ledger.entries.Facts) and the chain before it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fedscore.ledger import settlement
from fedscore.ledger.entries import Facts, step_key
from fedscore.job import Step

if TYPE_CHECKING:
    from fedscore.job import JobSpec


# -- the entries ---------------------------------------------------------------------------------

def job_start_entry(job_id: str, spec: JobSpec, members: dict[str, dict], paillier_fingerprint: str) -> dict:
    return {
        "kind": "job_start", "job_id": job_id, "job_name": spec.name, "job_digest": spec.digest(),
        "members": members, "paillier_fingerprint": paillier_fingerprint, "fees": spec.fees.to_dict(),
    }


def alignment_entry(aligned_rows: int, overlaps: dict[str, int], card_center_ids: int | None = None,
                    label_digest: str = "") -> dict:
    entry = {"kind": "alignment", "aligned_rows": aligned_rows, "overlaps": overlaps}
    if card_center_ids is not None:
        entry["card_center_ids"] = card_center_ids
    if label_digest:
        entry["label_digest"] = label_digest
    return entry


def step_entry(step: Step, rows: int, loss: float, seconds: float, digests: dict[str, str]) -> dict:
    return {
        "kind": "step", "epoch": step.epoch, "batch": step.batch, "rows": rows, "loss": loss,
        "seconds": round(seconds, 6), "digests": dict(sorted(digests.items())),
    }


def job_end_entry(model_digests: dict[str, str]) -> dict:
    return {"kind": "job_end", "models": dict(sorted(model_digests.items()))}


def last_step(entries: list[dict]) -> Step | None:
    """The last training step a chain records (None before the first): where a resumed job goes on from."""
    for entry in reversed(entries):
        if entry.get("kind") == "step":
            return Step(entry["epoch"], entry["batch"])
    return None


# -- what a member agrees to ---------------------------------------------------------------------

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


def objection(entry: dict, facts: Facts, chain: list[dict], seen: Seen) -> str | None:
    """Why this member cannot sign ``entry`` (None: it agrees). ``chain``: the entries before it, ``seen``: their summary."""
    kind = entry.get("kind")
    if chain and kind == "job_start":
        return "a second job start"
    if not chain and kind != "job_start":
        return "the first block must start the job"
    if "settlement" in seen.kinds:
        return "the job is already settled; nothing may follow its settlement"
    if kind != "settlement" and "job_end" in seen.kinds:
        return "the job has ended; only its settlement may follow"
    check = CHECKS.get(kind)
    if check is None:
        return f"unknown entry kind {kind!r}"
    return check(entry, facts, chain, seen)


def _job_start(entry: dict, facts: Facts, chain: list[dict], seen: Seen) -> str | None:
    me = facts.member
    mine = entry.get("members", {}).get(me, {})
    if mine.get("key") != facts.public_key:
        return f"the genesis entry does not list {me!r} with its own signing key"
    if facts.role and mine.get("role") != facts.role:
        return f"the genesis entry gives {me!r} the role {mine.get('role')!r}, not {facts.role!r}"
    if facts.budget is not None and mine.get("budget") != facts.budget:
        return f"the genesis entry records {me!r}'s job budget as {mine.get('budget')!r}, not {facts.budget!r}"
    if facts.members and set(entry.get("members", {})) != facts.members:
        return "the genesis entry's members are not the job's parties and its coordinator"
    if facts.job_digest and entry.get("job_digest") != facts.job_digest:
        return "the job digest is not that of the job this member received"
    if facts.paillier_fingerprint and entry.get("paillier_fingerprint") != facts.paillier_fingerprint:
        return "the Paillier key fingerprint is not that of the key this member received"
    if facts.fees is not None and entry.get("fees") != facts.fees:
        return "the fee contract is not the job's"
    return None


def _alignment(entry: dict, facts: Facts, chain: list[dict], seen: Seen) -> str | None:
    if facts.aligned_rows is not None and entry.get("aligned_rows") != facts.aligned_rows:
        return f"aligned rows {entry.get('aligned_rows')} where this member aligned {facts.aligned_rows}"
    if facts.overlaps is not None and entry.get("overlaps") != facts.overlaps:
        return "the overlaps are not those this member computed"
    if facts.card_center_ids is not None and entry.get("card_center_ids") != facts.card_center_ids:
        return (f"the card center's set is recorded as {entry.get('card_center_ids')} ids, where "
                f"{facts.card_center_ids} were sent here")
    if facts.label_digest is not None and entry.get("label_digest") != facts.label_digest:
        return "the label digest is not that of this member's training labels"
    # A partner cannot recount its overlap with the card center (PSI does not tell it); it can bound it.
    mine = entry.get("overlaps", {}).get(facts.member)
    if facts.aligned_rows is not None and facts.role == "partner" and (mine is None or mine < facts.aligned_rows):
        return "its overlap is recorded below the rows it aligned"
    return None


def _step(entry: dict, facts: Facts, chain: list[dict], seen: Seen) -> str | None:
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
    return None


def _job_end(entry: dict, facts: Facts, chain: list[dict], seen: Seen) -> str | None:
    if facts.model_digest is not None and entry.get("models", {}).get(facts.member) != facts.model_digest:
        return "the model digest is not that of this member's model file"
    if seen.steps != set(facts.digests):
        return "the steps on the chain are not the steps this member took part in"
    return None


def _settlement(entry: dict, facts: Facts, chain: list[dict], seen: Seen) -> str | None:
    body = {k: v for k, v in entry.items() if k != "signatures"}
    if body != settlement.settlement_body(chain):
        return "the settlement does not follow from the fee contract and the recorded steps and overlaps"
    return settlement.signature_problem(entry, chain[0]["members"])


CHECKS = {"job_start": _job_start, "alignment": _alignment, "step": _step, "job_end": _job_end,
          "settlement": _settlement}


@dataclass
class TrainingReview:
    """A proposed block's entries, checked one by one against the chain and the block's entries before them."""

    facts: Facts
    chain: list[dict]
    seen: Seen
    copied: bool = False   # the replica's own list stays as committed: copied once, for a block of several

    def objection(self, entry: dict) -> str | None:
        return objection(entry, self.facts, self.chain, self.seen)

    def add(self, entry: dict) -> None:
        if not self.copied:
            self.chain, self.copied = list(self.chain), True
        self.chain.append(entry)
        self.seen.add(entry)


class TrainingRules:
    """One member's rules for a job's chain: it keeps every entry, and its first-hand `facts`."""

    proposer_role = "coordinator"

    def __init__(self, facts: Facts):
        self.facts = facts
        self.seen = Seen()
        self._entries: list[dict] = []

    def remember(self, entry: dict) -> None:
        self._entries.append(entry)
        self.seen.add(entry)

    def entries(self) -> list[dict]:
        return list(self._entries)

    def review(self) -> TrainingReview:
        return TrainingReview(self.facts, self._entries, self.seen.copy())

    def settlement_body(self) -> dict:
        return settlement.settlement_body(self._entries)

    def settlement_refusal(self, body: bytes) -> str | None:
        return settlement.training_refusal(body, self._entries)

    def forget_steps_off_chain(self) -> None:
        """Drop what this member recorded of steps the chain does not hold (they will be done again), and
        mark the chain's steps as taken part in (a restarted member vouched for them before it died)."""
        on_chain = self.seen.steps
        for key in set(self.facts.digests) - on_chain:
            del self.facts.digests[key]
        for key in set(self.facts.losses) - on_chain:
            del self.facts.losses[key]
        for key in on_chain:
            self.facts.digests.setdefault(key, {})
