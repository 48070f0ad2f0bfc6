"""Receipt records (schema ``kvreceipts.eviction/1``): eviction, eviction batch, snapshot, loss.

Imported only when the ``receipts`` feature is on. Each record becomes one JSON object on one
line; :mod:`kvreceipts.chain` adds ``prev_digest`` and ``digest``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Self

from kvreceipts.schema import SCHEMA_ID, ZERO_DIGEST
from kvreceipts.stats import KVCacheStatistics, PerformanceReport

__all__ = [
    "KINDS",
    "SCHEMA_ID",
    "ZERO_DIGEST",
    "EvictionReason",
    "KvEvictionBatchReceipt",
    "KvEvictionReport",
    "KvPoolSnapshotReceipt",
    "LossReceipt",
    "Receipt",
    "receipt_from_dict",
]


class EvictionReason(StrEnum):
    """Why an entry left the cache: a capacity policy's name, ``ttl`` or ``manual``."""

    MANUAL = "manual"
    TTL = "ttl"
    LRU = "lru"
    FIFO = "fifo"
    LFU = "lfu"
    S3FIFO = "s3fifo"


@dataclass(slots=True, kw_only=True)
class Receipt:
    """Fields every record carries. ``seq`` counts up per run across all kinds."""

    kind: ClassVar[str] = ""
    run_id: str
    seq: int
    timestamp: str
    sim_time_ms: float
    prev_digest: str = ZERO_DIGEST
    digest: str = ""
    line: bytes = field(default=b"", init=False, repr=False, compare=False)
    """The sealed JSON line, set by the chain so that sinks never encode twice."""

    def _common(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_ID,
            "kind": self.kind,
            "run_id": self.run_id,
            "seq": self.seq,
            "timestamp": self.timestamp,
            "sim_time_ms": self.sim_time_ms,
            "prev_digest": self.prev_digest,
        }

    body_fields: ClassVar[tuple[str, ...]] = ()
    """The kind's own flat fields, in the order they are documented."""

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready values (with ``digest`` once sealed)."""
        body = self._common()
        for name in self.body_fields:
            body[name] = getattr(self, name)
        return _with_digest(self, body)

    @classmethod
    def _common_kwargs(cls, data: dict[str, Any]) -> dict[str, Any]:
        return {
            "run_id": data["run_id"],
            "seq": data["seq"],
            "timestamp": data["timestamp"],
            "sim_time_ms": data["sim_time_ms"],
            "prev_digest": data["prev_digest"],
            "digest": data.get("digest", ""),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build the record back from :meth:`to_dict` output."""
        return cls(**cls._common_kwargs(data), **{name: data[name] for name in cls.body_fields})


def _with_digest(record: Receipt, body: dict[str, Any]) -> dict[str, Any]:
    if record.digest:
        body["digest"] = record.digest
    return body


@dataclass(slots=True, kw_only=True)
class KvEvictionReport(Receipt):
    """One entry (arena) or block (paged) evicted: upstream ``KvEvictionReport`` and more."""

    kind: ClassVar[str] = "eviction"
    session_id: str
    block_offset: int
    block_size_bytes: int
    before: KVCacheStatistics
    after: KVCacheStatistics
    reason: str
    policy: str
    trigger_session_id: str | None = None
    performance: PerformanceReport | None = None
    """Present only with the ``tuning`` feature; the key is absent otherwise."""
    block_hash: int | None = None
    """Paged mode only; the key is absent in arena mode."""

    def to_dict(self, config_dict: Any = None) -> dict[str, Any]:
        """JSON-ready values; ``config_dict`` is the run's config already converted (a dict,
        or an ``orjson.Fragment`` of its canonical JSON).
        """
        body = {
            "schema": SCHEMA_ID,
            "kind": "eviction",
            "run_id": self.run_id,
            "seq": self.seq,
            "timestamp": self.timestamp,
            "sim_time_ms": self.sim_time_ms,
            "prev_digest": self.prev_digest,
            "session_id": self.session_id,
            "block_offset": self.block_offset,
            "block_size_bytes": self.block_size_bytes,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "reason": str(self.reason),
            "policy": self.policy,
            "trigger_session_id": self.trigger_session_id,
        }
        if self.performance is not None:
            body["performance"] = self.performance.to_dict(config_dict)
        if self.block_hash is not None:
            body["block_hash"] = self.block_hash
        return _with_digest(self, body)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`."""
        perf = data.get("performance")
        return cls(
            **cls._common_kwargs(data),
            session_id=data["session_id"],
            block_offset=data["block_offset"],
            block_size_bytes=data["block_size_bytes"],
            before=KVCacheStatistics.from_dict(data["before"]),
            after=KVCacheStatistics.from_dict(data["after"]),
            reason=data["reason"],
            policy=data["policy"],
            trigger_session_id=data["trigger_session_id"],
            performance=PerformanceReport.from_dict(perf) if perf is not None else None,
            block_hash=data.get("block_hash"),
        )


@dataclass(slots=True, kw_only=True)
class KvEvictionBatchReceipt(Receipt):
    """One eviction round: everything evicted to make room for one allocation."""

    kind: ClassVar[str] = "eviction_batch"
    body_fields = (
        "count", "total_bytes_freed", "pool_used_before", "pool_used_after",
        "fragmentation_before", "fragmentation_after", "duration_ms", "first_seq", "last_seq",
        "required_bytes", "satisfied",
    )  # fmt: skip
    count: int
    total_bytes_freed: int
    pool_used_before: int
    pool_used_after: int
    fragmentation_before: float
    fragmentation_after: float
    duration_ms: float
    first_seq: int
    last_seq: int
    required_bytes: int
    satisfied: bool


@dataclass(slots=True, kw_only=True)
class KvPoolSnapshotReceipt(Receipt):
    """The pool's state at a moment; ``as_of_seq`` is the last eviction it reflects."""

    kind: ClassVar[str] = "snapshot"
    body_fields = (
        "pool_used", "pool_total", "utilization", "fragmentation", "active_sessions",
        "total_sessions_created", "total_evictions", "cache_hits", "cache_misses", "as_of_seq",
    )  # fmt: skip
    pool_used: int
    pool_total: int
    utilization: float
    fragmentation: float
    active_sessions: int
    total_sessions_created: int
    total_evictions: int
    cache_hits: int
    cache_misses: int
    as_of_seq: int | None


@dataclass(slots=True, kw_only=True)
class LossReceipt(Receipt):
    """Written by a sink that had to drop records: it stands for seqs ``first_seq..last_seq``.

    ``prev_digest`` is the digest of the record before the gap and ``last_lost_digest`` the
    digest of the last dropped one, so the chain stays checkable across the gap. Its ``seq``
    equals ``last_seq``.
    """

    kind: ClassVar[str] = "loss"
    body_fields = ("sink", "first_seq", "last_seq", "count", "last_lost_digest")
    sink: str
    first_seq: int
    last_seq: int
    count: int
    last_lost_digest: str


KINDS: dict[str, type[Receipt]] = {
    cls.kind: cls
    for cls in (KvEvictionReport, KvEvictionBatchReceipt, KvPoolSnapshotReceipt, LossReceipt)
}


def receipt_from_dict(data: dict[str, Any]) -> Receipt:
    """Build the record of the right kind from a parsed JSON object."""
    return KINDS[data["kind"]].from_dict(data)
