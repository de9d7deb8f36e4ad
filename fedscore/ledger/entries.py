"""What a member of a job's training records first-hand, to check the training chain's entries against.

A member signs a block only if every entry agrees with its own first-hand
record (its `Facts`): its key and the job in the genesis entry, the digests
of the messages it sent and received in each step, the loss the coordinator
decrypted, its own model file's digest. What it cannot know (messages
between two other members) it leaves to those members, who check them in
turn. The rules themselves are in fedscore.ledger.training_rules.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


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
    budget: dict | None = None                        # a partner's use of its job budget (fedscore.protocol.budget)
    aligned_rows: int | None = None
    overlaps: dict[str, int] | None = None
    card_center_ids: int | None = None                # ids the card center sent a partner in alignment
    label_digest: str | None = None                   # the card center's: of its labels over the training rows
    digests: dict[str, dict[str, str]] = field(default_factory=dict)   # step key -> message -> hex
    losses: dict[str, float] = field(default_factory=dict)
    model_digest: str | None = None

    def record(self, epoch: int, batch: int, message: str, data: bytes) -> None:
        self.digests.setdefault(step_key(epoch, batch), {})[message] = digest(data)
