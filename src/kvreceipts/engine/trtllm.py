"""TensorRT-LLM's KV-cache events, as its executor returns them, turned into engine batches.

The layout, from TensorRT-LLM's sources (``tensorrt_llm/_utils.py``, ``KVCacheEventSerializer``;
``cpp/tensorrt_llm/batch_manager/kvCacheEventManager.cpp``, ``KVCacheEventManager``): one JSON
object per event, ``{"event_id", "data", "window_size"[, "attention_dp_rank"]}``, whose
``data`` is one of

- ``{"type": "created", "num_blocks_per_cache_level": [...]}`` (the manager started);
- ``{"type": "stored", "parent_hash", "blocks": [{"type": "stored_block", "block_hash",
  "tokens": [{"type": "unique_token", "token_id", "token_extra_id"}], "cache_level",
  "priority"}]}`` (``parent_hash`` belongs to the first block, each next block's parent is
  the one before; ``cache_level`` 0 is the primary pool on GPU, 1 the secondary in host
  memory);
- ``{"type": "removed", "block_hashes": [...]}`` (no cache level: consecutive removals of one
  window size are coalesced);
- ``{"type": "updated", "block_hash", "cache_level": {"type": "event_diff", "old_value",
  "new_value"}, "priority": {...}}`` (0 -> 1: offloaded to host memory, still cached; 1 -> 0:
  reloaded).

What a decoder must get right, all from those sources: ``removed`` names no level, so the
decoder tracks where each hash lives; a hash is a namespace per ``window_size`` (kept as the
tier's ``group_idx``); hashes are unsigned 64-bit (half above 2**63; hex strings in the newer
manager); events carry no time and no request; ``event_id`` counts per
``attention_dp_rank`` (each rank is its own stream, topic ``trtllm/dp<r>``): a gap means the
engine's event buffer dropped events (a loss), a ``created`` event back at 0 a restart. An
empty ``{}`` (the serializer's ``None``) is skipped.

A line may also be a JSON list of such events (one ``get_kv_cache_events()`` call), or
``{"ts": SECONDS, "events": [...]}`` from a wrapper that adds the time; otherwise events get
the time the line was read (residency then means something only for a live pipe).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
import orjson

from kvreceipts.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

__all__ = ["MEDIA", "TrtllmDecoder"]

MEDIA = {0: "GPU", 1: "CPU"}
"""TensorRT-LLM's cache levels: the primary pool (GPU) and the secondary (host memory)."""

_ENCODE = msgspec.msgpack.Encoder()


def _hash(value: object, where: str) -> int:
    if type(value) is int and value >= 0:
        return value
    if isinstance(value, str):
        try:
            return int(value.removeprefix("0x"), 16)
        except ValueError:
            pass
    raise ValueError(f"{where}: a block hash must be an unsigned integer or hex, not {value!r}")


class TrtllmDecoder:
    """Turns event lines into subscriber messages ``([topic, seq, payload], at_s)``: one
    message (one batch) per TensorRT-LLM event, its ``event_id`` as the seq.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.levels: dict[tuple[int, int, int], int] = {}
        """(rank, window_size, hash) -> the cache level it lives on."""
        self.skipped = 0

    def messages(self, lines: Iterable[tuple[bytes, float]]) -> Iterator[tuple[list[bytes], float]]:
        """Each line's events, as messages (``lines``: (line, read time))."""
        for number, (line, read_s) in enumerate(lines, 1):
            text = line.strip()
            if not text:
                continue
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise InputError(f"not JSON ({exc.msg})", path=self.path, line=number) from None
            ts, events = read_s, value
            if isinstance(value, dict) and "events" in value:
                ts, events = float(value.get("ts", read_s)), value["events"]
            for event in events if isinstance(events, list) else [events]:
                try:
                    message = self._message(event, ts)
                except (ValueError, TypeError, KeyError) as exc:
                    raise InputError(f"{exc}", path=self.path, line=number) from None
                if message is None:
                    self.skipped += 1
                    continue
                yield message, ts

    def _message(self, event: Any, ts: float) -> list[bytes] | None:
        if not isinstance(event, dict):
            raise TypeError(f"an event must be an object, not {type(event).__name__}")
        if not event:
            return None  # the serializer writes {} for a None event
        event_id = event["event_id"]
        if type(event_id) is not int or event_id < 0:
            raise ValueError(f"event_id must be a non-negative integer, not {event_id!r}")
        rank = event.get("attention_dp_rank")
        rank = rank if type(rank) is int else 0
        window = event.get("window_size")
        window = window if type(window) is int else None
        data = event["data"]
        kind = data.get("type") if isinstance(data, dict) else None
        events = self._events(kind, data, rank, window)
        topic = f"trtllm/dp{rank}".encode()
        return [topic, event_id.to_bytes(8, "big"), _ENCODE.encode([ts, events, rank])]

    def _events(
        self, kind: object, data: dict[str, Any], rank: int, window: int | None
    ) -> list[dict[str, Any]]:
        handlers = {"created": self._created, "stored": self._stored,
                    "removed": self._removed, "updated": self._updated}  # fmt: skip
        handler = handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            return [{"type": f"trtllm:{kind}"}]  # counted and reported once by the core
        group = {"group_idx": window} if window is not None else {}
        return handler(data, rank, window if window is not None else -1, group)

    def _created(
        self, _data: dict[str, Any], rank: int, _key: int, _group: dict[str, Any]
    ) -> list[dict[str, Any]]:
        # The manager (re)started: what this rank held is gone. A created event back at
        # event_id 0 is also seen by the core as a restart (seq back).
        for held in [k for k in self.levels if k[0] == rank]:
            del self.levels[held]
        return [{"type": "AllBlocksCleared"}]

    def _stored(
        self, data: dict[str, Any], rank: int, key: int, group: dict[str, Any]
    ) -> list[dict[str, Any]]:
        out = []
        parent = data.get("parent_hash")
        parent = None if parent is None else _hash(parent, "parent_hash")
        for block in data["blocks"]:
            block_hash = _hash(block["block_hash"], "block_hash")
            level = block.get("cache_level", 0)
            self.levels[rank, key, block_hash] = level
            tokens = [t.get("token_id") for t in block.get("tokens") or [] if isinstance(t, dict)]
            out.append({"type": "BlockStored", "block_hashes": [block_hash],
                        "parent_block_hash": parent, "token_ids": tokens,
                        "block_size": len(tokens), "medium": _medium(level), **group})  # fmt: skip
            parent = block_hash
        return out

    def _removed(
        self, data: dict[str, Any], rank: int, key: int, group: dict[str, Any]
    ) -> list[dict[str, Any]]:
        by_medium: dict[str, list[int]] = {}
        for raw in data["block_hashes"]:
            block_hash = _hash(raw, "block_hashes")
            level = self.levels.pop((rank, key, block_hash), 0)
            by_medium.setdefault(_medium(level), []).append(block_hash)
        return [{"type": "BlockRemoved", "block_hashes": hashes, "medium": medium, **group}
                for medium, hashes in by_medium.items()]  # fmt: skip

    def _updated(
        self, data: dict[str, Any], rank: int, key: int, group: dict[str, Any]
    ) -> list[dict[str, Any]]:
        diff = data.get("cache_level")
        if not isinstance(diff, dict) or diff.get("old_value") == diff.get("new_value"):
            return []  # a priority update: nothing the receipts follow
        block_hash = _hash(data["block_hash"], "block_hash")
        old, new = diff.get("old_value"), diff.get("new_value")
        self.levels[rank, key, block_hash] = new if type(new) is int else 0
        # 0 -> 1: offloaded to host memory (still cached); 1 -> 0: reloaded. As SGLang's
        # HiCache: a store on the new medium, then a removal from the old one.
        return [{"type": "BlockStored", "block_hashes": [block_hash], "parent_block_hash": None,
                 "token_ids": None, "block_size": None, "medium": _medium(new), **group},
                {"type": "BlockRemoved", "block_hashes": [block_hash], "medium": _medium(old),
                 **group}]  # fmt: skip


def _medium(level: object) -> str:
    return MEDIA.get(level, str(level)) if type(level) is int else str(level)
