"""The paged allocator under random requests, checked step by step against a model.

The model replays each request's lookups itself and consumes the eviction receipts in order,
so every receipt is checked against what the cache held at that moment: the block was cached,
not pinned by a held request nor by the admitting request, and its slot is the one reported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from kvreceipts.clock import SimClock
from kvreceipts.config import CachingConfig
from kvreceipts.paged import PagedKVCacheManager
from kvreceipts.policies import POLICIES
from kvreceipts.workloads.request import Request

if TYPE_CHECKING:
    from kvreceipts.receipts import KvEvictionReport
    from kvreceipts.sinks import ChannelSink

BLOCK_TOKENS = 16
ALPHABET = 24
"""Block hashes come from a small alphabet so that requests share and re-use blocks."""


def _request(number: int, hashes: list[int], at_ms: float) -> Request:
    tokens = max(1, len(hashes) * BLOCK_TOKENS - 3)  # a partly filled last block
    return Request(
        request_id=f"q{number}",
        session_id=f"s{number % 3}",
        arrival_ms=at_ms,
        input_tokens=tokens,
        output_tokens=1,
        context_length=tokens + 1,
        block_hashes=hashes,
    )


class PagedMachine(RuleBasedStateMachine):
    """Random serve / hold / release traffic on a small paged cache with receipts on."""

    held_requests = Bundle("held_requests")

    def __init__(self) -> None:
        super().__init__()
        self.cached: set[int] = set()
        self.last_user: dict[int, str] = {}
        self.held: dict[int, int] = {}
        self.number = 0
        self.evictions = 0
        self.rejected = 0
        self.hits = 0
        self.misses = 0
        self.next_seq = 1  # the run's open record is seq 0
        self.head = ""

    @initialize(policy=st.sampled_from(sorted(POLICIES)), capacity=st.integers(8, 16))
    def start(self, policy: str, capacity: int) -> None:
        from kvreceipts.sinks import ChannelSink

        self.capacity = capacity
        self.sink: ChannelSink = ChannelSink(1_000_000)
        self.clock = SimClock()
        self.manager = PagedKVCacheManager(
            CachingConfig(enable_receipts=True),
            capacity_blocks=capacity,
            block_tokens=BLOCK_TOKENS,
            policy=policy,
            sink=self.sink,
            clock=self.clock,
        )
        from kvreceipts.receipts import RunOpen

        (opened,) = self.sink.frames
        assert isinstance(opened, RunOpen)
        assert opened.seq == 0
        assert (opened.allocator, opened.policy) == ("paged", policy)
        assert opened.total_bytes == capacity * self.manager.block_bytes
        self.head = opened.digest

    def _receipts(self) -> list[KvEvictionReport]:
        records = self.sink.drain()
        assert all(record.kind == "eviction" for record in records)
        return records  # type: ignore[return-value]

    def _serve(self, hashes: list[int], *, hold: bool) -> Request | None:
        self.number += 1
        self.clock.advance_to(self.number * 10.0)
        request = _request(self.number, hashes, self.clock.now_ms())
        slots_before = self.manager.cached_blocks()
        served = self.manager.serve(request, hold=hold)
        receipts = iter(self._receipts())
        if len(hashes) > self.capacity:
            assert not served.admitted  # can never fit, so nothing is looked up
            self.rejected += 1
            assert next(receipts, None) is None
            return None
        # Replay the lookups: each miss with no free slot consumes the next receipt.
        looked_up: set[int] = set()
        hits = 0
        admitted = True
        new_slot: dict[int, int] = {}
        for block_hash in hashes:
            if block_hash in self.cached:
                hits += 1
                self.hits += 1
            else:
                self.misses += 1
                if len(self.cached) == self.capacity:
                    receipt = next(receipts, None)
                    if receipt is None:
                        # Rejected mid-way: only fair if every cached block was pinned.
                        assert self.cached <= set(self.held) | looked_up
                        admitted = False
                        break
                    self._check_receipt(receipt, request, looked_up, slots_before)
                    new_slot[block_hash] = slots_before[receipt.block_hash]  # type: ignore[index]
                self.cached.add(block_hash)
            looked_up.add(block_hash)
            self.last_user[block_hash] = request.request_id
        assert next(receipts, None) is None, "more receipts than evictions the model needed"
        assert served.admitted is admitted
        slots_after = self.manager.cached_blocks()
        for block_hash, slot in new_slot.items():
            assert slots_after[block_hash] == slot  # the new block took the victim's slot
        if not admitted:
            self.rejected += 1
            return None
        cached_tokens = min(hits * BLOCK_TOKENS, request.input_tokens)
        assert served.cached_tokens == cached_tokens
        assert served.prefill_tokens == request.input_tokens - cached_tokens
        if hold:
            for block_hash in hashes:
                self.held[block_hash] = self.held.get(block_hash, 0) + 1
            return request
        return None

    def _check_receipt(
        self,
        receipt: KvEvictionReport,
        request: Request,
        looked_up: set[int],
        slots_before: dict[int, int],
    ) -> None:
        victim = receipt.block_hash
        assert victim is not None
        assert victim in self.cached, "evicted a block that was not cached"
        assert victim not in self.held, "evicted a block pinned by a held request"
        assert victim not in looked_up, "evicted a block the admitting request already uses"
        # A victim was cached before this request began: the request's own blocks are pinned.
        block_bytes = self.manager.block_bytes
        assert receipt.block_offset == slots_before[victim] * block_bytes
        assert receipt.block_size_bytes == block_bytes
        assert receipt.session_id == self.last_user.pop(victim)
        assert receipt.trigger_session_id == request.request_id
        assert receipt.seq == self.next_seq
        assert receipt.prev_digest == self.head
        # The counters as the model has them at this eviction (the miss that caused it
        # counted already).
        assert receipt.before.total_sessions == len(self.cached)
        assert receipt.before.total_sessions == receipt.after.total_sessions + 1
        assert receipt.before.used_bytes == len(self.cached) * block_bytes
        assert receipt.after.used_bytes == receipt.before.used_bytes - block_bytes
        assert (receipt.after.cache_hits, receipt.after.cache_misses) == (self.hits, self.misses)
        assert receipt.after.evictions == self.evictions + 1
        self.head = receipt.digest
        self.next_seq += 1
        self.evictions += 1
        self.cached.remove(victim)

    @rule(hashes=st.lists(st.integers(0, ALPHABET - 1), max_size=18))
    def serve(self, hashes: list[int]) -> None:
        self._serve(hashes, hold=False)

    @rule(
        target=held_requests,
        hashes=st.lists(st.integers(0, ALPHABET - 1), min_size=1, max_size=6),
    )
    def serve_and_hold(self, hashes: list[int]) -> Request | None:
        return self._serve(hashes, hold=True)

    @rule(request=consumes(held_requests))
    def release(self, request: Request | None) -> None:
        if request is None:
            return  # it was rejected, so it holds nothing
        self.manager.release(request)
        for block_hash in request.block_hashes or ():
            left = self.held[block_hash] - 1
            if left:
                self.held[block_hash] = left
            else:
                del self.held[block_hash]

    @rule()
    def release_a_request_that_holds_nothing(self) -> None:
        self.manager.release(_request(-1, [0, 1], 0.0))

    @invariant()
    def pins_match_the_held_requests(self) -> None:
        pinned = self.manager.pinned_blocks()
        assert all(count >= 1 for count in pinned.values())
        assert pinned == self.held
        assert set(pinned) <= set(self.manager.cached_blocks())

    @invariant()
    def blocks_and_slots_add_up(self) -> None:
        slots = self.manager.cached_blocks()
        assert set(slots) == self.cached
        assert len(slots) <= self.capacity
        assert len(set(slots.values())) == len(slots)  # no two blocks share a slot
        assert all(0 <= slot < self.capacity for slot in slots.values())
        assert self.manager.num_cached_blocks + self.manager.num_free_blocks == self.capacity

    @invariant()
    def counters_match_the_model(self) -> None:
        manager = self.manager
        assert manager.evictions == self.evictions
        assert manager.receipts_emitted == self.evictions
        assert manager.rejected == self.rejected
        assert (manager.hits, manager.misses) == (self.hits, self.misses)
        assert manager.requests == self.number
        assert self.sink.counters.dropped == 0
        stats = manager.get_statistics()
        assert stats.total_sessions == len(self.cached)
        assert stats.used_bytes == len(self.cached) * manager.block_bytes

    def teardown(self) -> None:
        manager = getattr(self, "manager", None)
        if manager is None:
            return
        from kvreceipts.receipts import RunClose

        manager.shutdown()
        _, closed = self.sink.frames
        assert isinstance(closed, RunClose)
        assert closed.seq == self.next_seq
        assert closed.head == closed.prev_digest == self.head
        evictions = {"eviction": self.evictions} if self.evictions else {}
        assert closed.counts == {**evictions, "open": 1}
        assert closed.bytes_freed == self.evictions * manager.block_bytes
        assert manager.last_digest == closed.digest


TestPagedAllocator = pytest.mark.needs("receipts")(PagedMachine.TestCase)
TestPagedAllocator.settings = settings(stateful_step_count=30)


def _plain(capacity: int, policy: str = "lru") -> PagedKVCacheManager:
    return PagedKVCacheManager(
        capacity_blocks=capacity, block_tokens=BLOCK_TOKENS, policy=policy, clock=SimClock()
    )


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_request_larger_than_the_cache_is_rejected_and_counted(policy: str) -> None:
    manager = _plain(4, policy)
    manager.serve(_request(1, [1, 2], 0.0))
    served = manager.serve(_request(2, [10, 11, 12, 13, 14], 1.0))
    assert not served.admitted
    assert served.cached_tokens == 0
    assert manager.rejected == 1
    assert manager.cached_blocks().keys() == {1, 2}  # nothing was evicted for it
    assert manager.evictions == 0
    assert manager.serve(_request(3, [1, 2, 3], 2.0)).admitted  # and the cache still works


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_request_is_rejected_while_held_requests_pin_everything(policy: str) -> None:
    manager = _plain(4, policy)
    first = _request(1, [1, 2], 0.0)
    second = _request(2, [3, 4], 1.0)
    assert manager.serve(first, hold=True).admitted
    assert manager.serve(second, hold=True).admitted
    served = manager.serve(_request(3, [5], 2.0))
    assert not served.admitted
    assert manager.rejected == 1
    assert manager.evictions == 0
    assert manager.pinned_blocks() == {1: 1, 2: 1, 3: 1, 4: 1}
    manager.release(first)
    assert manager.serve(_request(4, [5], 3.0)).admitted
    assert manager.cached_blocks().keys() & {1, 2} != {1, 2}  # one of first's blocks made room
    assert manager.pinned_blocks() == {3: 1, 4: 1}


@pytest.mark.parametrize("pin_admitting", [True, False])
def test_admitting_request_may_not_evict_its_own_blocks(pin_admitting: bool) -> None:
    # Capacity 3 and block 1 held: the request's third block finds only its own two blocks
    # to evict. Pinned (the default) it is rejected; unpinned, as libCacheSim would, it
    # evicts its own first block.
    manager = PagedKVCacheManager(
        capacity_blocks=3, block_tokens=BLOCK_TOKENS, clock=SimClock(), pin_admitting=pin_admitting
    )
    assert manager.serve(_request(1, [1], 0.0), hold=True).admitted
    served = manager.serve(_request(2, [7, 8, 9], 1.0))
    assert served.admitted is not pin_admitting
    if pin_admitting:
        assert manager.rejected == 1
        assert manager.evictions == 0
    else:
        assert manager.cached_blocks().keys() == {1, 8, 9}
        assert manager.evictions == 1
