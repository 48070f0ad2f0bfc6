"""``ChannelSink``: a bounded in-process queue that never blocks the manager."""

from __future__ import annotations

import queue
from collections import deque
from typing import TYPE_CHECKING, Literal

from kvreceipts.receipts import LossReceipt, as_receipt
from kvreceipts.sinks.base import BaseSink, LossTracker

if TYPE_CHECKING:
    from kvreceipts.chain import Sealer
    from kvreceipts.receipts import Receipt, Record

__all__ = ["ChannelSink", "Overflow"]

Overflow = Literal["drop_newest", "drop_oldest"]


class ChannelSink(BaseSink):
    """Puts records on a bounded ``queue.Queue`` for a consumer to read.

    When the queue is full, ``drop_newest`` refuses the new record and ``drop_oldest`` discards
    the oldest queued one. Unlike upstream's silent drop, every drop is counted and each
    contiguous run of drops becomes a ``loss`` record, queued once there is room for it and the
    next record (every loss record is also kept in :attr:`losses`).
    """

    name = "channel"

    def __init__(self, capacity: int, overflow: Overflow = "drop_newest") -> None:
        super().__init__()
        if capacity < 1:
            raise ValueError("a channel needs room for at least one record")
        if overflow not in ("drop_newest", "drop_oldest"):
            raise ValueError(f"unknown overflow policy {overflow!r}")
        self.queue: queue.Queue[Record] = queue.Queue(maxsize=capacity)
        self.capacity = capacity
        self.overflow = overflow
        self.losses: list[LossReceipt] = []
        """Every loss record this sink made, queued or not."""
        self.frames: list[Receipt] = []
        """The run's ``open`` and ``close`` records: kept here, not queued, so that readers
        of the channel see upstream's receipts only."""
        self._loss = LossTracker(self.name)
        self._unqueued: deque[LossReceipt] = deque()

    def bind(self, run_id: str, sealer: Sealer) -> None:  # noqa: ARG002 - protocol signature
        """Seal loss records with the run's key."""
        self._loss.sealer = sealer

    def on_frame(self, record: Record) -> None:
        """Keep a run's open or close record in :attr:`frames`."""
        self.frames.append(as_receipt(record))

    def _free_slots(self) -> int:
        # Only this sink puts (under the manager's lock); consumers only take, so the real
        # number of free slots is at least this.
        return self.capacity - self.queue.qsize()

    def _queue_losses(self, reserve: int) -> None:
        if self._loss.pending is not None and self._free_slots() > reserve:
            self._loss.close_range()
        for loss in self._loss.take():
            self.losses.append(loss)
            self._unqueued.append(loss)
        while self._unqueued and self._free_slots() > reserve:
            self.queue.put_nowait(self._unqueued.popleft())

    def deliver(self, record: Record) -> None:
        """Queue ``record`` without blocking, dropping by the overflow policy when full."""
        if self._loss.pending is not None or self._unqueued:
            self._queue_losses(reserve=1)
        if self.overflow == "drop_oldest":
            while self.queue.full():
                oldest = self.queue.get_nowait()
                if isinstance(oldest, LossReceipt):
                    self._unqueued.appendleft(oldest)  # a loss record is never dropped
                else:  # it was counted delivered when queued; it never reached a reader
                    self._loss.drop(oldest)
                    self.counters.delivered -= 1
                    self.count("dropped")
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self._loss.drop(record)
            self.count("dropped")
        else:
            self.count("delivered")

    def try_recv(self) -> Receipt | None:
        """The next record, or ``None`` when the queue is empty."""
        try:
            return as_receipt(self.queue.get_nowait())
        except queue.Empty:
            return None

    def recv(self, timeout: float | None = None) -> Receipt:
        """The next record, waiting up to ``timeout`` seconds (raises ``queue.Empty``)."""
        return as_receipt(self.queue.get(timeout=timeout))

    def drain(self) -> list[Receipt]:
        """Every record queued right now."""
        records = []
        while (record := self.try_recv()) is not None:
            records.append(record)
        return records

    def close(self) -> None:
        """Close any open loss range and queue the loss records that fit."""
        self._loss.close_range()
        self._queue_losses(reserve=0)
        super().close()
