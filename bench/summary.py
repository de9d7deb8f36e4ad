"""The summary of a full bench run (bench/results/<date>.md) and the README table made from it.

One row per figure: its value, its baseline from the same run and the ratio, its goal and whether it was
met, and the machine's one-minute load average before and after its bench (a figure taken on a busy machine
says so). The README's "Measured figures" table is written from the latest summary, between two markers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from figures import figure_names, number

RESULTS_DIR = Path(__file__).resolve().parent / "results"
COLUMNS = ("bench", "figure", "value", "baseline", "ratio", "goal", "met", "load before", "load after", "command")
README_BEGIN = "<!-- measured figures: written by `make bench` from bench/results/; do not edit by hand -->"
README_END = "<!-- end of measured figures -->"


@dataclass(frozen=True)
class Row:
    bench: str
    figure: str
    value: str
    baseline: str = ""
    ratio: str = ""
    goal: str = ""
    met: str = ""
    load_before: str = ""
    load_after: str = ""
    command: str = ""

    def cells(self) -> tuple[str, ...]:
        return (self.bench, self.figure, self.value, self.baseline, self.ratio, self.goal, self.met,
                self.load_before, self.load_after, self.command)


def rows_of(bench: str, pairs: dict[str, str], load_before: float, load_after: float, command: str) -> list[Row]:
    """A bench's figures (its parsed last line) as summary rows; ``command``: what measured them."""
    loads = (f"{load_before:.2f}", f"{load_after:.2f}")
    rows = []
    for name in figure_names(pairs):
        baseline = pairs.get(f"{name}_baseline", "")
        ratio = number(float(pairs[name]) / float(baseline)) if baseline and float(baseline) else ""
        goal = (f"≥ {pairs[name + '_goal_min']}" if f"{name}_goal_min" in pairs
                else f"≤ {pairs[name + '_goal_max']}" if f"{name}_goal_max" in pairs else "")
        met = {"yes": "met", "no": "not met"}.get(pairs.get(f"{name}_met", ""), "")
        rows.append(Row(bench, name, pairs[name], baseline, ratio, goal, met, *loads, f"`{command}`"))
    return rows


def failed_row(bench: str, returncode: int, load_before: float, load_after: float, command: str) -> Row:
    return Row(bench, "(failed)", f"exit {returncode}", load_before=f"{load_before:.2f}", load_after=f"{load_after:.2f}",
               command=f"`{command}`")


def _table(header: tuple[str, ...], lines: list[tuple[str, ...]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return "\n".join(out)


def write_summary(path: Path, rows: list[Row], heading: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {heading}\n\n{_table(COLUMNS, [r.cells() for r in rows])}\n")


def read_summary(path: Path) -> list[Row]:
    """The rows of a summary written by write_summary."""
    lines = [l for l in path.read_text().splitlines() if l.startswith("| ")]
    return [Row(*(cell.strip() for cell in line.strip("| ").split(" | "))) for line in lines[1:]]


def latest_summary(folder: Path = RESULTS_DIR) -> Path:
    found = sorted(folder.glob("*.md"))
    if not found:
        raise FileNotFoundError(f"no bench summary in {folder}: run `make bench` first")
    return found[-1]


def readme_table(rows: list[Row], source: str) -> str:
    """The README's table: each figure with its baseline, ratio and goal, and the command that measures it."""
    lines = [(r.figure, r.value, r.baseline, r.ratio, " ".join(x for x in (r.goal, r.met and f"({r.met})") if x),
              r.command) for r in rows]
    note = f"From `{source}` (`make bench`: every bench at full size, one after another; load averages there)."
    return note + "\n\n" + _table(("figure", "value", "baseline, same run", "ratio", "goal", "command"), lines)


def replace_readme_table(readme: str, table: str) -> str:
    """``readme`` with the text between the two markers replaced by ``table``."""
    if README_BEGIN not in readme or README_END not in readme:
        raise ValueError("the README has no measured-figures markers")
    head, rest = readme.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_BEGIN}\n{table}\n{README_END}{tail}"
