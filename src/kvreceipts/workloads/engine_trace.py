"""A watch recording (``watch --record``) read as a trace: the engine's own block references.

Each new ``BlockStored`` on the engine's primary cache (GPU, first KV-cache group) is a miss,
each reuse report (vLLM's ``kv_cache_report_mode="full"``: a store of blocks already
resident) a hit. One request is one store event, its prefix completed from the parent chain
the stream showed; a reuse report followed in the same batch by a store that extends it (its
parent is the report's last block) is one request. Arrival times are the batches' engine
times; tokens are ``block_size`` per block.

What a recording cannot know is said in :data:`CAVEATS` (and in the summary): pinning,
request boundaries without ``session_id``, output tokens, the engine's own capacity.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kvreceipts.engine.recording import MESSAGE, REPLY, RecordingReader
from kvreceipts.engine.wire import REMOVED, STORED, WireError, decode_batch, parse_seq
from kvreceipts.errors import InputError
from kvreceipts.workloads.request import Request

if TYPE_CHECKING:
    from collections.abc import Iterator

    from kvreceipts.engine.wire import Batch, StoredEvent

__all__ = ["CAVEATS", "recording_block_tokens", "recording_requests"]

PRIMARY = frozenset({"GPU", "gpu", None})
MAX_CHAIN = 1 << 16
CAVEATS = (
    (
        "a watch recording is the engine's block reference stream: new stores are misses, "
        "reuse reports hits; it cannot know pinning, output tokens, or the engine's capacity"
    ),
)
NO_SESSIONS = (
    "the recording carries no session_id: request boundaries are guessed from parent chains "
    "(a reuse report and the store that extends it in one batch are one request)"
)
NO_REUSE = (
    "the recording holds no reuse report (vLLM sends them only with "
    'kv_cache_report_mode="full"): hits the engine served from cache without storing are '
    "not in it, so hit ratios are low"
)


def _int(value: Any) -> int:
    return value if type(value) is int else int(str(value), 16)  # bytes hashes are hex


def _batches(path: str) -> Iterator[tuple[bytes, int, bytes]]:
    """(topic, seq, payload) of every batch in the recording, each once, in arrival order
    (live messages and replayed ones alike).
    """
    reader = RecordingReader(path)
    seen: set[tuple[bytes, int]] = set()
    try:
        for entry in reader.entries():
            frames = entry.frames
            if entry.type == MESSAGE and len(frames) == 3:
                topic, seq_frame, payload = frames
            elif entry.type == REPLY and len(frames) in (3, 4) and frames[0] == b"":
                body = frames[1:]
                if len(body) == 2:
                    body = [b"", *body]
                topic, seq_frame, payload = body
            else:
                continue
            try:
                seq = parse_seq(seq_frame)
            except WireError:
                continue
            if seq >= 1 << 63 or (topic, seq) in seen:
                continue  # the replay's end marker (-1), or a batch already read
            seen.add((topic, seq))
            yield topic, seq, payload
    finally:
        reader.close()


def recording_block_tokens(path: str) -> int | None:
    """The block size of the recording's first store (None: no store gives one)."""
    for _topic, _seq, payload in _batches(path):
        try:
            batch = decode_batch(payload)
        except WireError:
            continue
        for event in batch.events:
            size = getattr(event, "block_size", None)
            if event.op == STORED and type(size) is int and size > 0:
                return size
    return None


def recording_requests(path: str, stats: Any) -> Iterator[Request]:
    """The requests the recording shows (see the module's docstring)."""
    stats.caveats[:] = list(CAVEATS)
    reader = _Requests(stats)
    for _topic, seq, payload in _batches(path):
        try:
            batch = decode_batch(payload)
        except WireError as exc:
            stats.skipped += 1
            if len(stats.first_errors) < 5:
                stats.first_errors.append(f"{path}: batch seq {seq}: {exc}")
            continue
        yield from reader.batch(batch)
    if reader.count and not reader.sessions:
        stats.caveats.append(NO_SESSIONS)
    if reader.count and not reader.reuse:
        stats.caveats.append(NO_REUSE)
    if reader.first_ts is None:
        raise InputError("the recording holds no batch to read as a trace", path=path)


class _Requests:
    """What the stream says, kept to turn store events into requests."""

    def __init__(self, stats: Any) -> None:
        self.stats = stats
        self.resident: set[int] = set()
        self.parents: dict[int, int | None] = {}
        self.first_ts: float | None = None
        self.group: int | None = None
        self.group_known = False
        self.count = self.sessions = self.reuse = 0
        self.pending: tuple[list[int], str | None, int] | None = None
        """A reuse report that a store of the same batch may extend."""

    def _request(self, hashes: list[int], session: str | None, ts: float, size: int) -> Request:
        self.count += 1
        self.stats.rows += 1
        self.sessions += session is not None
        tokens = max(1, len(hashes) * size)
        return Request(
            request_id=f"r{self.count}",
            session_id=session or (f"p{hashes[-1]}" if hashes else f"r{self.count}"),
            arrival_ms=round((ts - (self.first_ts or ts)) * 1000.0, 3),
            input_tokens=tokens,
            output_tokens=0,
            context_length=tokens,
            block_hashes=hashes,
            source_line=self.count,
        )

    def _flush(self, ts: float) -> Iterator[Request]:
        if self.pending is not None:
            hashes, session, size = self.pending
            self.pending = None
            yield self._request(hashes, session, ts, size)

    def batch(self, batch: Batch) -> Iterator[Request]:
        """The requests of one batch."""
        if self.first_ts is None:
            self.first_ts = batch.ts
        for event in batch.events:
            if event.op == REMOVED:
                if event.medium in PRIMARY:  # type: ignore[union-attr]
                    self.resident.difference_update(_int(h) for h in event.hashes)  # type: ignore[union-attr]
            elif event.op == STORED:
                yield from self._stored(event, batch.ts)  # type: ignore[arg-type]
            else:
                self.resident.clear()  # AllBlocksCleared: the GPU prefix cache was reset
        yield from self._flush(batch.ts)

    def _stored(self, event: StoredEvent, ts: float) -> Iterator[Request]:
        if event.medium not in PRIMARY:
            return
        if not self.group_known:
            self.group, self.group_known = event.group_idx, True
        if event.group_idx != self.group:
            return  # one KV-cache group stands for the request (hybrid models)
        hashes = [_int(h) for h in event.hashes]
        size = event.block_size or 16
        if hashes and all(h in self.resident for h in hashes):  # a reuse report: hits
            self.reuse += 1
            yield from self._flush(ts)
            self.pending = (hashes, event.session_id, size)
            return
        parent = None if event.parent is None else _int(event.parent)
        chained = parent
        for h in hashes:
            self.parents.setdefault(h, chained)
            chained = h
        self.resident.update(hashes)
        if self.pending is not None and parent == self.pending[0][-1]:
            prefix, session = self.pending[0], self.pending[1] or event.session_id
            self.pending = None
        else:
            yield from self._flush(ts)
            prefix, session = _chain(self.parents, parent), event.session_id
        yield self._request(prefix + hashes, session, ts, size)


def _chain(parents: dict[int, int | None], parent: int | None) -> list[int]:
    out: list[int] = []
    while parent is not None and len(out) < MAX_CHAIN:
        out.append(parent)
        parent = parents.get(parent)
    out.reverse()
    return out
