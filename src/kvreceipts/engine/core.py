"""From engine batches to receipts: per-engine state, gaps, restarts, reuse, regret.

:class:`WatchCore` is deterministic: given the same messages (with their receive times), the
same replay answers, the same local-drop notices and the same connection events, it writes
the same receipts. The live subscriber and the offline reader of a recording both feed it.

State is kept per engine and per tier (:mod:`kvreceipts.engine.state`). Continuity is
proven, never assumed: a gap is filled from the replay socket only when its answer holds our
last batch byte for byte; after the connection dropped (pyzmq's socket monitor) the next
batch must prove the same way that it comes from the same process, or it starts a new
incarnation whose earlier batches are asked for or declared lost.

Its memory is bounded whatever the stream says (a recording may come from anyone): at most
:data:`MAX_ENGINES` topics of at most :data:`MAX_TOPIC` bytes (other messages are skipped and
reported); per engine at most :data:`MAX_MEDIA` media and :data:`MAX_TIERS` tiers, whose
medium, locality and ownership have at most :data:`MAX_MEDIUM` characters (a batch naming more
is undecodable, so lost); at most :data:`MAX_OLD_TIERS` tiers of earlier incarnations per
engine kept apart (past that a retired tier's counts join an older one of the same key); at
most :data:`MAX_BLOCKS` blocks held or inside the regret window over all engines and tiers:
past that the oldest are forgotten (their removals show no residency, as for blocks stored
before the watch), reported once. Unknown event types and fields are counted by name for the
first :data:`MAX_UNKNOWN` names per engine, the rest under ``(other)``.
"""

from __future__ import annotations

import math
from itertools import islice
from typing import TYPE_CHECKING, Any

import orjson

from kvreceipts.bounded import shorten
from kvreceipts.engine.receipts import (
    EngineClearReceipt,
    EngineLossReceipt,
    EngineRestartReceipt,
    EngineRestoreReceipt,
    EngineReuseReceipt,
    EngineTallyReceipt,
    batch_fragment,
    removal_template,
)
from kvreceipts.engine.state import (
    GPU_MEDIA,
    MAX_OLD_TIERS,
    MAX_UNKNOWN,
    EngineState,
    block_tokens,
    cache_salt,
    normal_medium,
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
    from collections import OrderedDict
    from collections.abc import Callable, Sequence

    from kvreceipts.engine.state import Facts, TierKey
    from kvreceipts.engine.wire import Batch, Hash, StoredEvent
    from kvreceipts.engine.writer import RunWriter

__all__ = ["MAX_BLOCKS", "MAX_ENGINES", "MAX_MEDIA", "MAX_MEDIUM", "MAX_OLD_TIERS", "MAX_TIERS",
           "MAX_TOPIC", "MAX_UNKNOWN", "EngineState", "WatchCore"]  # fmt: skip

MAX_ENGINES = 256
"""Topics followed at once."""
MAX_TOPIC = 256
"""Longest topic, in bytes (vLLM's default is empty)."""
MAX_MEDIA = 16
"""Media per engine (GPU, CPU, DISK, ... in practice)."""
MAX_MEDIUM = 64
"""Longest medium (and locality, ownership) name, in characters."""
MAX_TIERS = 256
"""Tiers (DP rank, medium, group, locality, ownership) per engine, over its incarnations."""
MAX_BLOCKS = 300_000
"""Blocks kept over all engines: resident ones count one, removed ones inside the regret window
two (~170 and ~375 bytes each), so what is kept stays near 60 MB."""
_RECEIPTS_AT_ONCE = 4096
"""Removal receipts built before they are handed to the writer (a batch may remove many)."""


dumps = orjson.dumps
_SORT = orjson.OPT_SORT_KEYS
ASK_ROUNDS = 32
"""Replay requests for one gap at most (each must bring new batches)."""
QUEUE_FULL = "queue_full"
NOT_RECEIVED = "not_received"
UNDECODABLE = "undecodable"


class WatchCore:
    """Turns messages into receipts through ``writer``.

    ``recover(topic, first, last)`` asks the engine's replay socket for missing batches (None:
    no replay socket); ``report`` receives one line per problem in the input.
    ``bytes_per_token`` turns a removed block's tokens into ``bytes_freed``.
    """

    def __init__(
        self,
        writer: RunWriter,
        *,
        regret_window_s: float = 60.0,
        recover: Callable[[bytes, int, int], list[Recovered]] | None = None,
        report: Callable[[str], None] | None = None,
        bytes_per_token: int | None = None,
    ) -> None:
        self.writer = writer
        self.regret_window_s = regret_window_s
        self.recover = recover
        self.report = report or (lambda _message: None)
        self.bytes_per_token = bytes_per_token
        self.engines: dict[bytes, EngineState] = {}
        sealer = writer.sealer
        self._removal_template = removal_template(writer.run_id, sealer.alg, sealer.key_id)
        self._stores: dict[tuple[Any, ...], bytes] = {}
        self._reported: set[str] = set()
        self.messages = 0
        """Well-formed messages handled (the subscriber's, not the replayed ones)."""
        self.bad_messages = 0
        self.disconnects = 0
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

    def disconnected(self) -> None:
        """The subscriber's connection to the engine dropped (pyzmq's socket monitor): the
        next batch of every engine must prove it continues the stream, or it starts a new
        incarnation (a TCP connection never outlives the process at its other end).
        """
        self.disconnects += 1
        for state in self.engines.values():
            state.unproven = True

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
        if expected is not None:
            if state.unproven:
                state.unproven = False
                self._after_reconnect(topic, state, seq, payload, recv_s)
            elif seq < expected:
                self._restart(state, seq, recv_s, payload, "seq_back")
                self._prefix(topic, state, seq, payload, recv_s)
            elif seq > expected:
                self._gap(topic, state, expected, seq, payload, recv_s)
        else:
            state.unproven = False
        self._batch(state, seq, payload, recv_s)
        self.writer.boundary(recv_s)  # between batches: a checkpoint may be due
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
        """End of the watch: batches our queue dropped after the last one handled are lost;
        then one ``engine_tally`` per engine.
        """
        for state in self.engines.values():
            for first, last in state.local_drops:
                if state.next_seq is None or first >= state.next_seq:
                    self._loss(state, first, last, at_s, QUEUE_FULL, replay=False)
            state.local_drops.clear()
        for state in self.engines.values():
            tiers = [*state.old_tiers, *state.tiers.values()]
            self.writer.emit(
                EngineTallyReceipt, at_s, topic=state.topic, incarnations=state.incarnation + 1,
                tiers=[t.row() for t in tiers], unknown=state.unknown.to_dict(),
                hit_rate=state.hit_rate, batches=state.batches,
                recovered_batches=state.recovered_batches, lost_batches=state.lost_batches,
            )  # fmt: skip

    # -- continuity -----------------------------------------------------------------------

    def _ask(
        self, topic: bytes, first: int, last: int, *, anchor: bool = False
    ) -> dict[int, tuple[bytes, float]]:
        """The replay socket's batches ``first..last``. An answer cut short (a ROUTER past
        its send high-water mark drops the rest) is asked again from the first seq still
        missing, as long as each answer brings new batches (at most :data:`ASK_ROUNDS`).
        ``anchor``: ``first`` is our last batch, asked for as proof, not needed.
        """
        got: dict[int, tuple[bytes, float]] = {}
        if self.recover is None:
            return got
        start = first
        need = first + 1 if anchor else first
        for _round in range(ASK_ROUNDS):
            before = len(got)
            for seq, payload, recv_s in self.recover(topic, start, last):
                if first <= seq <= last:
                    got.setdefault(seq, (payload, recv_s))
            # ``last`` is the batch that showed the gap: asked for as proof, not needed.
            missing = next((s for s in range(max(start, need), last) if s not in got), None)
            if missing is None or len(got) == before:
                return got  # complete, or the buffer no longer holds the rest
            start = missing
        return got

    @staticmethod
    def _same_process(
        state: EngineState, got: dict[int, tuple[bytes, float]], seq: int, payload: bytes
    ) -> bool | None:
        """Whether a replay answer comes from the process whose batches we processed: True
        when it holds our last batch byte for byte (and the current one, if present), False
        when it holds either with other bytes, None when it holds neither end (no proof).
        """
        last = state.last_seq
        anchor = got.get(last) if last is not None else None
        current = got.get(seq)
        if current is not None and current[0] != payload:
            return False
        if anchor is None:
            return None
        return anchor[0] == state.last_payload

    def _gap(  # noqa: PLR0917 - the pieces of one message
        self, topic: bytes, state: EngineState, first: int, seq: int, payload: bytes,
        at_s: float,
    ) -> None:  # fmt: skip
        """Batches ``first..seq-1`` never arrived on a connection that did not drop (so
        from the same process): ask the replay socket, starting at our last batch so that
        its answer proves it is that process's buffer.
        """
        state.gaps += 1
        last = seq - 1
        # Batches our own queue dropped are not asked for again: the watch is what could not
        # keep up, and replaying them into it then would only drop more.
        attempted = self.recover is not None and not _covered(state.local_drops, first, last)
        got = self._ask(topic, first - 1, seq, anchor=True) if attempted else {}
        if got and self._same_process(state, got, seq, payload) is False:
            self._restart(state, seq, at_s, payload, "replay")
            self._prefix(topic, state, seq, payload, at_s)
            return
        self._fill(state, got, first, last, at_s, attempted)

    def _after_reconnect(
        self, topic: bytes, state: EngineState, seq: int, payload: bytes, at_s: float
    ) -> None:
        """The first batch after the connection dropped: the same process only if the
        replay socket proves it; otherwise a new incarnation, whose batches before ``seq``
        are asked for (never filled from the old process) or declared lost.
        """
        expected = state.next_seq
        assert expected is not None
        if seq >= expected and self.recover is not None and state.last_seq is not None:
            got = self._ask(topic, state.last_seq, seq, anchor=True)
            if self._same_process(state, got, seq, payload):
                if seq > expected:
                    state.gaps += 1
                    self._fill(state, got, expected, seq - 1, at_s, attempted=True)
                return
        self._restart(state, seq, at_s, payload, "seq_back" if seq < expected else "reconnect")
        self._prefix(topic, state, seq, payload, at_s)

    def _prefix(
        self, topic: bytes, state: EngineState, seq: int, payload: bytes, at_s: float
    ) -> None:
        """A new incarnation's first batch seen is ``seq``: its ``0..seq-1`` come from its
        own replay buffer (checked to hold ``seq`` as received) or are lost.
        """
        if seq == 0:
            return
        state.gaps += 1
        attempted = self.recover is not None
        got = self._ask(topic, 0, seq) if attempted else {}
        current = got.get(seq)
        if current is not None and current[0] != payload:
            got = {}  # the replay socket answers for yet another process: nothing proven
        self._fill(state, got, 0, seq - 1, at_s, attempted)

    def _fill(  # noqa: PLR0917 - a range and what the replay socket gave for it
        self, state: EngineState, got: dict[int, tuple[bytes, float]], first: int, last: int,
        at_s: float, attempted: bool,
    ) -> None:  # fmt: skip
        start = first
        for seq in sorted(s for s in got if first <= s <= last):
            if seq > start:
                self._missing(state, start, seq - 1, at_s, attempted)
            payload, recv_s = got[seq]
            state.recovered_batches += 1
            self._batch(state, seq, payload, recv_s)
            at_s = max(at_s, recv_s)
            start = seq + 1
        if start <= last:
            self._missing(state, start, last, at_s, attempted)

    def _restart(
        self, state: EngineState, seq: int, at_s: float, payload: bytes, evidence: str
    ) -> None:
        previous = state.last_seq if state.last_seq is not None else -1
        held = state.forget()
        state.restarts += 1
        state.incarnation += 1
        state.local_drops.clear()
        state.last_payload = None
        engine_ts = _peek_ts(payload)
        self.writer.emit(
            EngineRestartReceipt, at_s, topic=state.topic, engine_seq=seq,
            engine_ts=engine_ts if engine_ts is not None else state.last_engine_ts or 0.0,
            previous_seq=previous, resident_dropped=held, evidence=evidence,
            incarnation=state.incarnation,
        )  # fmt: skip
        state.next_seq = None
        state.last_seq = None

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

    # -- events --------------------------------------------------------------------------

    def _batch(self, state: EngineState, seq: int, payload: bytes, at_s: float) -> None:
        state.next_seq = seq + 1
        state.last_seq = seq
        state.last_payload = payload
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
        if batch.unknown:
            self._unknown(state, batch.unknown)
        rank = batch.dp_rank
        # vLLM sends one BlockRemoved per hash: consecutive removals from one tier are
        # handled as one run, in order, so the per-event cost is paid once per run.
        removing: list[Hash] = []
        key: TierKey | None = None
        events = 0
        ts = batch.ts
        for event in batch.events:
            op = event.op
            if op == REMOVED:
                k = (rank, normal_medium(event.medium), event.group_idx,  # type: ignore[union-attr]
                     event.locality, event.ownership)  # type: ignore[union-attr]  # fmt: skip
                if events and k != key:
                    self._removed(state, seq, ts, removing, key, at_s, events)  # type: ignore[arg-type]
                    removing, events = [], 0
                key = k
                removing += event.hashes  # type: ignore[union-attr]
                events += 1
                continue
            if events:
                self._removed(state, seq, ts, removing, key, at_s, events)  # type: ignore[arg-type]
                removing, events = [], 0
            if op == STORED:
                self._stored(state, seq, ts, event, rank, at_s)  # type: ignore[arg-type]
            else:
                self._cleared(state, seq, ts, rank, at_s)
        if events:
            self._removed(state, seq, ts, removing, key, at_s, events)  # type: ignore[arg-type]
        self._count_kept(state)

    def _count_kept(self, state: EngineState) -> None:
        """Recount what ``state`` keeps over its tiers (a removal in the regret window weighs
        two: an ordered table's entry costs twice a plain one's) and forget the oldest past
        MAX_BLOCKS.
        """
        kept = sum(len(t.resident) + 2 * len(t.removed) for t in state.tiers.values())
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
        tiers = list(state.tiers.values())
        for tier in tiers:  # regret windows first: the oldest removals
            removed = tier.removed
            while removed and dropped < excess:
                removed.popitem(last=False)
                dropped += 2
        for tier in tiers:
            if dropped >= excess:
                break
            blocks = tier.resident
            cut = min(len(blocks), excess - dropped)
            for block_hash in list(islice(blocks, cut)):  # insertion order: the oldest first
                del blocks[block_hash]
            dropped += cut
        state.kept -= dropped
        self.kept -= dropped
        self.forgotten += dropped

    def _unknown(self, state: EngineState, unknown: dict[str, int]) -> None:
        """Unknown event types and fields: counted per engine, reported once each."""
        for name, n in unknown.items():
            state.unknown.add(name, n)
            if name.startswith("type:"):
                state.events["unknown"] += n
            if name not in self._reported and len(self._reported) < MAX_UNKNOWN:
                self._reported.add(name)
                what = f"event type {shorten(name[5:])!r}" if name.startswith("type:") else \
                    f"field {shorten(name)!r}"  # fmt: skip
                self.report(f"topic {state.topic!r}: unknown {what} (skipped; counted in the "
                            "engine_tally receipt, reported once)")  # fmt: skip

    def _removed(  # noqa: PLR0917 - the hot path: positional arguments cost least
        self, state: EngineState, seq: int, ts: float, hashes: Sequence[Hash], key: TierKey,
        at_s: float, events: int,
    ) -> None:  # fmt: skip
        state.events["BlockRemoved"] += events
        tier = state.tiers.get(key) or state.tier(key)
        resident = tier.resident
        removed = tier.removed
        if removed:
            self._prune(removed, ts)
        writer = self.writer
        timestamp = writer.stamp(at_s)
        stamp = timestamp.encode()
        template = self._removal_template
        rank_json, group_json, place_json = tier.fragments
        engine_ts = dumps(ts)
        head = batch_fragment(rank_json, seq, engine_ts, group_json)
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
            if held is None:  # stored before the watch (or the clear, or the restart)
                payloads.append(template % (
                    dumps(block_hash), b"null", head, place_json, b"null", b"null",
                    receipt_seq, b"null", b"null", stamp, b"null", topic,
                ))  # fmt: skip
            else:
                stored_ts, parent, facts = held
                residency = dumps(round((ts - stored_ts) * 1000.0, 3))
                payloads.append(template % (
                    dumps(block_hash), facts[2], head, place_json, dumps(parent), residency,
                    receipt_seq, facts[0], facts[3], stamp, facts[1], topic,
                ))  # fmt: skip
            removed.pop(block_hash, None)
            removed[block_hash] = (ts, receipt_seq)
            receipt_seq += 1
        put("engine_removal", timestamp, payloads)
        tier.removals += len(hashes)

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

    def _facts(self, store: bytes, tokens: int | None, ts_json: bytes) -> Facts:
        """What a removal line says of a store, as JSON made once per store event: the store
        object, tokens, bytes freed and the store's time.
        """
        per_token = self.bytes_per_token
        freed = tokens * per_token if per_token is not None and tokens is not None else None
        return (store, dumps(tokens), dumps(freed), ts_json)

    def _store_json(self, event: StoredEvent, salt: str | None) -> bytes:
        """The ``store`` object of the removal receipts of this store's blocks (shared)."""
        facts = (salt, event.kv_cache_spec_kind, event.kv_cache_spec_sliding_window,
                 event.lora_name, event.session_id)  # fmt: skip
        cached = self._stores.get(facts)
        if cached is None:
            if len(self._stores) > 4096:  # session ids vary: keep the memo small
                self._stores.clear()
            cached = self._stores[facts] = dumps(dict(zip(
                ("cache_salt", "kv_cache_spec_kind", "kv_cache_spec_sliding_window",
                 "lora_name", "session_id"), facts, strict=True,
            )), option=_SORT)  # fmt: skip
        return cached

    def _stored(  # noqa: PLR0917 - the hot path: positional arguments cost least
        self, state: EngineState, seq: int, ts: float, event: StoredEvent, rank: int | None,
        at_s: float,
    ) -> None:  # fmt: skip
        key = (rank, normal_medium(event.medium), event.group_idx, event.locality, event.ownership)
        tier = state.tiers.get(key) or state.tier(key)
        if event.kv_cache_spec_kind is not None:
            tier.spec_kind = event.kv_cache_spec_kind
        state.events["BlockStored"] += 1
        removed = tier.removed
        if removed:
            self._prune(removed, ts)
        resident = tier.resident
        salt = event.cache_salt or cache_salt(event.extra_keys, event.lora_name)
        store = self._store_json(event, salt)
        ts_json = dumps(ts)
        hashes = event.hashes
        size = event.block_size
        tokens = block_tokens(len(hashes), size, event.token_ids)
        facts = self._facts(store, size, ts_json)
        parent = event.parent
        hits: list[Hash] = []
        new = 0
        for index, block_hash in enumerate(hashes):
            if block_hash in resident:
                # Stored again while resident: a reuse report (vLLM's
                # kv_cache_report_mode="full"), a hit; its residency clock keeps running.
                hits.append(block_hash)
                parent = block_hash
                continue
            resident[block_hash] = (ts, parent, facts if tokens is None
                                    else self._facts(store, tokens[index], ts_json))  # fmt: skip
            parent = block_hash
            new += 1
            gone = removed.pop(block_hash, None) if removed else None
            if gone is not None:
                tier.regret += 1
                self.writer.emit(
                    EngineRestoreReceipt, at_s, topic=state.topic, engine_seq=seq,
                    engine_ts=ts, dp_rank=rank, group_idx=key[2], medium=key[1],
                    block_hash=block_hash, removal_seq=gone[1], removed_ts=gone[0],
                    gap_ms=round((ts - gone[0]) * 1000.0, 3),
                )  # fmt: skip
        tier.stores += new
        if hits:
            tier.hits += len(hits)
            self.writer.emit(
                EngineReuseReceipt, at_s, topic=state.topic, engine_seq=seq, engine_ts=ts,
                dp_rank=rank, group_idx=key[2], locality=key[3], ownership=key[4],
                medium=key[1], blocks=len(hits), block_hashes=hits,
                session_id=event.session_id, lora_name=event.lora_name, cache_salt=salt,
            )  # fmt: skip

    def _cleared(
        self, state: EngineState, seq: int, ts: float, rank: int | None, at_s: float
    ) -> None:
        state.events["AllBlocksCleared"] += 1
        state.clears += 1
        count = kept = 0
        for key, tier in state.tiers.items():
            if key[1] in GPU_MEDIA and (rank is None or key[0] == rank):
                count += len(tier.resident)
                tier.resident.clear()
            else:
                kept += len(tier.resident)
        self.writer.emit(
            EngineClearReceipt, at_s, topic=state.topic, engine_seq=seq, engine_ts=ts,
            dp_rank=rank, count=count, kept=kept,
        )  # fmt: skip

    # -- totals -------------------------------------------------------------------------

    @property
    def lost_batches(self) -> int:
        """Batches declared lost, over all engines."""
        return sum(s.lost_batches for s in self.engines.values())


def _check_batch(state: EngineState, batch: Batch) -> None:
    """Refuse a batch whose time is not finite or that names a medium, locality or ownership
    too long, or a medium or tier too many for one engine.
    """
    if not math.isfinite(batch.ts):
        raise WireError(f"batch ts {batch.ts!r} is not a finite number")
    rank = batch.dp_rank
    places = {
        (rank, getattr(e, "medium", None), getattr(e, "group_idx", None),
         getattr(e, "locality", None), getattr(e, "ownership", None))
        for e in batch.events
    }  # fmt: skip
    new = places - state.places
    if not new:
        return
    for place in new:
        for what, name in (("a medium", place[1]), ("a locality", place[3]),
                           ("an ownership", place[4])):  # fmt: skip
            if name is not None and len(name) > MAX_MEDIUM:
                raise WireError(f"{what} name of {len(name):,} characters (at most "
                                f"{MAX_MEDIUM})")  # fmt: skip
    media = state.media | {place[1] for place in new}
    if len(media) > MAX_MEDIA:
        raise WireError(f"more than {MAX_MEDIA} media named by one engine")
    if len(state.places) + len(new) > MAX_TIERS:
        raise WireError(f"more than {MAX_TIERS} tiers (rank, medium, group, locality, "
                        "ownership) named by one engine")  # fmt: skip
    state.media = media
    state.places |= new


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
