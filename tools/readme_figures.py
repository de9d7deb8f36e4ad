"""Write the README's "Measured figures" table from the latest bench summary (bench/results/<date>.md).

    python tools/readme_figures.py [--summary PATH] [--readme PATH]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from summary import latest_summary, read_summary, readme_table, replace_readme_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summary", type=Path, help="default: the latest in bench/results/")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args()
    source = (args.summary or latest_summary()).resolve()
    shown = source.relative_to(ROOT) if source.is_relative_to(ROOT) else source
    table = readme_table(read_summary(source), str(shown))
    args.readme.write_text(replace_readme_table(args.readme.read_text(), table))
    print(f"{args.readme}: measured figures from {shown}")


if __name__ == "__main__":
    main()
