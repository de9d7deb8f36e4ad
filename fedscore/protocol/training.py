"""The order of a training job's messages, driven by the coordinator.

Per step:
  1. card center: forward_step   (gathers [[U_k]], hands out [[D − U_k]])
  2. every party: masked_gradient -> coordinator decrypts g + r
  3. every party: apply_gradient  (removes r, steps its own weights)
  4. card center: loss_share     -> coordinator decrypts the batch loss
Then evaluation through masked scores. The same driver runs over in-process
sessions (tests, notebooks) and over gRPC clients (the daemons).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from gmpy2 import mpz

from fedscore.errors import PeerError
from fedscore.model.rows import batches
from fedscore.protocol.coordinator import CoordinatorSession
from fedscore.protocol.fanout import call_each
from fedscore.protocol.party import Step


class PartyHandle(Protocol):
    def masked_gradient(self, step: Step) -> list[mpz]: ...
    def apply_gradient(self, step: Step, values: list[int]) -> None: ...


class CardCenterHandle(PartyHandle, Protocol):
    def forward_step(self, step: Step) -> None: ...
    def loss_share(self, step: Step) -> tuple[mpz, dict[str, str]]: ...
    def evaluate(self, mask_sum: np.ndarray) -> dict: ...


class PartnerControlHandle(PartyHandle, Protocol):
    def score_mask_seed(self) -> bytes: ...


@dataclass
class Progress:
    """One event a job streams to its submitter; ``step``/``steps`` place a "step" event within its epoch (for the time left)."""

    stage: str
    epoch: int = 0
    epochs: int = 0
    loss: float = float("nan")
    seconds: float = 0.0
    message: str = ""
    step: int = 0
    steps: int = 0


@dataclass
class TrainingResult:
    losses: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    steps: int = 0
    stopped_early: bool = False
    metrics: dict = field(default_factory=dict)


def run_training(
    coordinator: CoordinatorSession,
    card_center: tuple[str, CardCenterHandle],
    partners: Mapping[str, PartnerControlHandle],
    train_rows: int,
    total_rows: int,
    progress: Callable[[Progress], None] = lambda event: None,
    cancelled: threading.Event | None = None,
    on_step: Callable[[Step, int, float, float, dict[str, str]], None] | None = None,
) -> TrainingResult:
    """Train; ``on_step(step, rows, loss, seconds, digests)`` follows every step (the audit chain)."""
    spec = coordinator.spec
    center_name, center = card_center
    parties: dict[str, PartyHandle] = {center_name: center, **partners}
    result = TrainingResult()
    previous_loss: float | None = None
    for epoch in range(spec.epochs):
        started = time.perf_counter()
        weighted, counted = 0.0, 0
        plan = batches(train_rows, spec.batch_size, spec.seed, epoch)
        for batch, rows in enumerate(plan):
            step = Step(epoch, batch)
            step_started = time.perf_counter()
            if cancelled is not None and cancelled.is_set():
                raise PeerError(f"job {spec.name!r} cancelled before {step}: its submitter went away")
            center.forward_step(step)
            masked = call_each(parties, lambda name, p: p.masked_gradient(step))
            values = {name: coordinator.decrypt_masked_gradient(name, cts, step) for name, cts in masked.items()}
            call_each(parties, lambda name, p: p.apply_gradient(step, values[name]))
            share, center_digests = center.loss_share(step)
            loss = coordinator.decrypt_loss(share, len(rows), step)
            if on_step is not None:
                digests = {**center_digests, **coordinator.step_digests(step)}
                on_step(step, len(rows), loss, time.perf_counter() - step_started, digests)
            weighted += loss * len(rows)
            counted += len(rows)
            result.steps += 1
            progress(Progress("step", epoch + 1, spec.epochs, loss, time.perf_counter() - step_started,
                              step=batch + 1, steps=len(plan)))
        epoch_loss = weighted / counted
        result.losses.append(epoch_loss)
        result.epoch_seconds.append(time.perf_counter() - started)
        progress(Progress("epoch", epoch + 1, spec.epochs, epoch_loss, result.epoch_seconds[-1]))
        if (
            spec.early_stop_tol > 0
            and previous_loss is not None
            and abs(previous_loss - epoch_loss) < spec.early_stop_tol
        ):
            result.stopped_early = True
            break
        previous_loss = epoch_loss

    started = time.perf_counter()
    seeds = call_each(partners, lambda name, p: p.score_mask_seed())
    mask_sum = coordinator.score_mask_sum(list(seeds.values()), total_rows)
    result.metrics = center.evaluate(mask_sum)
    progress(Progress("evaluate", seconds=time.perf_counter() - started))
    return result
