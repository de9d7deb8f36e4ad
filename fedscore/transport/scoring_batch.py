"""Scoring answers and batches on the wire: a ScoreBatchRequest read into applicants, each refused on its
own when malformed, and answers (or each applicant's error) into replies."""
from __future__ import annotations

from collections.abc import Sequence

from fedscore.errors import DataError, FedscoreError
from fedscore.proto import fedscore_pb2 as pb
from fedscore.protocol.scoring.card_center import Applicant, Scored
from fedscore.transport.codec import request_features


def score_reply(job_id: str, scored: Scored) -> pb.ScoreReply:
    result = scored.answer
    return pb.ScoreReply(
        request_id=scored.request_id, probability=result.probability, score=result.score,
        decision=result.decision, credit_limit=result.credit_limit, reasons=list(result.reasons),
        partners_missing=list(result.partners_missing), job_id=job_id,
    )


def batch_applicants(request: pb.ScoreBatchRequest) -> list[Applicant | FedscoreError]:
    """Each applicant of the batch, or why it cannot be read (that applicant alone is refused). An applicant
    naming another model than the batch refuses the whole batch: one batch is scored with one model."""
    others = sorted({item.job_id for item in request.applicants if item.job_id and item.job_id != request.job_id})
    if others:
        raise DataError(f"every applicant of a batch is scored with the batch's model {request.job_id or '(the open one)'!r}; "
                        f"an applicant names {others[0]!r} (leave an applicant's job_id empty)")
    applicants: list[Applicant | FedscoreError] = []
    for position, item in enumerate(request.applicants):
        try:
            applicants.append(Applicant(item.applicant_id, request_features(item), item.consent))
        except DataError as error:
            applicants.append(DataError(f"applicant {position + 1} of the batch: {error}"))
    return applicants


def batch_reply(job_id: str, results: Sequence[Scored | FedscoreError]) -> pb.ScoreBatchReply:
    return pb.ScoreBatchReply(job_id=job_id, results=[
        pb.ScoreBatchResult(error=str(result), error_class=type(result).__name__) if isinstance(result, FedscoreError)
        else pb.ScoreBatchResult(answer=score_reply(job_id, result))
        for result in results
    ])
