"""What the verifier remembers of a run between lines, bounded in size, and the small helpers
that keep hostile input from growing it: identifiers shortened for messages and kept as digests
where they are only compared, and RFC 3339 times read into instants.
"""

from __future__ import annotations

import hashlib
import re
from array import array
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from kvreceipts.ids import ZERO_DIGEST
from kvreceipts.verify.tree import RunTree

if TYPE_CHECKING:
    from kvreceipts.verify import VerifyOptions
    from kvreceipts.verify.report import VerifyReport

__all__ = [
    "MAX_ID",
    "MAX_STREAK",
    "MAX_TRACKED_BLOCKS",
    "Checker",
    "RunState",
    "clip",
    "instant",
    "run_key",
    "short_id",
]

MAX_TRACKED_BLOCKS = 250_000
"""Evicted block hashes remembered per run for the re-eviction check (and see
:data:`kvreceipts.verify.runs.MAX_TRACKED_BLOCKS_TOTAL` for all runs together)."""
MAX_STREAK = 1 << 14
"""Evictions of one round whose sizes are remembered for its batch's byte total."""
MAX_ID = 64
"""Longest identifier kept or printed whole."""


class Checker(Protocol):
    """What the checks of one kind (:mod:`kvreceipts.verify.kinds`) need of the verifier."""

    report: VerifyReport
    options: VerifyOptions
    tracked_blocks: int
    """Evicted block hashes remembered across all runs."""

    def fail(
        self, line: int, check: str, message: str, seq: Any = None, run: RunState | Any = None
    ) -> None:
        """Record a violation."""


def short_id(value: str) -> str:
    """An identifier as messages and the report keep it: whole when short, else its first
    characters and its length (``3f2a…(1,048,576 chars)``), so hostile input stays small.
    """
    return value if len(value) <= MAX_ID else f"{value[:8]}…({len(value):,} chars)"


def clip(value: object) -> str:
    """Any value for a message, cut to a readable length."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def run_key(run_id: str) -> str | bytes:
    """The key a run is followed and remembered by: its id when short, else a digest of it
    (bytes, so it equals no id: a 1 MB run id is compared, never kept).
    """
    if len(run_id) <= MAX_ID:
        return run_id
    return hashlib.blake2b(run_id.encode(errors="surrogatepass"), digest_size=16).digest()


_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d\d):(\d\d))\Z"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def instant(timestamp: str) -> tuple[int, int] | None:
    """An RFC 3339 date-time as (UTC seconds since 1970, nanoseconds), its offset applied;
    ``None`` if it is no such time (a bad pattern, month 13, second 60, offset hour 24, ...).
    """
    match = _RFC3339.match(timestamp)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, z, sign, off_h, off_m = match.groups()
    try:
        when = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                        tzinfo=UTC)  # fmt: skip
    except ValueError:
        return None
    if z is None:
        hours, minutes = int(off_h), int(off_m)
        if hours > 23 or minutes > 59:
            return None
        offset = timedelta(hours=hours, minutes=minutes)
        when = when - offset if sign == "+" else when + offset
    nanos = int((fraction or "").ljust(9, "0"))
    delta = when - _EPOCH
    return delta.days * 86_400 + delta.seconds, nanos


@dataclass(slots=True)
class RunState:
    """What the verifier remembers of one run between lines: a few numbers, the evictions of
    the current round (capped at :data:`MAX_STREAK`) and a capped table of evicted block
    hashes.
    """

    run_id: str
    """Shortened for messages (:func:`short_id`)."""
    key: str | bytes
    """What the run is followed by (:func:`run_key`)."""
    anchor: str | None
    """The run id as given to ``--expect-last-digest``, if the run is anchored."""
    layout: str
    alg: str
    key_id: str | None
    line: int
    total_bytes: int = 0
    """The pool size the open record states: no byte count of the run may exceed it."""
    prev: bytes = ZERO_DIGEST.encode()
    next_seq: int = 1
    last_timestamp: str | None = None
    """The last valid time of the run as written (``None`` before the first)."""
    last_instant: tuple[int, int] = (-(1 << 62), 0)
    records: int = 1
    counts: dict[str, int] = field(default_factory=dict)
    lost_counts: dict[str, int] = field(default_factory=dict)
    """Records declared lost, by kind (from the loss records' ``lost_counts``)."""
    bytes_freed: int = 0
    lost: int = 0
    """Records declared lost by loss records."""
    present: bytes = ZERO_DIGEST.encode()
    """Digest of the last record present (a loss record never stands in for one)."""
    present_seq: int = 0
    last_evictions: int | None = 0
    last_hits: int = 0
    last_misses: int = 0
    barrier: int = 0
    """Seq of the last record present that is no eviction (open, snapshot, batch, ...): a
    batch covers only evictions after it."""
    barrier_kind: str = "open"
    streak: array[int] = field(default_factory=lambda: array("q"))
    """For the evictions with consecutive seqs since :attr:`barrier`, from ``streak_first``
    on: the bytes the streak had freed before each of them."""
    streak_first: int = 0
    streak_next: int = -1
    """The seq that continues the streak (``-1``: none does)."""
    streak_bytes: int = 0
    evicted_at_misses: dict[int, int] = field(default_factory=dict)
    tree: RunTree = field(default_factory=RunTree)
    """The run's Merkle tree so far (O(log n) hashes)."""
