"""The shape of every receipt kind, written once: JSON Schema for ``kvreceipts schema`` and the
structural check ``kvreceipts verify`` runs on each line.

Plain data only, so it imports nothing of the receipts code and works with the ``receipts``
feature off (a verifier needs no emitter).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["KIND_NAMES", "SCHEMA_ID", "ZERO_DIGEST", "Field", "check_record", "json_schema"]

SCHEMA_ID = "kvreceipts.eviction/1"
ZERO_DIGEST = "0" * 64
"""``prev_digest`` of the first record of a run."""
KIND_NAMES = (
    "eviction", "eviction_batch", "snapshot", "loss",
    "engine_removal", "engine_clear", "engine_restore", "engine_restart", "engine_loss",
)  # fmt: skip
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
    "kind": _f("string", "eviction | eviction_batch | snapshot | loss | engine_*."),
    "run_id": _f("string", "The run this record belongs to."),
    "seq": _f("integer", "Counts up by one per run across all kinds.", **_COUNT),
    "timestamp": _f("string", "RFC 3339 UTC time of the record."),
    "sim_time_ms": _f("number", "Milliseconds on the manager's clock.", **_COUNT),
    "prev_digest": _f("string", "Digest of the previous record (64 zeros first).",
                      pattern=_HEX64),
    "digest": _f("string", "SHA-256 / HMAC-SHA-256 of the canonical record without digest.",
                 pattern=_HEX64),
}  # fmt: skip

_ENGINE: dict[str, Field] = {
    "topic": _f("string", "The engine's ZMQ topic (empty by default)."),
    "engine_seq": _f("integer", "The engine's batch seq.", **_COUNT),
    "engine_ts": _f("number", "The engine's batch time, Unix seconds."),
}

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
    # What a watched engine's event stream says (kvreceipts watch; see docs/watch.md).
    "engine_removal": {
        **_ENGINE,
        "medium": _f("string|null", "GPU, CPU, STORAGE, ... (null: the engine sent none)."),
        "block_hash": _f("integer|string", "The hash: an integer, or hex of a bytes hash."),
        "parent_block_hash": _f("integer|string|null", "Its parent, when the store was seen."),
        "stored_ts": _f("number|null", "Engine time of the store (null: before the watch)."),
        "residency_ms": _f("number|null", "engine_ts - stored_ts, in ms."),
    },
    "engine_clear": {
        **_ENGINE,
        "count": _f("integer", "Blocks held when the engine cleared its cache.", **_COUNT),
    },
    "engine_restore": {
        **_ENGINE,
        "medium": _f("string|null", "The medium it was removed from and stored on again."),
        "block_hash": _f("integer|string", "The block stored again."),
        "removal_seq": _f("integer", "Seq of the engine_removal receipt it undoes.", **_COUNT),
        "removed_ts": _f("number", "Engine time of that removal."),
        "gap_ms": _f("number", "engine_ts - removed_ts, in ms."),
    },
    "engine_restart": {
        **_ENGINE,
        "previous_seq": _f("integer", "Last engine seq before the restart (-1: none).",
                           minimum=-1),
        "resident_dropped": _f("integer", "Blocks the old process held.", **_COUNT),
    },
    "engine_loss": {
        "topic": _f("string", "The engine's ZMQ topic."),
        "first_engine_seq": _f("integer", "First engine seq not processed.", **_COUNT),
        "last_engine_seq": _f("integer", "Last engine seq not processed.", **_COUNT),
        "batches": _f("integer", "How many batches.", minimum=1),
        "cause": _f("string", "not_received | queue_full | undecodable."),
        "replay_attempted": _f("boolean", "Whether the replay socket was asked for them."),
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
_HEX = "0123456789abcdef"


@dataclass(frozen=True, slots=True)
class _Shape:
    """An object's fields, compiled for checking many records fast.

    Types are checked once per *signature* (the keys and the exact Python types of the
    values, so ``True`` is no integer) and the verdict is remembered; the values' bounds and
    hex digests are checked on every record, a whole group of fields at a time.
    """

    fields: dict[str, Field]
    types: dict[str, frozenset[type]]
    required: frozenset[str]
    floors: tuple[tuple[float, tuple[str, ...], Callable[[dict[str, Any]], tuple[Any, ...]]], ...]
    """Required, never-null fields grouped by their minimum, with a getter for each group."""
    loose_floors: tuple[tuple[str, float], ...]
    """Fields with a minimum that may be absent or null."""
    hex_fields: tuple[str, ...]
    nested: tuple[tuple[str, _Shape], ...]
    verdicts: dict[tuple[object, ...], tuple[str, str] | None] = field(default_factory=dict)


_MAX_SIGNATURES = 256  # a file of odd records must not grow the cache without bound


def _compile(fields: dict[str, Field]) -> _Shape:
    # The checker knows one pattern, 64 hex digits, and tests it without a regex.
    assert all(f.pattern in (None, _HEX64) for f in fields.values())
    strict: dict[float, list[str]] = {}
    loose = []
    for name, f in fields.items():
        if f.minimum is None:
            continue
        if f.optional or "null" in f.types:
            loose.append((name, f.minimum))
        else:
            strict.setdefault(f.minimum, []).append(name)
    return _Shape(
        fields=fields,
        types={n: frozenset(t for k in f.types for t in _PY_TYPES[k]) for n, f in fields.items()},
        required=frozenset(n for n, f in fields.items() if not f.optional),
        floors=tuple((low, tuple(names), _tuple_getter(names)) for low, names in strict.items()),
        loose_floors=tuple(loose),
        hex_fields=tuple(n for n, f in fields.items() if f.pattern is not None),
        nested=tuple((n, _compile(f.fields)) for n, f in fields.items() if f.fields is not None),
    )


def _tuple_getter(names: list[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    get = itemgetter(*names)
    return get if len(names) > 1 else lambda value: (get(value),)


_SHAPES = {kind: _compile({**COMMON, **fields}) for kind, fields in KINDS.items()}


def _check_types(value: dict[str, Any], shape: _Shape) -> tuple[str, str] | None:
    """The first key or type problem, as (field, what is wrong)."""
    keys = value.keys()
    if not shape.required <= keys:
        return min(shape.required - keys), "is missing"
    if not keys <= shape.types.keys():
        return min(keys - shape.types.keys()), "is not a field of this kind"
    for name, item in value.items():
        if type(item) not in shape.types[name]:
            return name, f"must be {' or '.join(shape.fields[name].types)}, not {item!r}"
    return None


def _check(value: dict[str, Any], shape: _Shape, where: str) -> str | None:
    signature = (*value, *map(type, value.values()))
    verdicts = shape.verdicts
    if signature in verdicts:
        problem = verdicts[signature]
    else:
        problem = _check_types(value, shape)
        if len(verdicts) < _MAX_SIGNATURES:
            verdicts[signature] = problem
    if problem is not None:
        return f"field {where + problem[0]!r} {problem[1]}"
    return _check_values(value, shape, where)


def _check_values(value: dict[str, Any], shape: _Shape, where: str) -> str | None:
    """Bounds and digests, for a record whose keys and types are known to be right."""
    for low, names, get in shape.floors:
        if min(get(value)) < low:
            name = next(n for n in names if value[n] < low)
            return f"field {where + name!r} must be at least {low:g}, not {value[name]!r}"
    for name, low in shape.loose_floors:
        item = value.get(name)
        if item is not None and item < low:
            return f"field {where + name!r} must be at least {low:g}, not {item!r}"
    for name in shape.hex_fields:
        item = value[name]
        if len(item) != 64 or item.strip(_HEX):
            return f"field {where + name!r} must be 64 lowercase hex digits"
    for name, nested in shape.nested:
        if name in value:
            problem = _check(value[name], nested, f"{where}{name}.")
            if problem:
                return problem
    return None


def check_record(record: object) -> str | None:
    """What is wrong with the shape of a parsed record, or ``None`` if it fits its kind."""
    if not isinstance(record, dict):
        return "a receipt must be a JSON object"
    if record.get("schema") != SCHEMA_ID:
        return f"field 'schema' must be {SCHEMA_ID!r}, not {record.get('schema')!r}"
    kind = record.get("kind")
    if kind not in _SHAPES:
        return f"field 'kind' must be one of {', '.join(KIND_NAMES)}, not {kind!r}"
    return _check(record, _SHAPES[kind], "")
