"""Pure root finding for noise calibration: a bracketing search on a decreasing function.

Kept free of any accountant so it can be tested on closed-form functions. Deterministic: the same
function and arguments always visit the same points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

# f(sigma) returns epsilon, or None when the accountant cannot evaluate that point. An unevaluable
# point is treated as "above the target": the search then only ever moves towards more noise, so
# the sigma it returns always has an epsilon that was actually computed and found <= target.
EpsilonFn = Callable[[float], Optional[float]]


@dataclass(frozen=True)
class SearchResult:
    sigma: float
    epsilon: float
    evaluations: int
    unevaluable: int  # how many probed points the accountant could not evaluate


class Unreachable(Exception):
    """No sigma up to the ceiling meets the target."""


def smallest_sigma(
    f: EpsilonFn,
    *,
    target: float,
    tolerance: float,
    start: float,
    ceiling: float,
    floor: float = 1e-3,
    factor: float = 2.0,
    max_evaluations: int = 60,
) -> SearchResult:
    """Smallest sigma (to within `tolerance` in epsilon) whose epsilon is <= target.

    f must be non-increasing in sigma (true of every accountant here: more noise, less loss).

    1. Bracket: from `start`, multiply by `factor` until f(hi) <= target (fails past `ceiling`),
       and divide by it until f(lo) > target (or `floor`); the factor is squared after every
       step, so a good `start` costs two evaluations and a bad one only O(log log) more.
    2. Shrink [lo, hi] keeping f(lo) > target >= f(hi). Trial points come from interpolating
       log(epsilon) linearly in log(sigma) towards target - tolerance/2 (so the upper end lands
       inside the tolerance window in a few steps), clamped to the middle 80% of the bracket so
       the bracket always shrinks by at least 10%; every third step is a plain bisection.
    3. Stop when target - f(hi) <= tolerance, the bracket is narrower than 1e-9 relative, or the
       evaluation budget is spent. Return hi: its epsilon is <= target by construction.

    Raises:
        Unreachable: when f(ceiling) is still above target (or unevaluable).
    """
    evaluations = 0
    unevaluable = 0

    def ev(sigma: float) -> Optional[float]:
        nonlocal evaluations, unevaluable
        evaluations += 1
        value = f(sigma)
        if value is None or not math.isfinite(value):
            unevaluable += 1
            return None
        return value

    def above(value: Optional[float]) -> bool:
        return value is None or value > target

    if factor <= 1.0:
        raise ValueError("factor must be > 1")
    hi = min(max(start, floor), ceiling)
    f_hi = ev(hi)
    grow = factor
    while above(f_hi):
        if hi >= ceiling:
            raise Unreachable(f"epsilon stays above {target} even at noise multiplier {ceiling:g}")
        hi = min(hi * grow, ceiling)
        grow = min(grow * grow, 1e3)
        f_hi = ev(hi)
    lo, f_lo = hi, f_hi
    grow = factor
    while not above(f_lo):
        hi, f_hi = lo, f_lo
        if lo <= floor:
            return SearchResult(sigma=hi, epsilon=f_hi, evaluations=evaluations, unevaluable=unevaluable)
        lo = max(lo / grow, floor)
        grow = min(grow * grow, 1e3)
        f_lo = ev(lo)
    assert f_hi is not None

    aim = target - tolerance / 2.0
    step = 0
    while target - f_hi > tolerance and (hi - lo) > 1e-9 * hi and evaluations < max_evaluations:
        step += 1
        width = hi - lo
        trial = lo + width / 2.0
        if step % 3 != 0 and f_lo is not None and f_lo > 0 and f_hi > 0 and aim > 0:
            a, b = math.log(lo), math.log(hi)
            fa, fb = math.log(f_lo), math.log(f_hi)
            if fa != fb:
                x = a + (math.log(aim) - fa) * (b - a) / (fb - fa)
                trial = math.exp(x)
        trial = min(max(trial, lo + 0.1 * width), hi - 0.1 * width)
        value = ev(trial)
        if above(value):
            lo, f_lo = trial, value
        else:
            assert value is not None
            hi, f_hi = trial, value
    return SearchResult(sigma=hi, epsilon=f_hi, evaluations=evaluations, unevaluable=unevaluable)
