"""Tests written to kill the paged allocator's mutants (``nox -s mutants``): its upstream
layout, its batch rounds and its memory tiers, each checked against an independent model of
what the receipts must say. docs/development.md lists the survivors judged equivalent.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvreceipts.clock import SimClock
from kvreceipts.config import CachingConfig
from kvreceipts.paged import PagedKVCacheManager
from kvreceipts.receipts import KvDemotionReceipt, KvEvictionBatchReceipt, KvEvictionReport
from kvreceipts.tiers import Tier
from kvreceipts.workloads import Request

if TYPE_CHECKING:
    from collections.abc import Sequence

    from kvreceipts.sinks import ChannelSink

BLOCK_TOKENS = 16
GROUPS = st.lists(st.lists(st.integers(0, 24), min_size=1, max_size=7), min_size=1, max_size=30)


def _requests(groups: Sequence[Sequence[int]]) -> list[Request]:
    out = []
    for i, hashes in enumerate(groups):
        tokens = len(hashes) * BLOCK_TOKENS - 5  # a partly filled last block
        out.append(Request(f"q{i}", f"s{i}", float(i), tokens, 1, tokens + 1, list(hashes)))
    return out


def _manager(capacity: int, **options: Any) -> tuple[PagedKVCacheManager, ChannelSink]:
    from kvreceipts.sinks import ChannelSink

    sink = ChannelSink(1_000_000)
    manager = PagedKVCacheManager(CachingConfig(enable_receipts=True), capacity_blocks=capacity,
                                  block_tokens=BLOCK_TOKENS, clock=SimClock(), sink=sink,
                                  **options)  # fmt: skip
    return manager, sink


def _replay(manager: PagedKVCacheManager, sink: ChannelSink, requests: list[Request]) -> list[Any]:
    records: list[Any] = []
    for request in requests:
        manager.clock.advance_to(request.arrival_ms * 10)  # type: ignore[attr-defined]
        manager.serve(request)
        records += sink.drain()
    return [r for r in records if r.kind in ("eviction", "eviction_batch", "demotion")]


# --- the upstream layout says what the lean one says, and the full figures besides --------


@pytest.mark.needs("receipts")
@settings(max_examples=40, deadline=None)
@given(groups=GROUPS, capacity=st.integers(3, 9), policy=st.sampled_from(["lru", "s3fifo"]))
def test_upstream_receipts_agree_with_lean_ones_and_carry_the_full_figures(
    groups: list[list[int]], capacity: int, policy: str
) -> None:
    requests = _requests(groups)
    lean = _replay(*_manager(capacity, policy=policy), requests)
    manager, sink = _manager(capacity, policy=policy, layout="upstream")
    full = _replay(manager, sink, requests)
    assert len(full) == len(lean)
    block = manager.block_bytes
    for a, b in zip(lean, full, strict=True):
        assert isinstance(b, KvEvictionReport)
        for name in ("seq", "session_id", "block_offset", "block_size_bytes", "reason",
                     "trigger_session_id", "block_hash"):  # fmt: skip
            assert getattr(a, name) == getattr(b, name), name
        assert b.policy == policy
        for name in ("total_sessions", "used_bytes"):
            assert getattr(a.before, name) == getattr(b.before, name), name
        for name in ("total_sessions", "used_bytes", "cache_hits", "cache_misses", "evictions"):
            assert getattr(a.after, name) == getattr(b.after, name), name
        before, after = b.before, b.after
        assert (before.cache_hits, before.cache_misses) == (after.cache_hits, after.cache_misses)
        assert before.evictions == after.evictions - 1
        assert before.total_bytes == after.total_bytes == capacity * block
        assert before.used_bytes == before.total_sessions * block


# --- batch rounds: one per request that evicted, covering its evictions -------------------


@pytest.mark.needs("receipts")
@settings(max_examples=40, deadline=None)
@given(groups=GROUPS, capacity=st.integers(3, 9))
def test_batch_rounds_cover_each_requests_evictions(groups: list[list[int]], capacity: int) -> None:
    groups = [g for g in groups if len(g) <= capacity]  # a longer one is refused: too large
    manager, sink = _manager(capacity, batch_receipts=True)
    block = manager.block_bytes
    records = _replay(manager, sink, _requests(groups))
    evictions: list[KvEvictionReport] = []
    for record in records:
        if not isinstance(record, KvEvictionBatchReceipt):
            evictions.append(record)
            continue
        assert evictions, "a round with no evictions before it"
        assert (record.first_seq, record.last_seq) == (evictions[0].seq, evictions[-1].seq)
        assert record.count == len(evictions)
        assert len({e.trigger_session_id for e in evictions}) == 1  # one request's round
        assert record.total_bytes_freed == len(evictions) * block
        assert record.required_bytes == len(evictions) * block  # unpinned: every miss fits
        assert record.satisfied
        assert record.pool_used_before == capacity * block  # a round starts with a full pool
        assert record.pool_used_after == capacity * block
        assert record.pool_used_after_evictions == record.pool_used_before - len(evictions) * block
        assert record.allocated_bytes == len(evictions) * block
        assert record.fragmentation_before == record.fragmentation_after == 0.0  # fixed blocks
        evictions = []
    assert not evictions, "evictions no round covered"
    assert manager.peak_used_bytes == min(capacity, len({h for g in groups for h in g})) * block


@pytest.mark.needs("receipts")
def test_a_round_that_finds_every_block_pinned_is_unsatisfied() -> None:
    manager, sink = _manager(3, batch_receipts=True)
    held = Request("held", "s", 0.0, 16, 1, 17, [1])
    manager.serve(held, hold=True)
    manager.serve(Request("fill", "s", 1.0, 32, 1, 33, [2, 3]))
    sink.drain()
    served = manager.serve(Request("big", "s", 2.0, 48, 1, 49, [4, 5, 6]))
    assert not served.admitted
    records = sink.drain()
    (round_,) = [r for r in records if isinstance(r, KvEvictionBatchReceipt)]
    assert round_.count == 2
    assert not round_.satisfied
    assert round_.required_bytes == 3 * manager.block_bytes  # two freed, one still wanted
    assert round_.total_bytes_freed == 2 * manager.block_bytes


# --- memory tiers, against a model of exclusive LRU tiers ---------------------------------


def _tier_model(
    groups: Sequence[Sequence[int]], sizes: Sequence[int], names: Sequence[str]
) -> tuple[list[tuple[Any, ...]], list[int], int]:
    """What exclusive LRU tiers without pinning must emit: each demotion (block, from, to,
    trigger) and each eviction (block, trigger, hits, misses, evictions) in order, the hits
    per tier, and the leading-hit tokens.
    """
    tiers: list[OrderedDict[int, None]] = [OrderedDict() for _ in sizes]
    out: list[tuple[Any, ...]] = []
    tier_hits = [0] * len(sizes)
    hits = misses = evictions = prefix = 0
    for i, hashes in enumerate(groups):
        trigger, lead, leading = f"q{i}", 0, True
        for h in hashes:
            found = next((k for k, tier in enumerate(tiers) if h in tier), None)
            if found == 0:
                tiers[0].move_to_end(h)
                hits += 1
                tier_hits[0] += 1
                lead += leading
                continue
            if found is None:
                misses += 1
                leading = False
            else:
                del tiers[found][h]
                hits += 1
                tier_hits[found] += 1
                lead += leading
            moving: int | None = h
            for k, tier in enumerate(tiers):
                assert moving is not None
                incoming, moving = moving, None
                if len(tier) >= sizes[k]:
                    moving, _ = tier.popitem(last=False)
                    if k + 1 < len(tiers):
                        out.append(("demotion", moving, names[k], names[k + 1], trigger))
                tier[incoming] = None
                if moving is None:
                    break
            if moving is not None:
                evictions += 1
                out.append(("eviction", moving, trigger, hits, misses, evictions))
        tokens = len(hashes) * BLOCK_TOKENS - 5
        prefix += lead * BLOCK_TOKENS if lead < len(hashes) else tokens
    return out, tier_hits, prefix


def _seen(record: Any) -> tuple[Any, ...]:
    if isinstance(record, KvDemotionReceipt):
        return ("demotion", record.block_hash, record.from_tier, record.to_tier,
                record.trigger_session_id)  # fmt: skip
    after = record.after
    return ("eviction", record.block_hash, record.trigger_session_id, after.cache_hits,
            after.cache_misses, after.evictions)  # fmt: skip


@pytest.mark.needs("receipts")
@settings(max_examples=60, deadline=None)
@given(groups=GROUPS, sizes=st.lists(st.integers(1, 4), min_size=2, max_size=3))
def test_tiered_receipts_follow_exclusive_lru_tiers(
    groups: list[list[int]], sizes: list[int]
) -> None:
    names = ["hbm", "dram", "disk"][: len(sizes)]
    lower = [Tier(name, size, 0) for name, size in zip(names[1:], sizes[1:], strict=True)]
    manager, sink = _manager(sizes[0], lower_tiers=lower, pin_admitting=False, top_tier="hbm")
    records = _replay(manager, sink, _requests(groups))
    expected, tier_hits, prefix = _tier_model(groups, sizes, names)
    assert [_seen(r) for r in records] == expected
    assert manager.tier_hits == tier_hits
    assert manager.hits == sum(tier_hits)
    assert manager.misses == sum(map(len, groups)) - sum(tier_hits)
    assert manager.demotions == sum(1 for e in expected if e[0] == "demotion")
    assert manager.evictions == sum(1 for e in expected if e[0] == "eviction")
    assert manager.prefix_hit_tokens == prefix
    block = manager.block_bytes
    assert manager.bytes_freed == manager.evictions * block
    assert manager.peak_used_bytes == min(sizes[0], len({h for g in groups for h in g})) * block


@pytest.mark.needs("receipts")
def test_a_tiered_request_that_finds_every_block_pinned_is_rejected_and_counted() -> None:
    manager, sink = _manager(3, lower_tiers=[Tier("dram", 2, 0)], top_tier="hbm")
    held = Request("held", "s", 0.0, 32, 1, 33, [1, 2])
    manager.serve(held, hold=True)
    served = manager.serve(Request("next", "s", 1.0, 48, 1, 49, [3, 4, 5]))
    assert not served.admitted  # 1 and 2 are held, 3 is its own: no victim for 4
    assert manager.rejected_by_reason == {"all_pinned": 1}
    assert (manager.hits, manager.misses) == (0, 5)  # the blocks not looked up count as misses
    assert manager.prefix_hit_tokens == 0
    assert manager.cached_blocks().keys() == {1, 2, 3}
    manager.release(held)
    sink.drain()
    assert manager.serve(Request("again", "s", 2.0, 48, 1, 49, [6, 7, 8])).admitted
    records = sink.drain()
    moved = [r for r in records if isinstance(r, KvDemotionReceipt)]
    assert {r.block_hash for r in moved} == {1, 2, 3}
    assert {(r.from_tier, r.to_tier) for r in moved} == {("hbm", "dram")}
    assert {r.trigger_session_id for r in moved} == {"again"}
    (gone,) = [r for r in records if isinstance(r, KvEvictionReport)]
    assert gone.block_hash == moved[0].block_hash  # the dram tier's oldest leaves it
    assert gone.trigger_session_id == "again"


# --- requests without block hashes (Azure traces): fresh blocks, never shared -------------


@pytest.mark.needs("receipts")
def test_a_request_without_hashes_takes_fresh_blocks_of_its_own() -> None:
    manager, sink = _manager(4)
    for i, tokens in enumerate((33, 1, 0, 16)):  # 3 blocks, then 1, 1 (at least one), 1
        manager.serve(Request(f"a{i}", "s", float(i), tokens, 1, tokens + 1, None))
    assert manager.hits == 0
    assert manager.misses == 6
    (first, second) = [r for r in sink.drain() if isinstance(r, KvEvictionReport)]
    assert (first.block_hash, second.block_hash) == (-1, -2)  # the oldest fresh blocks
    assert sorted(manager.cached_blocks()) == [-6, -5, -4, -3]
