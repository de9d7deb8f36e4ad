"""The discrete Laplace mechanism: integer noise with P(k) ∝ exp(−ε·|k|).

A query's histogram has L1 sensitivity 1 (one user is in exactly one cell,
so adding or removing a user changes one count by one); adding independent
discrete Laplace noise of parameter ε to every cell makes the answer
ε-differentially private. The noise is the difference of two independent
geometric variables of success probability p = 1 − e^(−ε), each drawn by
inverting its distribution function (P(G ≥ m) = e^(−ε·m)). The partner's
draws use the operating system's randomness; a test passes its own seeded
generator.

Its variance is 2q/(1 − q)² with q = e^(−ε), and P(|X| > t) = 2q^(t+1)/(1 + q):
`noise_bound` is the smallest t with that at most 1 − confidence, the bound
an answer states.
"""
from __future__ import annotations

import math
import random
import secrets

import numpy as np

MIN_EPSILON = 1e-6   # below this the noise (around 1/ε) would not fit a 64-bit count


def _check_epsilon(epsilon: float) -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not math.isfinite(epsilon) \
            or epsilon < MIN_EPSILON:
        raise ValueError(f"ε must be a number of at least {MIN_EPSILON}, got {epsilon!r}")
    return float(epsilon)


def _geometric(log_q: float, rng: random.Random) -> int:
    """G ≥ 0 with P(G ≥ m) = q^m: the number of failures before the first success."""
    uniform = 1.0 - rng.random()   # in (0, 1]
    return int(math.floor(math.log(uniform) / log_q))


def discrete_laplace(epsilon: float, size: int, rng: random.Random | None = None) -> np.ndarray:
    """``size`` independent draws (int64) with P(k) = (1 − q)/(1 + q)·q^|k|, q = e^(−ε)."""
    log_q = -_check_epsilon(epsilon)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"size must be a whole number, got {size!r}")
    rng = rng if rng is not None else secrets.SystemRandom()
    return np.array([_geometric(log_q, rng) - _geometric(log_q, rng) for _ in range(size)], dtype=np.int64)


def tail(epsilon: float, t: int) -> float:
    """P(|X| > t) for one draw: 2q^(t+1)/(1 + q)."""
    q = math.exp(-_check_epsilon(epsilon))
    return 2.0 * q ** (t + 1) / (1.0 + q)


def noise_bound(epsilon: float, confidence: float = 0.95) -> int:
    """The smallest t with P(|X| > t) <= 1 − confidence: one cell's noise is within ±t with that confidence."""
    epsilon = _check_epsilon(epsilon)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}")
    q = math.exp(-epsilon)
    t = max(0, math.ceil(math.log((1 - confidence) * (1 + q) / 2) / -epsilon) - 1)
    while t > 0 and tail(epsilon, t - 1) <= 1 - confidence:   # rounding in the logarithm: step to the smallest
        t -= 1
    while tail(epsilon, t) > 1 - confidence:
        t += 1
    return t
