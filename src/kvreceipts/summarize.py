"""A summary of a receipts file for ``kvreceipts stats``.

Counts, bytes freed, top sessions, and memory over time (downsampled as it streams, so memory
stays bounded).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from kvreceipts.schema import SCHEMA_ID

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["ReceiptSummary", "summarize_lines"]

SERIES_POINTS = 120
"""Points kept for the memory chart; older points are thinned as the stream grows."""


@dataclass(slots=True)
class _Series:
    """Every ``stride``-th sample, the stride doubling whenever the buffer fills."""

    limit: int = SERIES_POINTS
    stride: int = 1
    seen: int = 0
    points: list[tuple[float, int, int]] = field(default_factory=list)

    def add(self, point: tuple[float, int, int]) -> None:
        if self.seen % self.stride == 0:
            self.points.append(point)
            if len(self.points) >= 2 * self.limit:
                self.points = self.points[::2]
                self.stride *= 2
        self.seen += 1


@dataclass(slots=True)
class ReceiptSummary:
    """What a receipts file says, in aggregate."""

    path: str
    records: int = 0
    unreadable_lines: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    policies: Counter[str] = field(default_factory=Counter)
    sessions: Counter[str] = field(default_factory=Counter)
    runs: Counter[str] = field(default_factory=Counter)
    bytes_freed: int = 0
    total_bytes: int = 0
    peak_used_bytes: int = 0
    lost: int = 0
    first_timestamp: str | None = None
    last_timestamp: str | None = None
    series: _Series = field(default_factory=_Series)

    def add(self, record: dict[str, Any]) -> None:
        """Fold one parsed record in (a record missing a field it needs changes nothing)."""
        kind = record["kind"]
        if kind == "eviction":
            before, after = record["before"], record["after"]
            point = (record["sim_time_ms"], before["used_bytes"], after["used_bytes"])
            reason, policy = record["reason"], record["policy"]
            session, size = record["session_id"], record["block_size_bytes"]
            total = before["total_bytes"]
        lost = int(record["count"]) if kind == "loss" else 0
        self.records += 1
        self.kinds[kind] += 1
        self.runs[str(record.get("run_id"))] += 1
        self.lost += lost
        stamp = record.get("timestamp")
        if isinstance(stamp, str):
            self.first_timestamp = self.first_timestamp or stamp
            self.last_timestamp = stamp
        if kind == "eviction":
            self.reasons[reason] += 1
            self.policies[policy] += 1
            self.sessions[session] += 1
            self.bytes_freed += size
            self.total_bytes = total
            self.peak_used_bytes = max(self.peak_used_bytes, point[1])
            self.series.add(point)

    @property
    def evictions(self) -> int:
        """Eviction receipts seen."""
        return self.kinds.get("eviction", 0)

    def top_sessions(self, n: int = 10) -> list[tuple[str, int]]:
        """The sessions with the most evictions."""
        return self.sessions.most_common(n)

    def to_dict(self, top: int = 10) -> dict[str, Any]:
        """Plain values for ``--format json``."""
        return {
            "path": self.path,
            "records": self.records,
            "unreadable_lines": self.unreadable_lines,
            "runs": dict(self.runs),
            "kinds": dict(self.kinds),
            "reasons": dict(self.reasons),
            "policies": dict(self.policies),
            "evictions": self.evictions,
            "bytes_freed": self.bytes_freed,
            "peak_used_bytes": self.peak_used_bytes,
            "total_bytes": self.total_bytes,
            "lost": self.lost,
            "first_timestamp": self.first_timestamp,
            "last_timestamp": self.last_timestamp,
            "top_sessions": [{"session_id": s, "evictions": n} for s, n in self.top_sessions(top)],
            "memory": [
                {"sim_time_ms": t, "used_bytes_before": b, "used_bytes_after": a}
                for t, b, a in self.series.points
            ],
        }


def summarize_lines(lines: Iterable[bytes], *, path: str = "-") -> ReceiptSummary:
    """Summarize a stream of receipt lines; lines that are not receipts are counted apart."""
    summary = ReceiptSummary(path)
    for raw in lines:
        if not raw.strip():
            continue
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            summary.unreadable_lines += 1
            continue
        if not isinstance(record, dict) or record.get("schema") != SCHEMA_ID:
            summary.unreadable_lines += 1  # JSON, but not a receipt (a log line, say)
            continue
        try:
            summary.add(record)
        except (KeyError, TypeError):  # not a receipt (or not one of ours)
            summary.unreadable_lines += 1
    return summary
