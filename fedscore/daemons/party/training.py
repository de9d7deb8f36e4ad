"""A party's training steps: the coordinator's calls at every party, and the card center's calls at a
partner. The role table already admitted the caller's role; a card center's call is checked to come from
THIS job's card center, every step's content is checked, then handed to the job's session
(fedscore.protocol.training.card_center / partner)."""
from __future__ import annotations

import json
from itertools import chain

import grpc

from fedscore.daemons.party.jobs import Jobs, require_card_center
from fedscore.errors import ProtocolError
from fedscore.proto import fedscore_pb2 as pb
from fedscore.protocol.training.card_center import CardCenterSession
from fedscore.protocol.training.partner import PartnerSession
from fedscore.transport import codec


class Training:
    """The Training service's steps on the jobs of ``jobs``."""

    def __init__(self, jobs: Jobs):
        self.jobs = jobs
        self.label = jobs.label

    # -- coordinator -> every party ---------------------------------------------

    def masked_gradient(self, request: pb.StepRef) -> pb.IntegerBlock:
        session = self.jobs.session(self.jobs.get(request.job_id))
        values = session.masked_gradient(codec.step_from_proto(request))
        return codec.single_block(values, session.public_key.ciphertext_bytes, request)

    def apply_gradient(self, request: pb.MaskedGradientValues) -> pb.Empty:
        job = self.jobs.get(request.step.job_id)
        session = self.jobs.session(job)
        _, values = codec.join_integer_blocks([request.values], session.public_key.plaintext_bytes)
        codec.check_residues(values, session.public_key)
        session.apply_gradient(codec.step_from_proto(request.step), [int(v) for v in values])
        self.jobs.checkpoint(job)
        return pb.Empty()

    # -- coordinator -> card center ----------------------------------------------

    def masked_bin_sums(self, request: pb.JobRef) -> pb.MaskedBinSumsReply:
        session = self.jobs.session(self.jobs.get(request.job_id), CardCenterSession)
        width = session.public_key.ciphertext_bytes
        return pb.MaskedBinSumsReply(sums=[
            pb.PartyIntegers(party=name, values=codec.single_block(values, width))
            for name, values in session.masked_bin_sums().items()
        ])

    def apply_bin_sums(self, request: pb.BinSumValues) -> pb.ColumnCounts:
        job = self.jobs.get(request.job_id)
        session = self.jobs.session(job, CardCenterSession)
        values: dict[str, list[int]] = {}
        for item in request.values:
            if item.party in values:
                raise ProtocolError(f"{self.label}: bin sum values for partner {item.party!r} twice")
            _, party_values = codec.join_integer_blocks([item.values], session.public_key.plaintext_bytes)
            codec.check_residues(party_values, session.public_key)
            values[item.party] = [int(v) for v in party_values]
        columns = session.apply_bin_sums(values)
        self.jobs.checkpoint(job)
        return pb.ColumnCounts(columns=columns)

    def forward_step(self, request: pb.StepRef) -> pb.Empty:
        self.jobs.session(self.jobs.get(request.job_id), CardCenterSession).forward_step(codec.step_from_proto(request))
        return pb.Empty()

    def loss_share(self, request: pb.StepRef) -> pb.LossShareReply:
        session = self.jobs.session(self.jobs.get(request.job_id), CardCenterSession)
        value, digests = session.loss_share(codec.step_from_proto(request))
        return pb.LossShareReply(
            share=codec.single_block([value], session.public_key.ciphertext_bytes, request), digests=digests
        )

    def evaluate(self, request: pb.EvaluateRequest) -> pb.EvaluateReply:
        session = self.jobs.session(self.jobs.get(request.job_id), CardCenterSession)
        if len(request.mask_sum) % 8:
            raise ProtocolError(f"{self.label}: mask sum is not a whole number of 64-bit words")
        return pb.EvaluateReply(metrics_json=json.dumps(session.evaluate(codec.words(request.mask_sum))))

    # -- coordinator -> partner ----------------------------------------------------

    def score_mask_seed(self, request: pb.JobRef) -> pb.Seed:
        return pb.Seed(seed=self.jobs.session(self.jobs.get(request.job_id), PartnerSession).score_mask_seed())

    # -- card center -> partner ----------------------------------------------------

    def _partner_session(self, job_id: str, context: grpc.ServicerContext) -> PartnerSession:
        job = self.jobs.get(job_id)
        require_card_center(context, job, self.label)
        return self.jobs.session(job, PartnerSession)

    def encrypted_bin_sums(self, requests, context: grpc.ServicerContext) -> pb.BinSumsReply:
        first = next(requests, None)
        if first is None or not first.HasField("step"):
            raise ProtocolError(f"{self.label}: encrypted labels stream without a job header")
        session = self._partner_session(first.step.job_id, context)
        width = session.public_key.ciphertext_bytes
        _, values = codec.join_integer_blocks(chain([first], requests), width)
        codec.check_ciphertexts(values, session.public_key)
        sums = session.encrypted_bin_sums(values)
        return pb.BinSumsReply(features=sums.features, bins=sums.bins, rows=sums.rows,
                               sums=codec.single_block(sums.sums, width))

    def keep_features(self, request: pb.KeepFeaturesRequest, context: grpc.ServicerContext) -> pb.KeepFeaturesReply:
        job = self.jobs.get(request.job_id)
        require_card_center(context, job, self.label)
        columns = self.jobs.session(job, PartnerSession).keep_features(list(request.features))
        self.jobs.checkpoint(job)
        return pb.KeepFeaturesReply(columns=columns)

    def encrypted_partial(self, request: pb.StepRef, context: grpc.ServicerContext) -> list[pb.IntegerBlock]:
        session = self._partner_session(request.job_id, context)
        values = session.encrypted_partial(codec.step_from_proto(request))
        return list(codec.integer_blocks(values, session.public_key.ciphertext_bytes, request))

    def put_residual(self, requests, context: grpc.ServicerContext) -> pb.Empty:
        first = next(requests, None)
        if first is None or not first.HasField("step"):
            raise ProtocolError(f"{self.label}: residual stream without a step header")
        session = self._partner_session(first.step.job_id, context)
        step, values = codec.join_integer_blocks(chain([first], requests), session.public_key.ciphertext_bytes)
        codec.check_ciphertexts(values, session.public_key)
        session.receive_residual(codec.step_from_proto(step), values)
        return pb.Empty()

    def encrypted_loss_term(self, request: pb.StepRef, context: grpc.ServicerContext) -> pb.IntegerBlock:
        session = self._partner_session(request.job_id, context)
        value = session.encrypted_loss_term(codec.step_from_proto(request))
        return codec.single_block([value], session.public_key.ciphertext_bytes, request)

    def masked_scores(self, request: pb.JobRef, context: grpc.ServicerContext) -> list[pb.FixedBlock]:
        session = self._partner_session(request.job_id, context)
        return list(codec.fixed_blocks(session.masked_scores().astype("<u8").tobytes(), 8, request.job_id))
