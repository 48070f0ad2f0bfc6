"""``JsonlSink``: receipts appended to a JSON-lines file, durable by construction."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

from kvreceipts.sinks.base import BaseSink, log

if TYPE_CHECKING:
    from kvreceipts.receipts import Record

__all__ = ["FlushPolicy", "JsonlSink"]

FlushPolicy = Literal["line", "batch"]


class JsonlSink(BaseSink):
    """Appends each sealed receipt as one line.

    Lines only ever reach the file whole, in one ``write`` each (``flush="line"``, the
    default: nothing emitted is lost if the process dies) or in whole-line batches of
    ``batch_lines`` (``flush="batch"``: faster; a crash loses at most the unwritten batch).
    Either way a killed process leaves a valid prefix that ``kvreceipts verify`` accepts.
    ``close`` writes what is left and fsyncs a file the sink opened. A path is appended to
    unless ``append=False``.
    """

    name = "jsonl"

    def __init__(
        self,
        target: str | Path | IO[bytes],
        *,
        flush: FlushPolicy = "line",
        batch_lines: int = 512,
        append: bool = True,
    ) -> None:
        super().__init__()
        if flush not in ("line", "batch"):
            raise ValueError(f"unknown flush policy {flush!r} (choose from: line, batch)")
        if isinstance(target, (str, Path)):
            self.path: str | None = str(target)
            # Unbuffered append: one write() system call per write here, never a split line.
            mode = "ab" if append else "wb"
            self._stream: IO[bytes] = Path(target).open(mode, buffering=0)  # noqa: SIM115
            self._owned = True
        else:
            self.path = getattr(target, "name", None)
            self._stream = target
            self._owned = False
        self.flush_policy: FlushPolicy = flush
        self.batch_lines = max(1, batch_lines)
        self._pending: list[bytes] = []

    def deliver(self, record: Record) -> None:
        """Write (or batch) the record's sealed line."""
        if self.flush_policy == "line":
            self._stream.write(record.line)
            self.counters.delivered += 1
            return
        self._pending.append(record.line)
        if len(self._pending) >= self.batch_lines:
            self.flush()

    def flush(self) -> None:
        """Write the batched lines now, in one write."""
        if not self._pending:
            return
        lines, self._pending = self._pending, []
        try:
            self._stream.write(b"".join(lines))
            if not self._owned:
                self._stream.flush()
        except Exception:  # noqa: BLE001 - counted and logged; the manager must go on
            self.count("failed", len(lines))
            log.warning("sink %s failed to write %d receipts", self.name, len(lines), exc_info=True)
            return
        self.count("delivered", len(lines))

    def close(self) -> None:
        """Write what is batched, fsync and close a file this sink opened. Idempotent."""
        if self.closed:
            return
        try:
            self.flush()
            if self._owned and stat.S_ISREG(os.fstat(self._stream.fileno()).st_mode):
                os.fsync(self._stream.fileno())  # a device such as /dev/null cannot be synced
            else:
                self._stream.flush()
        finally:
            if self._owned:
                self._stream.close()
            super().close()
