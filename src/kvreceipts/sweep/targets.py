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
    model: Callable[[int], float] | None = None,
) -> tuple[int, int, int]:
    """The smallest capacity in ``1..high`` with ``hits_at(c) >= need``, its hits, and the
    number of ``hits_at`` calls; ``high`` is known to reach ``need`` with ``high_hits``.

    ``model`` maps a hit count to the capacity at which a reference curve (exact LRU) gets
    it. Through it a policy's curve is close to a straight line through the origin (a policy
    is roughly LRU at a scaled capacity), so a few secant steps there, starting at LRU's own
    answer, land within a few blocks of the answer; a bracket around that estimate, widened
    by doubling, is then halved down to one block.
    """
    warp = model or float
    goal = warp(need)
    bracket = [0, 0, high, high_hits]  # lo, its hits, hi, its hits: lo misses, hi reaches
    calls = 0

    def probe(x: int) -> int:
        nonlocal calls
        got = hits_at(x)
        calls += 1
        if got >= need:
            if x < bracket[2]:
                bracket[2:] = [x, got]
        elif x > bracket[0]:
            bracket[:2] = [x, got]
        return got

    def inside(x: float) -> int:
        return min(max(round(x), bracket[0] + 1), bracket[2] - 1)

    # Secant steps in the model's space, from (0, 0) and LRU's answer.
    previous_x, previous_v = 0, 0.0
    x = inside(goal) if model is not None else inside(goal * high / max(1.0, warp(high_hits)))
    step = float(high)
    for _ in range(_SECANT_STEPS):
        if bracket[2] - bracket[0] <= 1:
            break
        v = warp(probe(x))
        if v == previous_v:
            break
        estimate = x + (goal - v) * (x - previous_x) / (v - previous_v)
        step = abs(estimate - x)
        previous_x, previous_v = x, v
        if bracket[2] - bracket[0] <= 1:
            break
        x = inside(estimate)
        if step < 1:
            break
    # A tight bracket around the estimate: step away from the known end at doubling
    # distances until the other side is found, then halve.
    reach = max(1, math.ceil(step))
    if bracket[0] < x < bracket[2]:
        probe(x)
    galloping = True
    while bracket[2] - bracket[0] > 1:
        lo, hi = bracket[0], bracket[2]
        if galloping and hi - lo > 2 * reach:
            got = probe(hi - reach if x >= hi else lo + reach if x <= lo else x)
            galloping = (got >= need) == (x >= hi)
            x = bracket[2] if got >= need else bracket[0]
            reach *= 2
            continue
        probe((lo + hi) // 2)
    return bracket[2], bracket[3], calls


_SECANT_STEPS = 4
"""At most this many secant steps before the bracket is settled by halving."""
