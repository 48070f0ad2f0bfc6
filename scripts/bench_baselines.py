"""The bench's baselines: the sweep's exact LRU and uniform SHARDS-adj as they were before
issue 24 (a Fenwick tree over access times; SHARDS-adj of Waldspurger et al., FAST 2015), kept
here so the bench can still time and score today's methods against them side by side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvreceipts.sweep import methods
from kvreceipts.sweep.methods import StackDistances

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence


def stack_distances(blocks: Iterable[int], *, scale: float = 1.0) -> StackDistances:
    """Every reference's LRU stack distance, as a histogram (one pass, Fenwick tree).

    With ``scale`` the distances are multiplied by it and rounded (SHARDS' 1/R).
    """
    sequence = blocks if isinstance(blocks, list) else list(blocks)
    n = len(sequence)
    tree = [0] * (n + 1)  # Fenwick tree over access times 1..n
    last: dict[int, int] = {}
    histogram: list[float] = [0.0] * (int(n * scale) + 2)
    cold = 0
    distinct = 0  # 1s in the tree: blocks seen so far
    for time, block in enumerate(sequence, start=1):
        previous = last.get(block)
        if previous is None:
            cold += 1
            distinct += 1
        else:
            # Distinct blocks touched at times after `previous`: all 1s minus those at or before.
            i, before = previous, 0
            while i:
                before += tree[i]
                i &= i - 1
            distance = distinct - before + 1
            if scale != 1.0:
                distance = round(distance * scale)
            histogram[distance] += 1
            i = previous  # the block's old access time no longer holds its latest access
            while i <= n:
                tree[i] -= 1
                i += i & -i
        i = time
        while i <= n:
            tree[i] += 1
            i += i & -i
        last[block] = time
    return StackDistances(histogram, float(cold), n, scale)


def shards_distances(blocks: Sequence[int], rate: float) -> StackDistances:
    """SHARDS-adj stack distances of the spatial sample of ``blocks`` at ``rate``."""
    keep = methods.sampled(blocks, rate)
    sample = [b for b in blocks if b in keep]
    return adjusted_distances(sample, rate, len(blocks))


def adjusted_distances(sample: list[int], rate: float, references: int) -> StackDistances:
    """SHARDS-adj: the stack distances of a sample drawn at ``rate`` from ``references``."""
    measured = stack_distances(sample, scale=1.0 / rate)
    # SHARDS-adj: the sample holds more or fewer references than rate·N by chance; counting
    # the difference as reuses at the smallest distance removes most of that bias.
    histogram = list(measured.histogram)
    expected = rate * references
    histogram[1] += expected - len(sample)
    return StackDistances(histogram, measured.cold, len(sample), measured.scale, expected or 1.0)
