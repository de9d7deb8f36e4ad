"""The Scoring service's calls on top of ScoringHost (fedscore.daemons.party.scoring): who may make each,
and the reply. The card center's approval system calls its own daemon with the card center's identity;
a partner answers only the card center its model was trained with."""
from __future__ import annotations

import json

import grpc

from fedscore.daemons.access import require
from fedscore.daemons.party.scoring import ScoringHost
from fedscore.errors import ConsentError, DataError, ProtocolError
from fedscore.proto import fedscore_pb2 as pb
from fedscore.transport import codec

MAX_PARTIAL_SCORES = 1024


class ScoringCalls:
    """Opening, scoring with, settling and closing the models ``scoring`` serves."""

    def __init__(self, scoring: ScoringHost, name: str):
        self.scoring = scoring
        self.name = name
        self.label = f"party {name!r}"

    def open(self, request: pb.OpenScoringRequest, context: grpc.ServicerContext) -> pb.OpenScoringReply:
        spec = codec.spec_from_proto(request.job)
        # the card center's own approval system; at a partner, the card center the model was trained with, from
        # this party's own records, not the request's
        opener = self.name if spec.party(self.name).is_card_center else self.scoring.trained_card_center(request.job_id)
        require(context, opener, f"{self.label}: opening a model for scoring")
        served, features, basis = self.scoring.open(request.job_id, spec, request.settings_json, request.pair_key)
        return pb.OpenScoringReply(
            job_id=served.job_id, features=features, limit_basis=basis, blocks=served.member.height,
            ledger_path=str(served.member.path),
        )

    def score(self, request: pb.ScoreRequest, context: grpc.ServicerContext) -> pb.ScoreReply:
        require(context, self.name, f"{self.label}: scoring")   # the card center's own approval system
        job_id, scored = self.scoring.score(request.job_id, request.applicant_id, dict(request.features), request.consent)
        result = scored.answer
        return pb.ScoreReply(
            request_id=scored.request_id, probability=result.probability, score=result.score,
            decision=result.decision, credit_limit=result.credit_limit, reasons=list(result.reasons),
            partners_missing=list(result.partners_missing), job_id=job_id,
        )

    def partial_score(self, request: pb.PartialScoreRequest, context: grpc.ServicerContext) -> pb.PartialScoreReply:
        if len(request.items) > MAX_PARTIAL_SCORES:
            raise ProtocolError(f"{self.label}: at most {MAX_PARTIAL_SCORES} partial scores per call")
        require(context, self.scoring.card_center_of(request.job_id), f"{self.label}: partial scores")
        return pb.PartialScoreReply(results=[self._partial_score(request.job_id, item) for item in request.items])

    def _partial_score(self, job_id: str, item: pb.PartialScoreItem) -> pb.PartialScoreResult:
        try:
            value = self.scoring.partial_score(job_id, item.tag, item.applicant, item.consent, item.deadline_ms)
        except (ConsentError, DataError) as error:   # this applicant only; the others in the call go on
            return pb.PartialScoreResult(refused=str(error))
        return pb.PartialScoreResult(known=value is not None, partial_score=value or 0.0)

    def settle(self, request: pb.JobRef, context: grpc.ServicerContext) -> pb.SettleScoringReply:
        require(context, self.name, f"{self.label}: settling scoring fees")
        settlement = self.scoring.settle(request.job_id)
        member = self.scoring.ledger(request.job_id)
        return pb.SettleScoringReply(
            settlement_json=json.dumps(settlement), blocks=member.height, head=member.head.hash().hex()
        )

    def close(self, request: pb.JobRef, context: grpc.ServicerContext) -> pb.Empty:
        try:
            owner = self.scoring.card_center_of(request.job_id)
        except ProtocolError:
            return pb.Empty()   # not open here: nothing to close
        require(context, owner, f"{self.label}: closing a model")
        self.scoring.close(request.job_id)
        return pb.Empty()
