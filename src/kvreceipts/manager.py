"""The KV cache manager: upstream ``KVCacheManager`` on the arena allocator, on the core it
shares with the paged allocator (:mod:`kvreceipts.core`).

The cache does no I/O: receipts go to the sink it was given, and nothing here prints.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kvreceipts import features
from kvreceipts.arena import ArenaPool
from kvreceipts.core import ManagerCore, Served
from kvreceipts.policies import make_policy
from kvreceipts.sizing import BITNET_BYTES_PER_TOKEN, Sizing
from kvreceipts.stats import KVCacheStatistics

if TYPE_CHECKING:
    from kvreceipts.checkpoints import Checkpoints
    from kvreceipts.clock import Clock
    from kvreceipts.config import CachingConfig
    from kvreceipts.sinks.base import KvEventSink
    from kvreceipts.workloads.request import Request

__all__ = ["CacheEntry", "KVCacheManager", "ManagerCore", "Served"]

TTL_SWEEP_INTERVAL_MS = 1000.0
"""How often (on the manager's clock) requests trigger a TTL sweep of idle sessions."""


@dataclass(slots=True)
class CacheEntry:
    """One session's KV entry in the arena (upstream ``KVCacheEntry``, without the buffers)."""

    session_id: str
    block_offset: int
    block_size_bytes: int
    region_bytes: int
    """Size of the key region and, equally, of the value region."""
    context_length: int
    token_count: int
    created_ms: float
    last_accessed_ms: float
    pins: int = 0
    """Requests using the entry right now; a pinned entry is never evicted."""


class KVCacheManager(ManagerCore):
    """Upstream's arena KV cache manager, without its deadlock, with a real TTL sweep and
    pluggable policies. Safe to share between threads.
    """

    allocator = "arena"

    def __init__(
        self,
        config: CachingConfig | None = None,
        *,
        sink: KvEventSink | None = None,
        clock: Clock | None = None,
        policy: str = "lru",
        sizing: Sizing | None = None,
        run_id: str | None = None,
        hmac_key: bytes | None = None,
        batch_receipts: bool = False,
        snapshot_every: int = 0,
        layout: str = "lean",
        source: str = "library",
        workload: dict[str, object] | None = None,
        checkpoints: Checkpoints | None = None,
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
        self.pool = ArenaPool(self.config.kv_cache_size_bytes)
        self.sizing = sizing if sizing is not None else Sizing(BITNET_BYTES_PER_TOKEN)
        self.policy = make_policy(policy, self.pool.total_bytes)
        self._entries: dict[str, CacheEntry] = {}
        self._by_access: OrderedDict[str, None] = OrderedDict()
        self._pinned: set[str] = set()
        self._tokens = 0
        self._next_sweep_ms = TTL_SWEEP_INTERVAL_MS
        self._open_run(source, workload)

    @classmethod
    def with_receipt_sink(
        cls, config: CachingConfig, sink: KvEventSink, **options: object
    ) -> KVCacheManager:
        """A manager that sends receipts to ``sink`` (upstream's test constructor)."""
        features.require("receipts", "KVCacheManager.with_receipt_sink")
        return cls(config, sink=sink, **options)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._entries

    def entries(self) -> list[CacheEntry]:
        """The live entries, in creation order (a copy)."""
        with self._lock:
            return list(self._entries.values())

    def _stats(self) -> KVCacheStatistics:
        pool = self.pool
        return KVCacheStatistics.compute(
            sessions=len(self._entries),
            used_bytes=pool.used_bytes,
            total_bytes=pool.total_bytes,
            hits=self.hits,
            misses=self.misses,
            tokens=self._tokens,
            fragmentation=pool.fragmentation(),
            evictions=self.evictions,
        )

    def _pool_used(self) -> int:
        return self.pool.used_bytes

    def _pool_total(self) -> int:
        return self.pool.total_bytes

    def _fragmentation(self) -> float:
        return self.pool.fragmentation()

    def _active_sessions(self) -> int:
        return len(self._entries)

    def get_or_create_cache(self, session_id: str, context_length: int) -> CacheEntry | None:
        """The session's entry: a hit refreshes it; a miss creates it, evicting by the policy
        until enough bytes are freed and retrying once. ``None`` if it still does not fit.
        """
        start = self.clock.now_ms()
        with self._lock:
            self._check_open()
            # Stamp the access under the lock: a time read before waiting for it would put
            # last_accessed out of LRU order, and the TTL sweep walks that order.
            entry = self._lookup_or_create(session_id, context_length, self.clock.now_ms())
            self._count_request()
            self.meter.record(start, self.clock.now_ms())
            return entry

    def _lookup_or_create(
        self, session_id: str, context_length: int, now: float
    ) -> CacheEntry | None:
        if now >= self._next_sweep_ms:
            self._sweep_locked(now)
        entry = self._entries.get(session_id)
        if entry is not None:
            self.hits += 1
            entry.last_accessed_ms = now
            self.policy.access(session_id)
            self._by_access.move_to_end(session_id)
            return entry
        self.misses += 1
        if context_length <= 0:
            raise ValueError("context_length must be positive")
        if self.policy.on_miss is not None:
            self.policy.on_miss(session_id)
        size = self.sizing.entry_bytes(context_length)
        if size > self.pool.total_bytes:
            self._reject_too_large(size)
            return None
        offset = self.pool.allocate(size)
        if offset is None:
            offset = self._evict_and_retry(size, session_id)
            if offset is None:
                # Enough free bytes but no run of them long enough, or the rest is pinned.
                split = self.pool.free_bytes >= size
                self._reject("no_contiguous_space" if split else "all_pinned")
                return None
        entry = CacheEntry(
            session_id,
            offset,
            size,
            self.sizing.region_bytes(context_length),
            context_length,
            0,
            now,
            now,
        )
        self._entries[session_id] = entry
        self._by_access[session_id] = None
        self.policy.insert(session_id, size)
        self.sessions_created += 1
        self._note_used()
        return entry

    def _evict_and_retry(self, required: int, trigger: str) -> int | None:
        """Evict by the policy until the freed bytes add up to ``required``, then allocate
        once more (the space may still be split: then ``None``).
        """
        round_ = self._begin_round()
        freed = 0
        reason = self.policy.name
        while freed < required:
            victim = self.policy.victim(self._pinned)
            if victim is None:
                break
            freed += self._remove_locked(str(victim), reason, trigger, policy_knows=False)
        offset = self.pool.allocate(required)
        self._end_round(round_, required_bytes=required, freed=freed, satisfied=offset is not None)
        return offset

    def _remove_locked(
        self, session_id: str, reason: str, trigger: str | None, *, policy_knows: bool
    ) -> int:
        emitter = self._emitter
        before = self._stats() if emitter is not None and emitter.upstream else None
        sessions, used = len(self._entries), self.pool.used_bytes
        entry = self._entries.pop(session_id)
        if policy_knows:
            self.policy.remove(session_id)
        del self._by_access[session_id]
        self.pool.free(entry.block_offset, entry.block_size_bytes)
        self._tokens -= entry.token_count
        self.evictions += 1
        self.bytes_freed += entry.block_size_bytes
        if emitter is not None:
            self._last_eviction_seq = emitter.eviction(
                now_ms=self.clock.now_ms(),
                session_id=session_id,
                block_offset=entry.block_offset,
                block_size_bytes=entry.block_size_bytes,
                sessions=sessions,
                used_bytes=used,
                hits=self.hits,
                misses=self.misses,
                evictions=self.evictions - 1,
                reason=reason,
                trigger_session_id=trigger,
                full=None if before is None else (before, self._stats()),
                policy=self.policy.name,
            )
        return entry.block_size_bytes

    def update_cache(self, session_id: str, tokens: int = 1) -> bool:
        """Record ``tokens`` more tokens in the session (capped at its context length) and
        refresh it. ``False`` if the session is not cached.
        """
        with self._lock:
            self._check_open()
            entry = self._entries.get(session_id)
            if entry is None:
                return False
            self._add_tokens(entry, tokens)
            entry.last_accessed_ms = self.clock.now_ms()
            self.policy.access(session_id)
            self._by_access.move_to_end(session_id)
            return True

    def _add_tokens(self, entry: CacheEntry, tokens: int) -> None:
        new_count = max(0, min(entry.context_length, entry.token_count + tokens))
        self._tokens += new_count - entry.token_count
        entry.token_count = new_count

    def remove_cache_entry(self, session_id: str) -> bool:
        """Remove the session now (reason ``manual``). ``False`` if it is not cached or is in
        use by a request.
        """
        with self._lock:
            self._check_open()
            if session_id not in self._entries or session_id in self._pinned:
                return False
            self._remove_locked(session_id, "manual", None, policy_knows=True)
            return True

    def sweep_ttl(self) -> int:
        """Remove every idle session older than ``model_cache_ttl`` seconds (reason ``ttl``);
        returns how many. Requests also sweep, about once a second of the manager's clock.
        """
        with self._lock:
            self._check_open()
            return self._sweep_locked(self.clock.now_ms())

    def _sweep_locked(self, now: float) -> int:
        self._next_sweep_ms = now + TTL_SWEEP_INTERVAL_MS
        limit = now - self.config.model_cache_ttl * 1000.0
        expired = []
        for session_id in self._by_access:  # oldest access first
            if self._entries[session_id].last_accessed_ms >= limit:
                break
            if session_id not in self._pinned:
                expired.append(session_id)
        for session_id in expired:
            self._remove_locked(session_id, "ttl", None, policy_knows=True)
        return len(expired)

    def serve(self, request: Request, *, hold: bool = False) -> Served:
        """Serve one request of a workload: look the session up or create its entry, then
        record the request's tokens. With ``hold`` the entry stays pinned until
        :meth:`release`.
        """
        with self._lock:
            self._check_open()
            now = self.clock.now_ms()
            hits_before = self.hits
            entry = self._lookup_or_create(request.session_id, request.context_length, now)
            self._count_request()
            if entry is None:
                return Served(False, 0, request.input_tokens)
            cached = min(entry.token_count, request.input_tokens) if self.hits > hits_before else 0
            self._add_tokens(
                entry, request.input_tokens + request.output_tokens - entry.token_count
            )
            if hold:
                entry.pins += 1
                self._pinned.add(request.session_id)
            return Served(True, cached, request.input_tokens - cached)

    def release(self, request: Request) -> None:
        """End a held request: unpin its session's entry."""
        with self._lock:
            entry = self._entries.get(request.session_id)
            if entry is not None and entry.pins:
                entry.pins -= 1
                if not entry.pins:
                    self._pinned.discard(request.session_id)
