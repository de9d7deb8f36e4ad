"""A partner's steps: its encrypted partial scores out, the encrypted residual in.

A partner never sees a label: it receives [[D − U_k]] (the residual without its
own part), built by the card center from its own fresh encryption and the
other partners' ciphertexts, so the partner cannot strip anything off it.
"""
from __future__ import annotations

import logging

import numpy as np
from gmpy2 import mpz

from fedscore.crypto.fixedpoint import EVAL_SCORE_BITS, encode_scores
from fedscore.crypto.masks import new_seed, word_masks
from fedscore.errors import ProtocolError
from fedscore.protocol.training import bin_statistics as binstats
from fedscore.protocol.training.bin_statistics import REAL, BinSums
from fedscore.protocol.training.session import PartySession, one_message_at_a_time
from fedscore.job import Step

log = logging.getLogger("fedscore.training")


class PartnerSession(PartySession):
    role = "partner"
    has_intercept = False
    _score_seed: bytes | None = None

    def __init__(self, *args, feature_names: str = REAL, **kwargs):
        """``feature_names``: how its features appear to the other parties ("real", or "opaque": "<party>:f1"...)."""
        if feature_names not in binstats.FEATURE_NAMINGS:
            raise ValueError(f"feature_names must be one of {', '.join(binstats.FEATURE_NAMINGS)}, got {feature_names!r}")
        super().__init__(*args, **kwargs)
        self.feature_names = feature_names

    @one_message_at_a_time
    def encrypted_partial(self, step: Step) -> list[mpz]:
        """[[U_k]] = [[round(X_k w_k · 2^P)]] for the step's rows, each freshly randomised."""
        rows = self.step_rows(step)
        own = encode_scores(self.partial_scores(rows)).tolist()
        self._begin(step, own_part=own)
        encrypted = self.encrypt_vector(own)
        self.record(step, f"partial/{self.party}", encrypted, self.public_key.ciphertext_bytes)
        return encrypted

    @one_message_at_a_time
    def receive_residual(self, step: Step, residual: list[mpz]) -> None:
        """Keep [[D − U_k]] for this step's gradient."""
        state = self._current(step, needs="")
        if len(residual) != len(state.rows):
            raise ProtocolError(
                f"{self.party}: residual for {step} has {len(residual)} values, the batch has {len(state.rows)} rows"
            )
        state.encrypted_rest = list(residual)
        self.record(step, f"residual/{self.party}", state.encrypted_rest, self.public_key.ciphertext_bytes)

    @one_message_at_a_time
    def score_mask_seed(self) -> bytes:
        """A fresh seed for this evaluation's masks; only the coordinator receives it."""
        self._score_seed = new_seed()
        return self._score_seed

    @one_message_at_a_time
    def masked_scores(self) -> np.ndarray:
        """u_k + m (mod 2^64) for every row, in fixed point, m expanded from the seed."""
        if self._score_seed is None:
            raise ProtocolError(f"{self.party}: scores asked for before a mask seed was drawn")
        seed, self._score_seed = self._score_seed, None  # one use per seed
        scores = encode_scores(self.encoding.scores(self.weights), EVAL_SCORE_BITS).view(np.uint64)
        return scores + word_masks(seed, len(scores))

    # -- bin statistics and feature selection, before the first step (fedscore.protocol.training.bin_statistics)

    def shown_features(self) -> list[str]:
        """Its features as the other parties see them."""
        return binstats.shown_names(self.party, self.features, self.model_features(), self.feature_names)

    @one_message_at_a_time
    def encrypted_bin_sums(self, encrypted_labels: list[mpz]) -> BinSums:
        """Rows per bin, and [[bads]] per bin from the card center's [[y_i]]: it sees ciphertexts only."""
        if self._last_done is not None or self._state is not None:
            raise ProtocolError(f"{self.party}: bin sums are asked for before training starts")
        return binstats.encrypted_bin_sums(self, self.shown_features(), encrypted_labels)

    @one_message_at_a_time
    def keep_features(self, keep: list[str]) -> int:
        """Train on the features ``keep`` names (as shown) only; returns its column count from now on."""
        if self.features and not keep:
            raise ProtocolError(f"{self.party}: asked to keep none of its features; it would have no part in the model")
        dropped = self.select_features(binstats.real_names(self.party, self.features, self.shown_features(), keep))
        if dropped:
            log.warning("party %s: the card center dropped by information value: %s", self.party, ", ".join(dropped))
        return int(self.weights.size)
