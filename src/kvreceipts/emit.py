"""The bridge from the manager to the sinks: numbers, builds, seals and hands on receipts.

Imported only when the ``receipts`` feature is on and a manager has a sink with
``enable_receipts`` set. Every method runs under the manager's lock, so ``seq`` order, chain
order and delivery order are the same.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

import orjson

from kvreceipts.chain import Sealer, canonical
from kvreceipts.receipts import KvEvictionBatchReceipt, KvEvictionReport, KvPoolSnapshotReceipt
from kvreceipts.sinks.base import KV_RECEIPTS_TARGET
from kvreceipts.stats import PerformanceReport

if TYPE_CHECKING:
    from collections.abc import Callable

    from kvreceipts.clock import Clock
    from kvreceipts.config import CachingConfig
    from kvreceipts.receipts import Receipt
    from kvreceipts.sinks.base import KvEventSink
    from kvreceipts.stats import KVCacheStatistics, ServiceMeter

__all__ = ["ReceiptEmitter"]

log = logging.getLogger(KV_RECEIPTS_TARGET)


class ReceiptEmitter:
    """Turns eviction facts into sealed receipts and delivers them to one sink."""

    def __init__(
        self,
        sink: KvEventSink,
        *,
        config: CachingConfig,
        clock: Clock,
        meter: ServiceMeter,
        tuning: bool,
        run_id: str | None = None,
        hmac_key: bytes | None = None,
    ) -> None:
        self.sink = sink
        self.config = config
        self.clock = clock
        self.meter = meter
        self.tuning = tuning
        self.run_id = run_id or uuid.uuid4().hex
        self.sealer = Sealer(hmac_key)
        self.next_seq = 0
        self.emitted = 0
        self.sink_failures = 0
        # The config is the same in every receipt: encode it once, splice it in each time.
        self._config_json = orjson.Fragment(canonical(config.to_dict()))
        self._on_eviction = sink.on_eviction
        self._on_batch: Callable[[Any], None] | None = getattr(sink, "on_batch", None)
        self._on_snapshot: Callable[[Any], None] | None = getattr(sink, "on_snapshot", None)
        bind = getattr(sink, "bind", None)
        if bind is not None:
            bind(self.run_id, self.sealer)

    def _send(self, deliver: Callable[[Any], None] | None, record: Receipt) -> None:
        self.emitted += 1
        if deliver is None:
            return
        try:
            deliver(record)
        except Exception:
            self.sink_failures += 1
            log.warning("receipt sink raised on seq=%s", record.seq, exc_info=True)

    def _take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq = seq + 1
        return seq

    def eviction(
        self,
        *,
        now_ms: float,
        session_id: str,
        block_offset: int,
        block_size_bytes: int,
        before: KVCacheStatistics,
        after: KVCacheStatistics,
        reason: str,
        policy: str,
        trigger_session_id: str | None,
        block_hash: int | None = None,
    ) -> KvEvictionReport:
        """Emit one eviction receipt."""
        report = KvEvictionReport(
            run_id=self.run_id,
            seq=self._take_seq(),
            timestamp=self.clock.timestamp(now_ms),
            sim_time_ms=round(now_ms, 3),
            session_id=session_id,
            block_offset=block_offset,
            block_size_bytes=block_size_bytes,
            before=before,
            after=after,
            reason=reason,
            policy=policy,
            trigger_session_id=trigger_session_id,
            performance=(
                PerformanceReport.from_stats(after, self.config, self.meter)
                if self.tuning
                else None
            ),
            block_hash=block_hash,
        )
        self.sealer.seal(report, report.to_dict(self._config_json))
        self._send(self._on_eviction, report)
        return report

    def batch(self, *, now_ms: float, **fields: Any) -> KvEvictionBatchReceipt:
        """Emit one eviction-round receipt (fields as :class:`KvEvictionBatchReceipt`)."""
        receipt = KvEvictionBatchReceipt(
            run_id=self.run_id,
            seq=self._take_seq(),
            timestamp=self.clock.timestamp(now_ms),
            sim_time_ms=round(now_ms, 3),
            **fields,
        )
        self.sealer.seal(receipt)
        self._send(self._on_batch, receipt)
        return receipt

    def snapshot(self, *, now_ms: float, **fields: Any) -> KvPoolSnapshotReceipt:
        """Emit one pool snapshot (fields as :class:`KvPoolSnapshotReceipt`)."""
        receipt = KvPoolSnapshotReceipt(
            run_id=self.run_id,
            seq=self._take_seq(),
            timestamp=self.clock.timestamp(now_ms),
            sim_time_ms=round(now_ms, 3),
            **fields,
        )
        self.sealer.seal(receipt)
        self._send(self._on_snapshot, receipt)
        return receipt

    def close(self) -> None:
        """Close the sink (flushes files, drains HTTP buffers)."""
        close = getattr(self.sink, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                self.sink_failures += 1
                log.warning("closing the receipt sink failed", exc_info=True)
