"""The order of a training job's messages, driven by the coordinator.

Before the first step of a job that bins (fedscore.protocol.training.bin_statistics):
  card center: masked_bin_sums -> coordinator decrypts each partner's masked bin sums
  card center: apply_bin_sums  (WOE and IV, features kept by IV everywhere) -> each party's column count
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
from typing import TypeVar

import numpy as np

from fedscore.errors import PeerError, ProtocolError, UnknownJobError
from fedscore.model.rows import batches
from fedscore.protocol.ports import CardCenterHandle, PartnerControlHandle, PartyHandle
from fedscore.protocol.training.coordinator import CoordinatorSession
from fedscore.protocol.training.fanout import call_each
from fedscore.job import Step


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


@dataclass(frozen=True)
class StepRecord:
    """A step as the chain records it: enough to go on from it after a restart."""

    rows: int
    loss: float
    seconds: float


def history_from_chain(entries: list[dict]) -> dict[Step, StepRecord]:
    return {
        Step(e["epoch"], e["batch"]): StepRecord(e["rows"], e["loss"], e["seconds"])
        for e in entries if e.get("kind") == "step"
    }


# What a step's failure may be, when a member died or restarted mid-step: a peer that does not answer,
# or one that answers it has no such job any more. Anything else (a refusal, a wrong size) stops the job.
RECOVERABLE = (PeerError, UnknownJobError)
Result = TypeVar("Result")


def select_features_by_iv(coordinator: CoordinatorSession, center: CardCenterHandle) -> dict[str, int]:
    """The bin-statistics round and feature selection by IV; the coordinator learns each party's column count."""
    masked = center.masked_bin_sums()
    values = {name: coordinator.decrypt_masked_bin_sums(name, ciphertexts) for name, ciphertexts in masked.items()}
    columns = center.apply_bin_sums(values)
    members = {party.name for party in coordinator.spec.parties}
    if set(columns) != members or min(columns.values()) < 1:
        raise ProtocolError("the card center's column counts after the selection do not name every party once")
    for name, count in columns.items():
        coordinator.expect_columns(name, count)
    return columns


def retried(action: Callable[[], Result], recover: Callable[[Exception], object] | None) -> Result:
    """``action()``, again after ``recover(error)`` each time a member died under it (no recover: the error)."""
    while True:
        try:
            return action()
        except RECOVERABLE as error:
            if recover is None:
                raise
            recover(error)


def run_training(
    coordinator: CoordinatorSession,
    card_center: tuple[str, CardCenterHandle],
    partners: Mapping[str, PartnerControlHandle],
    train_rows: int,
    total_rows: int,
    progress: Callable[[Progress], None] = lambda event: None,
    cancelled: threading.Event | None = None,
    on_step: Callable[[Step, int, float, float, dict[str, str]], None] | None = None,
    history: dict[Step, StepRecord] | None = None,
    recover: Callable[[Exception], dict[Step, StepRecord]] | None = None,
    on_columns: Callable[[dict[str, int]], None] | None = None,
) -> TrainingResult:
    """Train; ``on_step(step, rows, loss, seconds, digests)`` follows every step (the audit chain).

    ``history``: steps already on the chain (a resumed job skips them). ``recover(error)``: called when a step
    fails recoverably; it waits for every member, rewinds them to the chain's last step and returns the
    chain's steps, and the job goes on from there (it raises when a member stays down). ``on_columns(columns)``
    follows the feature selection of a job that bins, done before its first step (not again on resume).
    """
    spec = coordinator.spec
    center_name, center = card_center
    parties: dict[str, PartyHandle] = {center_name: center, **partners}
    done: dict[Step, StepRecord] = dict(history or {})
    result = TrainingResult()
    previous_loss: float | None = None

    def take_step(step: Step, rows: np.ndarray) -> StepRecord:
        step_started = time.perf_counter()
        center.forward_step(step)
        masked = call_each(parties, lambda name, p: p.masked_gradient(step))
        values = {name: coordinator.decrypt_masked_gradient(name, cts, step) for name, cts in masked.items()}
        call_each(parties, lambda name, p: p.apply_gradient(step, values[name]))
        share, center_digests = center.loss_share(step)
        loss = coordinator.decrypt_loss(share, len(rows), step)
        seconds = time.perf_counter() - step_started
        if on_step is not None:
            on_step(step, len(rows), loss, seconds, {**center_digests, **coordinator.step_digests(step)})
        return StepRecord(len(rows), loss, seconds)

    if spec.binning.enabled and not done:
        progress(Progress("select", message="bin statistics at the card center, then features selected by information value"))
        started = time.perf_counter()
        columns = retried(lambda: select_features_by_iv(coordinator, center), recover)
        if on_columns is not None:
            on_columns(columns)
        progress(Progress("select", seconds=time.perf_counter() - started,
                          message=f"features selected by information value; columns per party: {columns_text(columns)}"))

    for epoch in range(spec.epochs):
        plan = batches(train_rows, spec.batch_size, spec.seed, epoch)
        earlier = sum(done[Step(epoch, b)].seconds for b in range(len(plan)) if Step(epoch, b) in done)
        started = time.perf_counter()
        batch = 0
        while batch < len(plan):
            step = Step(epoch, batch)
            if step in done:
                batch += 1
                continue
            if cancelled is not None and cancelled.is_set():
                raise PeerError(f"job {spec.name!r} cancelled before {step}: its submitter went away")
            try:
                done[step] = take_step(step, plan[batch])
                progress(Progress("step", epoch + 1, spec.epochs, done[step].loss, done[step].seconds,
                                  step=batch + 1, steps=len(plan)))
            except RECOVERABLE as error:
                if recover is None:
                    raise
                done = recover(error)
                batch = 0   # go on after the chain's last step (earlier steps are skipped)
                continue
            batch += 1
        records = [done[Step(epoch, b)] for b in range(len(plan))]
        epoch_loss = sum(r.loss * r.rows for r in records) / sum(r.rows for r in records)
        result.losses.append(epoch_loss)
        result.epoch_seconds.append(earlier + time.perf_counter() - started)
        progress(Progress("epoch", epoch + 1, spec.epochs, epoch_loss, result.epoch_seconds[-1]))
        if (
            spec.early_stop_tol > 0
            and previous_loss is not None
            and abs(previous_loss - epoch_loss) < spec.early_stop_tol
        ):
            result.stopped_early = True
            break
        previous_loss = epoch_loss
    result.steps = len(done)

    def evaluate() -> dict:
        seeds = call_each(partners, lambda name, p: p.score_mask_seed())
        return center.evaluate(coordinator.score_mask_sum(list(seeds.values()), total_rows))

    started = time.perf_counter()
    result.metrics = retried(evaluate, recover)
    progress(Progress("evaluate", seconds=time.perf_counter() - started))
    return result


def columns_text(columns: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in columns.items())
