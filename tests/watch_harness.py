"""Running ``watch`` in-process against a test publisher, collecting its receipt lines."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import orjson

from kvreceipts.engine.session import WatchOptions, WatchResult, watch_live
from kvreceipts.sinks import BaseSink

if TYPE_CHECKING:
    from kvreceipts.engine.core import WatchCore
    from kvreceipts.receipts import Record
    from watch_publisher import Publisher


class Lines(BaseSink):
    """Keeps every sealed line; ``delay`` seconds per record makes it a slow output."""

    name = "lines"

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.lines: list[bytes] = []
        self.delay = delay

    def deliver(self, record: Record) -> None:
        if self.delay:
            time.sleep(self.delay)
        self.lines.append(record.line)
        self.count("delivered")

    @property
    def records(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.lines]


class Watch:
    """``watch_live`` on a thread; :meth:`done` waits for it and returns the records."""

    def __init__(
        self, pub: Publisher, *, replay: bool = True, sink: Lines | None = None, **options: Any
    ) -> None:
        options.setdefault("idle_timeout_s", 10.0)
        options.setdefault("tick_s", 0.01)
        self.options = WatchOptions(
            endpoint=pub.endpoint,
            replay_endpoint=pub.replay_endpoint if replay else None,
            replay_timeout_s=options.pop("replay_timeout_s", 10.0),  # a busy machine is slow
            **options,
        )
        self.sink = sink or Lines()
        self.stop = threading.Event()
        self.reports: list[str] = []
        self.metrics: Any = None
        self.core: WatchCore | None = None
        self.result: WatchResult | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "the watch did not start"
        pub.wait_subscribed()

    def _run(self) -> None:
        def ready(metrics: Any) -> None:
            self.metrics = metrics
            self._ready.set()

        def tick(core: WatchCore, _sub: Any) -> None:
            self.core = core

        try:
            self.result = watch_live(self.options, self.sink, stop=self.stop,
                                     report=self.reports.append, tick=tick,
                                     ready=ready)  # fmt: skip
        except BaseException as exc:  # noqa: BLE001 - re-raised by done()
            self.error = exc
            self._ready.set()

    def wait_for(self, messages: int, timeout: float = 10.0) -> WatchCore:
        """Wait until the watch has handled ``messages`` subscriber messages."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            core = self.core
            if core is not None and core.messages >= messages:
                return core
            time.sleep(0.01)
        raise TimeoutError(f"the watch handled fewer than {messages} messages")

    def done(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait for the watch to stop (set ``stop`` first unless a limit ends it); returns
        the engine receipts (``sink.records`` has the run's open, close and loss records too).
        """
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the watch did not stop"
        if self.error is not None:
            raise self.error
        return [r for r in self.sink.records
                if r["kind"].startswith("engine_") and r["kind"] != "engine_tally"]  # fmt: skip

    @property
    def tally(self) -> list[dict[str, Any]]:
        """The run's engine_tally receipts (one per engine, at the end)."""
        return [r for r in self.sink.records if r["kind"] == "engine_tally"]
