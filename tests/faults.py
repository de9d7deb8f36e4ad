"""What the fault tests tried, for the summary pytest prints at the end of a run (see conftest)."""
from collections import Counter

COUNTS: Counter = Counter()


def count(kind: str, n: int = 1) -> None:
    COUNTS[kind] += n


def attack(succeeded: bool) -> bool:
    """Count one attack a test performed against today's code, and whether it worked; returns ``succeeded``.

    A test asserts the attack failed *after* counting it, so the summary line shows what was tried even when
    an assertion stops the test: "attacks tried: N, succeeded: 0" is what a passing run prints.
    """
    COUNTS["attacks tried"] += 1
    COUNTS["attacks succeeded"] += int(succeeded)
    return succeeded
