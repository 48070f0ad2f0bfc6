"""Receipt records (schema ``kvreceipts.eviction/2``): the run's ``open`` and ``close`` frame,
eviction, eviction batch, snapshot and loss.

Imported only when the ``receipts`` feature is on. Each record becomes one JSON object on one
line; :mod:`kvreceipts.chain` seals it. Records keep ``prev_digest`` in memory (the chain
value they were sealed after); only ``loss`` records, which stand beside the chain, write it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Self

import orjson

from kvreceipts.ids import SCHEMA_ID, ZERO_DIGEST
from kvreceipts.stats import KVCacheStatistics, PerformanceReport

__all__ = [
    "KINDS",
    "SCHEMA_ID",
    "ZERO_DIGEST",
    "CheckpointRecord",
    "EvictionReason",
    "KvDemotionReceipt",
    "KvEvictionBatchReceipt",
    "KvEvictionReport",
    "KvPoolSnapshotReceipt",
    "LossReceipt",
    "Receipt",
    "Record",
    "RunClose",
    "RunOpen",
    "SealedRecord",
    "as_receipt",
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
    alg: str = "sha256"
    key_id: str | None = None
    prev_digest: str = ZERO_DIGEST
    digest: str = ""
    line: bytes = field(default=b"", init=False, repr=False, compare=False)
    """The sealed JSON line, set when sealed so that sinks never encode twice."""

    body_fields: ClassVar[tuple[str, ...]] = ()
    """The kind's own flat fields, in the order they are documented."""
    optional_fields: ClassVar[tuple[str, ...]] = ()
    """Flat fields written only when they are not ``None``."""

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready values (with ``digest`` once sealed)."""
        body = self._common()
        for name in self.body_fields:
            body[name] = getattr(self, name)
        for name in self.optional_fields:
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        return self._with_digest(body)

    def _common(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": self.kind,
            "run_id": self.run_id,
            "seq": self.seq,
            "timestamp": self.timestamp,
            "alg": self.alg,
        }
        if self.key_id is not None:
            body["key_id"] = self.key_id
        return body

    def _with_digest(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.digest:
            body["digest"] = self.digest
        return body

    @classmethod
    def _common_kwargs(cls, data: dict[str, Any]) -> dict[str, Any]:
        return {
            "run_id": data["run_id"],
            "seq": data["seq"],
            "timestamp": data["timestamp"],
            "alg": data.get("alg", "sha256"),
            "key_id": data.get("key_id"),
            "prev_digest": data.get("prev_digest", ZERO_DIGEST),
            "digest": data.get("digest", ""),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build the record back from :meth:`to_dict` output."""
        kwargs = cls._common_kwargs(data)
        kwargs.update((name, data[name]) for name in cls.body_fields)  # loss: its prev_digest
        kwargs.update((name, data.get(name)) for name in cls.optional_fields)
        return cls(**kwargs)


@dataclass(slots=True, kw_only=True)
class RunOpen(Receipt):
    """A run's first record (seq 0): what wrote it, how, and with which config."""

    kind: ClassVar[str] = "open"
    body_fields = (
        "schema", "source", "layout", "config", "workload", "allocator", "policy",
        "total_bytes", "tuning", "sim_time_ms",
    )  # fmt: skip
    schema: str = SCHEMA_ID
    source: str
    layout: str
    config: dict[str, Any]
    workload: dict[str, Any] | None
    allocator: str | None
    policy: str | None
    total_bytes: int
    tuning: bool
    sim_time_ms: float


@dataclass(slots=True, kw_only=True)
class RunClose(Receipt):
    """A run's last record: what the run wrote, and the chain head it closes."""

    kind: ClassVar[str] = "close"
    body_fields = (
        "schema", "sim_time_ms", "records", "counts", "bytes_freed", "final_stats", "head",
        "tree_size", "root",
    )  # fmt: skip
    optional_fields = ("checkpoint",)
    schema: str = SCHEMA_ID
    sim_time_ms: float
    records: int
    counts: dict[str, int]
    bytes_freed: int
    final_stats: dict[str, Any]
    head: str
    tree_size: int
    """Leaves of the run's Merkle tree: every record before this one (lost ones too)."""
    root: str
    """RFC 9162 root of those leaves, in hex."""
    checkpoint: str | None = None
    """A signed note of the tree (with a signing key)."""


@dataclass(slots=True, kw_only=True)
class CheckpointRecord(Receipt):
    """The run's Merkle tree so far, written every N records (``--checkpoint-every``)."""

    kind: ClassVar[str] = "checkpoint"
    body_fields = ("tree_size", "root")
    optional_fields = ("checkpoint",)
    tree_size: int
    """Leaves of the tree: every record before this one (this record's seq)."""
    root: str
    checkpoint: str | None = None


@dataclass(slots=True, kw_only=True)
class KvEvictionReport(Receipt):
    """One entry (arena) or block (paged) evicted: upstream ``KvEvictionReport`` and more."""

    kind: ClassVar[str] = "eviction"
    sim_time_ms: float = 0.0
    session_id: str
    block_offset: int
    block_size_bytes: int
    before: KVCacheStatistics
    after: KVCacheStatistics
    reason: str
    policy: str = ""
    """Written in the upstream layout; a lean record's policy is its run's (open record)."""
    trigger_session_id: str | None = None
    performance: PerformanceReport | None = None
    """Present only with the ``tuning`` feature; the key is absent otherwise."""
    block_hash: int | None = None
    """Paged mode only; the key is absent in arena mode."""

    def to_dict(self, config_dict: Any = None) -> dict[str, Any]:
        """JSON-ready values in the upstream layout; ``config_dict`` is the run's config
        already converted (a dict, or an ``orjson.Fragment`` of its canonical JSON).
        """
        body = self._common()
        body.update(
            schema=SCHEMA_ID,
            sim_time_ms=self.sim_time_ms,
            session_id=self.session_id,
            block_offset=self.block_offset,
            block_size_bytes=self.block_size_bytes,
            before=self.before.to_dict(),
            after=self.after.to_dict(),
            reason=str(self.reason),
            policy=self.policy,
            trigger_session_id=self.trigger_session_id,
        )
        if self.performance is not None:
            body["performance"] = self.performance.to_dict(config_dict)
        if self.block_hash is not None:
            body["block_hash"] = self.block_hash
        return self._with_digest(body)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`; reads the lean layout too (its ratios are derived)."""
        perf = data.get("performance")
        after = data["after"]
        before = {**after, "evictions": after["evictions"] - 1, **data["before"]}
        return cls(
            **cls._common_kwargs(data),
            sim_time_ms=data.get("sim_time_ms", 0.0),
            session_id=data["session_id"],
            block_offset=data["block_offset"],
            block_size_bytes=data["block_size_bytes"],
            before=KVCacheStatistics.from_dict(before),
            after=KVCacheStatistics.from_dict(data["after"]),
            reason=data["reason"],
            policy=data.get("policy", ""),
            trigger_session_id=data["trigger_session_id"],
            performance=PerformanceReport.from_dict(perf) if perf is not None else None,
            block_hash=data.get("block_hash"),
        )


@dataclass(slots=True, kw_only=True)
class KvEvictionBatchReceipt(Receipt):
    """One eviction round: everything evicted to make room for one allocation.

    ``pool_used_before - total_bytes_freed = pool_used_after_evictions`` and
    ``pool_used_after_evictions + allocated_bytes = pool_used_after``.
    """

    kind: ClassVar[str] = "eviction_batch"
    body_fields = (
        "sim_time_ms", "count", "total_bytes_freed", "pool_used_before",
        "pool_used_after_evictions", "allocated_bytes", "pool_used_after",
        "fragmentation_before", "fragmentation_after", "duration_ms", "first_seq", "last_seq",
        "required_bytes", "satisfied",
    )  # fmt: skip
    sim_time_ms: float
    count: int
    total_bytes_freed: int
    pool_used_before: int
    pool_used_after_evictions: int
    allocated_bytes: int
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
        "sim_time_ms", "pool_used", "pool_total", "utilization", "fragmentation",
        "active_sessions", "total_sessions_created", "total_evictions", "cache_hits",
        "cache_misses", "as_of_seq",
    )  # fmt: skip
    sim_time_ms: float
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
class KvDemotionReceipt(Receipt):
    """A block moved one memory tier down (``--tier``): it left ``from_tier`` for
    ``to_tier``, to make room above. Only leaving the last tier is an eviction.
    """

    kind: ClassVar[str] = "demotion"
    body_fields = ("sim_time_ms", "block_hash", "from_tier", "to_tier", "bytes",
                   "trigger_session_id")  # fmt: skip
    sim_time_ms: float
    block_hash: int
    from_tier: str
    to_tier: str
    bytes: int
    trigger_session_id: str | None


@dataclass(slots=True, kw_only=True)
class LossReceipt(Receipt):
    """Written by a sink that had to drop records: it stands for seqs ``first_seq..last_seq``.

    ``prev_digest`` is the digest of the record before the gap and ``last_lost_digest`` the
    digest of the last dropped one, so the chain stays checkable across the gap. Its ``seq``
    equals ``last_seq``.
    """

    kind: ClassVar[str] = "loss"
    body_fields = (
        "sink", "first_seq", "last_seq", "count", "prev_digest", "last_lost_digest",
        "lost_counts", "lost_tree",
    )  # fmt: skip
    sink: str
    first_seq: int
    last_seq: int
    count: int
    last_lost_digest: str
    lost_counts: dict[str, int] = field(default_factory=dict)
    """The dropped records by kind."""
    lost_tree: list[str] = field(default_factory=list)
    """Hex hashes of the maximal aligned Merkle subtrees of the dropped range, in order: the
    run's root still binds what was lost."""


class SealedRecord:
    """A sealed record known by its line: what the fast path hands sinks instead of building
    a :class:`Receipt` per eviction. :func:`as_receipt` parses it when a consumer needs fields.
    """

    __slots__ = ("digest", "kind", "line", "prev_digest", "run_id", "seq", "timestamp")

    def __init__(  # noqa: PLR0917 - built on the hot path, positionally
        self, kind: str, run_id: str, seq: int, timestamp: str, prev: str, digest: str, line: bytes
    ) -> None:
        self.kind = kind
        self.run_id = run_id
        self.seq = seq
        self.timestamp = timestamp
        self.prev_digest = prev
        self.digest = digest
        self.line = line


Record = Receipt | SealedRecord
"""What sinks are handed: a record object, or a sealed line from the fast path."""

KINDS: dict[str, type[Receipt]] = {
    cls.kind: cls
    for cls in (
        RunOpen, RunClose, CheckpointRecord, KvEvictionReport, KvEvictionBatchReceipt,
        KvPoolSnapshotReceipt, KvDemotionReceipt, LossReceipt,
    )
}  # fmt: skip


def receipt_from_dict(data: dict[str, Any]) -> Receipt:
    """Build the record of the right kind from a parsed JSON object."""
    return KINDS[data["kind"]].from_dict(data)


def as_receipt(record: Record) -> Receipt:
    """The full record object (parsing a :class:`SealedRecord`'s line)."""
    if isinstance(record, Receipt):
        return record
    receipt = receipt_from_dict(orjson.loads(record.line))
    receipt.prev_digest = record.prev_digest
    receipt.line = record.line
    return receipt
