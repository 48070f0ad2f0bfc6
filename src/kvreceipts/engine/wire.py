"""The engines' wire format (see ``docs/watch.md``): three ZMQ frames and a msgpack batch.

A batch is ``[ts, events, data_parallel_rank]``. Events come in two layouts, both accepted:
maps tagged by ``type`` (vLLM >= 0.33) and positional arrays whose first item is the tag
(older vLLM, forks). Unknown fields are ignored; unknown event types are counted and skipped.
Block hashes are unsigned integers or bytes; bytes become lowercase hex.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "END_SEQ",
    "Batch",
    "Cleared",
    "Event",
    "Hash",
    "Recovered",
    "Removed",
    "RemovedEvent",
    "Stored",
    "StoredEvent",
    "WireError",
    "collect_replies",
    "decode_batch",
    "parse_reply",
    "parse_seq",
]

Hash = int | str
"""A block hash as receipts carry it: the integer, or the hex of a bytes hash."""

END_SEQ = (-1).to_bytes(8, "big", signed=True)
"""The seq frame of the replay socket's end marker."""


class WireError(ValueError):
    """A frame or payload that does not follow the wire format; the message is one line."""


STORED, REMOVED, CLEARED = 1, 2, 3
"""What an event does (its ``op``), whatever its layout."""

# Every field vLLM (0.10.2 ... 0.34.0) and SGLang (0.5.x) declare, in vLLM's declaration order:
# the positional layout reads them by position, the tagged-map layout by name. SGLang's
# ``cache_salt`` is a map field only (its positional 0.5.10 layout ends at ``medium``).
STORED_FIELDS = (
    "block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium",
    "lora_name", "extra_keys", "group_idx", "kv_cache_spec_kind",
    "kv_cache_spec_sliding_window", "locality", "ownership", "session_id",
    "lookahead_token_ids",
)  # fmt: skip
REMOVED_FIELDS = ("block_hashes", "medium", "group_idx", "locality", "ownership")
_KNOWN_MAP_FIELDS = {
    "BlockStored": frozenset({"type", *STORED_FIELDS, "cache_salt"}),
    "BlockRemoved": frozenset({"type", *REMOVED_FIELDS}),
    "AllBlocksCleared": frozenset({"type"}),
}
_ARRAY_WIDTH = {"BlockStored": len(STORED_FIELDS) + 1, "BlockRemoved": len(REMOVED_FIELDS) + 1,
                "AllBlocksCleared": 1}  # fmt: skip


class Stored(msgspec.Struct, tag="BlockStored", tag_field="type", forbid_unknown_fields=True):
    """``BlockStored``: blocks now cached on ``medium``, each the child of the one before.

    With vLLM's ``kv_cache_report_mode="full"`` it is also sent again, without a parent, for
    blocks a request found cached: a reuse report (a hit), told apart by the core.
    """

    op: ClassVar[int] = STORED
    hashes: list[Hash] = msgspec.field(name="block_hashes")
    parent: Hash | None = msgspec.field(default=None, name="parent_block_hash")
    token_ids: list[int] | None = None
    block_size: int | None = None
    lora_id: Any = None
    medium: str | None = None
    lora_name: str | None = None
    extra_keys: list[Any] | None = None
    group_idx: int | None = None
    kv_cache_spec_kind: str | None = None
    kv_cache_spec_sliding_window: int | None = None
    locality: str | None = None
    ownership: str | None = None
    session_id: str | None = None
    lookahead_token_ids: Any = None
    cache_salt: str | None = None


class Removed(msgspec.Struct, tag="BlockRemoved", tag_field="type", forbid_unknown_fields=True):
    """``BlockRemoved``: blocks gone from ``medium`` (the engine gives no reason)."""

    op: ClassVar[int] = REMOVED
    hashes: list[Hash] = msgspec.field(name="block_hashes")
    medium: str | None = None
    group_idx: int | None = None
    locality: str | None = None
    ownership: str | None = None


class Cleared(msgspec.Struct, tag="AllBlocksCleared", tag_field="type", forbid_unknown_fields=True):
    """``AllBlocksCleared``: the prefix cache was reset (vLLM: the GPU prefix cache)."""

    op: ClassVar[int] = CLEARED


# The positional layout (vLLM 0.10.x, SGLang 0.5.10): the tag first, then the fields in
# declaration order; trailing defaults are left out by the publisher (omit_defaults).
class _StoredArray(msgspec.Struct, array_like=True, tag="BlockStored", forbid_unknown_fields=True):
    op: ClassVar[int] = STORED
    hashes: list[int]
    parent: int | None = None
    token_ids: list[int] | None = None
    block_size: int | None = None
    lora_id: Any = None
    medium: str | None = None
    lora_name: str | None = None
    extra_keys: list[Any] | None = None
    group_idx: int | None = None
    kv_cache_spec_kind: str | None = None
    kv_cache_spec_sliding_window: int | None = None
    locality: str | None = None
    ownership: str | None = None
    session_id: str | None = None
    lookahead_token_ids: Any = None
    cache_salt: ClassVar[str | None] = None


class _RemovedArray(
    msgspec.Struct, array_like=True, tag="BlockRemoved", forbid_unknown_fields=True
):
    op: ClassVar[int] = REMOVED
    hashes: list[int]
    medium: str | None = None
    group_idx: int | None = None
    locality: str | None = None
    ownership: str | None = None


class _ClearedArray(
    msgspec.Struct, array_like=True, tag="AllBlocksCleared", forbid_unknown_fields=True
):
    op: ClassVar[int] = CLEARED


class _IntStored(Stored, tag="BlockStored"):
    hashes: list[int] = msgspec.field(name="block_hashes")  # type: ignore[assignment]
    parent: int | None = msgspec.field(default=None, name="parent_block_hash")


class _IntRemoved(Removed, tag="BlockRemoved"):
    hashes: list[int] = msgspec.field(name="block_hashes")  # type: ignore[assignment]


class _MapEventsBatch(msgspec.Struct, array_like=True):
    ts: float
    events: list[_IntStored | _IntRemoved | Cleared]
    dp_rank: int | None = None


class _ArrayBatch(msgspec.Struct, array_like=True):
    ts: float
    events: list[_StoredArray | _RemovedArray | _ClearedArray]
    dp_rank: int | None = None


Event = Stored | Removed | Cleared | _StoredArray | _RemovedArray | _ClearedArray
StoredEvent = Stored | _StoredArray
RemovedEvent = Removed | _RemovedArray


@dataclass(slots=True)
class Batch:
    """One scheduler step's events and the engine's time for them (Unix seconds)."""

    ts: float
    events: list[Event]
    dp_rank: int | None = None
    unknown_events: int = 0
    """Events of a type this decoder does not know (skipped)."""
    unknown: dict[str, int] | None = None
    """Unknown event types (``type:NAME``) and fields (``BlockStored.NAME``), counted."""


# Fast paths: the common batches (one layout, integer hashes, known fields and event types)
# decode straight into structs; anything else takes the lenient path, which also counts
# unknown fields and names the problem.
_FAST = (msgspec.msgpack.Decoder(_MapEventsBatch), msgspec.msgpack.Decoder(_ArrayBatch))
_DECODER = msgspec.msgpack.Decoder()
_CLEARED = Cleared()


def parse_seq(frame: bytes) -> int:
    """The engine's batch counter: 8 bytes, big-endian, unsigned."""
    if len(frame) != 8:
        raise WireError(f"seq frame has {len(frame)} bytes, expected 8")
    return int.from_bytes(frame, "big")


Recovered = tuple[int, bytes, float]
"""A batch the replay socket gave back: (seq, payload, receive time)."""


def parse_reply(frames: list[bytes], topic: bytes) -> tuple[bytes, int, bytes] | None:
    """One replay reply as (topic, seq, payload); ``None`` for the end marker.

    Both layouts: ``[b"", topic, seq, payload]`` and the older ``[b"", seq, payload]``.
    """
    body = frames[1:] if frames and frames[0] == b"" else frames
    if len(body) == 3 and body[1] == END_SEQ:
        return None
    if len(body) == 2 and body[0] == END_SEQ:
        return None
    if len(body) == 3:
        return body[0], parse_seq(body[1]), body[2]
    if len(body) == 2:
        return topic, parse_seq(body[0]), body[1]
    raise WireError(f"replay reply with {len(frames)} frames (expected 3 or 4)")


def collect_replies(
    replies: list[tuple[list[bytes], float]],
    topic: bytes,
    last: int,
    report: Callable[[str], None],
) -> list[Recovered]:
    """The batches of ``topic`` among replay replies: shared by live watches and replays of
    recordings.
    """
    out: list[Recovered] = []
    for frames, at_s in replies:
        try:
            reply = parse_reply(frames, topic)
        except WireError as exc:
            report(f"replay: {exc}; reply skipped")
            continue
        if reply is None:
            break
        if reply[0] == topic and reply[1] <= last:
            out.append((reply[1], reply[2], at_s))
    return out


def _hash(value: object) -> Hash:
    if type(value) is int:
        return value
    if isinstance(value, bytes):
        return value.hex()
    raise WireError(f"a block hash must be an integer or bytes, not {type(value).__name__}")


def _hashes(value: object) -> list[Hash]:
    if not isinstance(value, list):
        raise WireError(f"block_hashes must be a list, not {type(value).__name__}")
    # Integer hashes are the common case: keep them as they are without a call per hash.
    if all(type(h) is int for h in value):
        return value
    return [_hash(h) for h in value]


def _medium(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise WireError(f"medium must be a string or nil, not {type(value).__name__}")


def _optional_hash(value: object) -> Hash | None:
    return None if value is None else _hash(value)


def _int(value: object) -> int | None:
    return value if type(value) is int else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _ints(value: object) -> list[int] | None:
    return value if isinstance(value, list) else None


def _stored(get: Callable[[str], Any]) -> Stored:
    extra = get("extra_keys")
    return Stored(
        _hashes(get("block_hashes")), _optional_hash(get("parent_block_hash")),
        _ints(get("token_ids")), _int(get("block_size")), None, _medium(get("medium")),
        _str(get("lora_name")), extra if isinstance(extra, list) else None,
        _int(get("group_idx")), _str(get("kv_cache_spec_kind")),
        _int(get("kv_cache_spec_sliding_window")), _str(get("locality")),
        _str(get("ownership")), _str(get("session_id")), None, _str(get("cache_salt")),
    )  # fmt: skip


def _removed(get: Callable[[str], Any]) -> Removed:
    return Removed(_hashes(get("block_hashes")), _medium(get("medium")), _int(get("group_idx")),
                   _str(get("locality")), _str(get("ownership")))  # fmt: skip


def _note(unknown: dict[str, int], key: str) -> None:
    unknown[key] = unknown.get(key, 0) + 1


def _from_map(event: dict[Any, Any], unknown: dict[str, int]) -> Event | None:
    tag = event.get("type")
    known = _KNOWN_MAP_FIELDS.get(tag) if isinstance(tag, str) else None
    if known is None:
        _note(unknown, f"type:{tag}")
        return None
    for name in event:
        if name not in known:
            _note(unknown, f"{tag}.{name}")
    if tag == "BlockRemoved":
        return _removed(event.get)
    if tag == "BlockStored":
        return _stored(event.get)
    return _CLEARED


def _from_array(event: list[Any], unknown: dict[str, int]) -> Event | None:
    tag = event[0] if event else None
    width = _ARRAY_WIDTH.get(tag) if isinstance(tag, str) else None
    if width is None:
        _note(unknown, f"type:{tag}")
        return None
    for position in range(width, len(event)):
        _note(unknown, f"{tag}.[{position}]")
    if tag == "BlockRemoved":
        return _removed(lambda name: _item(event, REMOVED_FIELDS.index(name) + 1))
    if tag == "BlockStored":
        return _stored(lambda name: None if name == "cache_salt"
                       else _item(event, STORED_FIELDS.index(name) + 1))  # fmt: skip
    return _CLEARED


def _item(event: list[Any], index: int) -> Any:
    return event[index] if len(event) > index else None


def _batch_parts(raw: object) -> tuple[object, object, object]:
    """(ts, events, rank) of a batch in either layout: ``[ts, events, rank]`` (vLLM's
    ``EventBatch`` with ``array_like``) or a map (vLLM at commit 0181ea31, without it; SGLang
    names the rank ``attn_dp_rank``).
    """
    if isinstance(raw, dict):
        if "ts" not in raw or "events" not in raw:
            raise WireError(
                "payload is a map without ts and events: not a [ts, events, rank] batch"
            )
        rank = raw.get("data_parallel_rank", raw.get("attn_dp_rank"))
        return raw["ts"], raw["events"], rank
    if not isinstance(raw, list) or len(raw) < 2:
        raise WireError("payload is not a [ts, events, data_parallel_rank] array or a map")
    return raw[0], raw[1], raw[2] if len(raw) > 2 else None


def decode_batch(payload: bytes) -> Batch:
    """Decode one payload; raises :class:`WireError` with a one-line reason."""
    for fast in _FAST:
        try:
            typed = fast.decode(payload)
        except (msgspec.ValidationError, msgspec.DecodeError):
            continue
        return Batch(typed.ts, typed.events, typed.dp_rank)  # type: ignore[arg-type]
    try:
        raw = _DECODER.decode(payload)
    except msgspec.DecodeError as exc:
        raise WireError(f"payload is not msgpack ({exc})") from None
    ts, events, rank = _batch_parts(raw)
    if type(ts) not in (float, int):
        raise WireError(f"batch ts must be a number, not {type(ts).__name__}")
    if not isinstance(events, list):
        raise WireError(f"batch events must be a list, not {type(events).__name__}")
    unknown: dict[str, int] = {}
    batch = Batch(float(ts), [], rank if type(rank) is int else None)  # type: ignore[arg-type]
    out = batch.events
    for event in events:
        if isinstance(event, dict):
            decoded = _from_map(event, unknown)
        elif isinstance(event, list):
            decoded = _from_array(event, unknown)
        else:
            raise WireError(f"an event must be a map or an array, not {type(event).__name__}")
        if decoded is None:
            batch.unknown_events += 1
        else:
            out.append(decoded)
    if unknown:
        batch.unknown = unknown
    return batch
