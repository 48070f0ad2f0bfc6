"""One watch from start to stop: live from a ZMQ endpoint, or offline from a recording.

Both build the same :class:`~kvreceipts.engine.core.WatchCore` and feed it the same inputs, so
a recording replays to the same receipts byte for byte.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kvreceipts.engine.core import WatchCore
from kvreceipts.engine.recording import (
    DISCONNECT,
    DROP,
    END,
    FINISH,
    MESSAGE,
    REPLY,
    Recorder,
    RecordingReader,
)
from kvreceipts.engine.wire import collect_replies
from kvreceipts.engine.writer import RunWriter
from kvreceipts.errors import InputError, UsageError

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Iterator

    from kvreceipts.checkpoints import Checkpoints
    from kvreceipts.engine.recording import Entry
    from kvreceipts.engine.wire import Recovered
    from kvreceipts.sinks.base import BaseSink

__all__ = ["WatchOptions", "WatchResult", "watch_live", "watch_recording"]

DEFAULT_REGRET_WINDOW_S = 60.0
WORKLOAD = ("endpoint", "topic", "replay_endpoint", "regret_window_s", "bytes_per_token")
"""What the open record says a watch watches (``workload``)."""


@dataclass(slots=True)
class WatchOptions:
    """What to watch and when to stop."""

    endpoint: str = ""
    topic: str = ""
    replay_endpoint: str | None = None
    replay_timeout_s: float = 2.0
    regret_window_s: float = DEFAULT_REGRET_WINDOW_S
    idle_timeout_s: float | None = None
    max_batches: int | None = None
    queue_size: int = 100_000
    """Messages held between the socket and the receipts: as deep as vLLM's own PUB buffer
    (hwm 100,000), so a burst the watch cannot follow at once is absorbed, not dropped."""
    record: str | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    tick_s: float = 0.25
    bytes_per_token: int | None = None
    checkpoints: Checkpoints | None = None
    """Signing and checkpoint records (``--sign-key``, ``--checkpoint-every``, ...)."""
    checkpoint_interval_s: float = 0.0
    """Also a checkpoint record once this many seconds passed since the last one."""


@dataclass(slots=True)
class WatchResult:
    """How a watch went."""

    run_id: str
    core: WatchCore
    writer: RunWriter
    stopped_by: str
    """signal, idle, max-batches, end of recording."""
    duration_s: float
    received: int = 0
    connected: int = 0
    """Handshakes with a publisher (live watches; 0: nothing ever answered)."""
    queue_dropped: int = 0
    torn_recording: bool = False
    header: dict[str, Any] = field(default_factory=dict)

    @property
    def lost_batches(self) -> int:
        """Batches declared lost (engine_loss records)."""
        return self.core.lost_batches

    @property
    def receipts(self) -> int:
        """Receipts written."""
        return self.writer.next_seq


def _core(
    *,
    header: dict[str, Any],
    sink: BaseSink,
    key: bytes | None,
    regret_window_s: float,
    recover: Callable[[bytes, int, int], list[Recovered]] | None,
    report: Callable[[str], None],
    bytes_per_token: int | None = None,
    checkpoints: Checkpoints | None = None,
    checkpoint_interval_s: float = 0.0,
) -> tuple[WatchCore, RunWriter]:
    writer = RunWriter(
        sink, run_id=header["run_id"], start_s=header["start_s"], key=key,
        checkpoints=checkpoints, checkpoint_interval_s=checkpoint_interval_s,
    )  # fmt: skip
    core = WatchCore(writer, regret_window_s=regret_window_s, recover=recover, report=report,
                     bytes_per_token=bytes_per_token)  # fmt: skip
    return core, writer


def _open(writer: RunWriter, header: dict[str, Any]) -> None:
    """The run's open record, once everything that can fail has been set up."""
    writer.open(workload={name: header.get(name) for name in WORKLOAD})


def _close(core: WatchCore, writer: RunWriter, end_s: float) -> None:
    """Losses our queue left at the end, then the close record."""
    core.finish(end_s)
    engines = core.engines.values()
    writer.close(
        end_s,
        resident_blocks=sum(s.held for s in engines),
        removals=sum(sum(s.removals.values()) for s in engines),
    )


def watch_live(
    options: WatchOptions,
    sink: BaseSink,
    *,
    stop: threading.Event,
    key: bytes | None = None,
    report: Callable[[str], None] | None = None,
    tick: Callable[[WatchCore, Any], None] | None = None,
    ready: Callable[[Any], None] | None = None,
) -> WatchResult:
    """Subscribe to ``options.endpoint`` until ``stop`` is set, the idle timeout passes or
    ``max_batches`` messages were handled. ``tick(core, subscriber)`` runs every
    ``tick_s``; ``ready(metrics_server or None)`` once the sockets are up.
    """
    import zmq

    from kvreceipts.engine.live import ReplayClient, Subscriber

    say = report or (lambda _message: None)
    started = time.time()
    run_id = uuid.uuid4().hex
    header: dict[str, Any] = {
        "run_id": run_id,
        "start_s": started,
        "source": "watch",
        "endpoint": options.endpoint,
        "topic": options.topic,
        "replay_endpoint": options.replay_endpoint,
        "regret_window_s": options.regret_window_s,
        "bytes_per_token": options.bytes_per_token,
    }
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    recorder: Recorder | None = None
    sub: Subscriber | None = None
    metrics = None
    done = False
    try:
        recorder = Recorder(options.record, header) if options.record else None
        replay = (
            ReplayClient(context, options.replay_endpoint, timeout_s=options.replay_timeout_s,
                         report=say, recorder=recorder)
            if options.replay_endpoint else None
        )  # fmt: skip
        core, writer = _core(header=header, sink=sink, key=key, recover=replay, report=say,
                             regret_window_s=options.regret_window_s,
                             bytes_per_token=options.bytes_per_token,
                             checkpoints=options.checkpoints,
                             checkpoint_interval_s=options.checkpoint_interval_s)  # fmt: skip
        if options.metrics_port is not None:
            from kvreceipts.engine.metrics import MetricsServer

            metrics = MetricsServer(core, options.metrics_host, options.metrics_port,
                                    dropped=lambda: sub.dropped if sub else 0)  # fmt: skip
        try:
            sub = Subscriber(context, options.endpoint, options.topic.encode(), options.queue_size)
        except zmq.ZMQError as exc:
            raise UsageError(f"cannot subscribe to {options.endpoint}: {exc}") from None
        _open(writer, header)
        sub.start()
        if ready is not None:
            ready(metrics)
        stopped_by = _loop(options, core=core, sub=sub, stop=stop, recorder=recorder, tick=tick)
        done = True
    finally:
        if sub is not None:
            sub.stop.set()
            if sub.is_alive():
                sub.join()
            else:
                sub.close()
        if metrics is not None:
            metrics.close()
        if recorder is not None and not done:
            recorder.close()
        context.term()
    end = time.time()
    _feed_drops(core, sub, recorder)
    if recorder is not None:
        recorder.entry(FINISH, end, [])
        recorder.close()
    _close(core, writer, end)
    return WatchResult(header["run_id"], core, writer, stopped_by, end - started,
                       received=sub.received, connected=sub.connected,
                       queue_dropped=sub.dropped, header=header)  # fmt: skip


def _feed_drops(core: WatchCore, sub: Any, recorder: Recorder | None) -> None:
    if sub.lost_marker:  # a disconnect our full queue could not hold
        sub.lost_marker = False
        _disconnected(core, recorder, time.time())
    for topic, first, last in sub.take_drops():
        if recorder is not None:
            recorder.entry(DROP, 0.0, [topic, first.to_bytes(8, "big"), last.to_bytes(8, "big")])
        core.dropped(topic, first, last)


def _disconnected(core: WatchCore, recorder: Recorder | None, at_s: float) -> None:
    if recorder is not None:
        recorder.entry(DISCONNECT, at_s, [])
    core.disconnected()


def _handle(
    core: WatchCore, chunk: list[tuple[list[bytes], float]], record: Any, recorder: Any,
    limit: int | None,
) -> bool:  # fmt: skip
    """Feed one chunk; True once ``limit`` messages were handled."""
    for frames, at_s in chunk:
        if not frames:
            _disconnected(core, recorder, at_s)
            continue
        if record is not None:
            record(MESSAGE, at_s, frames)
        core.message(frames, at_s)
        if limit is not None and core.messages >= limit:
            return True
    return False


def _loop(
    options: WatchOptions,
    *,
    core: WatchCore,
    sub: Any,
    stop: threading.Event,
    recorder: Recorder | None,
    tick: Callable[[WatchCore, Any], None] | None,
) -> str:
    get = sub.queue.get
    idle = options.idle_timeout_s
    limit = options.max_batches
    record = recorder.entry if recorder is not None else None
    last_message = next_tick = time.monotonic()
    while True:
        if stop.is_set():
            reason = "signal"
            break
        now = time.monotonic()
        if tick is not None and now >= next_tick:
            tick(core, sub)
            next_tick = now + options.tick_s
        chunk = get(0.05)
        if not chunk:
            if idle is not None and time.monotonic() - last_message >= idle:
                return "idle"
            continue
        last_message = time.monotonic()
        if sub.dropped or sub.lost_marker:  # after the get: a drop is taken before the
            _feed_drops(core, sub, recorder)  # message that follows it
        if _handle(core, chunk, record, recorder, limit):
            return "max-batches"
        last_message = time.monotonic()  # idle counts from the end of the work (a replay
        # request can take --replay-timeout seconds)
    # Stopped by a signal: what was already received is handled, then the watch ends.
    while chunk := get(None):
        _handle(core, chunk, record, recorder, None)
    return reason


def watch_recording(
    path: str,
    sink: BaseSink,
    *,
    key: bytes | None = None,
    regret_window_s: float | None = None,
    report: Callable[[str], None] | None = None,
    max_batches: int | None = None,
    bytes_per_token: int | None = None,
    checkpoints: Checkpoints | None = None,
    checkpoint_interval_s: float = 0.0,
) -> WatchResult:
    """Re-read a recording made by ``watch --record``: the same receipts as the live run
    (checkpoint intervals count the recording's own time).
    """
    say = report or (lambda _message: None)
    reader = RecordingReader(path)
    header = reader.header
    try:
        window = (
            regret_window_s
            if regret_window_s is not None
            else float(header.get("regret_window_s", DEFAULT_REGRET_WINDOW_S))
        )
        entries = _Peekable(reader.entries())
        recover = _recorded_replay(entries, path, say) if header.get("replay_endpoint") else None
        per_token = bytes_per_token if bytes_per_token is not None else \
            header.get("bytes_per_token")  # fmt: skip
        header = {**header, "bytes_per_token": per_token}
        core, writer = _core(header=header, sink=sink, key=key, regret_window_s=window,
                             recover=recover, report=say, bytes_per_token=per_token,
                             checkpoints=checkpoints,
                             checkpoint_interval_s=checkpoint_interval_s)  # fmt: skip
        _open(writer, header)
        started = time.perf_counter()
        end_s: float | None = None
        stopped_by = "end of recording"
        for entry in entries:
            kind = entry.type
            if kind == MESSAGE:
                core.message(entry.frames, entry.at_s)
                if max_batches is not None and core.messages >= max_batches:
                    stopped_by = "max-batches"
                    break
            elif kind == DISCONNECT:
                core.disconnected()
            elif kind == DROP:
                core.dropped(*_drop(entry.frames, path))
            elif kind == FINISH:
                end_s = entry.at_s
                break
            else:
                raise InputError(f"unexpected entry {kind!r} in the recording", path=path)
        if end_s is None:
            if reader.torn:
                say(f"{path}: the recording ends mid-entry (the watch was killed); "
                    "replayed what is whole")  # fmt: skip
            end_s = writer.at_s
        _close(core, writer, end_s)
    finally:
        reader.close()
    return WatchResult(header["run_id"], core, writer, stopped_by,
                       time.perf_counter() - started, received=core.messages,
                       torn_recording=reader.torn, header=header)  # fmt: skip


def _drop(frames: list[bytes], path: str) -> tuple[bytes, int, int]:
    """A recorded drop's topic and seq range, checked (8-byte seqs, first <= last)."""
    if len(frames) != 3 or len(frames[1]) != 8 or len(frames[2]) != 8:
        raise InputError("a drop entry must hold a topic and two 8-byte seqs", path=path)
    first, last = int.from_bytes(frames[1], "big"), int.from_bytes(frames[2], "big")
    if first > last or last >= 1 << 63:
        raise InputError(f"a drop entry's seqs {first}..{last} are not a range of engine seqs",
                         path=path)  # fmt: skip
    return frames[0], first, last


def _recorded_replay(
    entries: _Peekable, path: str, report: Callable[[str], None]
) -> Callable[[bytes, int, int], list[Recovered]]:
    """Answers replay requests from the recording: the replies recorded after the message.
    A request the live run did not make (a recording from an older version) gets no answer,
    and the entry that follows stays for the main loop.
    """

    def recover(topic: bytes, first: int, last: int) -> list[Recovered]:
        del first  # the recording holds the answer to the request the live run made
        replies: list[tuple[list[bytes], float]] = []
        while (entry := entries.peek()) is not None:
            if entry.type == END:
                next(entries)
                return collect_replies(replies, topic, last, report)
            if entry.type != REPLY:
                break
            replies.append((entry.frames, entry.at_s))
            next(entries)
        if replies:
            raise InputError("the recording ends in the middle of a replay answer", path=path)
        return []

    return recover


class _Peekable:
    """An iterator of entries that can look at the next one without taking it."""

    def __init__(self, entries: Iterator[Entry]) -> None:
        self._entries = entries
        self._next: Entry | None = None

    def peek(self) -> Entry | None:
        if self._next is None:
            self._next = next(self._entries, None)
        return self._next

    def __iter__(self) -> _Peekable:
        return self

    def __next__(self) -> Entry:
        entry = self.peek()
        if entry is None:
            raise StopIteration
        self._next = None
        return entry


def watch_trtllm(
    path: str,
    sink: BaseSink,
    *,
    key: bytes | None = None,
    regret_window_s: float | None = None,
    report: Callable[[str], None] | None = None,
    max_batches: int | None = None,
    bytes_per_token: int | None = None,
) -> WatchResult:
    """Read TensorRT-LLM KV-cache events as JSON lines (``-``: stdin), as a watch does its
    ZMQ stream (see :mod:`kvreceipts.engine.trtllm`). There is no replay socket: a gap in
    ``event_id`` is a loss.
    """
    import sys

    from kvreceipts.engine.trtllm import TrtllmDecoder

    say = report or (lambda _message: None)
    started = time.time()
    header: dict[str, Any] = {
        "run_id": uuid.uuid4().hex, "start_s": started, "source": "watch",
        "endpoint": f"trtllm:{path}", "topic": "", "replay_endpoint": None,
        "regret_window_s": DEFAULT_REGRET_WINDOW_S if regret_window_s is None
        else regret_window_s, "bytes_per_token": bytes_per_token,
    }  # fmt: skip
    core, writer = _core(header=header, sink=sink, key=key, recover=None, report=say,
                         regret_window_s=header["regret_window_s"],
                         bytes_per_token=bytes_per_token)  # fmt: skip
    stream = sys.stdin.buffer if path == "-" else None
    handle = stream if stream is not None else _open_lines(path)
    decoder = TrtllmDecoder("<stdin>" if path == "-" else path)
    stopped_by = "end of input"
    try:
        _open(writer, header)
        lines = ((line, time.time()) for line in handle)
        for frames, at_s in decoder.messages(lines):
            core.message(frames, at_s)
            if max_batches is not None and core.messages >= max_batches:
                stopped_by = "max-batches"
                break
    finally:
        if stream is None:
            handle.close()
    end = max(time.time(), writer.at_s)
    _close(core, writer, end)
    return WatchResult(header["run_id"], core, writer, stopped_by, end - started,
                       received=core.messages, header=header)  # fmt: skip


def _open_lines(path: str) -> Any:
    from kvreceipts.errors import open_file

    return open_file(path, "TensorRT-LLM events file")
