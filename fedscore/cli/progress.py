"""What a long command shows while it works: alignment, each epoch's steps, batch scoring.

Everything goes to stderr, so stdout stays free for the summary or the
``--json`` document. On a terminal it is rich progress bars with the time
left; anywhere else (a CI log, a pipe) one plain line per event, steps
thinned to one line every few seconds; with ``--quiet``, nothing.

The time left is the mean pace so far times the work left. Each step event
carries its own duration, so the clock of a training or epoch bar starts
when its first step started, not when its first event arrived.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Literal, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress as Bars,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
)
from rich.text import Text

from fedscore.protocol.training.driver import Progress
from fedscore.plural import plural

Mode = Literal["bars", "plain", "off"]
PLAIN_EVERY = 10.0   # seconds between two plain step or scoring lines


def eta_seconds(elapsed: float, done: float, total: float | None) -> float | None:
    """Seconds left at the mean pace so far; None while nothing is done or the total is unknown."""
    if not total or done <= 0 or elapsed < 0:
        return None
    return max(0.0, elapsed * (total - done) / done)


def clock(seconds: float | None) -> str:
    """``h:mm:ss``, or ``-:--:--`` when unknown."""
    if seconds is None:
        return "-:--:--"
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _task_seconds(task: Task) -> float | None:
    """Seconds since the task's own origin (when its work started), up to its end if it ended."""
    origin = task.fields.get("origin")
    if origin is None:
        return task.elapsed
    return task.fields.get("ended", time.monotonic()) - origin


class CountColumn(ProgressColumn):
    """``done/total``; nothing while the total is unknown (a stage with no measure)."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("")
        width = len(str(int(task.total)))
        return Text(f"{int(task.completed):>{width}}/{int(task.total)}", style="progress.download")


class ElapsedColumn(ProgressColumn):
    """Time spent, from when the work started (the first step's start, not the bar's creation)."""

    def render(self, task: Task) -> Text:
        return Text(clock(_task_seconds(task)), style="progress.elapsed")


class EtaColumn(ProgressColumn):
    """Time left at the mean pace so far (rich's own estimate needs two samples in a window: too few when a step takes minutes)."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("")
        if task.completed >= task.total:
            return Text("done", style="progress.remaining")
        left = eta_seconds(_task_seconds(task) or 0.0, task.completed, task.total)
        return Text(f"eta {clock(left)}", style="progress.remaining")


class ProgressView:
    """Shows training and scoring progress; call it with each training ``Progress`` event, or ``scoring(done, total)``."""

    def __init__(self, mode: Mode, stream: TextIO | None = None, plain_every: float = PLAIN_EVERY):
        self.mode = mode
        self.stream = stream if stream is not None else sys.stderr
        self.plain_every = plain_every
        self._lock = threading.RLock()
        self._bars: Bars | None = None
        self._tasks: dict[str, TaskID] = {}
        self._stage_text = ""
        self._last_plain = float("-inf")
        # training state, shared by both renderings
        self._training_origin: float | None = None
        self._epoch_origin: float | None = None
        self._steps = 0            # steps per epoch, once a step event says
        self._scoring_origin: float | None = None

    @classmethod
    def for_stderr(cls, quiet: bool) -> "ProgressView":
        """Bars when stderr is a terminal, plain lines otherwise, nothing when quiet."""
        if quiet:
            return cls("off")
        return cls("bars" if sys.stderr.isatty() else "plain", sys.stderr)

    def __enter__(self) -> "ProgressView":
        if self.mode == "bars":
            console = Console(file=self.stream, force_terminal=True)
            self._bars = Bars(
                SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), CountColumn(),
                ElapsedColumn(), EtaColumn(), console=console, redirect_stdout=False,
            )
            self._bars.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None
            self._tasks.clear()

    # -- output --------------------------------------------------------------

    def note(self, text: str) -> None:
        """A line of its own: above the bars, or plain."""
        with self._lock:
            if self.mode == "off":
                return
            if self._bars is not None:
                self._bars.console.print(text, highlight=False, markup=False)
            else:
                self.stream.write(text + "\n")
                self.stream.flush()

    def stage(self, text: str) -> None:
        """What is happening now, with no measure of how much is left (a spinner, or a plain line)."""
        with self._lock:
            if self._bars is None:
                self.note(f"{text} ...")
                return
            if "stage" not in self._tasks or self._stage_text != text:   # a new stage restarts the clock
                self._stage_text = text
                self._show("stage", text, total=None, origin=time.monotonic())

    def _show(self, key: str, description: str, total: float | None, completed: float = 0, restart: bool = False,
              **fields: float) -> None:
        """Create or update the bar ``key`` (``origin``: when its work started; ``ended``: when it finished).

        ``restart`` starts it over (a new epoch): rich keeps a bar finished once it was, even if it goes back.
        """
        assert self._bars is not None
        if key in self._tasks and restart:
            self._bars.reset(self._tasks[key], total=total, completed=completed, description=description, **fields)
        elif key in self._tasks:
            self._bars.update(self._tasks[key], total=total, completed=completed, description=description, **fields)
        else:
            self._tasks[key] = self._bars.add_task(description, total=total, completed=completed, **fields)

    def _hide(self, *keys: str) -> None:
        if self._bars is None:
            return
        for key in keys:
            task = self._tasks.pop(key, None)
            if task is not None:
                self._bars.remove_task(task)

    def _plain_due(self, now: float, force: bool = False) -> bool:
        if force or now - self._last_plain >= self.plain_every:
            self._last_plain = now
            return True
        return False

    # -- training --------------------------------------------------------------

    def __call__(self, event: Progress) -> None:
        with self._lock:
            if self.mode == "off":
                return
            now = time.monotonic()
            if event.stage == "step":
                self._step(event, now)
            elif event.stage == "epoch":
                self._epoch(event, now)
            elif event.stage == "align" and event.seconds:
                self._hide("stage")
                self.note(f"{event.message} (aligned in {event.seconds:.1f} s)")
            elif event.stage == "align":
                self.stage(event.message)
            elif event.stage == "evaluate":
                self._hide("stage", "epoch", "training")
                self.note(f"evaluated through masked scores in {event.seconds:.1f} s")
            elif event.message:
                self.stage(event.message)

    def _step(self, event: Progress, now: float) -> None:
        started = now - event.seconds
        if self._training_origin is None:
            self._training_origin = started
            self._hide("stage")
        if event.step == 1:
            self._epoch_origin = started
        self._steps = event.steps
        total = event.epochs * event.steps
        done = (event.epoch - 1) * event.steps + event.step
        epoch_left = eta_seconds(now - (self._epoch_origin or started), event.step, event.steps)
        training_left = eta_seconds(now - self._training_origin, done, total)
        if self._bars is not None:
            self._show("training", "training steps", total, done, origin=self._training_origin)
            label = f"epoch {event.epoch}/{event.epochs}  loss {event.loss:.4f}"
            self._show("epoch", label, event.steps, event.step, restart=event.step == 1, origin=self._epoch_origin or started)
            return
        last_of_epoch = event.step == event.steps
        if not last_of_epoch and self._plain_due(now, force=done == 1):
            self.note(
                f"epoch {event.epoch}/{event.epochs} step {event.step}/{event.steps}  loss {event.loss:.6f}  "
                f"epoch eta {clock(epoch_left)}  training eta {clock(training_left)}"
            )

    def _epoch(self, event: Progress, now: float) -> None:
        width = len(str(event.epochs))
        line = f"epoch {event.epoch:>{width}}/{event.epochs}  loss {event.loss:.6f}  {event.seconds:6.1f} s"
        if self._training_origin is None:   # a coordinator that sends no step events: time from the epochs
            self._training_origin = now - event.seconds
        if event.epoch < event.epochs:
            left = eta_seconds(now - self._training_origin, event.epoch, event.epochs)
            line += f"  training eta {clock(left)}"
        if self._bars is not None and not self._steps:
            self._show("training", "training epochs", event.epochs, event.epoch, origin=self._training_origin)
        self._last_plain = now
        self.note(line)

    # -- scoring -----------------------------------------------------------------

    def scoring(self, done: int, total: int) -> None:
        """``done`` of ``total`` applicants answered (called from the scoring threads)."""
        with self._lock:
            if self.mode == "off":
                return
            now = time.monotonic()
            if self._scoring_origin is None:
                self._scoring_origin = now
                self._hide("stage")
            finished = done == total
            if self._bars is not None:
                ended = {"ended": now} if finished else {}
                self._show("scoring", "scoring applicants", total, done, origin=self._scoring_origin, **ended)
                return
            if done and (finished or self._plain_due(now)):
                elapsed = now - self._scoring_origin
                tail = f"{elapsed:.1f} s" if finished else f"eta {clock(eta_seconds(elapsed, done, total))}"
                self.note(f"scoring: {done}/{plural(total, 'applicant')}  {tail}")
