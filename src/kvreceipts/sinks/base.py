"""The sink protocol, per-sink counters, and a base class that contains a sink's failures."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from kvreceipts.proofs.merkle import RangeCover, leaf_hash
from kvreceipts.receipts import LossReceipt

if TYPE_CHECKING:
    from kvreceipts.chain import Sealer
    from kvreceipts.receipts import (
        KvEvictionBatchReceipt,
        KvEvictionReport,
        KvPoolSnapshotReceipt,
        Record,
    )

__all__ = ["KV_RECEIPTS_TARGET", "BaseSink", "KvEventSink", "LossTracker", "SinkCounters"]

KV_RECEIPTS_TARGET = "kvreceipts.kv.receipts"
"""Logger name (upstream's tracing target) for receipts and for sink failures."""

log = logging.getLogger(KV_RECEIPTS_TARGET)


@runtime_checkable
class KvEventSink(Protocol):
    """Where receipts go. Only ``on_eviction`` is required of a sink of your own; the manager
    calls the others when they exist. Calls arrive in ``seq`` order under the manager's lock,
    so a sink must not block.
    """

    def on_eviction(self, report: KvEvictionReport) -> None:
        """Receive one eviction receipt."""
        ...


@dataclass(slots=True)
class SinkCounters:
    """What happened to the records handed to a sink."""

    accepted: int = 0
    """Records handed to the sink."""
    delivered: int = 0
    """Records that reached the destination (written, queued, posted)."""
    dropped: int = 0
    """Records refused for lack of room (and reported by a ``loss`` record)."""
    failed: int = 0
    """Records lost to an error (logged)."""

    def to_dict(self) -> dict[str, int]:
        """Plain values."""
        return asdict(self)


@dataclass(slots=True)
class LossTracker:
    """Collects a sink's dropped records into ``loss`` records, one per contiguous seq range."""

    sink: str
    pending: LossReceipt | None = None
    sealer: Sealer | None = None
    ready: list[LossReceipt] = field(default_factory=list)
    _cover: RangeCover | None = None
    """The Merkle subtrees of the open range's dropped lines."""

    def drop(self, record: Record) -> None:
        """Count ``record`` as dropped: extend the open range, or open a new one."""
        loss = self.pending
        if loss is None or record.seq != loss.last_seq + 1:
            self.close_range()
            loss = self._open_range(record)
        else:
            loss.last_seq = loss.seq = record.seq
            loss.count += 1
            loss.last_lost_digest = record.digest
            loss.timestamp = record.timestamp
        loss.lost_counts[record.kind] = loss.lost_counts.get(record.kind, 0) + 1
        assert self._cover is not None
        self._cover.append(leaf_hash(record.line[:-1]))

    def _open_range(self, record: Record) -> LossReceipt:
        self._cover = RangeCover(record.seq)
        self.pending = loss = LossReceipt(
            run_id=record.run_id,
            seq=record.seq,
            timestamp=record.timestamp,
            prev_digest=record.prev_digest,
            sink=self.sink,
            first_seq=record.seq,
            last_seq=record.seq,
            count=1,
            last_lost_digest=record.digest,
        )
        return loss

    def close_range(self) -> None:
        """End the open range (a record got through after it): seal it and make it ready."""
        loss = self.pending
        if loss is not None:
            assert self._cover is not None
            loss.lost_tree = [digest.hex() for digest in self._cover.hashes()]
            loss.lost_counts = dict(sorted(loss.lost_counts.items()))
            if self.sealer is not None:
                loss.alg, loss.key_id = self.sealer.alg, self.sealer.key_id
                loss.digest, loss.line = self.sealer.seal_beside(loss.prev_digest, loss.to_dict())
            self.ready.append(loss)
            self.pending = None

    def take(self) -> list[LossReceipt]:
        """Every finished loss record not yet taken."""
        ready, self.ready = self.ready, []
        return ready


class BaseSink:
    """Counts what it is given and turns any exception of ``deliver`` into a counted, logged
    failure, so a broken destination never breaks the manager.
    """

    name = "sink"

    def __init__(self) -> None:
        self.counters = SinkCounters()
        self.closed = False

    def bind(self, run_id: str, sealer: Sealer) -> None:
        """Called once by the manager before the first record (for sinks that seal losses)."""

    def on_eviction(self, report: KvEvictionReport) -> None:
        """Receive one eviction receipt."""
        self.accept(report)

    def on_batch(self, receipt: KvEvictionBatchReceipt) -> None:
        """Receive one eviction-round receipt."""
        self.accept(receipt)

    def on_snapshot(self, receipt: KvPoolSnapshotReceipt) -> None:
        """Receive one pool snapshot."""
        self.accept(receipt)

    def on_frame(self, record: Record) -> None:
        """Receive a run's ``open`` or ``close`` record."""
        self.accept(record)

    def accept(self, record: Record) -> None:
        """Take one record of any kind: count it, deliver it, contain any failure."""
        self.counters.accepted += 1
        try:
            self.deliver(record)
        except Exception:
            self.count("failed")
            log.warning(
                "sink %s failed to deliver receipt seq=%s", self.name, record.seq, exc_info=True
            )

    def deliver(self, record: Record) -> None:
        """Send one record on; raise to report a failure."""
        raise NotImplementedError

    def count(self, counter: str, n: int = 1) -> None:
        """Add ``n`` to a counter. Sinks are called under the manager's lock; a sink that
        counts from a thread of its own overrides this with a lock.
        """
        setattr(self.counters, counter, getattr(self.counters, counter) + n)

    def close(self) -> None:
        """Flush and release the destination. Idempotent."""
        self.closed = True
