"""What every allocator shares: the lock, the clock, the counters, and the receipts (the run's
open and close records included). The cache does no I/O: receipts go to the sink it was given.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, ClassVar, NamedTuple

from kvreceipts import features
from kvreceipts.clock import Clock, WallClock
from kvreceipts.config import CachingConfig
from kvreceipts.stats import KVCacheStatistics, ServiceMeter

if TYPE_CHECKING:
    from kvreceipts.checkpoints import Checkpoints
    from kvreceipts.emit import ReceiptEmitter
    from kvreceipts.policies import EvictionPolicy
    from kvreceipts.sinks.base import KvEventSink
    from kvreceipts.workloads.request import Request

__all__ = ["ManagerCore", "Served"]


class Served(NamedTuple):
    """What serving one request did."""

    admitted: bool
    cached_tokens: int
    """Tokens of the request's input found in the cache."""
    prefill_tokens: int
    """Tokens of the input that had to be computed."""


class _Round(NamedTuple):
    """Bookkeeping of one eviction round, for its batch receipt."""

    first_seq: int
    used_before: int
    fragmentation_before: float
    start_ms: float


class ManagerCore:
    """What every allocator shares: the lock, the clock, the counters and the receipts.

    Receipts flow only when the ``receipts`` feature is on, ``config.enable_receipts`` is true
    and a sink is set; otherwise the receipts modules are never imported.
    """

    allocator: ClassVar[str] = ""
    policy: EvictionPolicy
    """Set by each allocator."""

    def __init__(
        self,
        config: CachingConfig | None,
        *,
        sink: KvEventSink | None,
        clock: Clock | None,
        run_id: str | None,
        hmac_key: bytes | None,
        batch_receipts: bool,
        snapshot_every: int,
        layout: str = "lean",
        checkpoints: Checkpoints | None = None,
    ) -> None:
        self.config = config if config is not None else CachingConfig()
        self.clock: Clock = clock if clock is not None else WallClock()
        self.meter = ServiceMeter()
        self._lock = threading.RLock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        self.rejected = 0
        self.rejected_by_reason: dict[str, int] = {}
        """Rejections by cause: ``too_large`` (more than the whole cache), ``all_pinned`` (the
        space is held by running requests), ``no_contiguous_space`` (enough free bytes, split)."""
        self.largest_too_large_bytes = 0
        """The size of the largest request rejected as ``too_large`` (what would hold it)."""
        self.requests = 0
        self.bytes_freed = 0
        self.peak_used_bytes = 0
        self.sessions_created = 0
        self.closed = False
        self.batch_receipts = batch_receipts
        self.snapshot_every = snapshot_every
        self._last_eviction_seq: int | None = None
        self._emitter = self._make_emitter(sink, run_id, hmac_key, layout, checkpoints)
        self._run_id = run_id
        self._checkpointing = self._emitter is not None and self._emitter.checkpoints.every > 0
        """Whether request boundaries may write checkpoint records."""

    def _make_emitter(
        self,
        sink: KvEventSink | None,
        run_id: str | None,
        hmac_key: bytes | None,
        layout: str,
        checkpoints: Checkpoints | None,
    ) -> ReceiptEmitter | None:
        if sink is None:
            return None
        features.require("receipts", "a receipt sink")
        if not self.config.enable_receipts:
            return None
        from kvreceipts.emit import ReceiptEmitter

        return ReceiptEmitter(
            sink,
            config=self.config,
            clock=self.clock,
            meter=self.meter,
            tuning=features.enabled("tuning"),
            run_id=run_id,
            hmac_key=hmac_key,
            layout=layout,
            checkpoints=checkpoints,
        )

    def _open_run(self, source: str, workload: dict[str, object] | None) -> None:
        """Write the run's open record (subclasses call this once they are set up)."""
        if self._emitter is not None:
            self._emitter.open(
                source=source,
                allocator=self.allocator,
                policy=self.policy.name,
                total_bytes=self._pool_total(),
                workload=workload,
            )

    @property
    def receipts_enabled(self) -> bool:
        """Whether evictions produce receipts."""
        return self._emitter is not None

    @property
    def run_id(self) -> str | None:
        """The id stamped on this manager's receipts (``None`` without receipts)."""
        return self._emitter.run_id if self._emitter is not None else self._run_id

    @property
    def receipts_emitted(self) -> int:
        """Receipts of every kind handed to the sink so far."""
        return self._emitter.emitted if self._emitter is not None else 0

    @property
    def sink_failures(self) -> int:
        """Times the sink raised (each was logged and contained)."""
        return self._emitter.sink_failures if self._emitter is not None else 0

    @property
    def last_digest(self) -> str | None:
        """The digest of the last record, the head of the chain (after :meth:`shutdown`, the
        close record's: the anchor to publish).
        """
        return self._emitter.sealer.last_digest if self._emitter is not None else None

    # What each allocator supplies.
    def _stats(self) -> KVCacheStatistics:
        raise NotImplementedError

    def _pool_used(self) -> int:
        raise NotImplementedError

    def _pool_total(self) -> int:
        raise NotImplementedError

    def _fragmentation(self) -> float:
        raise NotImplementedError

    def _active_sessions(self) -> int:
        raise NotImplementedError

    def serve(self, request: Request, *, hold: bool = False) -> Served:
        """Serve one request of a workload; with ``hold`` its KV stays pinned until
        :meth:`release`.
        """
        raise NotImplementedError

    def release(self, request: Request) -> None:
        """End a held request."""
        raise NotImplementedError

    def get_statistics(self) -> KVCacheStatistics:
        """The cache's statistics right now."""
        with self._lock:
            return self._stats()

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("this KV cache manager has been shut down")

    def _note_used(self) -> None:
        used = self._pool_used()
        self.peak_used_bytes = max(self.peak_used_bytes, used)

    def _begin_round(self) -> _Round | None:
        emitter = self._emitter
        if emitter is None or not self.batch_receipts:
            return None
        return _Round(
            emitter.next_seq, self._pool_used(), self._fragmentation(), self.clock.now_ms()
        )

    def _end_round(
        self, round_: _Round | None, *, required_bytes: int, freed: int, satisfied: bool
    ) -> None:
        emitter = self._emitter
        if round_ is None or emitter is None or emitter.next_seq == round_.first_seq:
            return
        now = self.clock.now_ms()
        used_after = self._pool_used()
        emitter.batch(
            now_ms=now,
            count=emitter.next_seq - round_.first_seq,
            total_bytes_freed=freed,
            pool_used_before=round_.used_before,
            pool_used_after_evictions=round_.used_before - freed,
            allocated_bytes=used_after - (round_.used_before - freed),
            pool_used_after=used_after,
            fragmentation_before=round_.fragmentation_before,
            fragmentation_after=self._fragmentation(),
            duration_ms=round(now - round_.start_ms, 3),
            first_seq=round_.first_seq,
            last_seq=emitter.next_seq - 1,
            required_bytes=required_bytes,
            satisfied=satisfied,
        )

    def _reject_too_large(self, size_bytes: int) -> None:
        """Count a request larger than the whole cache, and remember the largest."""
        self.largest_too_large_bytes = max(self.largest_too_large_bytes, size_bytes)
        self._reject("too_large")

    def _reject(self, reason: str) -> None:
        """Count a rejected request under its reason (the rejection path only)."""
        self.rejected += 1
        self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + 1

    def _count_request(self) -> None:
        self.requests += 1
        if self.snapshot_every and self.requests % self.snapshot_every == 0:
            self._snapshot_locked()
        if self._checkpointing:
            assert self._emitter is not None
            self._emitter.boundary()

    def _snapshot_locked(self) -> None:
        emitter = self._emitter
        if emitter is None:
            return
        used, total = self._pool_used(), self._pool_total()
        emitter.snapshot(
            now_ms=self.clock.now_ms(),
            pool_used=used,
            pool_total=total,
            utilization=used / total,
            fragmentation=self._fragmentation(),
            active_sessions=self._active_sessions(),
            total_sessions_created=self.sessions_created,
            total_evictions=self.evictions,
            cache_hits=self.hits,
            cache_misses=self.misses,
            as_of_seq=self._last_eviction_seq,
        )

    def snapshot(self) -> None:
        """Emit a pool snapshot receipt now (no-op without receipts)."""
        with self._lock:
            self._snapshot_locked()

    def shutdown(self) -> None:
        """Write the run's close record, flush and close the sink; later operations raise.
        Idempotent.
        """
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self._emitter is not None:
                self._emitter.finish(self._stats(), self.bytes_freed)
                self._emitter.close()
