"""SHARDS for LRU (Waldspurger et al., FAST 2015), with what this kind of trace needs.

A block is sampled when its hash falls under a threshold (``hash mod P < T``, rate
``R = T/P``), so a sampled block keeps all its references, and each sampled reference stands
for ``1/R`` of them. Reuse distances are counted in the same units: a sampled block stands for
``1/R`` distinct blocks. Three additions to plain sampling, each measured in docs/sweep.md:

- **The sample's size.** The sample holds more or fewer references than ``R·N`` by chance.
  SHARDS-adj (§3.3, ``adjust=True``) counts the difference as hits at the smallest distance;
  by default the histogram is instead divided by the sample's own weight, which measured
  better on both Mooncake traces (docs/sweep.md): there the missing references are mostly
  misses, not reuses at distance 1.
- **Reuses closer than the sample resolves.** A sampled block stands for ``1/R`` distinct
  blocks, so distances under ``1/R`` cannot be told apart. The references since the block's
  previous use bound the distinct blocks among them; a reuse fewer than ``1/R`` references
  after the last takes that bound (exact when they are distinct, as a prompt's blocks are).
- **Heavy blocks, exactly.** Spatial sampling assumes no block carries a large share of the
  references. A prompt prefix shared by every request breaks that (Mooncake's block 0 is 4.2%
  of the conversation trace's lookups): sampled, it moves the curve by up to ``4.2%/R``; not
  sampled, it is missing. Blocks referenced at least ``1/R`` times are therefore always kept,
  at weight 1 (there are at most ``R·N`` of them, the sample's own size).
- **Fixed-size SHARDS** (§4, ``max_blocks``): the sample holds at most ``S`` distinct light
  blocks whatever the trace; when a new one would exceed it, the block with the largest hash
  leaves the sample and the threshold drops to its hash, so the rate adapts. A reference
  counts ``1/R`` at the rate in force when it is seen (the paper's rescaling of the
  histogram by ``R'/R``, in the units used here).

The expected error printed beside sampled results is a split-half estimate: the light blocks
are split by hash into two independent samples of rate ``R/2``; their curves differ by about
twice the full sample's mean absolute error.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from typing import TYPE_CHECKING

from kvreceipts.sweep.methods import HASH_MODULUS, StackDistances, _numpy_hashes, block_hash

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["expected_error", "prepare", "shards"]


def shards(  # noqa: PLR0915 - one pass, its state in locals: the hot loop of sampling
    blocks: Sequence[int],
    rate: float,
    *,
    max_blocks: int = 0,
    window: tuple[float, float] = (0.0, 1.0),
    heavy: bool = True,
    adjust: bool = False,
    prepared: tuple[Counter[int], dict[int, int]] | None = None,
    sample_sizes: list[int] | None = None,
) -> StackDistances:
    """SHARDS-adj stack distances of ``blocks`` at ``rate`` (a histogram in references of the
    whole trace). ``window`` keeps only light blocks whose hash lies in that share of the
    sampled range (the split-half estimate); ``heavy=False`` samples heavy blocks too.
    """
    n = len(blocks)
    counts, hash_of = prepared or prepare(blocks)
    heavy_at = math.ceil(1 / rate) if heavy and rate < 1 else n + 1
    heavy_set = {b for b, c in counts.items() if c >= heavy_at}
    low = window[0] * rate * HASH_MODULUS
    threshold = window[1] * rate * HASH_MODULUS  # lowered by fixed-size SHARDS
    at = [i for i, b in enumerate(blocks, start=1)
          if b in heavy_set or low <= hash_of[b] < threshold]  # fmt: skip
    stream = [blocks[i - 1] for i in at]
    m = len(stream)
    light_tree = [0] * (m + 1)  # Fenwick trees over the stream's times: 1 at each block's
    heavy_tree = [0] * (m + 1)  # latest access, light and heavy blocks apart
    last: dict[int, int] = {}
    last_at: dict[int, int] = {}  # the block's latest position in the whole trace
    members: list[tuple[int, int]] = []  # fixed size: (-hash, block) of light blocks kept
    histogram: dict[int, float] = {}
    light = heavy_count = 0
    seen = cold = 0.0  # weight of the references sampled, and of the first touches
    for time, block in enumerate(stream, start=1):
        is_heavy = block in heavy_set
        if not is_heavy and hash_of[block] >= threshold:
            continue  # its block left the sample when the threshold dropped
        unit = 1.0 if is_heavy else HASH_MODULUS / (threshold - low)
        previous = last.get(block)
        tree = heavy_tree if is_heavy else light_tree
        if previous is None:
            if is_heavy:
                heavy_count += 1
            else:
                light += 1
                if max_blocks:
                    heapq.heappush(members, (-hash_of[block], block))
                    if light > max_blocks:
                        threshold, gone = _shrink(members, last, light_tree, m)
                        light -= 1
                        if gone == block:
                            continue
                        unit = HASH_MODULUS / (threshold - low)
                if sample_sizes is not None:
                    sample_sizes.append(light)
            seen += unit
            cold += unit
        else:
            others = light - _prefix(light_tree, previous)
            heavies = heavy_count - _prefix(heavy_tree, previous)
            scale = HASH_MODULUS / (threshold - low)
            # The references since the previous use bound the distinct blocks among them; a
            # reuse closer than 1/R references, which the sample cannot resolve, takes that
            # bound (exact when they are distinct, as the blocks of a prompt are).
            gap = at[time - 1] - last_at[block]
            estimate = round(others * scale + heavies + unit)
            distance = gap if gap < scale else min(gap, estimate)
            histogram[distance] = histogram.get(distance, 0.0) + unit
            seen += unit
            _add(tree, previous, -1, m)
        _add(tree, time, 1, m)
        last[block] = time
        last_at[block] = at[time - 1]
    dense = [0.0] * (max(histogram, default=1) + 2)
    for distance, weight in histogram.items():
        dense[distance] += weight
    if not adjust:  # the sample's own weight is the whole
        return StackDistances(dense, cold, m, 1.0 / rate, seen or 1.0)
    # SHARDS-adj: the weight the sample should hold (every reference once) minus what it holds.
    dense[1] += n - seen
    return StackDistances(dense, cold, m, 1.0 / rate, float(n) or 1.0)


def prepare(blocks: Sequence[int]) -> tuple[Counter[int], dict[int, int]]:
    """What every sample of ``blocks`` reads: references per block, and each block's hash."""
    counts = Counter(blocks)
    unique = list(counts)
    hashes = _numpy_hashes(unique) or [block_hash(b) for b in unique]
    return counts, dict(zip(unique, hashes, strict=True))


def _shrink(
    members: list[tuple[int, int]], last: dict[int, int], tree: list[int], m: int
) -> tuple[float, int]:
    """Fixed size: drop the kept light block with the largest hash; the new threshold."""
    negative, gone = heapq.heappop(members)
    position = last.pop(gone, None)
    if position is not None:
        _add(tree, position, -1, m)
    return float(-negative), gone


def _prefix(tree: list[int], i: int) -> int:
    total = 0
    while i:
        total += tree[i]
        i &= i - 1
    return total


def _add(tree: list[int], i: int, value: int, m: int) -> None:
    while i <= m:
        tree[i] += value
        i += i & -i


def expected_error(
    blocks: Sequence[int],
    rate: float,
    capacities: Sequence[int],
    *,
    max_blocks: int = 0,
    adjust: bool = False,
    prepared: tuple[Counter[int], dict[int, int]] | None = None,
) -> float:
    """The split-half estimate of the mean absolute hit-ratio error at ``capacities``: half
    the mean difference between two independent samples of half the rate.
    """
    prepared = prepared or prepare(blocks)
    halves = [
        shards(
            blocks,
            rate,
            max_blocks=max_blocks // 2,
            window=window,
            adjust=adjust,
            prepared=prepared,
        )
        for window in ((0.0, 0.5), (0.5, 1.0))
    ]
    n = len(blocks) or 1
    a, b = (h.hits_at(capacities) for h in halves)
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(capacities) / n / 2
