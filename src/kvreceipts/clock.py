"""Clocks the manager reads: the wall clock for live use, a simulated clock for replays.

Both count milliseconds from their start and print RFC 3339 UTC timestamps that never go
backwards (the wall clock pins its epoch once and then follows the monotonic clock).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol

from kvreceipts.errors import UsageError

__all__ = ["SIM_EPOCH", "Clock", "SimClock", "WallClock", "format_timestamp"]

SIM_EPOCH = datetime(2025, 1, 1, tzinfo=UTC).timestamp()
"""Where simulated time starts when a trace carries no absolute time of its own."""


class Clock(Protocol):
    """Milliseconds since the clock's start, and the matching RFC 3339 timestamp."""

    def now_ms(self) -> float:
        """Milliseconds since the clock started."""
        ...

    def timestamp(self, at_ms: float) -> str:
        """RFC 3339 UTC time of ``at_ms`` on this clock."""
        ...


class _Formatter:
    """RFC 3339 with microseconds; caches the whole-second prefix (it changes rarely)."""

    __slots__ = ("_last", "_last_in", "_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""
        self._last_in = -1.0
        self._last = ""

    def __call__(self, epoch_s: float) -> str:
        if epoch_s == self._last_in:  # receipts of one eviction round share their time
            return self._last
        self._last_in = epoch_s
        micros = round(epoch_s * 1_000_000)
        second, micro = divmod(micros, 1_000_000)
        if second != self._second:
            try:
                when = datetime.fromtimestamp(second, UTC)
            except (ValueError, OverflowError, OSError):
                raise UsageError(
                    f"the clock reached {epoch_s:.0f} s since 1970, past what RFC 3339 can write "
                    "(year 9999): the trace starts too late, or the simulated costs per token "
                    "are too large"
                ) from None
            self._second = second
            self._prefix = when.strftime("%Y-%m-%dT%H:%M:%S")
        self._last = f"{self._prefix}.{micro:06d}Z"
        return self._last


def format_timestamp(epoch_s: float) -> str:
    """Format seconds since the Unix epoch as RFC 3339 UTC with microseconds."""
    return _Formatter()(epoch_s)


class WallClock:
    """Real time: milliseconds on the monotonic clock since creation."""

    def __init__(self) -> None:
        self._start = time.monotonic()
        self._epoch = time.time()
        self._format = _Formatter()

    def now_ms(self) -> float:
        """Milliseconds since the clock was created."""
        return (time.monotonic() - self._start) * 1000.0

    def timestamp(self, at_ms: float) -> str:
        """Wall time of ``at_ms``."""
        return self._format(self._epoch + at_ms / 1000.0)


class SimClock:
    """Simulated time, moved forward by the simulator; never goes backwards."""

    def __init__(self, epoch_s: float = SIM_EPOCH) -> None:
        self._now = 0.0
        self._epoch = epoch_s
        self._format = _Formatter()

    def now_ms(self) -> float:
        """The current simulated time."""
        return self._now

    def set_epoch(self, epoch_s: float) -> None:
        """Anchor simulated time at ``epoch_s`` (a trace's own first timestamp)."""
        self._epoch = epoch_s

    def advance_to(self, at_ms: float) -> None:
        """Move the clock to ``at_ms`` (ignored if that is in the past)."""
        self._now = max(self._now, at_ms)

    def timestamp(self, at_ms: float) -> str:
        """Simulated wall time of ``at_ms``."""
        return self._format(self._epoch + at_ms / 1000.0)
