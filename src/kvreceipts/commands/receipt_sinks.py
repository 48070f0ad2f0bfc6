"""Sinks that belong to the command line: receipts to stdout, and the first few kept for the
table. Imported only when receipts are on (they build on the receipts code).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from kvreceipts.errors import InputError
from kvreceipts.sinks import BaseSink, JsonlSink

if TYPE_CHECKING:
    from pathlib import Path

    from kvreceipts.commands.output import Output
    from kvreceipts.receipts import Record

__all__ = ["StdoutSink", "TableSink", "file_sink"]


class StdoutSink(BaseSink):
    """Receipt lines on stdout through the command's one writer; sets ``stop`` when the
    reader goes away (``| head -1``), so the simulation can end early.
    """

    name = "stdout"

    def __init__(self, out: Output) -> None:
        super().__init__()
        self.out = out
        self.stop = threading.Event()

    def deliver(self, record: Record) -> None:
        """Write the sealed line."""
        if self.out.write(record.line):
            self.count("delivered")
        else:
            self.stop.set()


class TableSink(BaseSink):
    """Keeps the first ``limit`` receipts for the table and counts the rest."""

    name = "table"

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.kept: list[Record] = []

    def on_frame(self, record: Record) -> None:
        """The table shows receipts, not the run's open and close records."""

    def deliver(self, record: Record) -> None:
        """Keep the record if there is room."""
        if len(self.kept) < self.limit:
            self.kept.append(record)
        self.count("delivered")


def file_sink(output: str | Path, *, append: bool) -> JsonlSink:
    """The ``-o`` file's sink, named after it; a file that cannot be opened is one error."""
    try:
        sink = JsonlSink(output, flush="batch", append=append)
    except OSError as exc:
        raise InputError(f"cannot write the receipts file: {exc.strerror}",
                         path=str(output)) from None  # fmt: skip
    sink.name = f"file {output}"
    return sink
