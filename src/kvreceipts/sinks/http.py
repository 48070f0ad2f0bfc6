"""``HttpSink``: receipts POSTed as JSON lines in batches, from a background thread."""

from __future__ import annotations

import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from kvreceipts.sinks.base import KV_RECEIPTS_TARGET, BaseSink, LossTracker

if TYPE_CHECKING:
    from kvreceipts.chain import Sealer
    from kvreceipts.receipts import Record

__all__ = ["HttpSink"]

log = logging.getLogger(KV_RECEIPTS_TARGET)


class _Permanent(Exception):  # noqa: N818 - a marker, not an error users see
    """The server refused the batch for good (a 4xx other than 408/429)."""


class HttpSink(BaseSink):
    """POSTs receipts to ``url`` as ``application/x-ndjson`` bodies of up to ``batch_size``
    lines.

    The manager only appends to a bounded buffer (``max_buffer`` records); a background thread
    sends. When the buffer is full the new record is dropped, counted, and reported by a
    ``loss`` record in a later batch. Failed POSTs are retried with exponential backoff and
    jitter; every attempt of a batch carries the same ``Idempotency-Key`` header
    (``<run_id>:<first seq>-<last seq>``), so a server can drop duplicates. ``close`` sends what
    it can within ``close_timeout_s`` and counts the rest as failed.
    """

    name = "http"

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 500,
        max_buffer: int = 50_000,
        flush_interval_s: float = 0.2,
        timeout_s: float = 5.0,
        max_attempts: int = 6,
        backoff_s: float = 0.05,
        max_backoff_s: float = 2.0,
        close_timeout_s: float = 10.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url = url
        self.batch_size = max(1, batch_size)
        self.max_buffer = max(1, max_buffer)
        self.flush_interval_s = flush_interval_s
        self.timeout_s = timeout_s
        self.max_attempts = max(1, max_attempts)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.close_timeout_s = close_timeout_s
        self.headers = dict(headers or {})
        self.undelivered = 0
        """Records still buffered when ``close`` gave up."""
        self.batches_sent = 0
        self.attempts = 0
        self._run_id = "unbound"
        self._buffer: deque[Record] = deque()
        self._loss = LossTracker(self.name)
        self._cond = threading.Condition()
        self._counter_lock = threading.Lock()
        self._closing = False
        self._deadline = float("inf")
        self._thread = threading.Thread(target=self._work, name="kvreceipts-http-sink", daemon=True)
        self._thread.start()

    def count(self, counter: str, n: int = 1) -> None:
        """Add to a counter under a lock: the sender thread counts too."""
        with self._counter_lock:
            super().count(counter, n)

    def bind(self, run_id: str, sealer: Sealer) -> None:
        """Learn the run (for idempotency keys) and the sealer (for loss records)."""
        self._run_id = run_id
        self._loss.sealer = sealer

    def deliver(self, record: Record) -> None:
        """Buffer ``record`` for the sender thread; never waits for the network."""
        with self._cond:
            if self._closing:
                raise RuntimeError("the HTTP sink is closed")
            if len(self._buffer) >= self.max_buffer:
                self._loss.drop(record)
                self.count("dropped")
                return
            self._buffer.append(record)
            if len(self._buffer) >= self.batch_size:
                self._cond.notify()

    def _next_batch(self) -> list[Record] | None:
        """Wait for a full batch, the flush interval, or close; ``None`` when done."""
        with self._cond:
            if len(self._buffer) < self.batch_size and not self._closing:
                self._cond.wait(self.flush_interval_s)
            if self._closing and time.monotonic() >= self._deadline:
                return None  # out of time: close counts what is left
            pending = self._loss.pending
            if pending is not None and self._buffer and self._buffer[-1].seq > pending.last_seq:
                self._loss.close_range()  # a record got through after the drops
            # In seq order: a loss record goes after the records buffered before its gap.
            losses, buffer = self._loss.ready, self._buffer
            batch: list[Record] = []
            while (buffer or losses) and len(batch) < self.batch_size:
                if losses and (not buffer or losses[0].first_seq < buffer[0].seq):
                    batch.append(losses.pop(0))
                else:
                    batch.append(buffer.popleft())
            if not batch and self._closing:
                self._loss.close_range()
                batch = list(self._loss.take())
                return batch or None
            return batch

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._send(batch)

    def _send(self, batch: list[Record]) -> None:
        body = b"".join(record.line for record in batch)
        seqs = [r.seq for r in batch]
        key = f"{self._run_id}:{min(seqs)}-{max(seqs)}"
        headers = {
            "Content-Type": "application/x-ndjson",
            "Idempotency-Key": key,
            "User-Agent": "kvreceipts",
            **self.headers,
        }
        # Counters count the receipts the sink accepted; its own loss records are not among them.
        receipts = sum(1 for record in batch if record.kind != "loss")
        delay = self.backoff_s
        for attempt in range(1, self.max_attempts + 1):
            self.attempts += 1
            try:
                # No attempt runs past close's deadline (infinite until close).
                self._post(body, headers, min(self.timeout_s, self._deadline - time.monotonic()))
            except _Permanent as exc:
                log.warning("HTTP sink: %s refused batch %s: %s", self.url, key, exc)
                break
            except (OSError, urllib.error.URLError) as exc:
                if attempt == self.max_attempts or time.monotonic() + delay > self._deadline:
                    log.warning("HTTP sink: giving up on batch %s after %d attempts: %s",
                                key, attempt, exc)  # fmt: skip
                    break
                time.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter only
                delay = min(delay * 2, self.max_backoff_s)
            else:
                self.batches_sent += 1
                self.count("delivered", receipts)
                return
        self.count("failed", receipts)

    def _post(self, body: bytes, headers: dict[str, str], timeout: float) -> None:
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")  # noqa: S310 - scheme checked in __init__
        try:
            with urllib.request.urlopen(request, timeout=max(0.001, timeout)) as response:  # noqa: S310
                response.read()
        except urllib.error.HTTPError as exc:
            if exc.code in (408, 429) or exc.code >= 500:
                raise  # worth another try
            raise _Permanent(f"HTTP {exc.code}") from None

    def close(self) -> None:
        """Send what is buffered, within ``close_timeout_s``; count the rest as failed."""
        if self.closed:
            return
        with self._cond:
            self._closing = True
            self._deadline = time.monotonic() + self.close_timeout_s
            self._cond.notify()
        self._thread.join(self.close_timeout_s + self.timeout_s)
        with self._cond:
            left = len(self._buffer)
            self._buffer.clear()
        if left:
            self.undelivered = left
            self.count("failed", left)
            log.warning("HTTP sink: %d receipts could not be delivered to %s before the "
                        "deadline", left, self.url)  # fmt: skip
        super().close()
