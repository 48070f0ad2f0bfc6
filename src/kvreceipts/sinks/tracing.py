"""``TracingSink``: each receipt as one log record under ``KV_RECEIPTS_TARGET``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from kvreceipts.receipts import KvEvictionReport, as_receipt
from kvreceipts.sinks.base import KV_RECEIPTS_TARGET, BaseSink

if TYPE_CHECKING:
    from kvreceipts.receipts import Record

__all__ = ["TracingSink"]


class TracingSink(BaseSink):
    """Logs at INFO through stdlib ``logging``, with upstream's structured fields in ``extra``:
    ``kv_event``, ``session_id``, ``block_offset``, ``block_size_bytes``, ``before_sessions``,
    ``after_sessions``, ``before_mem_mb``, ``after_mem_mb``, ``has_perf``; message
    "KV eviction recorded". Batches and snapshots are logged with their kind as ``kv_event``.
    """

    name = "tracing"

    def __init__(self, logger: logging.Logger | None = None) -> None:
        super().__init__()
        self.logger = logger or logging.getLogger(KV_RECEIPTS_TARGET)

    def deliver(self, record: Record) -> None:
        """Log ``record`` if INFO is enabled for the logger."""
        if not self.logger.isEnabledFor(logging.INFO):
            self.count("delivered")
            return
        if record.kind == "eviction":
            record = as_receipt(record)
            assert isinstance(record, KvEvictionReport)
            self.logger.info(
                "KV eviction recorded",
                extra={
                    "kv_event": "eviction",
                    "session_id": record.session_id,
                    "block_offset": record.block_offset,
                    "block_size_bytes": record.block_size_bytes,
                    "before_sessions": record.before.total_sessions,
                    "after_sessions": record.after.total_sessions,
                    "before_mem_mb": record.before.used_memory_mb,
                    "after_mem_mb": record.after.used_memory_mb,
                    "has_perf": record.performance is not None,
                    "seq": record.seq,
                    "reason": record.reason,
                },
            )
        else:
            self.logger.info(
                "KV %s recorded",
                record.kind,
                extra={"kv_event": record.kind, "seq": record.seq},
            )
        self.count("delivered")
