"""The bridge from the manager to the sinks: numbers, builds, seals and hands on receipts.

Imported only when the ``receipts`` feature is on and a manager has a sink with
``enable_receipts`` set. Every method runs under the manager's lock, so ``seq`` order, chain
order and delivery order are the same. A run is framed: :meth:`ReceiptEmitter.open` writes its
``open`` record (seq 0) and :meth:`ReceiptEmitter.finish` its ``close`` record.

Lean eviction receipts are the hot path: their canonical JSON (but its closing brace) is a bytes
template with the keys already in sorted order, filled by one formatting call, and what the
evictions of one request share is written once for them all (``tests/test_lean_template.py``
checks the result against :func:`kvreceipts.chain.canonical` on random runs of records).
"""

from __future__ import annotations

import logging
import sys
import uuid
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from kvreceipts.chain import Sealer, canonical
from kvreceipts.checkpoints import Checkpoints
from kvreceipts.receipts import (
    CheckpointRecord,
    KvDemotionReceipt,
    KvEvictionBatchReceipt,
    KvEvictionReport,
    KvPoolSnapshotReceipt,
    Receipt,
    RunClose,
    RunOpen,
    SealedRecord,
    as_receipt,
)
from kvreceipts.sinks.base import KV_RECEIPTS_TARGET, BaseSink
from kvreceipts.stats import PerformanceReport

if TYPE_CHECKING:
    from collections.abc import Callable

    from kvreceipts.clock import Clock
    from kvreceipts.config import CachingConfig
    from kvreceipts.sinks.base import KvEventSink
    from kvreceipts.stats import KVCacheStatistics, ServiceMeter

__all__ = ["ReceiptEmitter"]

_R = TypeVar("_R", bound=Receipt)

log = logging.getLogger(KV_RECEIPTS_TARGET)

_dumps = orjson.dumps
_COUNTERS = (
    b'{"cache_hits":%d,"cache_misses":%d,"evictions":%d,"total_sessions":%d,"used_bytes":%d}'
)
_BEFORE = b'{"total_sessions":%d,"used_bytes":%d}'
"""A lean ``before``: what the eviction took away (every other counter is ``after``'s, with
``evictions`` one lower)."""
_STRING_CACHE = 10_000
_PERFORMANCE = b'"performance":{"average_latency_ms":%b,"average_requests_per_second":%b},'


def _json_str(value: str) -> bytes:
    """JSON of a string, in bytes of its own size: orjson's result keeps a buffer of ~4 KiB,
    and a cache of thousands of them grew a replay's memory with the trace.
    """
    return bytes(memoryview(_dumps(value)))


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
        layout: str = "lean",
        checkpoints: Checkpoints | None = None,
    ) -> None:
        if layout not in ("lean", "upstream"):
            raise ValueError(f"unknown receipt layout {layout!r} (choose from: lean, upstream)")
        self.sink = sink
        self.config = config
        self.clock = clock
        self.meter = meter
        self.tuning = tuning
        self.layout = layout
        self.upstream = layout == "upstream"
        self.run_id = run_id or uuid.uuid4().hex
        self.sealer = Sealer(hmac_key)
        self.checkpoints = checkpoints if checkpoints is not None else Checkpoints()
        self._checkpoint_at = self.checkpoints.every or sys.maxsize
        """The seq from which the next request boundary writes a checkpoint record."""
        self.next_seq = 0
        self.emitted = 0
        self.sink_failures = 0
        self.counts: dict[str, int] = {}
        self.closed = False
        # The config is the same in every upstream receipt: encode it once, splice it in.
        self._config_json = orjson.Fragment(canonical(config.to_dict()))
        self._templates = self._lean_templates()
        self._round_key: tuple[Any, ...] = ()
        self._round: tuple[bytes, bytes, str] = (b"", b"", "")
        self._strings: dict[str, bytes] = {}
        """JSON of session ids already seen (a request triggers many evictions)."""
        self._on_eviction: Callable[[Any], None] = sink.on_eviction
        if isinstance(sink, BaseSink):
            if type(sink).on_eviction is BaseSink.on_eviction:  # one call fewer per receipt
                self._on_eviction = sink.accept
        else:  # a sink of one's own is promised upstream's report
            self._on_eviction = lambda record: sink.on_eviction(as_receipt(record))  # type: ignore[arg-type]
        self._on_batch: Callable[[Any], None] | None = getattr(sink, "on_batch", None)
        self._on_snapshot: Callable[[Any], None] | None = getattr(sink, "on_snapshot", None)
        self._on_frame: Callable[[Any], None] | None = getattr(sink, "on_frame", None)
        self._on_demotion: Callable[[Any], None] | None = getattr(sink, "on_demotion", None) or (
            sink.accept if isinstance(sink, BaseSink) else None
        )
        bind = getattr(sink, "bind", None)
        if bind is not None:
            bind(self.run_id, self.sealer)

    def _lean_templates(self) -> tuple[bytes, bytes]:
        """The lean eviction's canonical JSON without its closing brace, as two templates
        (with and without ``block_hash``), keys in sorted order. What the evictions of one
        round share is filled in from :meth:`_round_parts`.
        """
        head = (
            b'{"after":' + _COUNTERS + b',"alg":"' + self.sealer.alg.encode() + b'","before":'
            + _BEFORE + b","
        )  # fmt: skip
        tail = b'"block_offset":%d,%b"seq":%d,"session_id":%b,%b'
        return head + b'"block_hash":%d,' + tail, head + tail

    def _round_parts(
        self, now_ms: float, reason: str, trigger: str | None, block_size_bytes: int
    ) -> tuple[bytes, bytes, str]:
        """What every lean eviction of one round shares: its JSON from ``block_size_bytes``
        to ``run_id`` and from ``timestamp`` on, and the timestamp.
        """
        stamp = self.clock.timestamp(now_ms)
        key_id = self.sealer.key_id
        middle = b'"block_size_bytes":%d,%b"kind":"eviction",%b"reason":%b,"run_id":%b,' % (
            block_size_bytes,
            b'"key_id":%b,' % _dumps(key_id) if key_id else b"",
            self._performance() if self.tuning else b"",
            _dumps(reason),
            _dumps(self.run_id),
        )
        end = b'"timestamp":"%b","trigger_session_id":%b' % (stamp.encode(), _dumps(trigger))
        return middle, end, stamp

    # -- framing -------------------------------------------------------------------------------

    def open(
        self,
        *,
        source: str,
        allocator: str | None,
        policy: str | None,
        total_bytes: int,
        workload: dict[str, Any] | None = None,
    ) -> None:
        """Write the run's ``open`` record (seq 0)."""
        now = self.clock.now_ms()
        self._frame(RunOpen(
            run_id=self.run_id, seq=self._take_seq(), timestamp=self.clock.timestamp(now),
            source=source, layout=self.layout, config=self.config.to_dict(), workload=workload,
            allocator=allocator, policy=policy, total_bytes=total_bytes, tuning=self.tuning,
            sim_time_ms=round(now, 3),
        ))  # fmt: skip

    def finish(self, final_stats: KVCacheStatistics, bytes_freed: int) -> None:
        """Write the run's ``close`` record (the manager's own counters: every eviction of a
        manager with an emitter has its receipt). Idempotent.
        """
        if self.closed:
            return
        self.closed = True
        now = self.clock.now_ms()
        seq = self._take_seq()
        counts = dict(self.counts)
        if final_stats.evictions:
            counts["eviction"] = final_stats.evictions
        size, root, note = self.checkpoints.state(self.run_id, self.sealer.tree)
        self._frame(RunClose(
            run_id=self.run_id, seq=seq, timestamp=self.clock.timestamp(now),
            sim_time_ms=round(now, 3), records=seq, counts=dict(sorted(counts.items())),
            bytes_freed=bytes_freed, final_stats=final_stats.to_dict(),
            head=self.sealer.last_digest, tree_size=size, root=root, checkpoint=note,
        ))  # fmt: skip
        self._share(note)

    def boundary(self) -> None:
        """A request boundary (no eviction round is open): write a ``checkpoint`` record if
        ``checkpoints.every`` records followed the last one.
        """
        if self.next_seq < self._checkpoint_at or self.closed:
            return
        now = self.clock.now_ms()
        seq = self._take_seq()
        size, root, note = self.checkpoints.state(self.run_id, self.sealer.tree)
        self._frame(CheckpointRecord(
            run_id=self.run_id, seq=seq, timestamp=self.clock.timestamp(now), tree_size=size,
            root=root, checkpoint=note,
        ))  # fmt: skip
        self._checkpoint_at = self.next_seq + self.checkpoints.every
        self._share(note)

    def _share(self, note: str | None) -> None:
        if not self.checkpoints.share(note):
            self.sink_failures += 1

    def _frame(self, record: Receipt) -> None:
        """Seal and deliver an open, checkpoint or close record (not counted in
        :attr:`emitted`, which counts receipts).
        """
        self._count(record.kind)
        self._seal(record, record.to_dict())
        self._send(self._on_frame, record)
        self.emitted -= 1

    # -- records -------------------------------------------------------------------------------

    def _seal(self, record: Receipt, body: dict[str, Any]) -> None:
        sealer = self.sealer
        record.alg, record.key_id = sealer.alg, sealer.key_id
        record.prev_digest = sealer.last_digest
        record.digest, record.line = sealer.seal_dict(body)

    def _send(self, deliver: Callable[[Any], None] | None, record: Receipt | SealedRecord) -> None:
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

    def _count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def _performance(self) -> bytes:
        """The lean ``performance`` member."""
        meter = self.meter
        return _PERFORMANCE % (
            _dumps(round(meter.average_latency_ms, 3)),
            _dumps(round(meter.requests_per_second, 3)),
        )

    def eviction(
        self,
        *,
        now_ms: float,
        session_id: str,
        block_offset: int,
        block_size_bytes: int,
        sessions: int,
        used_bytes: int,
        hits: int,
        misses: int,
        evictions: int,
        reason: str,
        trigger_session_id: str | None,
        block_hash: int | None = None,
        full: tuple[KVCacheStatistics, KVCacheStatistics] | None = None,
        policy: str = "",
    ) -> int:
        """Emit one eviction receipt; returns its seq.

        ``sessions``, ``used_bytes`` and ``evictions`` are the counters just *before* the
        eviction; hits and misses do not change. The upstream layout needs ``full``, the
        before and after statistics.
        """
        if not self.upstream:
            return self.lean_eviction(
                now_ms, session_id, block_offset, block_size_bytes, sessions, used_bytes, hits,
                misses, evictions, reason, trigger_session_id, block_hash,
            )  # fmt: skip
        assert full is not None
        seq = self._take_seq()
        report = KvEvictionReport(
            run_id=self.run_id, seq=seq, timestamp=self.clock.timestamp(now_ms),
            sim_time_ms=round(now_ms, 3), session_id=session_id, block_offset=block_offset,
            block_size_bytes=block_size_bytes, before=full[0], after=full[1], reason=reason,
            policy=policy, trigger_session_id=trigger_session_id,
            performance=(PerformanceReport.from_stats(full[1], self.config, self.meter)
                         if self.tuning else None),
            block_hash=block_hash,
        )  # fmt: skip
        self._seal(report, report.to_dict(self._config_json))
        self._send(self._on_eviction, report)
        return seq

    def lean_eviction(  # noqa: PLR0917 - the hot path: positional, no keyword parsing
        self,
        now_ms: float,
        session_id: str,
        block_offset: int,
        block_size_bytes: int,
        sessions: int,
        used_bytes: int,
        hits: int,
        misses: int,
        evictions: int,
        reason: str,
        trigger_session_id: str | None,
        block_hash: int | None,
    ) -> int:
        """:meth:`eviction` in the lean layout, positionally (the replay's hot path)."""
        seq = self.next_seq
        self.next_seq = seq + 1
        # The evictions of one request share their time, trigger, reason and the meter's
        # figures: their stretches of JSON are made once a round.
        key = (now_ms, trigger_session_id, reason, block_size_bytes, self.meter.served)
        if key != self._round_key:
            self._round_key = key
            self._round = self._round_parts(now_ms, reason, trigger_session_id, block_size_bytes)
        middle, end, stamp = self._round
        strings = self._strings
        session = strings.get(session_id)
        if session is None:
            if len(strings) > _STRING_CACHE:
                strings.clear()
            session = strings[session_id] = _json_str(session_id)
        if block_hash is None:
            body = self._templates[1] % (
                hits, misses, evictions + 1, sessions - 1, used_bytes - block_size_bytes,
                sessions, used_bytes, block_offset, middle, seq, session, end,
            )  # fmt: skip
        else:
            body = self._templates[0] % (
                hits, misses, evictions + 1, sessions - 1, used_bytes - block_size_bytes,
                sessions, used_bytes, block_hash, block_offset, middle, seq, session, end,
            )  # fmt: skip
        sealer = self.sealer
        prev = sealer.last_digest
        digest, line = sealer.seal_body(body)
        self.emitted += 1
        record = SealedRecord("eviction", self.run_id, seq, stamp, prev, digest, line)
        try:
            self._on_eviction(record)
        except Exception:
            self.sink_failures += 1
            log.warning("receipt sink raised on seq=%s", seq, exc_info=True)
        return seq

    def _record(
        self, cls: type[_R], deliver: Callable[[Any], None] | None, now_ms: float, fields: Any
    ) -> _R:
        """Number, build, seal and deliver one record of kind ``cls`` made at ``now_ms``."""
        receipt = cls(**{
            "run_id": self.run_id, "seq": self._take_seq(),
            "timestamp": self.clock.timestamp(now_ms), "sim_time_ms": round(now_ms, 3), **fields,
        })  # fmt: skip
        self._count(receipt.kind)
        self._seal(receipt, receipt.to_dict())
        self._send(deliver, receipt)
        return receipt

    def batch(self, *, now_ms: float, **fields: Any) -> KvEvictionBatchReceipt:
        """Emit one eviction-round receipt (fields as :class:`KvEvictionBatchReceipt`)."""
        return self._record(KvEvictionBatchReceipt, self._on_batch, now_ms, fields)

    def snapshot(self, *, now_ms: float, **fields: Any) -> KvPoolSnapshotReceipt:
        """Emit one pool snapshot (fields as :class:`KvPoolSnapshotReceipt`)."""
        return self._record(KvPoolSnapshotReceipt, self._on_snapshot, now_ms, fields)

    def demotion(self, *, now_ms: float, **fields: Any) -> int:
        """Emit one demotion receipt (fields as :class:`KvDemotionReceipt`); returns its seq."""
        return self._record(KvDemotionReceipt, self._on_demotion, now_ms, fields).seq

    def close(self) -> None:
        """Close the sink (flushes files, drains HTTP buffers)."""
        close = getattr(self.sink, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                self.sink_failures += 1
                log.warning("closing the receipt sink failed", exc_info=True)
