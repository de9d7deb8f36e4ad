"""Every handle the protocol sessions and the training driver talk to, in one place.

A handle is a peer as a session sees it: another session in the same
process (simulation, estimator, tests) or a gRPC client (the daemons). The
sessions never know which; they only call the methods listed here.

Who holds which handle:
  coordinator (training driver) -> card center   CardCenterHandle
  coordinator (training driver) -> partner       PartnerControlHandle
  card center (training)        -> partner       PartnerTrainingHandle
  card center (alignment)       -> partner       PartnerPsiHandle
  card center (scoring)         -> partner       PartnerScorerHandle
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Protocol

import numpy as np
from gmpy2 import mpz

from fedscore.job import Step

if TYPE_CHECKING:
    from fedscore.protocol.training.bin_statistics import BinSums


class PartyHandle(Protocol):
    """What the coordinator asks of every party each step."""

    def masked_gradient(self, step: Step) -> list[mpz]: ...
    def apply_gradient(self, step: Step, values: list[int]) -> None: ...


class CardCenterHandle(PartyHandle, Protocol):
    """What the coordinator asks of the card center: the bin statistics and feature selection before the first
    step, the residual, the loss and the evaluation."""

    def masked_bin_sums(self) -> dict[str, list[mpz]]: ...
    def apply_bin_sums(self, values: Mapping[str, list[int]]) -> dict[str, int]: ...

    def forward_step(self, step: Step) -> None: ...
    def loss_share(self, step: Step) -> tuple[mpz, dict[str, str]]: ...
    def evaluate(self, mask_sum: np.ndarray) -> dict: ...


class PartnerControlHandle(PartyHandle, Protocol):
    """What the coordinator asks of a partner: besides the gradient, a seed for the evaluation masks."""

    def score_mask_seed(self) -> bytes: ...


class PartnerTrainingHandle(Protocol):
    """How the card center reaches a partner during training (and, with bins, before its first step)."""

    def encrypted_bin_sums(self, encrypted_labels: list[mpz]) -> "BinSums": ...
    def keep_features(self, keep: list[str]) -> int: ...

    def encrypted_partial(self, step: Step) -> list[mpz]: ...
    def receive_residual(self, step: Step, residual: list[mpz]) -> None: ...
    def encrypted_loss_term(self, step: Step) -> mpz: ...
    def masked_scores(self) -> np.ndarray: ...


class PartnerPsiHandle(Protocol):
    """How the card center reaches a partner's alignment: lists of packed points stream in chunks, so neither
    side holds a whole list."""

    def blinded_ids(self) -> Iterable[bytes]: ...
    def reblind(self, points: Iterable[bytes], count: int) -> Iterable[bytes]: ...
    def accept(self, positions: np.ndarray) -> object: ...


class PartnerScorerHandle(Protocol):
    """How the card center asks one partner's scorer; the future gives u_k, or None if the partner does not
    know the applicant."""

    def ask_partial_score(self, tag: str, digest: bytes, consent: str, timeout: float) -> Future: ...
    def ask_partial_scores(self, items: list[tuple[str, bytes, str]], timeout: float) -> list[Future]:
        """A batch's (tag, digest, consent) items asked in one call; a future for each, in order."""
        ...
