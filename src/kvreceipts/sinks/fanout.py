"""``FanoutSink``: hands every record to several sinks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvreceipts.sinks.base import BaseSink, log

if TYPE_CHECKING:
    from collections.abc import Iterable

    from kvreceipts.chain import Sealer
    from kvreceipts.receipts import Record

__all__ = ["FanoutSink", "fan_out"]


def fan_out(sinks: list[BaseSink]) -> BaseSink:
    """One sink for ``sinks``: the sink itself when there is one (no fan-out cost on every
    receipt), else a :class:`FanoutSink`.
    """
    return sinks[0] if len(sinks) == 1 else FanoutSink(sinks)


class FanoutSink(BaseSink):
    """Delivers each record to every child in order; one failing child does not stop the
    others (the failure is counted, and logged, by that child).
    """

    name = "fanout"

    def __init__(self, sinks: Iterable[BaseSink]) -> None:
        super().__init__()
        self.sinks = list(sinks)

    def bind(self, run_id: str, sealer: Sealer) -> None:
        """Bind every child."""
        for sink in self.sinks:
            sink.bind(run_id, sealer)

    def on_frame(self, record: Record) -> None:
        """Hand a run's open or close record to each child's own ``on_frame``."""
        self.counters.accepted += 1
        for sink in self.sinks:
            try:
                sink.on_frame(record)
            except Exception:  # noqa: BLE001 - keep going with the others
                sink.count("failed")
                log.warning("sink %s failed to take the %s record", sink.name, record.kind,
                            exc_info=True)  # fmt: skip
        self.counters.delivered += 1

    def deliver(self, record: Record) -> None:
        """Give ``record`` to each child (each contains its own failures)."""
        for sink in self.sinks:
            sink.accept(record)
        self.counters.delivered += 1

    def close(self) -> None:
        """Close every child, even if one fails."""
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:  # noqa: BLE001 - keep closing the others
                log.warning("closing sink %s failed", sink.name, exc_info=True)
        super().close()
