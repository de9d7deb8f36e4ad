"""How a bench states what it measured: each figure beside its baseline from the same run and its goal, and a
last line of `name=value` pairs that scripts read (the bench runner, the smoke test).

Last-line keys for a figure ``x``: ``x`` (the value), ``x_baseline`` (the same work done the plain way, measured
in the same run), ``x_goal_min`` or ``x_goal_max`` (the project's goal) and ``x_met`` (yes / no). No bench
asserts a time: figures are noisy, a goal not met is reported, not raised.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
SUFFIXES = ("_baseline", "_goal_min", "_goal_max", "_met")
_KEY = re.compile(r"[a-z][a-z0-9_]*")
_RUNS_AS_SCRIPT = re.compile(r'^if __name__ == "__main__":', re.MULTILINE)


@dataclass(frozen=True)
class Figure:
    name: str                        # its key on the last line, unit included (…_per_second, …_ms)
    value: float
    baseline: float | None = None    # measured beside it in the same run
    baseline_label: str = ""         # what the baseline is ("python-paillier", "plaintext gRPC")
    at_least: float | None = None    # goal: value ≥ at_least
    at_most: float | None = None     # goal: value ≤ at_most

    @property
    def met(self) -> bool | None:
        if self.at_least is not None:
            return self.value >= self.at_least
        if self.at_most is not None:
            return self.value <= self.at_most
        return None

    @property
    def goal(self) -> str:
        if self.at_least is not None:
            return f"≥ {number(self.at_least)}"
        if self.at_most is not None:
            return f"≤ {number(self.at_most)}"
        return ""

    def line(self) -> str:
        """The figure for a reader: value, baseline and ratio, goal and whether it is met."""
        text = f"{self.name} = {number(self.value)}"
        if self.baseline is not None:
            text += f" ({self.baseline_label or 'baseline'} {number(self.baseline)}: ×{number(self.value / self.baseline)})"
        if self.met is not None:
            text += f"; goal {self.goal}: {'met' if self.met else 'not met'}"
        return text

    def pairs(self) -> list[str]:
        pairs = [f"{self.name}={number(self.value)}"]
        if self.baseline is not None:
            pairs.append(f"{self.name}_baseline={number(self.baseline)}")
        if self.at_least is not None:
            pairs.append(f"{self.name}_goal_min={number(self.at_least)}")
        if self.at_most is not None:
            pairs.append(f"{self.name}_goal_max={number(self.at_most)}")
        if self.met is not None:
            pairs.append(f"{self.name}_met={'yes' if self.met else 'no'}")
        return pairs


def number(value: float) -> str:
    """Few enough digits to read, enough to compare: 12345, 15.8, 0.0123."""
    if value != value or abs(value) >= 100:   # NaN prints as nan
        return f"{value:.0f}"
    return f"{value:.3g}"


def print_figures(figures: list[Figure]) -> None:
    """Print each figure for a reader, then the machine-readable last line."""
    for figure in figures:
        print(figure.line())
    print(" ".join(pair for figure in figures for pair in figure.pairs()), flush=True)


def parse_last_line(line: str) -> dict[str, str]:
    """The `name=value` pairs of a bench's last line; ValueError if it is not one."""
    pairs = {}
    for token in line.split():
        key, equals, value = token.partition("=")
        if not equals or not _KEY.fullmatch(key) or not value:
            raise ValueError(f"not a name=value pair: {token!r} in {line!r}")
        pairs[key] = value
    if not pairs:
        raise ValueError("an empty last line")
    return pairs


def figure_names(pairs: dict[str, str]) -> list[str]:
    """The figures of a parsed last line (keys that are not a figure's baseline, goal or verdict)."""
    return [key for key in pairs if not key.endswith(SUFFIXES)]


def bench_scripts() -> list[Path]:
    """Every bench: a script in this folder (a module run as __main__), helpers aside."""
    return sorted(p for p in BENCH_DIR.glob("*.py") if _RUNS_AS_SCRIPT.search(p.read_text()))
