"""From engine batches to receipts: per-engine state, gaps, restarts, regret.

:class:`WatchCore` is deterministic: given the same messages (with their receive times), the
same replay answers and the same local-drop notices, it writes the same receipts. The live
subscriber and the offline reader of a recording both feed it.

Its memory is bounded whatever the stream says (a recording may come from anyone): at most
:data:`MAX_ENGINES` topics of at most :data:`MAX_TOPIC` bytes (other messages are skipped and
reported), at most :data:`MAX_MEDIA` media per engine of at most :data:`MAX_MEDIUM` characters
(a batch naming more is undecodable, so lost), and at most :data:`MAX_BLOCKS` blocks held or
inside the regret window over all engines: past that the oldest are forgotten (their removals
show no residency, as for blocks stored before the watch), reported once.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING

import orjson

from kvreceipts.engine.receipts import (
    EngineClearReceipt,
    EngineLossReceipt,
    EngineRestartReceipt,
    EngineRestoreReceipt,
    removal_template,
)
from kvreceipts.engine.wire import (
    REMOVED,
    STORED,
    Recovered,
    WireError,
    decode_batch,
    parse_seq,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from kvreceipts.engine.wire import Batch, Hash, Stored
    from kvreceipts.engine.writer import RunWriter

__all__ = ["MAX_BLOCKS", "MAX_ENGINES", "MAX_MEDIA", "MAX_MEDIUM", "MAX_TOPIC", "EngineState",
           "WatchCore"]  # fmt: skip

MAX_ENGINES = 256
"""Topics followed at once."""
MAX_TOPIC = 256
"""Longest topic, in bytes (vLLM's default is empty)."""
MAX_MEDIA = 16
"""Media per engine (GPU, CPU, DISK, ... in practice)."""
MAX_MEDIUM = 64
"""Longest medium name, in characters."""
MAX_BLOCKS = 300_000
"""Blocks kept over all engines: resident ones count one, removed ones inside the regret window
two (~170 and ~375 bytes each), so what is kept stays near 60 MB."""
_RECEIPTS_AT_ONCE = 4096
"""Removal receipts built before they are handed to the writer (a batch may remove many)."""


dumps = orjson.dumps
QUEUE_FULL = "queue_full"
NOT_RECEIVED = "not_received"
UNDECODABLE = "undecodable"


@dataclass(slots=True)
class EngineState:
    """What one engine (one topic) holds, as far as its stream has told us, and its counts."""

    topic: str
    next_seq: int | None = None
    last_seq: int | None = None
    resident: dict[str | None, dict[Hash, tuple[float, Hash | None]]] = field(default_factory=dict)
    """medium -> hash -> (engine time stored, parent hash). A table per medium: no key tuple
    to build per event."""
    removed: dict[str | None, OrderedDict[Hash, tuple[float, int]]] = field(default_factory=dict)
    """medium -> hash -> (engine time removed, removal receipt seq), inside the regret window."""
    events: Counter[str] = field(default_factory=Counter)
    removals: Counter[str] = field(default_factory=Counter)
    stores: Counter[str] = field(default_factory=Counter)
    regret: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    recovered_batches: int = 0
    gaps: int = 0
    lost_batches: int = 0
    restarts: int = 0
    clears: int = 0
    undecodable: int = 0
    last_engine_ts: float | None = None
    local_drops: list[tuple[int, int]] = field(default_factory=list)
    """Seq ranges our own queue dropped, not yet declared lost."""
    topic_json: bytes = b""
    media: set[str | None] = field(default_factory=set)
    """Every medium named so far (at most MAX_MEDIA)."""
    kept: int = 0
    """Blocks in :attr:`resident` and :attr:`removed`, as of the end of the last batch."""

    @property
    def held(self) -> int:
        """Blocks resident on every medium."""
        return sum(len(blocks) for blocks in self.resident.values())

    @property
    def resident_by_medium(self) -> dict[str, int]:
        """Blocks resident per medium (``unknown`` when the engine named none)."""
        return {_medium_name(m): len(blocks) for m, blocks in list(self.resident.items())}

    def forget(self) -> int:
        """Drop all resident state (a restart); returns how many blocks were held."""
        held = self.held
        self.resident.clear()
        self.removed.clear()
        return held


def _medium_name(medium: str | None) -> str:
    return medium if medium is not None else "unknown"


class WatchCore:
    """Turns messages into receipts through ``writer``.

    ``recover(topic, first, last)`` asks the engine's replay socket for missing batches (None:
    no replay socket); ``report`` receives one line per problem in the input.
    """

    def __init__(
        self,
        writer: RunWriter,
        *,
        regret_window_s: float = 60.0,
        recover: Callable[[bytes, int, int], list[Recovered]] | None = None,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.writer = writer
        self.regret_window_s = regret_window_s
        self.recover = recover
        self.report = report or (lambda _message: None)
        self.engines: dict[bytes, EngineState] = {}
        sealer = writer.sealer
        self._removal_template = removal_template(writer.run_id, sealer.alg, sealer.key_id)
        self.messages = 0
        """Well-formed messages handled (the subscriber's, not the replayed ones)."""
        self.bad_messages = 0
        self.kept = 0
        """Blocks kept over all engines (at most MAX_BLOCKS)."""
        self.forgotten = 0
        """Blocks forgotten to stay within MAX_BLOCKS."""

    # -- input ---------------------------------------------------------------------------

    @staticmethod
    def _topic_json(state: EngineState) -> bytes:
        cached = state.topic_json
        if not cached:
            cached = state.topic_json = dumps(state.topic)
        return cached

    def engine(self, topic: bytes) -> EngineState:
        """The state of the engine publishing on ``topic`` (created on first sight; the
        caller checks :meth:`_refused` first).
        """
        state = self.engines.get(topic)
        if state is None:
            name = topic.decode("utf-8", "backslashreplace")
            state = self.engines[topic] = EngineState(name)
        return state

    def _refused(self, topic: bytes) -> str | None:
        """Why a message on ``topic`` is not followed (too long, or one topic too many)."""
        if topic in self.engines:
            return None
        if len(topic) > MAX_TOPIC:
            return f"a topic of {len(topic):,} bytes (at most {MAX_TOPIC})"
        if len(self.engines) >= MAX_ENGINES:
            return f"a topic past the first {MAX_ENGINES} (more engines than a watch follows)"
        return None

    def message(self, frames: list[bytes], recv_s: float) -> bool:
        """Handle one subscriber message; ``False`` if it was malformed (and reported)."""
        if len(frames) != 3:
            self.bad_messages += 1
            self.report(f"message with {len(frames)} frames (expected 3: topic, seq, payload); "
                        "skipped")  # fmt: skip
            return False
        topic, seq_frame, payload = frames
        refused = self._refused(topic)
        if refused is not None:
            self.bad_messages += 1
            self.report(f"message on {refused}; skipped")
            return False
        try:
            seq = parse_seq(seq_frame)
        except WireError as exc:
            self.bad_messages += 1
            self.report(f"topic {topic!r}: {exc}; message skipped")
            return False
        self.messages += 1
        state = self.engine(topic)
        expected = state.next_seq
        if expected is not None and seq < expected:
            self._restart(state, seq, recv_s, payload)
            if seq > 0:
                self._gap(topic, state, 0, seq - 1, recv_s)
        elif expected is not None and seq > expected:
            self._gap(topic, state, expected, seq - 1, recv_s)
        self._batch(state, seq, payload, recv_s)
        return True

    def dropped(self, topic: bytes, first: int, last: int) -> None:
        """Our queue dropped batches ``first..last`` of ``topic`` (they count as lost unless
        the replay socket gives them back).
        """
        if self._refused(topic) is not None:
            return  # its messages are skipped too
        state = self.engine(topic)
        drops = state.local_drops
        if drops and drops[-1][1] + 1 == first:
            drops[-1] = (drops[-1][0], last)
        else:
            drops.append((first, last))

    def finish(self, at_s: float) -> None:
        """End of the watch: batches our queue dropped after the last one handled are lost."""
        for state in self.engines.values():
            for first, last in state.local_drops:
                if state.next_seq is None or first >= state.next_seq:
                    self._loss(state, first, last, at_s, QUEUE_FULL, replay=False)
            state.local_drops.clear()

    # -- what happened ------------------------------------------------------------------

    def _restart(self, state: EngineState, seq: int, at_s: float, payload: bytes) -> None:
        previous = state.last_seq if state.last_seq is not None else -1
        held = state.forget()
        state.restarts += 1
        state.local_drops.clear()
        engine_ts = _peek_ts(payload)
        self.writer.emit(
            EngineRestartReceipt, at_s, topic=state.topic, engine_seq=seq,
            engine_ts=engine_ts if engine_ts is not None else state.last_engine_ts or 0.0,
            previous_seq=previous, resident_dropped=held,
        )  # fmt: skip
        state.next_seq = None

    def _gap(self, topic: bytes, state: EngineState, first: int, last: int, at_s: float) -> None:
        state.gaps += 1
        got: dict[int, tuple[bytes, float]] = {}
        # Batches our own queue dropped are not asked for again: the watch is what could not
        # keep up, and replaying them into it then would only drop more.
        attempted = self.recover is not None and not _covered(state.local_drops, first, last)
        if attempted and self.recover is not None:
            for seq, payload, recv_s in self.recover(topic, first, last):
                if first <= seq <= last:
                    got.setdefault(seq, (payload, recv_s))
        start = first
        for seq in sorted(got):
            if seq > start:
                self._missing(state, start, seq - 1, at_s, attempted)
            payload, recv_s = got[seq]
            state.recovered_batches += 1
            self._batch(state, seq, payload, recv_s)
            at_s = max(at_s, recv_s)
            start = seq + 1
        if start <= last:
            self._missing(state, start, last, at_s, attempted)

    def _missing(
        self, state: EngineState, first: int, last: int, at_s: float, attempted: bool
    ) -> None:
        """Declare ``first..last`` lost, split by cause (our queue's drops, or not received)."""
        cursor = first
        for drop_first, drop_last in state.local_drops:
            low, high = max(drop_first, first), min(drop_last, last)
            if low > high:
                continue
            if low > cursor:
                self._loss(state, cursor, low - 1, at_s, NOT_RECEIVED, replay=attempted)
            self._loss(state, low, high, at_s, QUEUE_FULL, replay=attempted)
            cursor = high + 1
        if cursor <= last:
            self._loss(state, cursor, last, at_s, NOT_RECEIVED, replay=attempted)
        state.local_drops = [(a, b) for a, b in state.local_drops if b > last]

    def _loss(
        self,
        state: EngineState,
        first: int,
        last: int,
        at_s: float,
        cause: str,
        *,
        replay: bool,
    ) -> None:
        count = last - first + 1
        state.lost_batches += count
        facts = {"topic": state.topic, "first_engine_seq": first, "last_engine_seq": last,
                 "batches": count, "cause": cause, "replay_attempted": replay}  # fmt: skip
        what = f"engine {state.topic!r} seq {first}..{last} ({cause})"
        loss_seq = self.writer.declare_loss(at_s, what, facts)
        self.writer.emit(EngineLossReceipt, at_s, loss_seq=loss_seq, **facts)

    def _batch(self, state: EngineState, seq: int, payload: bytes, at_s: float) -> None:
        state.next_seq = seq + 1
        state.last_seq = seq
        try:
            batch = decode_batch(payload)
            _check_batch(state, batch)
        except WireError as exc:
            state.undecodable += 1
            self.report(f"topic {state.topic!r} engine seq {seq}: {exc}; batch lost")
            self._loss(state, seq, seq, at_s, UNDECODABLE, replay=False)
            return
        state.batches += 1
        state.last_engine_ts = batch.ts
        if batch.unknown_events:
            state.events["unknown"] += batch.unknown_events
        # vLLM sends one BlockRemoved per hash: consecutive removals from one medium are
        # handled as one run, in order, so the per-event cost is paid once per run.
        removing: list[Hash] = []
        medium: str | None = None
        events = 0
        ts = batch.ts
        for event in batch.events:
            op = event.op
            if op == REMOVED:
                if events and event.medium != medium:  # type: ignore[union-attr]
                    self._removed(state, seq, ts, removing, medium, at_s, events)
                    removing, events = [], 0
                medium = event.medium  # type: ignore[union-attr]
                removing += event.hashes  # type: ignore[union-attr]
                events += 1
                continue
            if events:
                self._removed(state, seq, ts, removing, medium, at_s, events)
                removing, events = [], 0
            if op == STORED:
                self._stored(state, seq, ts, event, at_s)  # type: ignore[arg-type]
            else:
                self._cleared(state, seq, ts, at_s)
        if events:
            self._removed(state, seq, ts, removing, medium, at_s, events)
        self._count_kept(state)

    def _count_kept(self, state: EngineState) -> None:
        """Recount what ``state`` keeps (a removal in the regret window weighs two: an ordered
        table's entry costs twice a plain one's) and forget the oldest past MAX_BLOCKS.
        """
        kept = sum(map(len, state.resident.values())) + 2 * sum(map(len, state.removed.values()))
        self.kept += kept - state.kept
        state.kept = kept
        if self.kept > MAX_BLOCKS:
            self._forget_oldest(state)

    def _forget_oldest(self, state: EngineState) -> None:
        """Forget the oldest blocks of ``state`` (whose batch just grew the total past
        MAX_BLOCKS) until the total is a tenth below it.
        """
        excess = self.kept - MAX_BLOCKS * 9 // 10
        if not self.forgotten:
            self.report(f"more than {MAX_BLOCKS:,} blocks held or recently removed: the oldest "
                        "are forgotten (their removals show no residency)")  # fmt: skip
        dropped = 0
        for removed in state.removed.values():  # regret windows first: the oldest removals
            while removed and dropped < excess:
                removed.popitem(last=False)
                dropped += 2
        for blocks in state.resident.values():
            if dropped >= excess:
                break
            cut = min(len(blocks), excess - dropped)
            for block_hash in list(islice(blocks, cut)):  # insertion order: the oldest first
                del blocks[block_hash]
            dropped += cut
        state.kept -= dropped
        self.kept -= dropped
        self.forgotten += dropped

    def _removed(  # noqa: PLR0917 - the hot path: positional arguments cost least
        self, state: EngineState, seq: int, ts: float, hashes: Sequence[Hash], medium: str | None,
        at_s: float, events: int,
    ) -> None:  # fmt: skip
        name = _medium_name(medium)
        state.events["BlockRemoved"] += events
        resident = state.resident.get(medium) or {}
        removed = state.removed.get(medium)
        if removed is None:
            removed = state.removed[medium] = OrderedDict()
        elif removed:
            self._prune(removed, ts)
        writer = self.writer
        timestamp = writer.stamp(at_s)
        stamp = timestamp.encode()
        template = self._removal_template
        engine_ts, medium_json = dumps(ts), dumps(medium)
        topic = self._topic_json(state)
        receipt_seq = writer.next_seq
        payloads: list[bytes] = []
        put = writer.put_payloads
        for block_hash in hashes:
            if len(payloads) >= _RECEIPTS_AT_ONCE:  # memory stays flat however many
                put("engine_removal", timestamp, payloads)
                payloads = []
                self._count_kept(state)
            held = resident.pop(block_hash, None)
            if held is None:
                stored_ts = parent = residency = None
            else:
                stored_ts, parent = held
                residency = round((ts - stored_ts) * 1000.0, 3)
            payloads.append(template % (
                dumps(block_hash), seq, engine_ts, medium_json, dumps(parent), dumps(residency),
                receipt_seq, dumps(stored_ts), stamp, topic,
            ))  # fmt: skip
            removed.pop(block_hash, None)
            removed[block_hash] = (ts, receipt_seq)
            receipt_seq += 1
        put("engine_removal", timestamp, payloads)
        state.removals[name] += len(hashes)

    def _prune(self, removed: OrderedDict[Hash, tuple[float, int]], ts: float) -> None:
        """Forget removals older than the regret window: they can no longer be regretted (and
        the table stays as small as the window).
        """
        horizon = ts - self.regret_window_s
        while removed:
            oldest = next(iter(removed.values()))
            if oldest[0] >= horizon:
                return
            removed.popitem(last=False)

    def _stored(self, state: EngineState, seq: int, ts: float, event: Stored, at_s: float) -> None:
        medium = event.medium
        name = _medium_name(medium)
        state.events["BlockStored"] += 1
        removed = state.removed.get(medium)
        if removed:
            self._prune(removed, ts)
        resident = state.resident.get(medium)
        if resident is None:
            resident = state.resident[medium] = {}
        parent = event.parent
        for block_hash in event.hashes:
            resident[block_hash] = (ts, parent)
            parent = block_hash
            gone = removed.pop(block_hash, None) if removed else None
            if gone is not None:
                state.regret[name] += 1
                self.writer.emit(
                    EngineRestoreReceipt, at_s, topic=state.topic, engine_seq=seq,
                    engine_ts=ts, medium=medium, block_hash=block_hash, removal_seq=gone[1],
                    removed_ts=gone[0], gap_ms=round((ts - gone[0]) * 1000.0, 3),
                )  # fmt: skip
        state.stores[name] += len(event.hashes)

    def _cleared(self, state: EngineState, seq: int, ts: float, at_s: float) -> None:
        state.events["AllBlocksCleared"] += 1
        state.clears += 1
        held = state.held
        state.resident.clear()
        self.writer.emit(
            EngineClearReceipt, at_s, topic=state.topic, engine_seq=seq, engine_ts=ts, count=held
        )

    # -- totals -------------------------------------------------------------------------

    @property
    def lost_batches(self) -> int:
        """Batches declared lost, over all engines."""
        return sum(s.lost_batches for s in self.engines.values())


def _check_batch(state: EngineState, batch: Batch) -> None:
    """Refuse a batch whose time is not finite or that names a medium too many or too long."""
    if not math.isfinite(batch.ts):
        raise WireError(f"batch ts {batch.ts!r} is not a finite number")
    media = {getattr(event, "medium", None) for event in batch.events}
    new = media - state.media
    if not new:
        return
    for medium in new:
        if medium is not None and len(medium) > MAX_MEDIUM:
            raise WireError(f"a medium name of {len(medium):,} characters (at most "
                            f"{MAX_MEDIUM})")  # fmt: skip
    if len(state.media) + len(new) > MAX_MEDIA:
        raise WireError(f"more than {MAX_MEDIA} media named by one engine")
    state.media |= new


def _covered(ranges: list[tuple[int, int]], first: int, last: int) -> bool:
    """Whether the sorted ``ranges`` cover every seq of ``first..last``."""
    cursor = first
    for low, high in ranges:
        if low > cursor:
            break
        cursor = max(cursor, high + 1)
        if cursor > last:
            return True
    return cursor > last


def _peek_ts(payload: bytes) -> float | None:
    try:
        return decode_batch(payload).ts
    except WireError:
        return None
