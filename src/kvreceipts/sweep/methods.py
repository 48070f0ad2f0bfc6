"""How a grid point's hits are counted: a full replay, or SHARDS' LRU curve.

The exact LRU curve is :mod:`kvreceipts.sweep.profile` (Mattson et al., 1970: one pass of
stack distances). ``shards`` is Waldspurger et al. (FAST 2015): only blocks whose hash falls
under a threshold (``hash mod P < R·P``) are kept, so a kept block keeps all its references;
:mod:`kvreceipts.sweep.shards` measures the sample's distances, and :func:`lru_counts` turns
any histogram of distances into hits at each capacity. For policies that are not stack
algorithms the sample is replayed as a miniature cache of ``C·R`` blocks (Waldspurger et al.,
ATC 2017): :func:`sampled` and :func:`sample_requests` cut it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from kvreceipts.workloads import Request

__all__ = [
    "HASH_MODULUS",
    "Counts",
    "StackDistances",
    "block_hash",
    "lru_counts",
    "sample_requests",
    "sampled",
]

HASH_MODULUS = 1 << 24
"""``P`` of SHARDS: a block is sampled when its hash modulo ``P`` is below ``R·P``."""
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Counts:
    """One grid point's outcome."""

    hits: int
    misses: int
    evictions: int
    rejected: int = 0
    sampled_refs: int = 0
    """References the point was computed from (the whole trace, or the SHARDS sample)."""
    prefix_hit_tokens: int | None = None
    """Prompt tokens found cached as a prefix (``None``: not computed, as by SHARDS)."""
    prompt_tokens: int | None = None
    tier_hits: tuple[int, ...] = ()
    """Hits in each memory tier, fastest first (empty without ``--tier``)."""
    expected_error: float | None = None
    """SHARDS: the split-half estimate of the curve's mean absolute hit-ratio error."""


@dataclass(frozen=True, slots=True)
class StackDistances:
    """A histogram of reuse distances: ``histogram[d]`` references had distance ``d``
    (1-based; index 0 is unused), plus ``cold`` first references (infinite distance).
    Weights are floats only for SHARDS, whose counts are scaled.
    """

    histogram: list[float]
    cold: float
    references: int
    """References measured (the sample's size for SHARDS)."""
    scale: float = 1.0
    """Distances were multiplied by this (1/R for SHARDS)."""
    weight: float = 0.0
    """The histogram's total weight (SHARDS-adj: R·N); 0 means ``references``."""

    def hits_at(self, capacities: Sequence[int]) -> list[float]:
        """Hits of an LRU cache of each capacity (in blocks), in one pass over the histogram."""
        order = sorted(range(len(capacities)), key=capacities.__getitem__)
        hits = [0.0] * len(capacities)
        histogram = self.histogram
        total = 0.0
        upto = 0  # histogram[1..upto] are summed into total
        for index in order:
            limit = min(capacities[index], len(histogram) - 1)
            while upto < limit:
                upto += 1
                total += histogram[upto]
            hits[index] = total
        return hits


def lru_counts(distances: StackDistances, capacities: Sequence[int], total: int) -> list[Counts]:
    """Hits, misses and evictions of LRU at each capacity (in blocks) over ``total`` references.

    Unpinned LRU inserts every missed block and only evicts when full, so the evictions are
    the misses beyond the first ``capacity`` ones.
    """
    rows = []
    scaled = distances.scale != 1.0
    for capacity, hit_weight in zip(capacities, distances.hits_at(capacities), strict=True):
        # SHARDS estimates the hit ratio; its hits are that ratio of the whole trace (kept in
        # range: the SHARDS-adj correction can be negative).
        weight = distances.weight or distances.references
        hits = round(hit_weight / weight * total if scaled else hit_weight)
        hits = min(max(hits, 0), total)
        misses = total - hits
        rows.append(Counts(hits, misses, max(0, misses - capacity), 0, distances.references))
    return rows


def block_hash(block: int) -> int:
    """The block's sampling hash in ``[0, P)``: splitmix64's finalizer, which spreads
    sequential ids (Mooncake's are) over the whole range, as SHARDS' hash must.
    """
    z = (block + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) & (HASH_MODULUS - 1)


def sampled(blocks: Iterable[int], rate: float) -> set[int]:
    """The distinct blocks SHARDS keeps at ``rate``: those with ``hash mod P < rate·P``."""
    threshold = rate * HASH_MODULUS
    unique = list(blocks if isinstance(blocks, set) else set(blocks))
    hashes = _numpy_hashes(unique)
    if hashes is None:
        return {b for b in unique if block_hash(b) < threshold}
    return {b for b, h in zip(unique, hashes, strict=True) if h < threshold}


def _numpy_hashes(blocks: list[int]) -> list[int] | None:
    """:func:`block_hash` of every block, vectorized when numpy is installed (a 64-bit
    block id), else ``None``. The same numbers either way: uint64 arithmetic wraps mod 2^64.
    """
    try:
        import numpy as np
    except ImportError:
        return None
    try:
        z = np.array(blocks, dtype=np.int64).view(np.uint64)
    except OverflowError:
        return None
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = (z ^ (z >> np.uint64(31))) & np.uint64(HASH_MODULUS - 1)
    hashes: list[int] = z.tolist()
    return hashes


def sample_requests(requests: Sequence[Request], keep: set[int]) -> list[Request]:
    """The requests restricted to the sampled blocks (those left with none are dropped)."""
    out = []
    for request in requests:
        hashes = [h for h in request.block_hashes or () if h in keep]
        if hashes:
            out.append(request._replace(block_hashes=hashes))
    return out
