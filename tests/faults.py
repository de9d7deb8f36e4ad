"""What the fault tests tried, for the summary pytest prints at the end of a run (see conftest)."""
from collections import Counter

COUNTS: Counter = Counter()


def count(kind: str, n: int = 1) -> None:
    COUNTS[kind] += n
