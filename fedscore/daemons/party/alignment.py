"""A party's side of a job's alignment: the card center intersects its ids with each partner's (private
set intersection, fedscore.protocol.alignment) when the coordinator asks; a partner answers it."""
from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from pathlib import Path

import grpc
import numpy as np

from fedscore.crypto import psi
from fedscore.daemons.party.jobs import Jobs, PreparedJob, require_card_center
from fedscore.errors import ProtocolError
from fedscore.files import write_atomically
from fedscore.model.rows import split_rows
from fedscore.proto import fedscore_pb2 as pb
from fedscore.protocol.alignment import CardCenterAlignment, PartnerAlignment, PsiParty
from fedscore.protocol.budget import label_digest, rows_digest
from fedscore.transport import codec


ALIGNED_IDS_FILE = "aligned-ids.txt"   # a partner's own users it aligned with the card center, kept at home


def keep_aligned_ids(folder: Path, ids: np.ndarray) -> None:
    """A partner keeps which of its own users it shares with the card center in this job (it learnt so from
    private set intersection), owner-only: an audience query can then leave them out (fedscore.protocol.audience:
    ``unseen_only``). Nothing of it leaves the party."""
    write_atomically(folder / ALIGNED_IDS_FILE, "".join(f"{i}\n" for i in ids.tolist()))


def aligned_ids(folder: Path) -> set[str] | None:
    """The ids ``keep_aligned_ids`` kept (None: none kept)."""
    path = folder / ALIGNED_IDS_FILE
    return set(path.read_text().split("\n")) - {""} if path.is_file() else None


class Alignment:
    """The Alignment service's steps on the jobs of ``jobs``."""

    def __init__(self, jobs: Jobs):
        self.jobs = jobs
        self.label = jobs.label

    def _open(self, job: PreparedJob, kind: type) -> PsiParty:
        """The job's alignment, while it is of ``kind`` and not done yet."""
        if not isinstance(job.alignment, kind) or job.aligned_rows is not None:
            raise ProtocolError(f"{self.label}: no alignment of this kind is open in job {job.job_id!r}")
        return job.alignment

    # -- coordinator -> card center -------------------------------------------------

    def align(self, request: pb.AlignRequest) -> pb.AlignReply:
        job = self.jobs.get(request.job_id)
        handles = {name: client.alignment for name, client in job.partners.items()}
        aligner = self._open(job, CardCenterAlignment)
        aligner.spill_parent = self.jobs.job_dir(job.job_id)   # the sorted runs of the intersection, removed after
        result = aligner.align(handles, int(request.min_overlap))
        job.aligned_rows = result.rows
        facts = job.ledger.rules.facts
        facts.aligned_rows, facts.overlaps = result.aligned_rows, dict(result.overlaps)
        facts.card_center_ids = result.card_center_ids
        # the labels this job trains on, as a digest on the chain: partners see the same rows trained on other labels
        train_rows, _ = split_rows(result.aligned_rows, job.spec.validation, job.spec.seed)
        facts.label_digest = label_digest(job.table.labels[result.rows][train_rows])
        return pb.AlignReply(
            aligned_rows=result.aligned_rows,
            overlaps=[pb.Overlap(party=name, rows=count) for name, count in result.overlaps.items()],
            label_digest=facts.label_digest, card_center_ids=result.card_center_ids,
        )

    # -- card center -> partner -----------------------------------------------------

    def _partner_side(self, job_id: str, context: grpc.ServicerContext) -> tuple[PreparedJob, PsiParty]:
        job = self.jobs.get(job_id)
        require_card_center(context, job, self.label)
        return job, self._open(job, PartnerAlignment)

    def blinded_ids(self, request: pb.JobRef, context: grpc.ServicerContext) -> Iterator[pb.FixedBlock]:
        """This partner's blinded ids, each block sent as soon as its chunk is blinded."""
        _, aligner = self._partner_side(request.job_id, context)
        yield from codec.stream_fixed_blocks(aligner.blinded_ids(), psi.POINT_BYTES, aligner.table.rows, request.job_id)

    def reblind(self, requests, context: grpc.ServicerContext) -> Iterator[pb.FixedBlock]:
        """The card center's points re-blinded chunk by chunk while they still arrive."""
        first = next(requests, None)
        if first is None:
            raise ProtocolError(f"{self.label}: empty re-blinding stream")
        job, aligner = self._partner_side(first.job_id, context)
        count, points = codec.read_fixed_blocks(chain([first], requests), psi.POINT_BYTES)
        reblinded = aligner.reblind(points, count)   # refuses a card center's set too large for this party's policy
        job.ledger.rules.facts.card_center_ids = aligner.card_center_ids
        yield from codec.stream_fixed_blocks(reblinded, psi.POINT_BYTES, count, first.job_id)

    def accept(self, request: pb.FixedBlock, context: grpc.ServicerContext) -> pb.Empty:
        job, aligner = self._partner_side(request.job_id, context)
        positions = codec.words(codec.join_fixed_blocks([request], 8)).astype(np.int64)
        job.aligned_rows = aligner.accept(positions)
        job.ledger.rules.facts.aligned_rows = len(job.aligned_rows)
        keep_aligned_ids(self.jobs.job_dir(job.job_id), job.table.ids[job.aligned_rows])
        self.jobs.budget.note(job.job_id, rows_digest=rows_digest(job.table.ids[job.aligned_rows]))
        return pb.Empty()
