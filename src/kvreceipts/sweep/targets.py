"""The smallest capacity that reaches a hit-ratio target, for any policy.

For unpinned LRU the answer is read off the stack distances (:mod:`kvreceipts.sweep.profile`).
For the other policies (and for pinned LRU) :func:`search` finds it with full simulations: a
bracket ``lo < answer <= hi`` where ``lo`` is known to miss the target and ``hi`` to reach it
(at capacity 0 nothing hits; at the trace's distinct blocks nothing is ever evicted, so every
policy reaches the ceiling), narrowed by interpolation (the Illinois variant of regula falsi,
seeded with LRU's exact answer) and by halving once interpolation stops gaining, until
``hi = lo + 1``. Hit counts of FIFO-like policies are not guaranteed to grow with capacity
(Belady's anomaly): the answer is then the smallest capacity of the bracket found, checked
against the capacity below it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from kvreceipts.sweep.methods import Counts

__all__ = ["Answer", "search"]


@dataclass(frozen=True, slots=True)
class Answer:
    """One target's answer: the capacity (``None``: no capacity reaches it) and what it got."""

    metric: str
    """``hit_ratio`` (block lookups) or ``token_hit_ratio`` (prefix tokens)."""
    target: float
    capacity: int | None
    """Blocks; ``None`` when no capacity reaches the target."""
    counts: Counts | None
    """The grid point at ``capacity``."""
    simulations: int
    """Full simulations it took (0: read off the exact stack distances)."""


def search(
    hits_at: Callable[[int], int],
    need: int,
    high: int,
    high_hits: int,
    model: Callable[[float], float] | None = None,
) -> tuple[int, int, int]:
    """The smallest capacity in ``1..high`` with ``hits_at(c) >= need``, its hits, and the
    number of ``hits_at`` calls; ``high`` is known to reach ``need`` with ``high_hits``.

    ``model`` maps a hit count to the capacity at which a reference curve (exact LRU) gets
    it, continuously. Through it a policy's curve is close to a straight line through the
    origin (a policy is roughly LRU at a scaled capacity), so secant steps there, starting at
    LRU's own answer, close in fast. Once a step is short, two probes a little either side of
    the estimate bracket the answer tightly, and halving settles the last blocks.
    """
    warp = model or float
    goal = warp(need)
    bracket = [0, 0, high, high_hits]  # lo, its hits, hi, its hits: lo misses, hi reaches
    calls = 0

    def probe(x: int) -> float:
        nonlocal calls
        got = hits_at(x)
        calls += 1
        if got >= need:
            if x < bracket[2]:
                bracket[2:] = [x, got]
        elif x > bracket[0]:
            bracket[:2] = [x, got]
        return warp(got)

    def inside(x: float) -> int:
        return min(max(round(x), bracket[0] + 1), bracket[2] - 1)

    points = [(0.0, 0.0)]  # (capacity, warped hits) probed, the origin first
    x = inside(goal if model is not None else goal * high / max(1.0, warp(high_hits)))
    step = float(high)
    for _ in range(_SECANT_STEPS):
        if bracket[2] - bracket[0] <= 1:
            break
        points.append((x, probe(x)))
        (x0, v0), (x1, v1) = points[-2], points[-1]
        if v1 == v0:
            break
        estimate = x1 + (goal - v1) * (x1 - x0) / (v1 - v0)
        step = abs(estimate - x1)
        x = inside(estimate)
        if step <= _CLOSE and len(points) > 2:
            break
    # From the estimate, step away at doubling distances until the answer is bracketed
    # (a probe below the target and one reaching it, ``reach`` apart), then halve.
    reach = max(2, math.ceil(step / 2), round(x * _RELATIVE_REACH))
    while bracket[2] - bracket[0] > 1:
        lo, hi = bracket[0], bracket[2]
        if hi - lo <= 2 * reach or not lo < x < hi:
            probe((lo + hi) // 2)
            continue
        probe(x)
        x = x - reach if x == bracket[2] else x + reach
        reach *= 2
    return bracket[2], bracket[3], calls


_SECANT_STEPS = 4
"""At most this many secant steps before the bracket is settled by halving."""
_CLOSE = 64
"""A secant step this short (in blocks) means the estimate is close: bracket it."""
_RELATIVE_REACH = 0.004
"""The first bracketing step, as a share of the estimate: hit counts move in steps (a FIFO
queue's contents change in bursts), so an estimate is seldom closer than this."""
