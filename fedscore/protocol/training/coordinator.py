"""The coordinator's own computations: it holds the Paillier private key.

It decrypts only masked gradients and masked bin sums (uniform in Z_n
whatever they hide), the batch loss (one number), and sums the partners'
evaluation mask seeds. It never receives a partial score, a residual or a
label, encrypted or not.
"""
from __future__ import annotations

import secrets
from collections.abc import Mapping

import numpy as np
from gmpy2 import mpz

from fedscore.job import JobSpec
from fedscore.crypto.fixedpoint import SCORE_BITS
from fedscore.crypto.masks import word_masks
from fedscore.crypto.paillier import PrivateKey, PublicKey, generate_keypair
from fedscore.crypto.pool import pack
from fedscore.errors import ProtocolError
from fedscore.ledger.entries import Facts, step_key
from fedscore.job import Step
from fedscore.model.taylor import LOG2_MINUS_HALF
from fedscore.protocol.training import batch_rule

LOSS_ROUNDING = 1e-6   # how far fixed-point rounding can take an honest loss below its minimum (far less in fact)


def new_job_id(name: str) -> str:
    return f"{name}-{secrets.token_hex(4)}"


class CoordinatorSession:
    """``align_only``: the job stops once aligned, so no Paillier key pair is made (nothing is encrypted); its
    fingerprint on the chain is empty, and every party refuses to train it."""

    def __init__(self, job_id: str, spec: JobSpec, keys: tuple[PublicKey, PrivateKey] | None = None,
                 align_only: bool = False):
        self.job_id = job_id
        self.spec = spec
        self.public_key: PublicKey | None
        self._private_key: PrivateKey | None
        self.public_key, self._private_key = (None, None) if align_only else (keys or generate_keypair(spec.key_bits))
        self._columns: dict[str, int] = {}
        self.facts = Facts(
            "coordinator", "", role="coordinator", members=frozenset({"coordinator", *(p.name for p in spec.parties)}),
            job_digest=spec.digest(), fees=spec.fees.to_dict(),
            paillier_fingerprint="" if self.public_key is None else self.public_key.fingerprint(),
        )

    def private_key_json(self) -> str:
        """For the coordinator's checkpoint only (owner-only file): a restarted coordinator resumes the job."""
        return self._private_key.to_json()

    def expect_columns(self, party: str, columns: int) -> None:
        """How many gradient values ``party`` may send per step (its features, plus the intercept)."""
        self._columns[party] = columns

    def check_partner_batches(self, columns: Mapping[str, int], train_rows: int) -> None:
        """Refuse the job when a partner's columns make its steps too short (training.batch_rule): a partner
        checks only itself, and one reading labels would not refuse; every column count is known here."""
        rows = batch_rule.smallest_batch(train_rows, self.spec.batch_size, self.spec.seed)
        for party in self.spec.partners:
            if party.name in columns:
                batch_rule.check_batch(f"coordinator: partner {party.name!r}", rows, columns[party.name],
                                       self.spec.min_rows_per_column)

    def decrypt_masked_gradient(self, party: str, masked: list[mpz], step: Step) -> list[int]:
        """g + r mod n for each column: uniform values, returned to their owner."""
        if len(masked) != self._columns.get(party, len(masked)):
            raise ProtocolError(
                f"party {party!r} sent {len(masked)} gradient values; it has {self._columns[party]} columns"
            )
        values = self._decrypt_masked(masked)
        key = self.public_key
        self.facts.record(step.epoch, step.batch, f"gradient/{party}", pack(masked, key.ciphertext_bytes))
        self.facts.record(step.epoch, step.batch, f"gradient_values/{party}", pack(values, key.plaintext_bytes))
        return values

    def decrypt_masked_bin_sums(self, party: str, masked: list[mpz]) -> list[int]:
        """s + r mod n for each bin of partner ``party`` (its bad count plus the card center's uniform mask),
        returned to the card center. Only for a partner, and exactly one value per bin of its (one column per
        bin): the card center cannot have anything else decrypted here."""
        if party not in {p.name for p in self.spec.partners}:
            raise ProtocolError(f"bin sums of {party!r}, which is not a partner of job {self.spec.name!r}")
        if len(masked) != self._columns.get(party, len(masked)):
            raise ProtocolError(f"{len(masked)} bin sums for partner {party!r}; it has {self._columns[party]} bins")
        return self._decrypt_masked(masked)

    def _decrypt_masked(self, masked: list[mpz]) -> list[int]:
        """Masked values: uniform in Z_n whatever they hide."""
        return [self._private_key.decrypt(c) for c in masked]

    def decrypt_loss(self, encrypted_total: mpz, batch_rows: int, step: Step) -> float:
        """The batch's Taylor loss from [[Z]] = [[4·|B|·2^P·(loss − log 2 + 1/2)]].

        The card center assembles [[Z]], so a deviating one could send any ciphertext it holds here and have
        one value per step decrypted onto the chain. An honest Z is never negative (each row's Taylor loss is
        at least log 2 − 1/2); a value below that is refused, which catches a careless substitute but not one
        offset to look like a loss: docs/privacy.md counts this as one value per step.
        """
        total = self._private_key.decrypt_signed(encrypted_total)
        loss = LOG2_MINUS_HALF + total / (4.0 * batch_rows * 2.0**SCORE_BITS)
        if loss < LOG2_MINUS_HALF - LOSS_ROUNDING:
            raise ProtocolError(
                f"the loss of epoch {step.epoch + 1} batch {step.batch + 1} decrypts to {loss:.6g}, below the Taylor "
                f"loss's minimum log 2 − 1/2 = {LOG2_MINUS_HALF:.6g}: the card center's [[Z]] is not a loss"
            )
        self.facts.record(step.epoch, step.batch, "loss_share", pack([encrypted_total], self.public_key.ciphertext_bytes))
        self.facts.losses[step_key(step.epoch, step.batch)] = loss
        return loss

    def step_digests(self, step: Step) -> dict[str, str]:
        return dict(self.facts.digests.get(step_key(step.epoch, step.batch), {}))

    @staticmethod
    def score_mask_sum(seeds: list[bytes], rows: int) -> np.ndarray:
        """Σ_k m_k (mod 2^64) over the partners' evaluation masks."""
        total = np.zeros(rows, dtype=np.uint64)
        for seed in seeds:
            total += word_masks(seed, rows)
        return total
