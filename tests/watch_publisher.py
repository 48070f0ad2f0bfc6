"""A test engine: publishes KV events the way vLLM does (XPUB + ROUTER replay), from the
facts in ENGINE_EVENTS.md. Used by the watch tests, the recorded fixture and the benchmark.

XPUB (wire-compatible with PUB) lets a test wait until the watch has subscribed, so that no
message is lost to ZMQ's slow-joiner window unless the test wants it lost.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgspec
import zmq

END = [b"", b"", (-1).to_bytes(8, "big", signed=True), b""]


def stored(
    hashes: list[Any], parent: Any = None, medium: str | None = "GPU", *, layout: str = "map",
    extra: bool = False,
) -> Any:  # fmt: skip
    """A BlockStored event in either layout (``extra``: unknown fields the decoder ignores)."""
    if layout == "array":
        event = ["BlockStored", hashes, parent, [1, 2, 3], 16, None, medium, None]
        return [*event, "future-field"] if extra else event
    body = {"type": "BlockStored", "block_hashes": hashes, "parent_block_hash": parent,
            "token_ids": [1, 2, 3], "block_size": 16, "lora_id": None, "medium": medium,
            "lora_name": None}  # fmt: skip
    if extra:
        body |= {"kv_cache_spec_kind": "full", "something_new": [1, 2]}
    return body


def removed(hashes: list[Any], medium: str | None = "GPU", *, layout: str = "map") -> Any:
    """A BlockRemoved event in either layout."""
    if layout == "array":
        return ["BlockRemoved", hashes, medium]
    return {"type": "BlockRemoved", "block_hashes": hashes, "medium": medium}


def cleared(*, layout: str = "map") -> Any:
    """An AllBlocksCleared event."""
    return ["AllBlocksCleared"] if layout == "array" else {"type": "AllBlocksCleared"}


@dataclass
class Engine:
    """One engine process: its topic, its seq counter and its replay buffer."""

    topic: bytes = b""
    seq: int = 0
    buffer: deque[tuple[int, bytes]] = field(default_factory=lambda: deque(maxlen=10_000))


class Publisher:
    """XPUB on a random 127.0.0.1 port, and a ROUTER replay socket served by a thread."""

    def __init__(self, *, replay: bool = True, old_replies: bool = False) -> None:
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.pub = self.context.socket(zmq.XPUB)
        self.pub.setsockopt(zmq.SNDHWM, 0)
        self.pub.setsockopt(zmq.LINGER, 0)
        port = self.pub.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.old_replies = old_replies
        self.engines: dict[bytes, Engine] = {}
        self.lock = threading.Lock()
        self.replay_requests: list[int] = []
        self.replay_endpoint: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if replay:
            router = self.context.socket(zmq.ROUTER)
            router.setsockopt(zmq.LINGER, 0)
            rport = router.bind_to_random_port("tcp://127.0.0.1")
            self.replay_endpoint = f"tcp://127.0.0.1:{rport}"
            self._thread = threading.Thread(target=self._serve, args=(router,), daemon=True)
            self._thread.start()

    def engine(self, topic: bytes = b"") -> Engine:
        """The engine publishing on ``topic``."""
        return self.engines.setdefault(topic, Engine(topic))

    def wait_subscribed(self, timeout: float = 10.0) -> None:
        """Block until a subscriber's subscription arrives."""
        if not self.pub.poll(int(timeout * 1000)):
            raise TimeoutError("no subscriber within the timeout")
        self.pub.recv()

    def batch(
        self, events: list[Any], *, topic: bytes = b"", ts: float | None = None,
        skip: bool = False, rank: Any = 0, payload: bytes | None = None,
    ) -> int:  # fmt: skip
        """Publish one batch (``skip``: only buffer it for replay, as if PUB dropped it).
        Returns its seq.
        """
        engine = self.engine(topic)
        if payload is None:
            payload = msgspec.msgpack.encode([time.time() if ts is None else ts, events, rank])
        with self.lock:
            seq = engine.seq
            engine.seq += 1
            engine.buffer.append((seq, payload))
        if not skip:
            self.pub.send_multipart([topic, seq.to_bytes(8, "big"), payload])
        return seq

    def raw(self, frames: list[bytes]) -> None:
        """Publish frames as they are (malformed messages)."""
        self.pub.send_multipart(frames)

    def restart(self, topic: bytes = b"") -> None:
        """The engine restarts: seq back to 0, replay buffer gone."""
        with self.lock:
            self.engines[topic] = Engine(topic)

    def _serve(self, router: zmq.Socket[bytes]) -> None:
        try:
            while not self._stop.is_set():
                if not router.poll(50):
                    continue
                identity, _empty, start = router.recv_multipart()
                first = int.from_bytes(start, "big")
                self.replay_requests.append(first)
                with self.lock:
                    kept = [(e.topic, s, p) for e in self.engines.values() for s, p in e.buffer
                            if s >= first]  # fmt: skip
                for topic, seq, payload in kept:
                    body = [seq.to_bytes(8, "big"), payload]
                    router.send_multipart([identity, b"", *([] if self.old_replies
                                                            else [topic]), *body])  # fmt: skip
                router.send_multipart([identity, *END])
        finally:
            router.close(0)

    def close(self) -> None:
        """Stop the replay thread and close the sockets."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.pub.close(0)
        self.context.term()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
