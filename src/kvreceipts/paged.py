"""The paged KV allocator: fixed blocks, prefix caching by block hash, pinning, and one
receipt per evicted block (vLLM-style ``block_pool``, behind the manager interface).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvreceipts.core import ManagerCore, Served, _Round
from kvreceipts.errors import UsageError
from kvreceipts.numbers import MAX_BLOCKS
from kvreceipts.policies import make_policy
from kvreceipts.sizing import BITNET_BYTES_PER_TOKEN, Sizing
from kvreceipts.stats import KVCacheStatistics
from kvreceipts.tiers import LowerTiers

if TYPE_CHECKING:
    from collections.abc import Container, Hashable, Sequence

    from kvreceipts.checkpoints import Checkpoints
    from kvreceipts.clock import Clock
    from kvreceipts.config import CachingConfig
    from kvreceipts.sinks.base import KvEventSink
    from kvreceipts.tiers import Tier
    from kvreceipts.workloads.request import Request

__all__ = ["PagedKVCacheManager"]


class _Pins:
    """Blocks that may not be evicted: those held by running requests, and those the
    request being admitted has already looked up (their slot's last user is that request).
    """

    __slots__ = ("held", "request_id", "slot_of", "user_of")

    def __init__(
        self, held: dict[int, int], slot_of: dict[int, int], user_of: list[str], request_id: str
    ) -> None:
        self.held = held
        self.slot_of = slot_of
        self.user_of = user_of
        self.request_id = request_id

    def __contains__(self, block_hash: object) -> bool:
        if block_hash in self.held:
            return True
        slot = self.slot_of.get(block_hash)  # type: ignore[call-overload]
        return slot is not None and self.user_of[slot] == self.request_id


class PagedKVCacheManager(ManagerCore):
    """Fixed-size blocks of ``block_tokens`` tokens, cached by prefix hash.

    A request looks its blocks up in order: a cached block is a hit, a missing one takes a free
    slot or, when none is free, the slot of a victim the policy picks among unpinned blocks.
    Blocks the request already looked up are pinned while it is admitted, and for as long as
    it is held. A request that cannot get its blocks is rejected and counted by reason
    (``too_large``: more blocks than the cache; ``all_pinned``: no unpinned victim). Every
    block reference counts once: a block found cached is a hit, every other one a miss, in
    rejected requests too. In the statistics an entry ("session") is one cached block.

    ``pin_admitting=False`` lets a request evict its own earlier blocks while it is admitted,
    as a block-level simulator such as libCacheSim does (for oracle comparisons only).
    """

    allocator = "paged"

    def __init__(
        self,
        config: CachingConfig | None = None,
        *,
        capacity_blocks: int = 0,
        block_tokens: int = 512,
        sizing: Sizing | None = None,
        policy: str = "lru",
        sink: KvEventSink | None = None,
        clock: Clock | None = None,
        run_id: str | None = None,
        hmac_key: bytes | None = None,
        batch_receipts: bool = False,
        snapshot_every: int = 0,
        pin_admitting: bool = True,
        layout: str = "lean",
        source: str = "library",
        workload: dict[str, object] | None = None,
        checkpoints: Checkpoints | None = None,
        lower_tiers: Sequence[Tier] = (),
        top_tier: str = "tier1",
    ) -> None:
        super().__init__(
            config,
            sink=sink,
            clock=clock,
            run_id=run_id,
            hmac_key=hmac_key,
            batch_receipts=batch_receipts,
            snapshot_every=snapshot_every,
            layout=layout,
            checkpoints=checkpoints,
        )
        if block_tokens <= 0:
            raise UsageError("block_tokens must be positive")
        self.sizing = sizing if sizing is not None else Sizing(BITNET_BYTES_PER_TOKEN)
        self.block_tokens = block_tokens
        self.block_bytes = self.sizing.block_bytes(block_tokens)
        if capacity_blocks <= 0:
            capacity_blocks = self.config.kv_cache_size_bytes // self.block_bytes
            if capacity_blocks <= 0:
                raise UsageError(
                    f"kv_cache_size_mb={self.config.kv_cache_size_mb} holds no block of "
                    f"{self.block_bytes} bytes; raise the capacity or lower block_tokens"
                )
        if capacity_blocks > MAX_BLOCKS:
            raise UsageError(
                f"a cache of {self.config.kv_cache_size_mb:g} MiB makes {capacity_blocks:,} "
                f"blocks of {self.block_bytes} bytes; the paged cache holds at most "
                f"{MAX_BLOCKS:,} (lower the capacity or give --capacity-blocks)"
            )
        self.capacity_blocks = capacity_blocks
        self.pin_admitting = pin_admitting
        self._capacity = capacity_blocks
        self.total_bytes = capacity_blocks * self.block_bytes
        self.policy = make_policy(policy, capacity_blocks)
        # Block hash -> slot. For LRU and FIFO the policy's own ordered dict serves: one dict
        # operation per lookup fewer, and an evicted block's slot comes with it.
        index = self.policy.index
        self._slot_of: dict[int, int] = {} if index is None else index  # type: ignore[assignment]
        self._free_slots = list(range(capacity_blocks - 1, -1, -1))  # pop() takes slot 0 first
        # The request that last looked up the block in each slot: a list indexed by slot is
        # cheaper to read and write per lookup than a second dict keyed by hash.
        self._user_of: list[str] = [""] * capacity_blocks
        self._held: dict[int, int] = {}  # block hash -> requests holding it
        self._holding: dict[str, Sequence[int]] = {}  # request id -> its blocks
        self._fresh_hash = -1  # hashes for requests that carry none (never shared)
        self.prompt_tokens = 0
        """Input tokens of every request served (rejected ones too)."""
        self.prefix_hit_tokens = 0
        """Input tokens found cached as a prefix: per admitted request, the leading run of
        its blocks that were hits, each ``block_tokens`` tokens but the last block, which
        counts what is left of the input (what vLLM and LMCache reuse)."""
        self._lead = 0  # the leading run of hits of the request just admitted
        self._lower = LowerTiers(lower_tiers, policy) if lower_tiers else None
        self.tier_hits = [0] * (1 + len(lower_tiers))
        """Hits in each tier, the first (this cache) first; with no lower tiers, unused."""
        self.demotions = 0
        """Blocks moved one tier down (only leaving the last tier is an eviction)."""
        self.tier_names = (top_tier, *(t.name for t in lower_tiers))
        if self._lower is not None and batch_receipts:
            raise UsageError("--batch-receipts does not combine with memory tiers (--tier)")
        policy_ = self.policy
        # What the hot loop reads, gathered once: one attribute load instead of nine.
        self._hot = (
            self._slot_of, self._user_of, self._free_slots, self._held, policy_,
            policy_.access, None if policy_.index is not None else policy_.insert,
            policy_.on_miss, policy_.pop_oldest,
        )  # fmt: skip
        self._open_run(source, workload)

    @property
    def num_cached_blocks(self) -> int:
        """Blocks in the prefix cache."""
        return len(self._slot_of)

    @property
    def num_free_blocks(self) -> int:
        """Slots holding no block."""
        return len(self._free_slots)

    def cached_blocks(self) -> dict[int, int]:
        """Block hash to slot index, for every cached block (a copy)."""
        with self._lock:
            return dict(self._slot_of)

    def pinned_blocks(self) -> dict[int, int]:
        """Block hash to the number of held requests using it (a copy)."""
        with self._lock:
            return dict(self._held)

    def _stats(self) -> KVCacheStatistics:
        return self._stats_at(len(self._slot_of), self.hits, self.misses, self.evictions)

    def _stats_at(self, blocks: int, hits: int, misses: int, evictions: int) -> KVCacheStatistics:
        return KVCacheStatistics.compute(
            sessions=blocks,
            used_bytes=blocks * self.block_bytes,
            total_bytes=self.total_bytes,
            hits=hits,
            misses=misses,
            tokens=blocks * self.block_tokens,
            fragmentation=0.0,
            evictions=evictions,
        )

    def _pool_used(self) -> int:
        return len(self._slot_of) * self.block_bytes

    def _pool_total(self) -> int:
        return self.total_bytes

    def _fragmentation(self) -> float:
        return 0.0  # fixed-size blocks: any free slot fits any block

    def _active_sessions(self) -> int:
        return len(self._holding)

    def _fresh_hashes(self, request: Request) -> Sequence[int]:
        """Hashes for a request that carries none (Azure): its blocks are never shared."""
        count = max(1, -(-request.input_tokens // self.block_tokens))
        start = self._fresh_hash
        self._fresh_hash -= count
        return range(start, start - count, -1)

    def serve(self, request: Request, *, hold: bool = False) -> Served:
        """Admit one request: look up its blocks, evicting for the ones that miss. With
        ``hold`` its blocks stay pinned until :meth:`release`.
        """
        with self._lock:
            if self.closed or self.snapshot_every or self._checkpointing:  # the base class's checks
                self._check_open()
                self._count_request()
            else:  # the replay's case, inline: one request more
                self.requests += 1
            hashes = request.block_hashes
            if hashes is None:
                hashes = self._fresh_hashes(request)
            self.prompt_tokens += request.input_tokens
            # Unpinned, a request longer than the cache evicts its own first blocks (as in
            # libCacheSim); pinned, it can never fit: every block reference misses.
            if len(hashes) > self._capacity and self.pin_admitting:
                self.misses += len(hashes)
                self._reject_too_large(len(hashes) * self.block_bytes)
                return Served(False, 0, request.input_tokens)
            if self._lower is None:
                hits = self._admit(hashes, request.request_id)
            else:
                hits = self._admit_tiered(hashes, request.request_id, self._lower)
            if hits < 0:
                self._reject("all_pinned")
                return Served(False, 0, request.input_tokens)
            lead = self._lead
            if lead:
                if lead < len(hashes):
                    self.prefix_hit_tokens += lead * self.block_tokens
                else:  # the whole prompt: the last block holds what is left of the input
                    self.prefix_hit_tokens += max(
                        0, request.input_tokens - self.block_tokens * (lead - 1)
                    ) + self.block_tokens * (lead - 1)
            if hold:
                held = self._held
                for block_hash in hashes:
                    held[block_hash] = held.get(block_hash, 0) + 1
                self._holding[request.request_id] = hashes
            cached = min(hits * self.block_tokens, request.input_tokens)  # last block: partial
            return Served(True, cached, request.input_tokens - cached)

    def _admit(self, hashes: Sequence[int], request_id: str) -> int:  # noqa: PLR0912, PLR0915
        """Look up every block in order; the number of hits, or -1 if a block found no room.

        This is the replay's hot loop, so everything it calls per block is bound to a local.
        A block this request already looked up is pinned: its slot's last user is this request.
        For LRU and FIFO the victim is popped straight off the policy's ordered dict; the
        general (slower) search runs only when that block turns out to be pinned.
        """
        slot_of, user_of, free, held, policy, access, insert, on_miss, pop_oldest = self._hot
        pin_admitting, batch, emitter = self.pin_admitting, self.batch_receipts, self._emitter
        lean = emitter.lean_eviction if emitter is not None and not emitter.upstream else None
        free_before = len(free)
        if lean is not None:  # what every receipt of this request reads, read once
            now_ms, block_bytes, reason = self.clock.now_ms, self.block_bytes, policy.name
            hits_before, evictions_before = self.hits, self.evictions - 1
            misses_before = self.misses + free_before  # each miss takes a slot: see below
        hits = evicted = 0
        lead = -1  # hits before the first miss: the leading run of cached blocks
        round_: _Round | None = None
        for block_hash in hashes:
            if block_hash in slot_of:  # `in`, not .get(): a miss (most lookups) costs no call
                access(block_hash)
                hits += 1
                user_of[slot_of[block_hash]] = request_id
                continue
            if lead < 0:
                lead = hits
            if on_miss is not None:
                on_miss(block_hash)
            if free:
                slot = free.pop()
            else:
                if batch and not evicted:
                    round_ = self._begin_round()
                victim: Hashable | None = None
                if pop_oldest is not None:  # LRU, FIFO: the oldest block, unless it is pinned
                    victim, slot = pop_oldest(False)
                    if (pin_admitting and user_of[slot] == request_id) or (held and victim in held):
                        policy.unpop(victim, slot)
                        victim = None
                if victim is None:
                    found = self._search_victim(request_id)
                    if found is None:  # the blocks not looked up count as misses too
                        self._lead = 0
                        self._finish_admit(hits, len(hashes) - hits, evicted, round_, ok=False)
                        return -1
                    victim, slot = found
                evicted += 1
                if lean is not None:  # the receipt of the block just evicted, inline
                    blocks = len(slot_of) + 1
                    self._last_eviction_seq = lean(
                        now_ms(), user_of[slot], slot * block_bytes, block_bytes, blocks,
                        blocks * block_bytes, hits_before + hits,
                        misses_before - len(free) + evicted, evictions_before + evicted,
                        reason, request_id, victim,  # type: ignore[arg-type]
                    )  # fmt: skip
                elif emitter is not None:
                    misses = free_before - len(free) + evicted  # each miss took a slot
                    self._receipt(victim, slot, user_of[slot], request_id,  # type: ignore[arg-type]
                                  hits=self.hits + hits, misses=self.misses + misses,
                                  evictions=self.evictions + evicted)  # fmt: skip
            slot_of[block_hash] = slot
            if insert is not None:  # a policy without an index keeps its own record
                insert(block_hash)
            user_of[slot] = request_id
        self._lead = hits if lead < 0 else lead
        if round_ is None:  # the common case, inline: no batch receipt to close
            self.hits += hits
            self.misses += len(hashes) - hits
            if evicted:
                self.evictions += evicted
                self.bytes_freed += evicted * self.block_bytes
            if len(free) != free_before:  # blocks are only ever added: used bytes peak now
                self.peak_used_bytes = len(slot_of) * self.block_bytes
        else:
            self._finish_admit(hits, len(hashes) - hits, evicted, round_, ok=True)
        return hits

    def _admit_tiered(self, hashes: Sequence[int], request_id: str, lower: LowerTiers) -> int:
        """:meth:`_admit` with lower tiers: a block missing here may be found below (a hit of
        that tier, moved up here); a victim here is demoted, and only a block leaving the
        last tier is evicted. The general path: one dict operation more per lookup.
        """
        slot_of, user_of, free, policy = self._slot_of, self._user_of, self._free_slots, self.policy
        tier_hits, insert = self.tier_hits, policy.insert if policy.index is None else None
        hits = evicted = looked = 0
        lead = -1
        for block_hash in hashes:
            looked += 1
            if block_hash in slot_of:
                policy.access(block_hash)
                hits += 1
                tier_hits[0] += 1
                user_of[slot_of[block_hash]] = request_id
                continue
            tier = lower.take(block_hash)
            if tier:
                hits += 1
                tier_hits[tier] += 1
            elif lead < 0:
                lead = hits
            if policy.on_miss is not None:
                policy.on_miss(block_hash)
            if free:
                slot = free.pop()
            else:
                found = self._search_victim(request_id)
                if found is None:
                    self._lead = 0
                    self._finish_admit(hits, len(hashes) - hits, evicted, None, ok=False)
                    return -1
                victim, slot = found
                if self._demote(lower, victim, slot, request_id, hits=hits,
                                misses=looked - hits, evicted=evicted):  # fmt: skip
                    evicted += 1
            slot_of[block_hash] = slot
            if insert is not None:
                insert(block_hash)
            user_of[slot] = request_id
        self._lead = hits if lead < 0 else lead
        self._finish_admit(hits, len(hashes) - hits, evicted, None, ok=True)
        return hits

    def _demote(
        self, lower: LowerTiers, victim: Hashable, slot: int, request_id: str, *, hits: int,
        misses: int, evicted: int,
    ) -> bool:  # fmt: skip
        """Move a first-tier victim down, sealing each move as a demotion receipt and a block
        that left the last tier as an eviction; whether one left. ``hits``, ``misses`` and
        ``evicted`` are this request's so far.
        """
        moves, gone = lower.demote(victim)
        self.demotions += len(moves)
        emitter, names = self._emitter, self.tier_names
        if emitter is not None:
            now = self.clock.now_ms()
            for block, tier in moves:
                emitter.demotion(now_ms=now, block_hash=block, from_tier=names[tier - 1],
                                 to_tier=names[tier], bytes=self.block_bytes,
                                 trigger_session_id=request_id)  # fmt: skip
            if gone is not None:
                self._receipt(gone, slot, self._user_of[slot], request_id,  # type: ignore[arg-type]
                              hits=self.hits + hits, misses=self.misses + misses,
                              evictions=self.evictions + evicted + 1)  # fmt: skip
        return gone is not None

    def _search_victim(self, request_id: str) -> tuple[Hashable, int] | None:
        """The general search for an unpinned victim, and its slot."""
        policy, pins = self.policy, self._pins(request_id)
        if policy.index is not None:
            return policy.pop_victim(pins)
        victim = policy.victim(pins)
        return None if victim is None else (victim, self._slot_of.pop(victim))  # type: ignore[call-overload]

    def _pins(self, request_id: str) -> Container[int]:
        if self.pin_admitting:
            return _Pins(self._held, self._slot_of, self._user_of, request_id)
        return self._held

    def _finish_admit(
        self, hits: int, misses: int, evicted: int, round_: _Round | None, *, ok: bool
    ) -> None:
        self.hits += hits
        self.misses += misses
        self.evictions += evicted
        self.bytes_freed += evicted * self.block_bytes
        self.peak_used_bytes = max(self.peak_used_bytes, len(self._slot_of) * self.block_bytes)
        if round_ is not None:
            self._end_round(
                round_,
                required_bytes=(evicted + (not ok)) * self.block_bytes,
                freed=evicted * self.block_bytes,
                satisfied=ok,
            )

    def _receipt(
        self,
        block_hash: int,
        slot: int,
        user: str,
        trigger: str,
        *,
        hits: int,
        misses: int,
        evictions: int,
    ) -> None:
        """Emit the receipt of a block just evicted (its slot not yet reused). The counts are
        those right now: this request's lookups and evictions so far included.
        """
        emitter = self._emitter
        assert emitter is not None
        blocks = len(self._slot_of)
        self._last_eviction_seq = emitter.eviction(
            now_ms=self.clock.now_ms(),
            session_id=user,
            block_offset=slot * self.block_bytes,
            block_size_bytes=self.block_bytes,
            sessions=blocks + 1,
            used_bytes=(blocks + 1) * self.block_bytes,
            hits=hits,
            misses=misses,
            evictions=evictions - 1,
            reason=self.policy.name,
            trigger_session_id=trigger,
            block_hash=block_hash,
            full=(
                (self._stats_at(blocks + 1, hits, misses, evictions - 1),
                 self._stats_at(blocks, hits, misses, evictions))
                if emitter.upstream else None
            ),
            policy=self.policy.name,
        )  # fmt: skip

    def release(self, request: Request) -> None:
        """End a held request: unpin its blocks."""
        with self._lock:
            hashes = self._holding.pop(request.request_id, None)
            if hashes is None:
                return
            held = self._held
            for block_hash in hashes:
                left = held[block_hash] - 1
                if left:
                    held[block_hash] = left
                else:
                    del held[block_hash]
