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
from typing import TYPE_CHECKING, Any

from kvreceipts.sweep.methods import HASH_MODULUS, StackDistances, block_hash

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["expected_error", "prepare", "shards"]


def shards(  # noqa: PLR0912, PLR0915 - one pass, its state in locals: sampling's hot loop
    blocks: Sequence[int],
    rate: float,
    *,
    max_blocks: int = 0,
    window: tuple[float, float] = (0.0, 1.0),
    heavy: bool = True,
    adjust: bool = False,
    prepared: Prepared | None = None,
    sample_sizes: list[int] | None = None,
) -> StackDistances:
    """SHARDS-adj stack distances of ``blocks`` at ``rate`` (a histogram in references of the
    whole trace). ``window`` keeps only light blocks whose hash lies in that share of the
    sampled range (the split-half estimate); ``heavy=False`` samples heavy blocks too.
    """
    n = len(blocks)
    prepared = prepared or prepare(blocks)
    heavy_at = math.ceil(1 / rate) if heavy and rate < 1 else n + 1
    low = window[0] * rate * HASH_MODULUS
    threshold = window[1] * rate * HASH_MODULUS  # lowered by fixed-size SHARDS
    at, stream, stream_hashes, heavy_set = _stream(prepared, heavy_at, low, threshold)
    m = len(stream)
    few_heavy = len(heavy_set) <= _FEW_HEAVY
    heavy_last: dict[int, int] = {}  # with few heavy blocks: each one's latest access
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
        if not is_heavy and stream_hashes[time - 1] >= threshold:
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
                    heapq.heappush(members, (-stream_hashes[time - 1], block))
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
            scale = HASH_MODULUS / (threshold - low)
            # The references since the previous use bound the distinct blocks among them; a
            # reuse closer than 1/R references, which the sample cannot resolve, takes that
            # bound (exact when they are distinct, as the blocks of a prompt are).
            gap = at[time - 1] - last_at[block]
            if gap < scale:
                distance = gap
            else:
                others = light - _prefix(light_tree, previous)
                if few_heavy:  # a handful of heavy blocks: count those touched since directly
                    heavies = sum(1 for t in heavy_last.values() if t > previous)
                else:
                    heavies = heavy_count - _prefix(heavy_tree, previous)
                distance = min(gap, round(others * scale + heavies + unit))
            histogram[distance] = histogram.get(distance, 0.0) + unit
            seen += unit
            if not (is_heavy and few_heavy):
                _add(tree, previous, -1, m)
        if is_heavy and few_heavy:
            heavy_last[block] = time
        else:
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


Prepared = tuple[Any, Any, Any]
"""What every sample of a trace reads, per reference: the block, its hash, and how many
references its block has (numpy arrays, or lists without numpy)."""


def prepare(blocks: Sequence[int]) -> Prepared:
    """Per reference: the block, its sampling hash and its block's reference count."""
    try:
        import numpy as np

        array = np.asarray(blocks, dtype=np.int64)
    except (ImportError, OverflowError):  # no numpy, or ids beyond 64 bits: slower
        counts = Counter(blocks)
        return list(blocks), [block_hash(b) for b in blocks], [counts[b] for b in blocks]
    with np.errstate(over="ignore"):  # splitmix64's finalizer, as block_hash
        z = array.view(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = (z ^ (z >> np.uint64(31))) & np.uint64(HASH_MODULUS - 1)
    _, inverse, per_block = np.unique(array, return_inverse=True, return_counts=True)
    return array, z.astype(np.int64), per_block[inverse]


def _stream(
    prepared: Prepared, heavy_at: int, low: float, high: float
) -> tuple[list[int], list[int], list[int], set[int]]:
    """The references a sample reads: their positions (1-based), blocks and hashes, and the
    heavy blocks (referenced at least ``heavy_at`` times).
    """
    array, hashes, counts = prepared
    if isinstance(array, list):
        keep = [i for i in range(len(array))
                if counts[i] >= heavy_at or low <= hashes[i] < high]  # fmt: skip
        heavy = {array[i] for i in keep if counts[i] >= heavy_at}
        return ([i + 1 for i in keep], [array[i] for i in keep], [hashes[i] for i in keep],
                heavy)  # fmt: skip
    import numpy as np

    is_heavy = counts >= heavy_at
    kept = np.nonzero(is_heavy | ((hashes >= low) & (hashes < high)))[0]
    heavy_blocks: list[int] = np.unique(array[kept[is_heavy[kept]]]).tolist()
    return ((kept + 1).tolist(), array[kept].tolist(), hashes[kept].tolist(),
            set(heavy_blocks))  # fmt: skip


_FEW_HEAVY = 32
"""Up to this many heavy blocks, a reuse counts the heavy blocks touched since its previous
use by looking at each (a shared prompt prefix is one or a few blocks, referenced by every
request: a tree update per reference would cost more)."""


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
    prepared: Prepared | None = None,
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
