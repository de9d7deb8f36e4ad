"""Private entity alignment: which applicants every party holds, and in what order.

The card center C runs ECDH-PSI with each partner P (fedscore.crypto.psi):

1. P sends X25519(b, H(y)) for its ids, in an order it shuffled at random.
2. C sends X25519(a, H(x)) for its ids, in its own shuffled order; P returns
   each re-blinded as X25519(b, ·) in the same order.
3. C re-blinds P's list with a; equal doubly-blinded values are the same id.

C intersects the matches of all partners and tells each partner only the
positions, in P's own shuffled list, of the rows held by every party. Each
party then orders those rows by its own normalised id, so all agree on one
order (the same ids sort the same way everywhere) without sending any id,
and a job gives the same model whatever the PSI secrets were. No id, and no
hash of an id that anyone without a party's secret could recompute, crosses
the wire.

Revealed: C learns, for each partner, which of its own applicants that
partner holds, and how many ids the partner has; a partner learns how many
ids C has and which of its own rows are in the final aligned set (held by
every party). Nobody learns anything about ids outside the intersection.

C chooses the set it sends: padded with guessed ids, it would learn which
guesses are the partner's customers. A partner re-blinds at most
``max_set_ratio`` times its own count of ids, and the count C sent goes on
the chain.
"""
from __future__ import annotations

import secrets
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from fedscore.crypto import psi
from fedscore.crypto.pool import CryptoPool
from fedscore.errors import ConfigError, DataError, ProtocolError
from fedscore.model.data import PartyTable
from fedscore.protocol.ports import PartnerPsiHandle
from fedscore.protocol.training.fanout import call_each


def psi_domain(job_id: str) -> bytes:
    """Hash-to-curve domain: ids hash differently in every job."""
    return b"fedscore/psi/v1/" + job_id.encode("utf-8") + b"/"


class PsiParty:
    """One party's side: its secret scalar and its ids in a private random order."""

    def __init__(self, party: str, table: PartyTable, job_id: str, pool: CryptoPool):
        self.party = party
        self.table = table
        self.pool = pool
        self.domain = psi_domain(job_id)
        self._secret = psi.new_secret()
        # position i of what this party sends is table row self.order[i]
        self.order = np.random.default_rng(secrets.randbits(128)).permutation(table.rows)

    def blinded_ids(self) -> bytes:
        """X25519(k, H(id)) for every row, in this party's shuffled order, packed."""
        return self.pool.hash_and_blind(self._secret, self.domain, self.table.ids[self.order].tolist())

    def reblind(self, points: bytes) -> bytes:
        """X25519(k, P) for each point another party sent, in its order."""
        return self.pool.blind(self._secret, points)


class PartnerAlignment(PsiParty):
    """A partner's side: answers the card center and learns only its aligned rows.

    It answers once per job: a second request for its blinded ids or a second
    re-blinding would let a caller test guessed ids against its customers.
    """

    rows: np.ndarray | None = None
    card_center_ids: int | None = None     # how many ids the card center sent to re-blind
    max_set_ratio: float | None = None     # None: any number (a daemon sets its party's policy)
    _answered: frozenset[str] = frozenset()

    def _once(self, what: str) -> None:
        if what in self._answered:
            raise ProtocolError(f"{self.party}: {what} was already answered in this job")
        self._answered = self._answered | {what}

    def blinded_ids(self) -> bytes:
        self._once("blinded ids")
        return super().blinded_ids()

    def reblind(self, points: bytes) -> bytes:
        self._once("re-blinding")
        count = len(points) // psi.POINT_BYTES
        if self.max_set_ratio is not None and count > self.max_set_ratio * self.table.rows:
            raise ConfigError(
                f"{self.party}: the card center sent {count} ids to intersect with this party's {self.table.rows}, "
                f"more than max_set_ratio = {self.max_set_ratio:g} times as many (at most "
                f"{int(self.max_set_ratio * self.table.rows)}): a larger set could test guessed ids against this "
                f"party's customers. Raise max_set_ratio in [party] to take it"
            )
        self.card_center_ids = count
        return super().reblind(points)

    def accept(self, positions: np.ndarray) -> np.ndarray:
        """Table rows to train on, in id order, from positions in the list this party sent."""
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= self.table.rows):
            raise ProtocolError(f"{self.party}: aligned positions out of range")
        if len(np.unique(positions)) != len(positions):
            raise ProtocolError(f"{self.party}: aligned positions repeat")
        self.rows = np.sort(self.order[positions])  # the table is sorted by id: row order is id order
        return self.rows


@dataclass
class Alignment:
    rows: np.ndarray                          # the card center's table rows, in id order
    overlaps: dict[str, int] = field(default_factory=dict)  # |C ∩ P| per partner
    card_center_ids: int = 0                  # ids the card center sent each partner

    @property
    def aligned_rows(self) -> int:
        return len(self.rows)


class CardCenterAlignment(PsiParty):
    """The card center's side: runs PSI with every partner and fixes the training rows."""

    def match(self, partner: PartnerPsiHandle, mine: Future) -> np.ndarray:
        """For each position in my list, the partner's position of the same id, or -1.

        The partner re-blinds my list while I re-blind its list: both sides work at once.
        """
        theirs = partner.blinded_ids()
        with ThreadPoolExecutor(max_workers=1) as helper:
            mine_double_call = helper.submit(partner.reblind, mine.result())
            theirs_double = np.frombuffer(self.reblind(theirs), dtype=f"S{psi.POINT_BYTES}")
            mine_double = np.frombuffer(mine_double_call.result(), dtype=f"S{psi.POINT_BYTES}")
        if len(mine_double) != self.table.rows:
            raise ProtocolError(f"partner re-blinded {len(mine_double)} ids, {self.table.rows} were sent")
        if len(np.unique(mine_double)) != len(mine_double) or len(np.unique(theirs_double)) != len(theirs_double):
            raise ProtocolError("a blinded id repeats: the partner's answer is not a set of distinct ids")
        _, at_mine, at_theirs = np.intersect1d(mine_double, theirs_double, assume_unique=True, return_indices=True)
        positions = np.full(self.table.rows, -1, dtype=np.int64)
        positions[at_mine] = at_theirs
        return positions

    def align(self, partners: Mapping[str, PartnerPsiHandle], min_overlap: int) -> Alignment:
        with ThreadPoolExecutor(max_workers=1) as helper:
            mine = helper.submit(self.blinded_ids)  # while the partners blind theirs
            matches = call_each(partners, lambda name, p: self.match(p, mine), "partner")
        overlaps = {name: int(np.count_nonzero(found >= 0)) for name, found in matches.items()}
        for name, count in overlaps.items():
            if count < min_overlap:
                raise DataError(
                    f"{self.party!r} and partner {name!r} share {count} applicants, fewer than the job's "
                    f"min_overlap of {min_overlap}: too small an overlap reveals too much to train on"
                )
        held_by_all = np.logical_and.reduce([found >= 0 for found in matches.values()])
        shared = np.flatnonzero(held_by_all)   # positions in my list
        if len(shared) < min_overlap:
            raise DataError(
                f"only {len(shared)} applicants are held by every party, fewer than the job's min_overlap of {min_overlap}"
            )
        call_each(partners, lambda name, p: p.accept(np.sort(matches[name][shared])), "partner")
        return Alignment(rows=np.sort(self.order[shared]), overlaps=overlaps, card_center_ids=self.table.rows)
