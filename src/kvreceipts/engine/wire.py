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
    "Stored",
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


class Stored(msgspec.Struct, tag="BlockStored", tag_field="type"):
    """``BlockStored``: blocks now cached on ``medium``, each the child of the one before."""

    op: ClassVar[int] = STORED
    hashes: list[Hash] = msgspec.field(name="block_hashes")
    parent: Hash | None = msgspec.field(default=None, name="parent_block_hash")
    block_size: int | None = None
    medium: str | None = None


class Removed(msgspec.Struct, tag="BlockRemoved", tag_field="type"):
    """``BlockRemoved``: blocks gone from ``medium`` (the engine gives no reason)."""

    op: ClassVar[int] = REMOVED
    hashes: list[Hash] = msgspec.field(name="block_hashes")
    medium: str | None = None


class Cleared(msgspec.Struct, tag="AllBlocksCleared", tag_field="type"):
    """``AllBlocksCleared``: the prefix cache was reset."""

    op: ClassVar[int] = CLEARED


# The older positional layout: the tag first, then the fields in declaration order.
class _StoredArray(msgspec.Struct, array_like=True, tag="BlockStored"):
    op: ClassVar[int] = STORED
    hashes: list[int]
    parent: int | None = None
    token_ids: msgspec.Raw = msgspec.Raw()
    block_size: int | None = None
    lora_id: msgspec.Raw = msgspec.Raw()
    medium: str | None = None


class _RemovedArray(msgspec.Struct, array_like=True, tag="BlockRemoved"):
    op: ClassVar[int] = REMOVED
    hashes: list[int]
    medium: str | None = None


class _ClearedArray(msgspec.Struct, array_like=True, tag="AllBlocksCleared"):
    op: ClassVar[int] = CLEARED


class _IntStored(Stored, tag="BlockStored"):
    hashes: list[int] = msgspec.field(name="block_hashes")  # type: ignore[assignment]
    parent: int | None = msgspec.field(default=None, name="parent_block_hash")


class _IntRemoved(Removed, tag="BlockRemoved"):
    hashes: list[int] = msgspec.field(name="block_hashes")  # type: ignore[assignment]


class _MapBatch(msgspec.Struct, array_like=True):
    ts: float
    events: list[_IntStored | _IntRemoved | Cleared]
    dp_rank: int | None = None


class _ArrayBatch(msgspec.Struct, array_like=True):
    ts: float
    events: list[_StoredArray | _RemovedArray | _ClearedArray]
    dp_rank: int | None = None


Event = Stored | Removed | Cleared | _StoredArray | _RemovedArray | _ClearedArray


@dataclass(slots=True)
class Batch:
    """One scheduler step's events and the engine's time for them (Unix seconds)."""

    ts: float
    events: list[Event]
    dp_rank: int | None = None
    unknown_events: int = 0
    """Events of a type this decoder does not know (skipped)."""


# Fast paths: the common batches (one layout, integer hashes, known event types) decode
# straight into structs; anything else takes the lenient path, which also names the problem.
_FAST = (msgspec.msgpack.Decoder(_MapBatch), msgspec.msgpack.Decoder(_ArrayBatch))
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


def _block_size(value: object) -> int | None:
    return value if type(value) is int else None


def _from_map(event: dict[Any, Any]) -> Event | None:
    tag = event.get("type")
    if tag == "BlockRemoved":
        return Removed(_hashes(event.get("block_hashes")), _medium(event.get("medium")))
    if tag == "BlockStored":
        return Stored(
            _hashes(event.get("block_hashes")),
            _optional_hash(event.get("parent_block_hash")),
            _block_size(event.get("block_size")),
            _medium(event.get("medium")),
        )
    if tag == "AllBlocksCleared":
        return _CLEARED
    return None


def _item(event: list[Any], index: int) -> Any:
    return event[index] if len(event) > index else None


def _from_array(event: list[Any]) -> Event | None:
    tag = event[0] if event else None
    if tag == "BlockRemoved":
        return Removed(_hashes(_item(event, 1)), _medium(_item(event, 2)))
    if tag == "BlockStored":
        # block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium, ...
        return Stored(
            _hashes(_item(event, 1)),
            _optional_hash(_item(event, 2)),
            _block_size(_item(event, 4)),
            _medium(_item(event, 6)),
        )
    if tag == "AllBlocksCleared":
        return _CLEARED
    return None


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
    if not isinstance(raw, list) or len(raw) < 2:
        raise WireError("payload is not a [ts, events, data_parallel_rank] array")
    ts, events = raw[0], raw[1]
    if type(ts) not in (float, int):
        raise WireError(f"batch ts must be a number, not {type(ts).__name__}")
    if not isinstance(events, list):
        raise WireError(f"batch events must be a list, not {type(events).__name__}")
    rank = raw[2] if len(raw) > 2 and type(raw[2]) is int else None
    batch = Batch(float(ts), [], rank)
    out = batch.events
    for event in events:
        if isinstance(event, dict):
            decoded = _from_map(event)
        elif isinstance(event, list):
            decoded = _from_array(event)
        else:
            raise WireError(f"an event must be a map or an array, not {type(event).__name__}")
        if decoded is None:
            batch.unknown_events += 1
        else:
            out.append(decoded)
    return batch
