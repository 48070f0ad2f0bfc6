"""Stateful property tests of the arena manager: whatever the order of requests, updates,
removals, TTL sweeps and pinned requests, the pool and the receipt stream stay consistent.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kvreceipts import CachingConfig, KVCacheManager, features
from kvreceipts.clock import SimClock
from kvreceipts.workloads import Request

if TYPE_CHECKING:
    from kvreceipts.core import ManagerCore
    from kvreceipts.receipts import Receipt
    from kvreceipts.sinks import ChannelSink

SESSIONS = st.sampled_from(["a", "b", "c", "d", "e", "f", "g"])
# With a 1 MiB arena (2,048 tokens of bitnet entries) some of these force evictions, two of
# the big ones cannot share the arena, and the last never fits.
CONTEXTS = st.sampled_from([16, 64, 300, 700, 1_024, 1_500, 2_048, 2_049])
TTL_S = 2


def check_arena_invariants(manager: KVCacheManager) -> None:
    """The pool and the entries tile the arena exactly, and the counters agree with them."""
    pool = manager.pool
    entries = manager.entries()
    free = pool.free_regions()
    assert pool.used_bytes == sum(entry.block_size_bytes for entry in entries)
    assert pool.used_bytes + sum(size for _, size in free) == pool.total_bytes
    assert 0 <= pool.used_bytes <= pool.total_bytes
    assert manager.peak_used_bytes <= pool.total_bytes
    for (offset, size), (next_offset, _) in itertools.pairwise(free):
        # Sorted, not overlapping, and never touching: adjacent free regions are merged.
        assert offset + size < next_offset
    # Free regions and entries, together, cover the arena without a gap or an overlap.
    spans = sorted([*free, *((e.block_offset, e.block_size_bytes) for e in entries)])
    end = 0
    for offset, size in spans:
        assert offset == end
        assert size > 0
        end = offset + size
    assert end == pool.total_bytes
    for entry in entries:
        assert entry.block_offset % 64 == 0
        assert entry.block_size_bytes == manager.sizing.entry_bytes(entry.context_length)
        assert 0 <= entry.token_count <= entry.context_length
    stats = manager.get_statistics()
    assert stats.total_sessions == len(entries)
    assert (stats.used_bytes, stats.total_bytes) == (pool.used_bytes, pool.total_bytes)
    assert stats.evictions == manager.evictions
    tokens = sum(entry.token_count for entry in entries)
    assert stats.average_session_length == (tokens / len(entries) if entries else 0.0)
    # The LRU order the TTL sweep walks is the order of last access.
    order = [manager._entries[session].last_accessed_ms for session in manager._by_access]
    assert order == sorted(order)


def check_receipt_stream(
    manager: ManagerCore, received: list[Receipt], frames: list[Receipt]
) -> None:
    """Everything the manager emitted arrived: the run's open record (seq 0), the receipts
    numbered on from 1 and chained to it, and, once the manager is shut down, the close
    record that sums the run up and is the chain's head.
    """
    from kvreceipts.receipts import ZERO_DIGEST, KvEvictionReport, RunClose, RunOpen

    opened, *closed = frames
    assert isinstance(opened, RunOpen)
    assert (opened.seq, opened.prev_digest, opened.run_id) == (0, ZERO_DIGEST, manager.run_id)
    assert (opened.allocator, opened.layout) == (manager.allocator, "lean")
    assert opened.config == manager.config.to_dict()
    assert [record.seq for record in received] == list(range(1, len(received) + 1))
    assert manager.receipts_emitted == len(received)
    previous = opened.digest
    for record in received:
        assert record.run_id == manager.run_id
        assert record.prev_digest == previous
        previous = record.digest
    if closed:
        (close,) = closed
        assert isinstance(close, RunClose)
        assert close.seq == close.records == len(received) + 1
        assert close.prev_digest == close.head == previous
        counts: dict[str, int] = {"open": 1}
        for record in received:
            counts[record.kind] = counts.get(record.kind, 0) + 1
        assert close.counts == counts
        assert close.bytes_freed == manager.bytes_freed
        assert close.final_stats == manager.get_statistics().to_dict()
        previous = close.digest
    assert manager.last_digest == previous
    evictions = [record for record in received if isinstance(record, KvEvictionReport)]
    assert len(evictions) == manager.evictions
    assert sum(report.block_size_bytes for report in evictions) == manager.bytes_freed
    for report in evictions:
        assert report.after.used_bytes == report.before.used_bytes - report.block_size_bytes
        assert report.after.total_sessions == report.before.total_sessions - 1
        assert report.after.evictions == report.before.evictions + 1


class ArenaMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = SimClock()
        self.sink: ChannelSink | None = None
        if features.enabled("receipts"):
            from kvreceipts.sinks import ChannelSink

            self.sink = ChannelSink(1_000_000)
        config = CachingConfig(
            kv_cache_size_mb=1, model_cache_ttl=TTL_S, enable_receipts=self.sink is not None
        )
        self.manager = KVCacheManager(
            config, sink=self.sink, clock=self.clock, batch_receipts=True, snapshot_every=7
        )
        self.received: list[Receipt] = []
        self.held: list[Request] = []
        self.requests = 0

    @rule(session=SESSIONS, context=CONTEXTS)
    def get_or_create_cache(self, session: str, context: int) -> None:
        manager = self.manager
        evictions = manager.evictions
        too_big = manager.sizing.entry_bytes(context) > manager.pool.total_bytes
        cached = session in manager

        entry = manager.get_or_create_cache(session, context)

        if entry is None:
            assert session not in manager
            if too_big and not cached:
                assert manager.evictions == evictions  # hopeless: nothing is evicted for it
        else:
            assert entry.session_id == session
            assert manager.entries().count(entry) == 1
            assert entry.last_accessed_ms == self.clock.now_ms()

    @rule(session=SESSIONS, tokens=st.integers(-10, 3_000))
    def update_cache(self, session: str, tokens: int) -> None:
        cached = session in self.manager
        assert self.manager.update_cache(session, tokens) == cached

    @rule(session=SESSIONS)
    def remove_cache_entry(self, session: str) -> None:
        manager = self.manager
        removable = session in manager and all(r.session_id != session for r in self.held)
        used = manager.pool.used_bytes
        assert manager.remove_cache_entry(session) == removable
        if removable:
            assert session not in manager
            assert manager.pool.used_bytes < used

    @rule(ms=st.floats(0, 3_000))
    def advance_and_sweep(self, ms: float) -> None:
        self.clock.advance_to(self.clock.now_ms() + ms)
        self.manager.sweep_ttl()
        limit = self.clock.now_ms() - TTL_S * 1000
        held = {request.session_id for request in self.held}
        for entry in self.manager.entries():
            assert entry.last_accessed_ms >= limit or entry.session_id in held

    @rule(session=SESSIONS, context=CONTEXTS, tokens=st.integers(1, 3_000))
    def serve_and_hold(self, session: str, context: int, tokens: int) -> None:
        self.requests += 1
        request = Request(f"r{self.requests}", session, self.clock.now_ms(), tokens, 0, context)
        served = self.manager.serve(request, hold=True)
        if served.admitted:
            self.held.append(request)
            assert served.cached_tokens + served.prefill_tokens == tokens
        else:
            assert (served.cached_tokens, served.prefill_tokens) == (0, tokens)

    @precondition(lambda self: bool(self.held))
    @rule(pick=st.integers(0, 100))
    def release(self, pick: int) -> None:
        self.manager.release(self.held.pop(pick % len(self.held)))

    @invariant()
    def arena_is_consistent(self) -> None:
        check_arena_invariants(self.manager)
        held = {request.session_id for request in self.held}
        for entry in self.manager.entries():
            assert (entry.pins > 0) == (entry.session_id in held)

    @invariant()
    def receipts_are_complete_and_chained(self) -> None:
        if self.sink is None:
            assert self.manager.receipts_emitted == 0
            return
        self.received.extend(self.sink.drain())
        assert self.sink.counters.dropped == 0
        check_receipt_stream(self.manager, self.received, self.sink.frames)

    def teardown(self) -> None:
        self.manager.shutdown()
        if self.sink is not None:
            self.received.extend(self.sink.drain())
            assert [record.kind for record in self.sink.frames] == ["open", "close"]
            check_receipt_stream(self.manager, self.received, self.sink.frames)


TestArenaMachine = ArenaMachine.TestCase
