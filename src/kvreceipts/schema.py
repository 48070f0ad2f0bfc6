"""The shape of every receipt kind, written once: JSON Schema for ``kvreceipts schema`` and the
structural check ``kvreceipts verify`` runs on each line.

Plain data only, so it imports nothing of the receipts code and works with the ``receipts``
feature off (a verifier needs no emitter).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = ["KIND_NAMES", "SCHEMA_ID", "ZERO_DIGEST", "Field", "check_record", "json_schema"]

SCHEMA_ID = "kvreceipts.eviction/1"
ZERO_DIGEST = "0" * 64
"""``prev_digest`` of the first record of a run."""
KIND_NAMES = ("eviction", "eviction_batch", "snapshot", "loss")
_HEX64 = "^[0-9a-f]{64}$"


@dataclass(frozen=True, slots=True)
class Field:
    """One field: JSON type(s), whether it may be absent, and a lower bound for numbers."""

    types: tuple[str, ...]
    doc: str
    optional: bool = False
    minimum: float | None = None
    pattern: str | None = None
    fields: dict[str, Field] | None = None
    """For ``object`` fields: the nested fields (all required, no others allowed)."""


def _f(kind: str, doc: str, **extra: Any) -> Field:
    return Field(tuple(kind.split("|")), doc, **extra)


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

COMMON: dict[str, Field] = {
    "schema": _f("string", f'Always "{SCHEMA_ID}".'),
    "kind": _f("string", "eviction | eviction_batch | snapshot | loss."),
    "run_id": _f("string", "The run this record belongs to."),
    "seq": _f("integer", "Counts up by one per run across all kinds.", **_COUNT),
    "timestamp": _f("string", "RFC 3339 UTC time of the record."),
    "sim_time_ms": _f("number", "Milliseconds on the manager's clock.", **_COUNT),
    "prev_digest": _f("string", "Digest of the previous record (64 zeros first).",
                      pattern=_HEX64),
    "digest": _f("string", "SHA-256 / HMAC-SHA-256 of the canonical record without digest.",
                 pattern=_HEX64),
}  # fmt: skip

KINDS: dict[str, dict[str, Field]] = {
    "eviction": {
        "session_id": _f("string", "The session (paged: the request) that last used it."),
        "block_offset": _f("integer", "Byte offset of the freed block.", **_COUNT),
        "block_size_bytes": _f("integer", "Bytes freed.", minimum=1),
        "before": _f("object", "Statistics just before the eviction.", fields=STATISTICS),
        "after": _f("object", "Statistics just after it.", fields=STATISTICS),
        "reason": _f("string", "The policy's name, ttl or manual."),
        "policy": _f("string", "The eviction policy in force."),
        "trigger_session_id": _f("string|null", "Request whose allocation caused it."),
        "performance": _f("object", "Present with the tuning feature.", optional=True,
                          fields=PERFORMANCE),
        "block_hash": _f("integer", "Prefix hash of the block (paged only).", optional=True),
    },
    "eviction_batch": {
        "count": _f("integer", "Evictions in the round.", minimum=1),
        "total_bytes_freed": _f("integer", "Bytes the round freed.", **_COUNT),
        "pool_used_before": _f("integer", "Pool bytes in use before.", **_COUNT),
        "pool_used_after": _f("integer", "Pool bytes in use after.", **_COUNT),
        "fragmentation_before": _f("number", "Fragmentation before.", **_COUNT),
        "fragmentation_after": _f("number", "Fragmentation after.", **_COUNT),
        "duration_ms": _f("number", "How long the round took on the clock.", **_COUNT),
        "first_seq": _f("integer", "Seq of the round's first eviction.", **_COUNT),
        "last_seq": _f("integer", "Seq of its last eviction.", **_COUNT),
        "required_bytes": _f("integer", "Bytes the allocation needed.", **_COUNT),
        "satisfied": _f("boolean", "Whether the allocation then succeeded."),
    },
    "snapshot": {
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
    },
    "loss": {
        "sink": _f("string", "The sink that dropped records."),
        "first_seq": _f("integer", "First dropped seq.", **_COUNT),
        "last_seq": _f("integer", "Last dropped seq (also this record's seq).", **_COUNT),
        "count": _f("integer", "How many were dropped.", minimum=1),
        "last_lost_digest": _f("string", "Digest of the last dropped record.", pattern=_HEX64),
    },
}  # fmt: skip


def _json_type(field: Field) -> dict[str, Any]:
    out: dict[str, Any] = {"description": field.doc}
    out["type"] = list(field.types) if len(field.types) > 1 else field.types[0]
    if field.minimum is not None:
        out["minimum"] = field.minimum
    if field.pattern is not None:
        out["pattern"] = field.pattern
    if field.fields is not None:
        out.update(_object(field.fields))
    return out


def _object(fields: dict[str, Field]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: _json_type(f) for name, f in fields.items()},
        "required": [name for name, f in fields.items() if not f.optional],
        "additionalProperties": False,
    }


def json_schema(kind: str) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of one receipt kind."""
    schema = _object({**COMMON, **KINDS[kind]})
    schema["properties"]["schema"]["const"] = SCHEMA_ID
    schema["properties"]["kind"]["const"] = kind
    schema["properties"]["timestamp"]["format"] = "date-time"
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://kvreceipts.dev/schema/{SCHEMA_ID}/{kind}.json",
        "title": f"kvreceipts {kind} receipt",
        **schema,
    }


_PY_TYPES: dict[str, tuple[type, ...]] = {
    "integer": (int,),
    "number": (int, float),
    "string": (str,),
    "boolean": (bool,),
    "null": (type(None),),
    "object": (dict,),
}


def _type_ok(value: object, types: tuple[str, ...]) -> bool:
    for name in types:
        if isinstance(value, _PY_TYPES[name]) and not (
            isinstance(value, bool) and name in ("integer", "number")
        ):
            return True
    return False


def _check_value(item: Any, spec: Field, label: str) -> str | None:
    if not _type_ok(item, spec.types):
        return f"field {label!r} must be {' or '.join(spec.types)}, not {item!r}"
    if spec.minimum is not None and item is not None and item < spec.minimum:
        return f"field {label!r} must be at least {spec.minimum:g}, not {item!r}"
    if spec.pattern is not None and not re.fullmatch(spec.pattern, item):
        return f"field {label!r} must match {spec.pattern}"
    if spec.fields is not None:
        return _check(item, spec.fields, f"{label}.")
    return None


def _check(value: dict[str, Any], fields: dict[str, Field], where: str) -> str | None:
    for name, spec in fields.items():
        if name in value:
            problem = _check_value(value[name], spec, f"{where}{name}")
            if problem:
                return problem
        elif not spec.optional:
            return f"field {where + name!r} is missing"
    extra = sorted(set(value) - set(fields))
    if extra:
        return f"unexpected field {where + extra[0]!r}"
    return None


def check_record(record: object) -> str | None:
    """What is wrong with the shape of a parsed record, or ``None`` if it fits its kind."""
    if not isinstance(record, dict):
        return "a receipt must be a JSON object"
    if record.get("schema") != SCHEMA_ID:
        return f"field 'schema' must be {SCHEMA_ID!r}, not {record.get('schema')!r}"
    kind = record.get("kind")
    if kind not in KINDS:
        return f"field 'kind' must be one of {', '.join(KIND_NAMES)}, not {kind!r}"
    return _check(record, {**COMMON, **KINDS[kind]}, "")
