"""The arena KV cache manager: hits, misses, policy eviction, TTL, statistics, receipts."""

from __future__ import annotations

import itertools
import threading
from typing import TYPE_CHECKING, Any

import pytest

from kvreceipts import CachingConfig, KVCacheManager, PerformanceReport, ServiceMeter, UsageError
from kvreceipts.clock import SimClock
from kvreceipts.config import MIB
from kvreceipts.policies import POLICIES
from kvreceipts.simulation import run_simulation
from kvreceipts.workloads import Request

if TYPE_CHECKING:
    from kvreceipts.receipts import KvEvictionReport, Receipt, Record, RunOpen
    from kvreceipts.sinks import ChannelSink

ENTRY = 8192
"""Bytes of an entry with context length 16 (two regions of 16 x 64 x 4)."""


def make(
    slots: int = 4,
    *,
    clock: SimClock | None = None,
    sink: Any = None,
    policy: str = "lru",
    layout: str = "lean",
    **config: Any,
) -> KVCacheManager:
    """A manager whose arena holds exactly ``slots`` entries of context 16."""
    caching = CachingConfig(
        kv_cache_size_mb=slots * ENTRY / MIB, enable_receipts=sink is not None, **config
    )
    return KVCacheManager(
        caching, sink=sink, clock=clock or SimClock(), policy=policy, layout=layout
    )


def channel() -> ChannelSink:
    from kvreceipts.sinks import ChannelSink

    return ChannelSink(10_000)


def eviction_receipts(records: list[Receipt]) -> list[KvEvictionReport]:
    from kvreceipts.receipts import KvEvictionReport

    return [record for record in records if isinstance(record, KvEvictionReport)]


def opened(sink: ChannelSink) -> RunOpen:
    """The run's open record (the channel keeps it apart from the receipts)."""
    from kvreceipts.receipts import RunOpen

    record = sink.frames[0]
    assert isinstance(record, RunOpen)
    return record


def fill(manager: KVCacheManager, *sessions: str) -> None:
    for session in sessions:
        assert manager.get_or_create_cache(session, 16) is not None


def test_miss_creates_an_entry() -> None:
    clock = SimClock()
    manager = make(clock=clock)
    clock.advance_to(250.0)

    entry = manager.get_or_create_cache("a", 16)

    assert entry is not None
    assert (entry.session_id, entry.block_offset, entry.block_size_bytes) == ("a", 0, ENTRY)
    assert (entry.region_bytes, entry.context_length, entry.token_count) == (ENTRY // 2, 16, 0)
    assert entry.created_ms == entry.last_accessed_ms == 250.0
    assert "a" in manager
    assert (manager.hits, manager.misses, manager.pool.used_bytes) == (0, 1, ENTRY)


def test_hit_refreshes_last_accessed_and_counts_a_hit() -> None:
    clock = SimClock()
    manager = make(clock=clock)
    first = manager.get_or_create_cache("a", 16)
    clock.advance_to(500.0)

    again = manager.get_or_create_cache("a", 16)

    assert again is first
    assert again is not None
    assert again.last_accessed_ms == 500.0
    assert again.created_ms == 0.0
    assert (manager.hits, manager.misses) == (1, 1)
    assert manager.pool.used_bytes == ENTRY  # a hit allocates nothing
    assert manager.get_statistics().hit_rate == 0.5


def test_lru_evicts_oldest_last_accessed_first() -> None:
    clock = SimClock()
    manager = make(clock=clock)
    for t, session in enumerate("abcd"):
        clock.advance_to(float(t))
        fill(manager, session)
    clock.advance_to(10.0)
    fill(manager, "a")  # a hit: "b" is now the least recently used

    entry = manager.get_or_create_cache("e", 16)

    assert entry is not None
    assert entry.block_offset == ENTRY  # b's block, reused
    assert sorted(e.session_id for e in manager.entries()) == ["a", "c", "d", "e"]
    assert manager.evictions == 1


def test_eviction_frees_until_enough_bytes_then_retries_once() -> None:
    manager = make()
    fill(manager, "a", "b", "c", "d")

    # Needs two slots: a and b (adjacent, oldest) go; c and d stay.
    entry = manager.get_or_create_cache("big", 32)

    assert entry is not None
    assert (entry.block_offset, entry.block_size_bytes) == (0, 2 * ENTRY)
    assert sorted(e.session_id for e in manager.entries()) == ["big", "c", "d"]
    assert manager.evictions == 2
    assert manager.rejected == 0
    assert manager.pool.used_bytes == 4 * ENTRY


def test_rejects_when_freed_space_is_not_contiguous() -> None:
    manager = make()
    fill(manager, "a", "b", "c", "d", "b", "d")  # LRU order: a, c, b, d

    # Two slots are needed; evicting a (offset 0) and c (offset 2) frees enough bytes, but
    # in two separate holes.
    assert manager.get_or_create_cache("big", 32) is None

    assert "big" not in manager
    assert sorted(e.session_id for e in manager.entries()) == ["b", "d"]
    assert (manager.evictions, manager.rejected) == (2, 1)
    assert manager.pool.free_regions() == [(0, ENTRY), (2 * ENTRY, ENTRY)]
    stats = manager.get_statistics()
    assert stats.used_bytes == 2 * ENTRY
    assert stats.memory_pool_efficiency == 0.5


def test_an_entry_larger_than_the_arena_is_rejected_without_evicting() -> None:
    manager = make()
    fill(manager, "a", "b", "c", "d")

    assert manager.get_or_create_cache("huge", 16 * 5) is None

    assert (manager.evictions, manager.rejected, manager.misses) == (0, 1, 5)
    assert len(manager) == 4
    assert manager.pool.used_bytes == 4 * ENTRY


def test_an_entry_as_large_as_the_arena_evicts_everything() -> None:
    manager = make()
    fill(manager, "a", "b", "c", "d")

    entry = manager.get_or_create_cache("whole", 16 * 4)

    assert entry is not None
    assert entry.block_offset == 0
    assert [e.session_id for e in manager.entries()] == ["whole"]
    assert manager.evictions == 4


def test_context_length_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        make().get_or_create_cache("a", 0)


def test_pinned_entries_are_not_evicted() -> None:
    manager = make(slots=2)
    held = Request("r1", "a", 0.0, 10, 0, 16)
    assert manager.serve(held, hold=True).admitted
    fill(manager, "b")

    fill(manager, "c")  # a is the oldest but in use: b goes

    assert sorted(e.session_id for e in manager.entries()) == ["a", "c"]
    assert not manager.remove_cache_entry("a")
    manager.release(held)
    fill(manager, "d")  # a is unpinned now and the oldest
    assert sorted(e.session_id for e in manager.entries()) == ["c", "d"]


def test_nothing_evictable_means_rejected() -> None:
    manager = make(slots=1)
    assert manager.serve(Request("r1", "a", 0.0, 10, 0, 16), hold=True).admitted

    assert manager.get_or_create_cache("b", 16) is None

    assert (manager.evictions, manager.rejected) == (0, 1)
    assert "a" in manager


@pytest.mark.needs("receipts")
def test_miss_path_with_eviction_does_not_deadlock() -> None:
    # Upstream held its write lock on the miss path while eviction asked for it again. The
    # sink here also reads the manager from inside the eviction, as a dashboard might.
    from kvreceipts.sinks import BaseSink

    seen: list[int] = []

    class StatsReadingSink(BaseSink):
        def deliver(self, record: Record) -> None:
            seen.append(manager.get_statistics().evictions)

    manager = make(slots=2, sink=StatsReadingSink())
    fill(manager, "a", "b")
    results: list[object] = []
    worker = threading.Thread(target=lambda: results.append(manager.get_or_create_cache("c", 32)))

    worker.start()
    worker.join(timeout=5)

    assert not worker.is_alive(), "get_or_create_cache deadlocked on the miss path"
    assert results[0] is not None
    assert seen == [1, 2]


def test_ttl_sweep_removes_idle_entries_and_frees_their_blocks() -> None:
    clock = SimClock()
    manager = make(clock=clock, model_cache_ttl=10)
    fill(manager, "a")
    clock.advance_to(5_000.0)
    fill(manager, "b")
    clock.advance_to(15_000.0)  # a idle 15 s (> 10), b idle exactly 10 s (not longer)

    assert manager.sweep_ttl() == 1

    assert [e.session_id for e in manager.entries()] == ["b"]
    assert manager.pool.used_bytes == ENTRY
    assert manager.pool.free_regions() == [(0, ENTRY), (2 * ENTRY, 2 * ENTRY)]
    assert manager.evictions == 1
    clock.advance_to(15_001.0)
    assert manager.sweep_ttl() == 1
    assert len(manager) == 0
    assert manager.pool.free_regions() == [(0, 4 * ENTRY)]


def test_requests_sweep_idle_entries_on_their_own() -> None:
    clock = SimClock()
    manager = make(clock=clock, model_cache_ttl=1)
    fill(manager, "a", "b")
    clock.advance_to(1_500.0)  # both idle for 1.5 s

    fill(manager, "b")  # the request sweeps before its lookup: b is a miss, made anew

    assert [e.session_id for e in manager.entries()] == ["b"]
    assert (manager.hits, manager.misses, manager.evictions) == (0, 3, 2)
    assert manager.pool.used_bytes == ENTRY


@pytest.mark.needs("receipts")
def test_ttl_eviction_receipts() -> None:
    clock = SimClock()
    sink = channel()
    manager = make(clock=clock, sink=sink, model_cache_ttl=10)
    fill(manager, "a", "b")
    clock.advance_to(20_000.0)

    assert manager.sweep_ttl() == 2

    receipts = eviction_receipts(sink.drain())
    assert [(r.session_id, r.reason, r.trigger_session_id) for r in receipts] == [
        ("a", "ttl", None),
        ("b", "ttl", None),
    ]
    assert [r.block_offset for r in receipts] == [0, ENTRY]
    assert [r.after.used_bytes for r in receipts] == [ENTRY, 0]
    assert [r.before.used_bytes for r in receipts] == [2 * ENTRY, ENTRY]
    assert all(r.timestamp == clock.timestamp(20_000.0) for r in receipts)


@pytest.mark.needs("receipts")
@pytest.mark.parametrize("layout", ["lean", "upstream"])
def test_manual_and_policy_eviction_receipts(layout: str) -> None:
    sink = channel()
    manager = make(slots=2, sink=sink, layout=layout)
    fill(manager, "a", "b", "c")  # c evicts a

    assert manager.remove_cache_entry("b")
    assert not manager.remove_cache_entry("b")
    assert not manager.remove_cache_entry("never")

    receipts = eviction_receipts(sink.drain())
    assert [(r.session_id, r.reason, r.trigger_session_id) for r in receipts] == [
        ("a", "lru", "c"),
        ("b", "manual", None),
    ]
    # The policy in force: in each upstream receipt, or once in the lean run's open record.
    assert len(sink.frames) == 1
    assert opened(sink).policy == "lru"
    assert [r.policy for r in receipts] == (["lru", "lru"] if layout == "upstream" else ["", ""])
    assert manager.evictions == 2


def test_update_cache_bumps_tokens_up_to_the_context_and_refreshes() -> None:
    clock = SimClock()
    manager = make(clock=clock)
    entry = manager.get_or_create_cache("a", 16)
    assert entry is not None
    clock.advance_to(300.0)

    assert manager.update_cache("a")
    assert manager.update_cache("a", 10)
    assert entry.token_count == 11
    assert entry.last_accessed_ms == 300.0
    assert manager.update_cache("a", 100)
    assert entry.token_count == 16  # capped at the context length
    assert manager.get_statistics().average_session_length == 16.0
    assert not manager.update_cache("missing")


def test_update_cache_moves_the_session_to_the_back_of_the_lru() -> None:
    manager = make(slots=2)
    fill(manager, "a", "b")
    assert manager.update_cache("a")
    fill(manager, "c")
    assert sorted(e.session_id for e in manager.entries()) == ["a", "c"]


def test_statistics_figures() -> None:
    manager = make()
    fill(manager, "a", "b", "c", "a")
    assert manager.update_cache("a", 10)
    assert manager.update_cache("b", 5)
    assert manager.remove_cache_entry("b")  # leaves a hole at offset 8192

    stats = manager.get_statistics()

    assert stats.total_sessions == 2
    assert (stats.used_bytes, stats.total_bytes) == (2 * ENTRY, 4 * ENTRY)
    assert stats.used_memory_mb == 2 * ENTRY / MIB
    assert stats.total_memory_mb == 4 * ENTRY / MIB
    assert stats.memory_utilization == 0.5
    assert (stats.cache_hits, stats.cache_misses) == (1, 3)
    assert stats.hit_rate == 0.25
    assert stats.average_session_length == 5.0  # (10 + 0) / 2 live sessions
    assert stats.memory_pool_efficiency == 0.5  # two free regions
    assert stats.evictions == 1


def test_statistics_start_at_zero() -> None:
    stats = make().get_statistics()
    assert (stats.total_sessions, stats.used_bytes, stats.cache_hits, stats.evictions) == (
        0,
        0,
        0,
        0,
    )
    assert (stats.hit_rate, stats.average_session_length, stats.memory_utilization) == (
        0.0,
        0.0,
        0.0,
    )
    assert stats.memory_pool_efficiency == 1.0


def test_shutdown_makes_later_operations_raise() -> None:
    manager = make()
    fill(manager, "a")
    manager.shutdown()
    manager.shutdown()  # idempotent

    with pytest.raises(RuntimeError, match="shut down"):
        manager.get_or_create_cache("b", 16)
    with pytest.raises(RuntimeError, match="shut down"):
        manager.update_cache("a")
    with pytest.raises(RuntimeError, match="shut down"):
        manager.remove_cache_entry("a")
    with pytest.raises(RuntimeError, match="shut down"):
        manager.sweep_ttl()
    with pytest.raises(RuntimeError, match="shut down"):
        manager.serve(Request("r", "a", 0.0, 1, 0, 16))
    assert manager.get_statistics().total_sessions == 1  # reading is still fine


@pytest.mark.needs("receipts")
def test_shutdown_closes_the_sink_once() -> None:
    from kvreceipts.sinks import BaseSink

    closes: list[int] = []

    class ClosingSink(BaseSink):
        def deliver(self, record: Record) -> None:
            pass

        def close(self) -> None:
            closes.append(1)
            super().close()

    sink = ClosingSink()
    manager = make(sink=sink)
    manager.shutdown()
    manager.shutdown()

    assert sink.closed
    assert closes == [1]


def test_performance_report_from_the_service_meter() -> None:
    clock = SimClock()
    manager = make(slots=64, clock=clock)
    requests = [
        Request("r1", "a", 0.0, 100, 10, 256),
        Request("r2", "b", 1_000.0, 100, 10, 256),
        Request("r3", "a", 2_000.0, 150, 10, 256),  # 110 tokens cached, 40 to prefill
        Request("r4", "b", 3_000.0, 150, 10, 256),
    ]

    result = run_simulation(manager, requests, prefill_ms_per_token=0.5)
    report = PerformanceReport.from_stats(manager.get_statistics(), manager.config, manager.meter)

    # Served at 0, 1000, 2000, 3000 ms taking 50, 50, 20 and 20 ms: the last ends at 3020 ms.
    assert report.average_requests_per_second == pytest.approx(4 / 3.02)
    assert report.average_latency_ms == pytest.approx(35.0)
    assert report.sample_count == manager.hits + manager.misses == 4
    assert report.current_config is manager.config
    assert (result.requests_per_second, result.average_latency_ms) == (
        report.average_requests_per_second,
        report.average_latency_ms,
    )


def test_get_or_create_cache_feeds_the_meter_from_the_manager_clock() -> None:
    clock = SimClock()
    manager = make(clock=clock)
    for t in range(5):
        clock.advance_to(t * 250.0)
        fill(manager, "a")

    assert manager.meter.served == 5
    assert manager.meter.requests_per_second == pytest.approx(5 / 1.0)
    assert manager.meter.average_latency_ms == 0.0  # simulated time stands still inside a call


def test_performance_report_without_a_meter_is_upstreams_zero() -> None:
    manager = make()
    fill(manager, "a", "a")
    report = PerformanceReport.from_stats(manager.get_statistics(), manager.config)
    assert (report.average_requests_per_second, report.average_latency_ms) == (0.0, 0.0)
    assert report.sample_count == 2
    assert ServiceMeter().requests_per_second == 0.0


@pytest.mark.needs("receipts", "tuning")
@pytest.mark.parametrize("layout", ["lean", "upstream"])
def test_receipts_carry_the_performance_report(layout: str) -> None:
    clock = SimClock()
    sink = channel()
    manager = make(slots=1, clock=clock, sink=sink, layout=layout)
    for t, session in enumerate("abc"):
        clock.advance_to(t * 500.0)
        fill(manager, session)

    receipts = eviction_receipts(sink.drain())

    assert len(receipts) == 2
    last = receipts[-1].performance
    assert last is not None
    assert last.average_requests_per_second == pytest.approx(2 / 0.5)  # 2 served by 500 ms
    # The miss that caused the eviction is counted already.
    assert receipts[-1].after.cache_hits + receipts[-1].after.cache_misses == 3
    assert opened(sink).tuning is True
    assert opened(sink).config == manager.config.to_dict()
    if layout == "upstream":
        assert last.sample_count == 3
        assert last.current_config == manager.config
    else:  # lean: the config is the open record's, the count follows from the counters
        assert last.current_config is None


@pytest.mark.needs("receipts")
def test_batch_receipts_cover_each_eviction_round() -> None:
    from kvreceipts.receipts import KvEvictionBatchReceipt

    sink = channel()
    caching = CachingConfig(kv_cache_size_mb=4 * ENTRY / MIB, enable_receipts=True)
    manager = KVCacheManager(caching, sink=sink, clock=SimClock(), batch_receipts=True)
    fill(manager, "a", "b", "c", "d")
    fill(manager, "x")  # round 1: evicts a
    fill(manager, "d", "c", "x")  # LRU order now: b, d, c, x
    assert manager.get_or_create_cache("y", 32) is None  # round 2: b and d, not contiguous

    records = sink.drain()

    assert [r.kind for r in records] == [
        "eviction",
        "eviction_batch",
        "eviction",
        "eviction",
        "eviction_batch",
    ]
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]  # the open record is seq 0
    first, second = (r for r in records if isinstance(r, KvEvictionBatchReceipt))
    assert (first.first_seq, first.last_seq, first.count) == (1, 1, 1)
    assert (first.total_bytes_freed, first.required_bytes, first.satisfied) == (
        ENTRY,
        ENTRY,
        True,
    )
    assert (first.pool_used_before, first.pool_used_after) == (4 * ENTRY, 4 * ENTRY)
    assert (first.pool_used_after_evictions, first.allocated_bytes) == (3 * ENTRY, ENTRY)
    assert (second.first_seq, second.last_seq, second.count) == (3, 4, 2)
    assert (second.total_bytes_freed, second.required_bytes, second.satisfied) == (
        2 * ENTRY,
        2 * ENTRY,
        False,
    )
    assert (second.pool_used_before, second.pool_used_after) == (4 * ENTRY, 2 * ENTRY)
    assert (second.pool_used_after_evictions, second.allocated_bytes) == (2 * ENTRY, 0)
    for batch in (first, second):
        assert batch.pool_used_before - batch.total_bytes_freed == batch.pool_used_after_evictions
        assert batch.pool_used_after_evictions + batch.allocated_bytes == batch.pool_used_after
    assert (second.fragmentation_before, second.fragmentation_after) == (0.0, 0.5)
    assert [r.session_id for r in eviction_receipts(records)] == ["a", "b", "d"]


@pytest.mark.needs("receipts")
def test_snapshot_receipts_every_n_requests() -> None:
    from kvreceipts.receipts import KvPoolSnapshotReceipt

    sink = channel()
    caching = CachingConfig(kv_cache_size_mb=2 * ENTRY / MIB, enable_receipts=True)
    manager = KVCacheManager(caching, sink=sink, clock=SimClock(), snapshot_every=3)
    fill(manager, "a", "b", "a")  # snapshot 1, before any eviction
    fill(manager, "c", "d", "c")  # c evicts b, d evicts a; snapshot 2
    fill(manager, "c")

    records = sink.drain()

    assert [(r.kind, r.seq) for r in records] == [
        ("snapshot", 1),
        ("eviction", 2),
        ("eviction", 3),
        ("snapshot", 4),
    ]
    first, second = (r for r in records if isinstance(r, KvPoolSnapshotReceipt))
    assert first.as_of_seq is None
    assert (first.pool_used, first.pool_total, first.utilization) == (2 * ENTRY, 2 * ENTRY, 1.0)
    assert (first.cache_hits, first.cache_misses, first.total_evictions) == (1, 2, 0)
    assert second.as_of_seq == 3
    assert (second.active_sessions, second.total_sessions_created, second.total_evictions) == (
        2,
        4,
        2,
    )
    assert (second.cache_hits, second.cache_misses) == (2, 4)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_can_be_chosen_by_name(name: str) -> None:
    manager = make(slots=2, policy=name)
    fill(manager, "a", "b", "c", "d")

    assert manager.policy.name == name
    assert len(manager) == 2
    assert manager.evictions == 2  # each new session in a full arena of equal entries
    assert "d" in manager


@pytest.mark.parametrize(("policy", "survivor"), [("lru", "a"), ("fifo", "b"), ("lfu", "a")])
def test_policies_choose_different_victims(policy: str, survivor: str) -> None:
    manager = make(slots=2, policy=policy)
    fill(manager, "a", "b", "a", "b", "a")  # a: 3 uses, b: 2, b touched last but one

    fill(manager, "c")

    assert sorted(e.session_id for e in manager.entries()) == sorted([survivor, "c"])


@pytest.mark.needs("receipts")
def test_receipts_name_the_policy_as_the_reason() -> None:
    sink = channel()
    manager = make(slots=1, sink=sink, policy="fifo")
    fill(manager, "a", "b")
    (receipt,) = eviction_receipts(sink.drain())
    assert receipt.reason == "fifo"
    assert opened(sink).policy == "fifo"


def test_unknown_policy_lists_the_choices() -> None:
    with pytest.raises(UsageError, match="unknown policy 'lur'") as caught:
        make(policy="lur")
    for name in POLICIES:
        assert name in str(caught.value)


@pytest.mark.needs("receipts")
def test_receipt_seq_and_digests_chain_across_kinds() -> None:
    sink = channel()
    caching = CachingConfig(kv_cache_size_mb=2 * ENTRY / MIB, enable_receipts=True)
    manager = KVCacheManager(
        caching, sink=sink, clock=SimClock(), batch_receipts=True, snapshot_every=2
    )
    fill(manager, "a", "b", "c", "d", "e")
    records = sink.drain()
    assert manager.last_digest == records[-1].digest
    manager.shutdown()

    from kvreceipts.receipts import RunClose

    first, closed = sink.frames
    assert isinstance(closed, RunClose)
    stream = [first, *records, closed]
    assert {r.kind for r in records} == {"eviction", "eviction_batch", "snapshot"}
    assert [r.seq for r in stream] == list(range(len(stream)))
    assert first.prev_digest == "0" * 64
    for previous, record in itertools.pairwise(stream):
        assert record.prev_digest == previous.digest
    assert closed.head == records[-1].digest
    assert closed.records == len(records) + 1
    counts = {"open": 1}
    for record in records:
        counts[record.kind] = counts.get(record.kind, 0) + 1
    assert closed.counts == dict(sorted(counts.items()))
    assert closed.bytes_freed == manager.bytes_freed
    assert closed.final_stats == manager.get_statistics().to_dict()
    assert manager.last_digest == closed.digest
    assert manager.receipts_emitted == len(records)  # the open and close frame are not counted
