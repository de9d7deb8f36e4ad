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

Neither party holds a whole list in memory: ids are blinded ``chunk_rows`` at
a time and stream as they are ready, and the card center spills the doubly
blinded values to sorted runs on disk and intersects them by a merge
(fedscore.protocol.spill), so its memory does not grow with a partner's list.
"""
from __future__ import annotations

import queue
import secrets
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedscore.crypto import psi
from fedscore.crypto.pool import CryptoPool
from fedscore.errors import ConfigError, DataError, ProtocolError
from fedscore.model.data import PartyTable
from fedscore.protocol.ports import PartnerPsiHandle
from fedscore.protocol.spill import (
    DEFAULT_RUN_ROWS, MINE, THEIRS, GrowingFile, RunWriter, SpillFolder, intersect_runs,
)
from fedscore.protocol.training.fanout import call_each

DEFAULT_CHUNK_ROWS = 1 << 18   # ids blinded per call of the pool: 8 MiB of points, a few seconds of work


def psi_domain(job_id: str) -> bytes:
    """Hash-to-curve domain: ids hash differently in every job."""
    return b"fedscore/psi/v1/" + job_id.encode("utf-8") + b"/"


def read_ahead(chunks: Iterable[bytes], depth: int = 2) -> Iterator[bytes]:
    """``chunks``, produced up to ``depth`` ahead in a thread of their own: whoever makes them (this party's
    blinding, a peer's stream) goes on while the reader works on the last. Memory: ``depth`` chunks."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    finished, abandoned = object(), threading.Event()

    def hand_over(item: object) -> bool:
        while not abandoned.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = iter(chunks)
        try:
            for chunk in source:
                if not hand_over(chunk):
                    return
            hand_over(finished)
        except BaseException as error:   # the reader raises it
            hand_over(error)
        finally:
            getattr(source, "close", lambda: None)()

    threading.Thread(target=produce, name="psi-read-ahead", daemon=True).start()
    try:
        while (item := slots.get()) is not finished:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        abandoned.set()


class PsiParty:
    """One party's side: its secret scalar and its ids in a private random order."""

    chunk_rows: int = DEFAULT_CHUNK_ROWS

    def __init__(self, party: str, table: PartyTable, job_id: str, pool: CryptoPool):
        self.party = party
        self.table = table
        self.pool = pool
        self.domain = psi_domain(job_id)
        self._secret = psi.new_secret()
        # position i of what this party sends is table row self.order[i]
        self.order = np.random.default_rng(secrets.randbits(128)).permutation(table.rows)

    def blinded_chunks(self, stop: threading.Event | None = None) -> Iterator[bytes]:
        """X25519(k, H(id)) for every row, in this party's shuffled order, packed, ``chunk_rows`` ids at a time."""
        for start in range(0, self.table.rows, self.chunk_rows):
            if stop is not None and stop.is_set():
                return
            rows = self.order[start : start + self.chunk_rows]
            yield self.pool.hash_and_blind(self._secret, self.domain, self.table.ids[rows].tolist())

    def reblind_chunk(self, points: bytes) -> bytes:
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

    def blinded_ids(self) -> Iterator[bytes]:
        """This party's blinded ids, chunk by chunk as they are ready (once a job)."""
        self._once("blinded ids")
        return read_ahead(self.blinded_chunks())   # the next chunks are blinded while one is on the wire

    def reblind(self, points: bytes | Iterable[bytes], count: int | None = None) -> Iterator[bytes]:
        """The card center's ``count`` points re-blinded, chunk by chunk as they arrive (once a job); the count
        is checked against ``max_set_ratio`` before any point is re-blinded."""
        self._once("re-blinding")
        if isinstance(points, bytes):
            points, count = [points], len(points) // psi.POINT_BYTES
        if count is None:
            raise ValueError("reblind needs the count of a stream of points")
        if self.max_set_ratio is not None and count > self.max_set_ratio * self.table.rows:
            raise ConfigError(
                f"{self.party}: the card center sent {count} ids to intersect with this party's {self.table.rows}, "
                f"more than max_set_ratio = {self.max_set_ratio:g} times as many (at most "
                f"{int(self.max_set_ratio * self.table.rows)}): a larger set could test guessed ids against this "
                f"party's customers. Raise max_set_ratio in [party] to take it"
            )
        self.card_center_ids = count
        return self._reblinded(points, count)

    def _reblinded(self, points: Iterable[bytes], count: int) -> Iterator[bytes]:
        done = 0
        for chunk in points:    # each piece as it comes: the card center sends more once answered
            done += len(chunk) // psi.POINT_BYTES
            if done > count:
                raise ProtocolError(f"{self.party}: the card center sent more than the {count} ids it announced")
            yield self.reblind_chunk(chunk)
        if done != count:
            raise ProtocolError(f"{self.party}: the card center sent {done} of the {count} ids it announced")

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
    """The card center's side: runs PSI with every partner and fixes the training rows.

    The doubly-blinded lists go to sorted runs of ``run_rows`` values in a temporary folder under
    ``spill_parent`` (a daemon: the job's folder; None: the system's temporary folder), removed afterwards.
    """

    spill_parent: Path | None = None
    run_rows: int = DEFAULT_RUN_ROWS

    def match(self, partner: PartnerPsiHandle, mine: GrowingFile, folder: Path, stop: threading.Event) -> np.ndarray:
        """For each position in my list, the partner's position of the same id, or -1.

        The partner's blinded list goes to disk as it arrives and I re-blind it from there, while the partner
        re-blinds my list: both sides work at once, and both doubly-blinded lists go to sorted runs in
        ``folder``.
        """
        theirs = GrowingFile(folder / "theirs.bin")
        mine_runs, theirs_runs = RunWriter(folder, MINE, self.run_rows), RunWriter(folder, THEIRS, self.run_rows)
        with ThreadPoolExecutor(max_workers=2) as helpers:
            received = helpers.submit(theirs.fill_from, partner.blinded_ids(), stop)
            asked = helpers.submit(self._partner_reblinds, partner, mine, mine_runs, stop)
            try:
                for chunk in theirs.chunks(self.chunk_rows, stop):
                    theirs_runs.add(self.reblind_chunk(chunk))
                asked.result()      # what went wrong re-blinding my list, if anything (it stops the rest)
                received.result()
            except BaseException:
                stop.set()
                raise
        if stop.is_set():
            raise ProtocolError("the alignment stopped: another partner's failed")
        if mine_runs.count != self.table.rows:
            raise ProtocolError(f"partner re-blinded {mine_runs.count} ids, {self.table.rows} were sent")
        return intersect_runs(mine_runs.close() + theirs_runs.close(), folder, self.table.rows, self.run_rows)

    def _partner_reblinds(
        self, partner: PartnerPsiHandle, mine: GrowingFile, runs: RunWriter, stop: threading.Event
    ) -> None:
        """My list to the partner once it is blinded (a partner's daemon ends a request stream that pauses
        longer than its idle limit; gRPC's flow control bounds what the partner holds), and its re-blinded
        answer into sorted runs."""
        if not mine.wait(stop):
            return
        try:
            for chunk in partner.reblind(mine.chunks(self.chunk_rows, stop), self.table.rows):
                if stop.is_set():
                    return
                runs.add(chunk)
                if runs.count > self.table.rows:
                    raise ProtocolError(f"partner re-blinded more ids than the {self.table.rows} that were sent")
        except BaseException:
            stop.set()      # a refusal (say, of the set's size) ends the rest of the alignment at once
            raise

    def align(self, partners: Mapping[str, PartnerPsiHandle], min_overlap: int) -> Alignment:
        stop = threading.Event()
        with SpillFolder(self.spill_parent) as folder:
            mine = GrowingFile(folder / "mine.bin")     # read back for each partner
            with ThreadPoolExecutor(max_workers=1) as helper:
                blinding = helper.submit(mine.fill_from, self.blinded_chunks(stop), stop)
                try:
                    matches = call_each(
                        partners, lambda name, p: self.match(p, mine, Path(tempfile.mkdtemp(dir=folder)), stop),
                        "partner",
                    )
                    blinding.result()
                except BaseException:
                    stop.set()
                    raise
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
