"""The shape of every receipt kind, written once: the field tables that ``kvreceipts schema``
prints as JSON Schema and :mod:`kvreceipts.shape` compiles into the checks ``verify`` runs.

Plain data only, so it imports nothing of the receipts code and works with the ``receipts``
feature off (a verifier needs no emitter).
"""

from __future__ import annotations

from typing import Any

from kvreceipts.engine.kinds import ENGINE_KINDS
from kvreceipts.fields import Field
from kvreceipts.fields import field as _f
from kvreceipts.ids import SCHEMA_ID, SCHEMA_ID_V1, ZERO_DIGEST

__all__ = [
    "ALGORITHMS",
    "KINDS",
    "KIND_NAMES",
    "LAYOUTS",
    "SCHEMA_ID",
    "SCHEMA_ID_V1",
    "ZERO_DIGEST",
    "Field",
    "json_schema",
    "register_kind",
]

ALGORITHMS = ("sha256", "hmac-sha256")
LAYOUTS = ("lean", "upstream")
"""Eviction receipt layouts: ``lean`` (the default) and upstream's full payload."""
HEX64 = "^[0-9a-f]{64}$"
HEX16 = "^[0-9a-f]{16}$"


_COUNT = {"minimum": 0}

STATISTICS: dict[str, Field] = {
    "total_sessions": _f("integer", "Live entries (paged: cached blocks).", **_COUNT),
    "total_memory_mb": _f("number", "Pool size in MiB.", **_COUNT),
    "used_memory_mb": _f("number", "Bytes in use, in MiB.", **_COUNT),
    "memory_utilization": _f("number", "used / total.", **_COUNT),
    "cache_hits": _f("integer", "Lookups that hit (paged: block lookups).", **_COUNT),
    "cache_misses": _f("integer", "Lookups that missed.", **_COUNT),
    "hit_rate": _f("number", "hits / (hits + misses).", **_COUNT),
    "average_session_length": _f("number", "Mean tokens held per entry.", **_COUNT),
    "memory_pool_efficiency": _f("number", "1 - fragmentation.", **_COUNT),
    "evictions": _f("integer", "Entries removed so far (every reason).", **_COUNT),
    "used_bytes": _f("integer", "Exact bytes in use.", **_COUNT),
    "total_bytes": _f("integer", "Exact pool size in bytes.", **_COUNT),
}
LEAN_STATISTICS: dict[str, Field] = {
    name: STATISTICS[name]
    for name in ("cache_hits", "cache_misses", "evictions", "total_sessions", "used_bytes")
}
"""The exact counters of upstream's statistics (a lean ``after``); the ratios follow from them
and the open record's ``total_bytes``."""
LEAN_BEFORE: dict[str, Field] = {
    name: STATISTICS[name] for name in ("total_sessions", "used_bytes")
}
"""A lean ``before``: what the eviction took away (every other counter is ``after``'s, with
``evictions`` one lower)."""

CACHING_CONFIG: dict[str, Field] = {
    "model_cache_enabled": _f("boolean", "Upstream CachingConfig field."),
    "model_cache_size": _f("integer", "Upstream CachingConfig field."),
    "model_cache_ttl": _f("integer", "Idle seconds before the TTL sweep removes a session."),
    "kv_cache_enabled": _f("boolean", "Upstream CachingConfig field."),
    "kv_cache_size_mb": _f("number", "Arena size in MiB."),
    "batching_enabled": _f("boolean", "Upstream CachingConfig field."),
    "max_batch_size": _f("integer", "Upstream CachingConfig field."),
    "batch_timeout_ms": _f("integer", "Upstream CachingConfig field."),
    "connection_pool_size": _f("integer", "Upstream CachingConfig field."),
    "auto_tuning_enabled": _f("boolean", "Upstream CachingConfig field."),
    "tuning_interval_seconds": _f("integer", "Upstream CachingConfig field."),
    "enable_receipts": _f("boolean", "Runtime switch for receipts."),
}

PERFORMANCE: dict[str, Field] = {
    "average_requests_per_second": _f("number", "Requests served per second.", **_COUNT),
    "average_latency_ms": _f("number", "Mean service latency.", **_COUNT),
    "current_config": _f("object", "The CachingConfig in force.", fields=CACHING_CONFIG),
    "sample_count": _f("integer", "hits + misses.", **_COUNT),
}
LEAN_PERFORMANCE: dict[str, Field] = {
    name: PERFORMANCE[name] for name in ("average_requests_per_second", "average_latency_ms")
}
"""The measured figures only: the config is the open record's, ``sample_count`` is
``after.cache_hits + after.cache_misses``."""

_SIM_TIME = _f("number", "Milliseconds on the manager's clock.", **_COUNT)

COMMON: dict[str, Field] = {
    "kind": _f("string", "The record's kind."),
    "run_id": _f("string", "The run this record belongs to."),
    "seq": _f("integer", "Counts up by one per run across all kinds; the open record is 0.",
              **_COUNT),
    "timestamp": _f("string", "RFC 3339 UTC time of the record."),
    "alg": _f("string", "How the digest was made: sha256 or hmac-sha256.", enum=ALGORITHMS),
    "key_id": _f("string", "HMAC only: a short digest of the key (never the key).",
                 optional=True, pattern=HEX16),
    "digest": _f("string", "SHA-256 / HMAC-SHA-256 of the previous digest followed by the "
                 "line's canonical JSON without digest.", pattern=HEX64),
}  # fmt: skip
"""Fields of every ``/2`` record."""

_FRAME: dict[str, Field] = {
    "schema": _f("string", f'Always "{SCHEMA_ID}".', enum=(SCHEMA_ID,)),
}

_EVICTION_COMMON: dict[str, Field] = {
    "session_id": _f("string", "The session (paged: the request) that last used it."),
    "block_offset": _f("integer", "Byte offset of the freed block.", **_COUNT),
    "block_size_bytes": _f("integer", "Bytes freed.", minimum=1),
    "reason": _f("string", "The policy's name, ttl or manual."),
    "trigger_session_id": _f("string|null", "Request whose allocation caused it."),
    "block_hash": _f("integer", "Prefix hash of the block (paged only).", optional=True),
}

EVICTION_LAYOUTS: dict[str, dict[str, Field]] = {
    "lean": {
        **_EVICTION_COMMON,
        "before": _f("object", "Entries and bytes in use just before the eviction.",
                     fields=LEAN_BEFORE),
        "after": _f("object", "Counters just after it.", fields=LEAN_STATISTICS),
        "performance": _f("object", "Measured rates (with the tuning feature).", optional=True,
                          fields=LEAN_PERFORMANCE),
    },
    "upstream": {
        **_FRAME,
        **_EVICTION_COMMON,
        "sim_time_ms": _SIM_TIME,
        "policy": _f("string", "The eviction policy in force."),
        "before": _f("object", "Statistics just before the eviction.", fields=STATISTICS),
        "after": _f("object", "Statistics just after it.", fields=STATISTICS),
        "performance": _f("object", "Upstream's PerformanceReport (with the tuning feature).",
                          optional=True, fields=PERFORMANCE),
    },
}  # fmt: skip

_BATCH: dict[str, Field] = {
    "sim_time_ms": _SIM_TIME,
    "count": _f("integer", "Evictions in the round.", minimum=1),
    "total_bytes_freed": _f("integer", "Bytes the round freed.", **_COUNT),
    "pool_used_before": _f("integer", "Pool bytes in use before the round.", **_COUNT),
    "fragmentation_before": _f("number", "Fragmentation before.", **_COUNT),
    "fragmentation_after": _f("number", "Fragmentation after.", **_COUNT),
    "duration_ms": _f("number", "How long the round took on the clock.", **_COUNT),
    "first_seq": _f("integer", "Seq of the round's first eviction.", **_COUNT),
    "last_seq": _f("integer", "Seq of its last eviction.", **_COUNT),
    "required_bytes": _f("integer", "Bytes the allocation needed.", **_COUNT),
    "satisfied": _f("boolean", "Whether the allocation then succeeded."),
}
_SNAPSHOT: dict[str, Field] = {
    "sim_time_ms": _SIM_TIME,
    "pool_used": _f("integer", "Pool bytes in use.", **_COUNT),
    "pool_total": _f("integer", "Pool size in bytes.", minimum=1),
    "utilization": _f("number", "pool_used / pool_total.", **_COUNT),
    "fragmentation": _f("number", "(free regions - 1) / free regions.", **_COUNT),
    "active_sessions": _f("integer", "Live sessions (paged: running requests).", **_COUNT),
    "total_sessions_created": _f("integer", "Entries created so far.", **_COUNT),
    "total_evictions": _f("integer", "Evictions so far.", **_COUNT),
    "cache_hits": _f("integer", "Hits so far.", **_COUNT),
    "cache_misses": _f("integer", "Misses so far.", **_COUNT),
    "as_of_seq": _f("integer|null", "Seq of the last eviction it reflects.", **_COUNT),
}
_LOSS: dict[str, Field] = {
    "sink": _f("string", "The sink that dropped records."),
    "first_seq": _f("integer", "First dropped seq.", **_COUNT),
    "last_seq": _f("integer", "Last dropped seq (also this record's seq).", **_COUNT),
    "count": _f("integer", "How many were dropped.", minimum=1),
    "last_lost_digest": _f("string", "Digest of the last dropped record.", pattern=HEX64),
}

_TREE: dict[str, Field] = {
    "tree_size": _f(
        "integer",
        "Leaves of the run's Merkle tree: the records before this one "
        "(lost ones included), i.e. this record's seq.",
        minimum=1,
    ),
    "root": _f(
        "string",
        "RFC 9162 Merkle root of those leaves (each leaf a line without its newline), in hex.",
        pattern=HEX64,
    ),
    "checkpoint": _f(
        "string",
        "With a signing key: a C2SP signed note of the tree (origin "
        "kvreceipts/run/RUN_ID, size, base64 root).",
        optional=True,
    ),
}

KINDS: dict[str, dict[str, Field]] = {
    "open": {
        **_FRAME,
        "source": _f("string", "What wrote the run: simulate, library, watch."),
        "layout": _f("string", "Eviction receipt layout: lean or upstream.", enum=LAYOUTS),
        "config": _f("object", "The CachingConfig in force.", fields=CACHING_CONFIG),
        "workload": _f("object|null", "What the run replays (free-form)."),
        "allocator": _f("string|null", "arena or paged (null outside a simulation)."),
        "policy": _f("string|null", "The eviction policy in force."),
        "total_bytes": _f("integer", "Exact pool size in bytes.", **_COUNT),
        "tuning": _f("boolean", "Whether eviction receipts carry performance figures."),
        "sim_time_ms": _SIM_TIME,
    },
    "close": {
        **_FRAME,
        "sim_time_ms": _SIM_TIME,
        "records": _f("integer", "Records of the run before this one (the open record "
                      "included).", minimum=1),
        "counts": _f("object", "Records of the run by kind (this one excluded).",
                     values=_f("integer", "Records of the kind.", **_COUNT)),
        "bytes_freed": _f("integer", "Bytes the run's evictions freed.", **_COUNT),
        "final_stats": _f("object", "The cache's statistics at the end.", fields=STATISTICS),
        "head": _f("string", "Digest of the record before this one: the chain head it closes.",
                   pattern=HEX64),
        **_TREE,
    },
    "checkpoint": _TREE,
    "eviction": EVICTION_LAYOUTS["lean"],
    "eviction_batch": {
        **_BATCH,
        "pool_used_after_evictions": _f("integer", "pool_used_before - total_bytes_freed.",
                                        **_COUNT),
        "allocated_bytes": _f("integer", "Bytes the allocation then took (0 if it failed).",
                              **_COUNT),
        "pool_used_after": _f("integer", "pool_used_after_evictions + allocated_bytes.",
                              **_COUNT),
    },
    "snapshot": _SNAPSHOT,
    "demotion": {
        "sim_time_ms": _SIM_TIME,
        "block_hash": _f("integer", "Prefix hash of the block that moved."),
        "from_tier": _f("string", "The tier it left (--tier NAME)."),
        "to_tier": _f("string", "The tier below it entered."),
        "bytes": _f("integer", "Bytes moved.", minimum=1),
        "trigger_session_id": _f("string|null", "Request whose lookup caused it."),
    },
    "loss": {
        **_LOSS,
        "prev_digest": _f("string", "Digest of the record before the gap.", pattern=HEX64),
        "lost_counts": _f("object", "The dropped records by kind (summing to count).",
                          values=_f("integer", "Dropped records of the kind.", minimum=1)),
        "lost_tree": _f("array", "Hex hashes of the maximal aligned Merkle subtrees covering "
                        "first_seq..last_seq, in order: the root still binds what was lost."),
    },
}  # fmt: skip
"""The ``/2`` kinds (``eviction`` in the lean layout; see :data:`EVICTION_LAYOUTS`)."""
KIND_NAMES = tuple(KINDS)


def _json_type(field: Field) -> dict[str, Any]:
    out: dict[str, Any] = {"description": field.doc}
    out["type"] = list(field.types) if len(field.types) > 1 else field.types[0]
    if field.minimum is not None:
        out["minimum"] = field.minimum
    if field.pattern is not None:
        out["pattern"] = field.pattern
    if field.enum is not None:
        if len(field.enum) == 1:
            out["const"] = field.enum[0]
        else:
            out["enum"] = list(field.enum)
    if field.fields is not None:
        out.update(_object(field.fields))
        if len(field.types) > 1:  # e.g. object|null: _object set "object" alone
            out["type"] = list(field.types)
    if field.values is not None:
        out["additionalProperties"] = _json_type(field.values)
    return out


def _object(fields: dict[str, Field]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: _json_type(f) for name, f in fields.items()},
        "required": [name for name, f in fields.items() if not f.optional],
        "additionalProperties": False,
    }


def _kind_schema(kind: str, fields: dict[str, Field]) -> dict[str, Any]:
    schema = _object({**COMMON, **fields})
    props = schema["properties"]
    props["kind"]["const"] = kind
    props["timestamp"]["format"] = "date-time"
    return schema


def json_schema(kind: str) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of one receipt kind; ``eviction`` accepts either layout
    (``oneOf``) and lists the fields both require in its own ``required``.
    """
    if kind == "eviction":
        layouts = [
            {"title": f"{layout} layout", **_kind_schema(kind, fields)}
            for layout, fields in EVICTION_LAYOUTS.items()
        ]
        # What every layout requires, beside the oneOf (``jq '.eviction.required'`` reads it).
        shared = [name for name in layouts[0]["required"]
                  if all(name in other["required"] for other in layouts[1:])]  # fmt: skip
        body: dict[str, Any] = {"type": "object", "required": shared, "oneOf": layouts}
    else:
        body = _kind_schema(kind, KINDS[kind])
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://kvreceipts.dev/schema/{SCHEMA_ID}/{kind}.json",
        "title": f"kvreceipts {kind} record",
        **body,
    }


def register_kind(kind: str, fields: dict[str, Field]) -> None:
    """Add a ``/2`` record kind (a capability of its own, e.g. a live engine's receipts)."""
    KINDS[kind] = fields


# A watched engine's receipt kinds (kvreceipts watch): registered here, so that every reader
# of this module (verify, schema) knows them without the watch extra.
for _kind, _fields in ENGINE_KINDS.items():
    register_kind(_kind, _fields)
KIND_NAMES = tuple(KINDS)
