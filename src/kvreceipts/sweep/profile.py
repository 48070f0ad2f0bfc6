"""Exact unpinned LRU, everything from one pass: block hits, prefix tokens, tiers and targets.

One pass over the requests computes every block lookup's LRU stack distance (Mattson et al.,
1970; a Fenwick tree over access times)
and, per request, the running maximum of its blocks' distances. An LRU cache of ``C`` blocks
hits a lookup exactly when its distance is at most ``C``, so:

- block hits at ``C`` are the lookups of distance ``<= C`` (``histogram``);
- a request's leading run of hits at ``C`` is its blocks whose running maximum is ``<= C``, so
  the prefix-hit tokens at ``C`` are the tokens of the blocks whose running maximum is
  ``<= C`` (``tokens``: each block counts ``block_tokens``, the request's last one what is
  left of its input);
- exclusive tiers of LRU caches (a block evicted from tier k moves to tier k+1, a hit in a
  lower tier moves the block back to the first) hold the most recent blocks in tier order, so
  the first k tiers together hit exactly as one LRU cache of their summed size;
- the smallest capacity reaching a hit-ratio target is read off the cumulative histogram.
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kvreceipts.sweep.methods import Counts

if TYPE_CHECKING:
    from collections.abc import Sequence

    from kvreceipts.workloads import Request

__all__ = ["LruProfile", "lru_profile", "needed", "request_tokens"]


def request_tokens(input_tokens: int, blocks: int, block_tokens: int) -> list[int]:
    """The tokens each of a request's blocks stands for: ``block_tokens``, except the last
    block, which holds what is left of the input (never below 0).
    """
    if blocks <= 0:
        return []
    last = max(0, input_tokens - block_tokens * (blocks - 1))
    return [block_tokens] * (blocks - 1) + [last]


@dataclass(slots=True)
class LruProfile:
    """The histograms of one pass. Index ``d`` (1-based) holds what has distance ``d``."""

    histogram: list[int]
    """Block lookups by stack distance."""
    tokens: list[int]
    """Prompt tokens by the running maximum distance of their request's blocks."""
    lookups: int
    distinct: int
    prompt_tokens: int
    _hits: list[int] = field(default_factory=list)
    _token_hits: list[int] = field(default_factory=list)

    def _cumulative(self) -> tuple[list[int], list[int]]:
        if not self._hits:
            self._hits = list(itertools.accumulate(self.histogram))
            self._token_hits = list(itertools.accumulate(self.tokens))
        return self._hits, self._token_hits

    def cumulative(self, *, tokens: bool = False) -> list[int]:
        """Hits (or prefix-hit tokens) at every capacity, by capacity."""
        return self._cumulative()[1 if tokens else 0]

    def hits(self, capacity: int) -> int:
        """Block hits of an LRU cache of ``capacity`` blocks."""
        cumulative, _ = self._cumulative()
        return cumulative[min(max(capacity, 0), len(cumulative) - 1)]

    def token_hits(self, capacity: int) -> int:
        """Prefix-hit tokens of an LRU cache of ``capacity`` blocks."""
        _, cumulative = self._cumulative()
        return cumulative[min(max(capacity, 0), len(cumulative) - 1)]

    @property
    def ceiling_hits(self) -> int:
        """Hits of a cache that holds everything: every lookup but the first touches."""
        return self.lookups - self.distinct

    @property
    def ceiling_token_hits(self) -> int:
        """Prefix-hit tokens of a cache that holds everything."""
        return self.token_hits(len(self.tokens))

    def counts(self, capacity: int, tiers: Sequence[int] = ()) -> Counts:
        """The grid point of one capacity, or of exclusive tiers of these sizes (their sum is
        the capacity): hits per tier are those of LRU at the summed size minus at the sizes
        above it.
        """
        total = sum(tiers) if tiers else capacity
        hits = self.hits(total)
        misses = self.lookups - hits
        per_tier: tuple[int, ...] = ()
        if tiers:
            bounds = list(itertools.accumulate(tiers))
            reached = [self.hits(b) for b in bounds]
            per_tier = tuple(b - a for a, b in zip([0, *reached[:-1]], reached, strict=True))
        return Counts(hits, misses, max(0, misses - total), 0, self.lookups,
                      self.token_hits(total), self.prompt_tokens, per_tier)  # fmt: skip

    def smallest_capacity(self, target: float, *, tokens: bool = False) -> int | None:
        """The smallest capacity (blocks) whose hit ratio (block, or token with ``tokens``)
        is at least ``target``; ``None`` when no capacity reaches it.
        """
        cumulative = self._cumulative()[1 if tokens else 0]
        whole = self.prompt_tokens if tokens else self.lookups
        if whole <= 0:
            return None
        need = needed(target, whole)
        if need > cumulative[-1]:
            return None
        return max(1, bisect.bisect_left(cumulative, need))


def needed(target: float, whole: int) -> int:
    """The fewest hits ``h`` with ``h / whole >= target`` (exact, not a float comparison)."""
    need = math.ceil(target * whole)
    while need > 0 and (need - 1) / whole >= target:
        need -= 1
    while need / whole < target:
        need += 1
    return need


def lru_profile(requests: Sequence[Request], block_tokens: int) -> LruProfile:
    """One pass: block and prefix-token stack-distance histograms of unpinned LRU."""
    refs = 0
    for request in requests:
        hashes = request.block_hashes
        refs += (
            len(hashes) if hashes is not None else max(1, -(-request.input_tokens // block_tokens))
        )
    n = refs
    tree = [0] * (n + 1)  # Fenwick tree over access times 1..n: 1 at each block's last access
    last: dict[int, int] = {}
    histogram = [0] * (n + 2)
    tokens = [0] * (n + 2)
    time = distinct = prompt = 0
    fresh = -1  # requests without hashes (Azure): blocks never shared, as the paged cache does
    for request in requests:
        hashes = request.block_hashes
        count = (
            len(hashes) if hashes is not None else max(1, -(-request.input_tokens // block_tokens))
        )
        if hashes is None:
            hashes = range(fresh, fresh - count, -1)
            fresh -= count
        prompt += request.input_tokens
        run = 0  # the running maximum distance; n + 1 once a first touch was met
        for position, block in enumerate(hashes, start=1):
            time += 1
            previous = last.get(block)
            if previous is None:
                distinct += 1
                run = n + 1
            else:
                i, before = previous, 0
                while i:
                    before += tree[i]
                    i &= i - 1
                distance = distinct - before + 1
                histogram[distance] += 1
                i = previous
                while i <= n:
                    tree[i] -= 1
                    i += i & -i
                if run <= n:
                    run = max(run, distance)
                    if position < count:
                        tokens[run] += block_tokens
                    else:
                        tokens[run] += max(0, request.input_tokens - block_tokens * (count - 1))
            i = time
            while i <= n:
                tree[i] += 1
                i += i & -i
            last[block] = time
    return LruProfile(histogram, tokens, n, distinct, prompt)
