"""The one place a watch numbers, seals and delivers its receipts.

Everything the rest of the watch knows about the chain goes through :class:`RunWriter`, so
that moving to another record framing changes this file only.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kvreceipts.chain import Sealer
from kvreceipts.clock import _Formatter
from kvreceipts.sinks.base import KV_RECEIPTS_TARGET

if TYPE_CHECKING:
    from kvreceipts.receipts import Receipt
    from kvreceipts.sinks.base import BaseSink

__all__ = ["RunWriter"]

log = logging.getLogger(KV_RECEIPTS_TARGET)


class RunWriter:
    """Builds each receipt with the next ``seq``, seals it and hands it to the sink.

    ``at_s`` (Unix seconds) becomes ``timestamp`` and ``sim_time_ms`` (since ``start_s``);
    it never goes backwards, so a replayed batch received after a later one keeps the chain's
    time order.
    """

    def __init__(
        self, sink: BaseSink, *, run_id: str, start_s: float, key: bytes | None = None
    ) -> None:
        self.sink = sink
        self.run_id = run_id
        self.start_s = start_s
        self.sealer = Sealer(key)
        self.next_seq = 0
        self._at = start_s
        self._stamped_at = -1.0
        self._stamp = ("", 0.0)
        self._format = _Formatter()
        sink.bind(run_id, self.sealer)

    @property
    def at_s(self) -> float:
        """Time of the last record (``start_s`` before the first)."""
        return self._at

    @property
    def last_digest(self) -> str:
        """Digest of the last sealed record."""
        return self.sealer.last_digest

    def stamp(self, at_s: float) -> tuple[str, float]:
        """``timestamp`` and ``sim_time_ms`` for records made at ``at_s`` (clamped so that
        time never goes backwards).
        """
        if at_s == self._stamped_at:  # a batch's receipts share their time
            return self._stamp
        at = self._at = max(self._at, at_s)
        self._stamped_at = at_s
        self._stamp = (self._format(at), round((at - self.start_s) * 1000.0, 3))
        return self._stamp

    def put(self, record: Receipt) -> Receipt:
        """Number, seal and deliver a record built with :meth:`stamp`'s values."""
        record.seq = self.next_seq
        self.next_seq += 1
        self.sealer.seal(record)
        self.sink.accept(record)
        return record

    def emit(self, cls: type[Receipt], at_s: float, **fields: Any) -> Receipt:
        """Build, seal and deliver one record of kind ``cls``; returns it (``seq`` set)."""
        timestamp, sim_time_ms = self.stamp(at_s)
        return self.put(
            cls(run_id=self.run_id, seq=-1, timestamp=timestamp, sim_time_ms=sim_time_ms,
                **fields)
        )  # fmt: skip

    def close(self) -> None:
        """Flush and close the sink (its failures are logged, never raised)."""
        try:
            self.sink.close()
        except Exception:
            log.warning("closing the receipt sink failed", exc_info=True)
