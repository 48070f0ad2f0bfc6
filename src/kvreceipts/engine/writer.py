"""The one place a watch numbers, frames, seals and delivers its records.

A watch is one run: an ``open`` record (seq 0) naming the source, then the engine receipts,
then a ``close`` record with the counts. Everything the rest of the watch knows about the
chain goes through :class:`RunWriter`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kvreceipts.chain import Sealer, canonical
from kvreceipts.checkpoints import Checkpoints
from kvreceipts.clock import _Formatter
from kvreceipts.config import CachingConfig
from kvreceipts.receipts import CheckpointRecord, LossReceipt, RunClose, RunOpen, SealedRecord
from kvreceipts.sinks.base import KV_RECEIPTS_TARGET
from kvreceipts.stats import KVCacheStatistics

if TYPE_CHECKING:
    from kvreceipts.receipts import Receipt
    from kvreceipts.sinks.base import BaseSink

__all__ = ["RunWriter"]

log = logging.getLogger(KV_RECEIPTS_TARGET)

WITHHELD = "engine_batches"
"""The kind a ``loss`` record's dropped slot stands for (in the close record's counts)."""


class RunWriter:
    """Numbers each record, seals it and hands it to the sink.

    ``at_s`` (Unix seconds) becomes ``timestamp``; it never goes backwards, so a replayed
    batch received after a later one keeps the chain's time order.
    """

    def __init__(
        self,
        sink: BaseSink,
        *,
        run_id: str,
        start_s: float,
        key: bytes | None = None,
        checkpoints: Checkpoints | None = None,
        checkpoint_interval_s: float = 0.0,
    ) -> None:
        self.sink = sink
        self.checkpoints = checkpoints if checkpoints is not None else Checkpoints()
        self.checkpoint_interval_s = checkpoint_interval_s
        """Also write a checkpoint record once this many seconds passed since the last one."""
        self._last_checkpoint = (0, start_s)  # (seq, time) of the last checkpoint
        self.run_id = run_id
        self.start_s = start_s
        self.sealer = Sealer(key)
        self.next_seq = 0
        self.counts: dict[str, int] = {}
        self.lost_slots = 0
        self._at = start_s
        self._stamped_at = -1.0
        self._stamp = ""
        self._format = _Formatter()
        self.closed = False
        sink.bind(run_id, self.sealer)

    @property
    def at_s(self) -> float:
        """Time of the last record (``start_s`` before the first)."""
        return self._at

    @property
    def last_digest(self) -> str:
        """Digest of the last sealed record: the chain head."""
        return self.sealer.last_digest

    def stamp(self, at_s: float) -> str:
        """The ``timestamp`` of records made at ``at_s`` (clamped: time never goes back)."""
        if at_s == self._stamped_at:  # a batch's receipts share their time
            return self._stamp
        at = self._at = max(self._at, at_s)
        self._stamped_at = at_s
        self._stamp = self._format(at)
        return self._stamp

    def _sim_ms(self, at_s: float) -> float:
        return round((max(self._at, at_s) - self.start_s) * 1000.0, 3)

    # -- records -------------------------------------------------------------------------------

    def put(self, record: Receipt) -> Receipt:
        """Number, seal and deliver a record (its timestamp from :meth:`stamp`)."""
        sealer = self.sealer
        record.seq = self.next_seq
        self.next_seq += 1
        record.alg, record.key_id = sealer.alg, sealer.key_id
        record.prev_digest = sealer.last_digest
        record.digest, record.line = sealer.seal_dict(record.to_dict())
        self.counts[record.kind] = self.counts.get(record.kind, 0) + 1
        self.sink.accept(record)
        return record

    def put_payload(self, kind: str, timestamp: str, payload: bytes) -> int:
        """Seal and deliver a record given as its canonical JSON, already holding
        ``seq = next_seq`` and the sealer's ``alg``/``key_id``; returns its seq.
        """
        seq = self.next_seq
        self.next_seq = seq + 1
        prev = self.sealer.last_digest
        digest, line = self.sealer.seal(payload)
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.sink.accept(SealedRecord(kind, self.run_id, seq, timestamp, prev, digest, line))
        return seq

    def put_payloads(self, kind: str, timestamp: str, payloads: list[bytes]) -> None:
        """:meth:`put_payload` for records of one kind and time, in one tight loop (the
        payloads hold seqs ``next_seq``, ``next_seq + 1``, ...).
        """
        seal, accept, run_id = self.sealer.seal_body, self.sink.accept, self.run_id
        seq = self.next_seq
        prev = self.sealer.last_digest
        for payload in payloads:
            digest, line = seal(payload[:-1])  # Sealer.seal, one call fewer
            accept(SealedRecord(kind, run_id, seq, timestamp, prev, digest, line))
            prev = digest
            seq += 1
        self.next_seq = seq
        self.counts[kind] = self.counts.get(kind, 0) + len(payloads)

    def emit(self, cls: type[Receipt], at_s: float, **fields: Any) -> Receipt:
        """Build, seal and deliver one record of kind ``cls``; returns it (``seq`` set)."""
        return self.put(cls(run_id=self.run_id, seq=-1, timestamp=self.stamp(at_s), **fields))

    def declare_loss(self, at_s: float, what: str, withheld: dict[str, Any]) -> int:
        """Declare receipts that cannot be written (an engine's lost batches): one slot of
        the chain is sealed over ``withheld`` but not delivered, and a ``loss`` record from
        sink ``what`` stands beside it, so that verify fails unless losses are allowed.
        Returns the loss record's seq.
        """
        sealer = self.sealer
        timestamp = self.stamp(at_s)
        seq = self.next_seq
        self.next_seq += 1
        prev = sealer.last_digest
        body = {"kind": WITHHELD, "run_id": self.run_id, "seq": seq, "timestamp": timestamp,
                **withheld}  # fmt: skip
        withheld_digest, _line = sealer.seal_dict(body)
        loss = LossReceipt(
            run_id=self.run_id, seq=seq, timestamp=timestamp, alg=sealer.alg,
            key_id=sealer.key_id, prev_digest=prev, sink=what, first_seq=seq, last_seq=seq,
            count=1, last_lost_digest=withheld_digest, lost_counts={WITHHELD: 1},
            lost_tree=[sealer.last_leaf.hex()],
        )  # fmt: skip
        loss.digest, loss.line = sealer.seal_beside(prev, loss.to_dict())
        self.lost_slots += 1
        self.sink.accept(loss)
        return seq

    # -- framing -------------------------------------------------------------------------------

    def open(self, *, workload: dict[str, Any]) -> None:
        """The run's ``open`` record (seq 0): a watch, and what it watches (``workload``).

        The ``/2`` open record requires a CachingConfig; a watch has none of its own, so it
        states the defaults, with ``enable_receipts`` on.
        """
        config = CachingConfig(enable_receipts=True).to_dict()
        self._frame(RunOpen(
            run_id=self.run_id, seq=-1, timestamp=self.stamp(self.start_s), source="watch",
            layout="lean", config=config, workload=workload, allocator=None, policy=None,
            total_bytes=0, tuning=False, sim_time_ms=0.0,
        ))  # fmt: skip

    def close(self, at_s: float, *, resident_blocks: int, removals: int) -> None:
        """The run's ``close`` record (counts by kind; ``final_stats`` holds the blocks still
        resident as ``total_sessions`` and the removals as ``evictions``), then close the
        sink. Idempotent.
        """
        if self.closed:
            return
        self.closed = True
        counts = dict(self.counts)
        if self.lost_slots:
            counts[WITHHELD] = self.lost_slots
        stats = KVCacheStatistics(total_sessions=resident_blocks, evictions=removals)
        timestamp = self.stamp(at_s)
        size, root, note = self.checkpoints.state(self.run_id, self.sealer.tree)
        self._frame(RunClose(
            run_id=self.run_id, seq=-1, timestamp=timestamp, sim_time_ms=self._sim_ms(at_s),
            records=self.next_seq, counts=dict(sorted(counts.items())), bytes_freed=0,
            final_stats=stats.to_dict(), head=self.sealer.last_digest, tree_size=size,
            root=root, checkpoint=note,
        ))  # fmt: skip
        self.checkpoints.share(note)
        try:
            self.sink.close()
        except Exception:
            log.warning("closing the receipt sink failed", exc_info=True)

    def boundary(self, at_s: float) -> None:
        """Between two batches: write a ``checkpoint`` record if ``checkpoints.every``
        records or ``checkpoint_interval_s`` seconds followed the last one.
        """
        every, interval = self.checkpoints.every, self.checkpoint_interval_s
        last_seq, last_s = self._last_checkpoint
        if self.closed or not (
            (every and self.next_seq - last_seq >= every)
            or (interval and at_s - last_s >= interval)
        ):
            return
        timestamp = self.stamp(at_s)
        size, root, note = self.checkpoints.state(self.run_id, self.sealer.tree)
        self._frame(CheckpointRecord(
            run_id=self.run_id, seq=-1, timestamp=timestamp, tree_size=size, root=root,
            checkpoint=note,
        ))  # fmt: skip
        self.counts["checkpoint"] = self.counts.get("checkpoint", 0) + 1
        self._last_checkpoint = (self.next_seq, at_s)
        self.checkpoints.share(note)

    def _frame(self, record: Receipt) -> None:
        sealer = self.sealer
        record.seq = self.next_seq
        self.next_seq += 1
        record.alg, record.key_id = sealer.alg, sealer.key_id
        record.prev_digest = sealer.last_digest
        record.digest, record.line = sealer.seal(canonical(record.to_dict()))
        if record.kind == "open":
            self.counts["open"] = 1
        self.sink.on_frame(record)
