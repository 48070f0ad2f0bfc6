"""The live side of a watch: the ZMQ subscriber thread and the replay client.

The subscriber thread only receives and queues, so a slow output can never make it miss the
socket: when the bounded queue is full it drops the message and remembers its seq, and the
core declares those batches lost (unless the replay socket gives them back).
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

import zmq

from kvreceipts.engine.recording import END, REPLY
from kvreceipts.engine.wire import END_SEQ, collect_replies, parse_seq
from kvreceipts.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from kvreceipts.engine.recording import Recorder
    from kvreceipts.engine.wire import Recovered

__all__ = ["ReplayClient", "Subscriber", "check_endpoint"]

_TCP = re.compile(r"^tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+|\*):(?P<port>\d{1,5})$")

Message = tuple[list[bytes], float]
REPLY_PAUSE_S = 0.5
"""Seconds without a reply that end an answer already flowing."""
CHUNK = 512
"""Messages the subscriber hands over at once at most."""


def check_endpoint(endpoint: str, option: str = "ENDPOINT") -> str:
    """A ZMQ address to connect to (``tcp://host:port``, ``ipc://path``), or a usage error."""
    if endpoint.startswith(("ipc://", "inproc://")) and len(endpoint.split("://", 1)[1]) > 0:
        return endpoint
    match = _TCP.match(endpoint)
    if match is None:
        raise UsageError(
            f"{option} {endpoint!r} is not a ZMQ address: give tcp://HOST:PORT "
            "(e.g. tcp://gpu-host:5557) or ipc://PATH"
        )
    if match["host"] == "*":
        raise UsageError(
            f"{option} {endpoint!r} is the engine's bind address; connect to its host, "
            f"e.g. tcp://127.0.0.1:{match['port']}"
        )
    if not 0 < int(match["port"]) < 65536:
        raise UsageError(f"{option} {endpoint!r}: port must be 1-65535")
    return endpoint


class Buffer:
    """A bounded queue of messages, handed over in chunks (one lock round per chunk, not per
    message); :meth:`put` never waits and gives back what did not fit.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.held = 0
        self._chunks: deque[list[Message]] = deque()
        self._ready = threading.Condition()

    def put(self, chunk: list[Message]) -> list[Message]:
        """Queue what fits of ``chunk``; returns the rest (to be dropped)."""
        with self._ready:
            room = self.size - self.held
            kept, over = (chunk, []) if room >= len(chunk) else (chunk[:room], chunk[room:])
            if kept:
                self._chunks.append(kept)
                self.held += len(kept)
                self._ready.notify()
        return over

    def get(self, timeout: float | None) -> list[Message]:
        """The oldest chunk; empty if none came within ``timeout`` (``None``: do not wait)."""
        with self._ready:
            if not self._chunks and timeout is not None:
                self._ready.wait(timeout)
            if not self._chunks:
                return []
            chunk = self._chunks.popleft()
            self.held -= len(chunk)
            return chunk


class Subscriber(threading.Thread):
    """Receives on a SUB socket into a bounded :class:`Buffer`; never blocks on it.

    pyzmq's socket monitor tells it when the connection to the engine drops: it queues an
    empty message there (after everything the old connection delivered), which the core
    takes as "continuity unproven" (a TCP connection never outlives the engine process).
    """

    def __init__(
        self, context: zmq.Context[zmq.Socket[bytes]], endpoint: str, topic: bytes,
        queue_size: int,
    ) -> None:  # fmt: skip
        super().__init__(name="kvreceipts-watch-sub", daemon=True)
        self.queue = Buffer(queue_size)
        self.stop = threading.Event()
        self.received = 0
        self.dropped = 0
        self._drops: list[tuple[bytes, int]] = []
        self._drops_lock = threading.Lock()
        self._socket = context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.RCVHWM, 0)  # ZMQ queues freely; our queue is the bound
        self._socket.setsockopt(zmq.SUBSCRIBE, topic)
        self.connected = 0
        """Handshakes with a publisher (0: nothing ever answered at the endpoint)."""
        self.disconnects = 0
        self.lost_marker = False
        """A disconnect our full queue could not hold (the core is told at the next drop
        feed)."""
        handshake = getattr(zmq, "EVENT_HANDSHAKE_SUCCEEDED", zmq.EVENT_CONNECTED)
        self._handshake = handshake
        self._monitor = self._socket.get_monitor_socket(handshake | zmq.EVENT_DISCONNECTED)
        self._socket.connect(endpoint)

    def run(self) -> None:
        """Receive until :attr:`stop` is set."""
        sock, put, now = self._socket, self.queue.put, time.time
        recv, again = sock.recv_multipart, zmq.Again
        monitor = self._monitor
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        try:
            while not self.stop.is_set():
                ready = dict(poller.poll(50))
                if not ready:
                    continue
                chunk: list[Message] = []
                watching = monitor in ready
                # After a disconnect event, first take everything the old connection left.
                while watching or len(chunk) < CHUNK:  # what is ready, up to a chunk
                    try:
                        frames = recv(zmq.NOBLOCK)
                    except again:
                        break
                    chunk.append((frames, now()))
                received = len(chunk)
                if watching:
                    chunk.extend(self._events())
                self.received += received
                for frames, _at in put(chunk):
                    self._drop(frames)
        finally:
            sock.disable_monitor()
            monitor.close(0)
            sock.close(0)

    def _events(self) -> list[Message]:
        from zmq.utils.monitor import recv_monitor_message

        markers: list[Message] = []
        while True:
            try:
                event = recv_monitor_message(self._monitor, zmq.NOBLOCK)
            except zmq.Again:
                return markers
            if event["event"] == zmq.EVENT_DISCONNECTED:
                self.disconnects += 1
                markers.append(([], time.time()))
            elif event["event"] == self._handshake:
                self.connected += 1

    def close(self) -> None:
        """Close the socket of a subscriber that never started."""
        self._socket.disable_monitor()
        self._monitor.close(0)
        self._socket.close(0)

    def _drop(self, frames: list[bytes]) -> None:
        if not frames:
            self.lost_marker = True
            return
        self.dropped += 1
        if len(frames) != 3 or len(frames[1]) != 8:
            return  # not a batch: the core would have skipped it anyway
        with self._drops_lock:
            self._drops.append((frames[0], parse_seq(frames[1])))

    def take_drops(self) -> list[tuple[bytes, int, int]]:
        """Dropped batches since the last call, as (topic, first seq, last seq) runs."""
        with self._drops_lock:
            drops, self._drops = self._drops, []
        runs: list[tuple[bytes, int, int]] = []
        for topic, seq in drops:
            if runs and runs[-1][0] == topic and runs[-1][2] + 1 == seq:
                runs[-1] = (topic, runs[-1][1], seq)
            else:
                runs.append((topic, seq, seq))
        return runs


class ReplayClient:
    """Asks the engine's ROUTER replay socket (with a DEALER) for the batches from a seq on."""

    def __init__(
        self,
        context: zmq.Context[zmq.Socket[bytes]],
        endpoint: str,
        *,
        timeout_s: float,
        report: Callable[[str], None],
        recorder: Recorder | None = None,
    ) -> None:
        self.context = context
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.report = report
        self.recorder = recorder
        self.requests = 0

    def __call__(self, topic: bytes, first: int, last: int) -> list[Recovered]:
        """Request ``first..`` and read replies until the end marker, a seq past ``last``,
        or the timeout; once replies flow, a pause of :data:`REPLY_PAUSE_S` also ends the
        answer (a ROUTER past its send high-water mark drops the rest, end marker included:
        SGLang's and vLLM 0.10's keep ZMQ's default of 1,000). The core asks again from the
        first seq still missing.
        """
        self.requests += 1
        replies: list[tuple[list[bytes], float]] = []
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(self.endpoint)
            sock.send_multipart([b"", first.to_bytes(8, "big")])
            deadline = time.monotonic() + self.timeout_s
            while True:
                left = deadline - time.monotonic()
                if replies:
                    left = min(left, REPLY_PAUSE_S)
                if left <= 0 or not sock.poll(int(left * 1000) + 1):
                    asked = f"asked for seq {first}..{last}"
                    self.report(
                        f"replay: the answer stopped before its end marker ({asked}; "
                        f"{len(replies):,} replies)"
                        if replies
                        else f"replay: no answer within {self.timeout_s:g} s ({asked})"
                    )
                    break
                frames = sock.recv_multipart()
                at_s = time.time()
                replies.append((frames, at_s))
                if self.recorder is not None:
                    self.recorder.entry(REPLY, at_s, frames)
                body = frames[1:] if frames and frames[0] == b"" else frames
                if END_SEQ in body[:2] or _past(body, last):
                    break
        finally:
            sock.close(0)
            if self.recorder is not None:
                self.recorder.entry(END, time.time(), [])
        return collect_replies(replies, topic, last, self.report)


def _past(body: list[bytes], last: int) -> bool:
    seq = body[1] if len(body) == 3 else body[0] if len(body) == 2 else b""
    return len(seq) == 8 and int.from_bytes(seq, "big") > last
