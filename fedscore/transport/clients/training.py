"""Calls of a party's Training service: the coordinator's steps at every party, and the card center's
requests to a partner. A TrainingClient is the handle the training sessions talk to (PartyHandle,
CardCenterHandle, PartnerControlHandle, PartnerTrainingHandle in fedscore.protocol.ports)."""
from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
from gmpy2 import mpz

from fedscore.proto import fedscore_pb2 as pb
from fedscore.proto import fedscore_pb2_grpc as pb_grpc
from fedscore.errors import ProtocolError
from fedscore.job import Step
from fedscore.protocol.training.bin_statistics import BinSums
from fedscore.transport import codec
from fedscore.transport.clients.base import JobClient


class TrainingClient(JobClient):
    """One party's training steps in one job; every ciphertext that comes back is checked against the job's key."""

    stub_class = pb_grpc.TrainingStub

    def _step(self, step: Step) -> pb.StepRef:
        return codec.step_to_proto(self.job_id, step)

    def _ciphertexts(self, blocks) -> list[mpz]:
        _, values = codec.join_integer_blocks(blocks, self.public_key.ciphertext_bytes)
        return codec.check_ciphertexts(values, self.public_key)

    # -- coordinator -> every party -------------------------------------------

    def masked_gradient(self, step: Step) -> list[mpz]:
        return self._ciphertexts([self._call("MaskedGradient", self._step(step))])

    def apply_gradient(self, step: Step, values: list[int]) -> None:
        block = codec.single_block([mpz(v) for v in values], self.public_key.plaintext_bytes)
        self._call("ApplyGradient", pb.MaskedGradientValues(step=self._step(step), values=block))

    # -- coordinator -> card center -------------------------------------------

    def masked_bin_sums(self) -> dict[str, list[mpz]]:
        reply = self._call("MaskedBinSums", pb.JobRef(job_id=self.job_id))
        sums = {item.party: self._ciphertexts([item.values]) for item in reply.sums}
        if len(sums) != len(reply.sums):
            raise ProtocolError(f"{self.peer.label}: masked bin sums name a partner twice")
        return sums

    def apply_bin_sums(self, values: Mapping[str, list[int]]) -> dict[str, int]:
        width = self.public_key.plaintext_bytes
        request = pb.BinSumValues(job_id=self.job_id, values=[
            pb.PartyIntegers(party=name, values=codec.single_block([mpz(v) for v in party_values], width))
            for name, party_values in values.items()
        ])
        return dict(self._call("ApplyBinSums", request).columns)

    def forward_step(self, step: Step) -> None:
        self._call("ForwardStep", self._step(step))

    def loss_share(self, step: Step) -> tuple[mpz, dict[str, str]]:
        reply = self._call("LossShare", self._step(step))
        return self._ciphertexts([reply.share])[0], dict(reply.digests)

    def evaluate(self, mask_sum: np.ndarray) -> dict:
        request = pb.EvaluateRequest(job_id=self.job_id, mask_sum=np.asarray(mask_sum, dtype="<u8").tobytes())
        return json.loads(self._call("Evaluate", request).metrics_json)

    # -- coordinator -> partner -----------------------------------------------

    def score_mask_seed(self) -> bytes:
        return self._call("ScoreMaskSeed", pb.JobRef(job_id=self.job_id)).seed

    # -- card center -> partner -----------------------------------------------

    def encrypted_bin_sums(self, encrypted_labels: list[mpz]) -> BinSums:
        header = pb.StepRef(job_id=self.job_id)   # no step yet: it names the job
        blocks = codec.integer_blocks(encrypted_labels, self.public_key.ciphertext_bytes, header)
        reply = self._call("EncryptedBinSums", blocks)
        return BinSums(features=list(reply.features), bins=[int(b) for b in reply.bins],
                       rows=[int(r) for r in reply.rows], sums=self._ciphertexts([reply.sums]))

    def keep_features(self, keep: list[str]) -> int:
        return self._call("KeepFeatures", pb.KeepFeaturesRequest(job_id=self.job_id, features=list(keep))).columns

    def encrypted_partial(self, step: Step) -> list[mpz]:
        return self._call("EncryptedPartial", self._step(step), join=self._ciphertexts)

    def receive_residual(self, step: Step, residual: list[mpz]) -> None:
        self._call("PutResidual", codec.integer_blocks(residual, self.public_key.ciphertext_bytes, self._step(step)))

    def encrypted_loss_term(self, step: Step) -> mpz:
        return self._ciphertexts([self._call("EncryptedLossTerm", self._step(step))])[0]

    def masked_scores(self) -> np.ndarray:
        return codec.words(self._fixed_stream("MaskedScores", pb.JobRef(job_id=self.job_id), 8))
