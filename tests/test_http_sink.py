"""``HttpSink`` against a real HTTP server on 127.0.0.1 that is healthy, failing, slow,
duplicating, blocked or silent on purpose.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from typer.testing import CliRunner

from kvreceipts.cli import app
from kvreceipts.config import CachingConfig
from kvreceipts.verify import VerifyOptions, verify_lines

if TYPE_CHECKING:
    from collections.abc import Iterator

    from kvreceipts.manager import KVCacheManager
    from kvreceipts.sinks import HttpSink

pytestmark = pytest.mark.needs("receipts")

GIVE_UP_S = 5.0
"""Longest a blocked handler waits before answering anyway (so no test can hang)."""


@dataclass
class Attempt:
    """One POST as the server saw it."""

    key: str
    content_type: str
    body: bytes
    status: int = 0


@dataclass
class Behaviour:
    """What the server does with request number ``n`` (0-based, in arrival order)."""

    fail_first: int = 0
    """Answer 503 without processing."""
    process_then_fail_once: bool = False
    """The first time a batch (an Idempotency-Key) arrives, process it, then answer 500: the
    client sends it again."""
    delay_first: int = 0
    delay_s: float = 0.0
    """Process the batch, then answer only after ``delay_s``."""
    block_first: int = 0
    """Wait for ``release`` before doing anything."""
    release: threading.Event = field(default_factory=threading.Event)
    silent: bool = False
    """Never answer (until the test ends)."""


class Server(ThreadingHTTPServer):
    """Records every attempt; keeps each batch once by its Idempotency-Key, in order."""

    daemon_threads = False  # server_close() joins the handler threads
    block_on_close = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.behaviour = Behaviour()
        self.lock = threading.Lock()
        self.attempts: list[Attempt] = []
        self.batches: dict[str, bytes] = {}
        self.arrived = threading.Event()
        self.closing = threading.Event()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/receipts"

    def stream(self) -> list[bytes]:
        """Every line the server kept (each batch once), in the order it kept them."""
        with self.lock:
            return [line for body in self.batches.values() for line in body.splitlines(True)]

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: a client that gave up on a slow answer closes its end."""


class Handler(BaseHTTPRequestHandler):
    server: Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        """Quiet."""

    def _answer(self, status: int) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
        except OSError:  # the client timed out and left
            pass

    def do_POST(self) -> None:
        server, how = self.server, self.server.behaviour
        body = self.rfile.read(int(self.headers["Content-Length"]))
        attempt = Attempt(
            self.headers.get("Idempotency-Key", ""), self.headers.get("Content-Type", ""), body
        )
        with server.lock:
            n = len(server.attempts)
            server.attempts.append(attempt)
        server.arrived.set()
        if n < how.block_first:
            how.release.wait(GIVE_UP_S)
        if how.silent:
            server.closing.wait(GIVE_UP_S)
            return
        if n < how.fail_first:
            attempt.status = 503
            self._answer(503)
            return
        with server.lock:
            first_time = attempt.key not in server.batches
            server.batches.setdefault(attempt.key, body)
        if n < how.delay_first:
            server.closing.wait(how.delay_s)
        attempt.status = 500 if how.process_then_fail_once and first_time else 200
        self._answer(attempt.status)


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    try:
        yield srv
    finally:
        srv.closing.set()
        srv.behaviour.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join()


def make_sink(url: str, **options: Any) -> HttpSink:
    from kvreceipts.sinks import HttpSink

    settings: dict[str, Any] = {"batch_size": 16, "flush_interval_s": 0.01, "backoff_s": 0.01,
                                "timeout_s": 2.0, "close_timeout_s": 5.0}  # fmt: skip
    settings.update(options)
    return HttpSink(url, **settings)


@dataclass
class Run:
    """A manager whose receipts go to an HttpSink and, for comparison, to memory."""

    manager: KVCacheManager
    sink: HttpSink
    copy: io.BytesIO
    made: int = 0

    def evict(self, n: int) -> float:
        """Cause ``n`` evictions (one per new session once the arena is full); seconds taken."""
        started = time.perf_counter()
        for _ in range(n):
            self.manager.get_or_create_cache(f"session-{self.made}", 16)
            self.made += 1
        return time.perf_counter() - started

    def close(self) -> float:
        started = time.perf_counter()
        self.manager.shutdown()
        return time.perf_counter() - started

    @property
    def lines(self) -> list[bytes]:
        """Every record the manager emitted (its open and close frame included), as sealed
        lines.
        """
        return self.copy.getvalue().splitlines(keepends=True)


def start_run(sink: HttpSink) -> Run:
    from kvreceipts.manager import KVCacheManager
    from kvreceipts.sinks import FanoutSink, JsonlSink

    copy = io.BytesIO()
    manager = KVCacheManager(
        CachingConfig(kv_cache_size_mb=0.0625, enable_receipts=True),  # 8 entries of 16 tokens
        sink=FanoutSink([sink, JsonlSink(copy)]),
    )
    run = Run(manager, sink, copy)
    run.evict(8)  # fill the arena: from here on every new session evicts one
    assert manager.evictions == 0
    return run


def anchored(digest: str | None, *, allow_loss: bool = False) -> VerifyOptions:
    """Verify options that pin the file's one run to the digest it closed with."""
    assert digest is not None
    return VerifyOptions(anchors={"": digest}, allow_loss=allow_loss)


def assert_exactly_once_in_order(server: Server, run: Run) -> None:
    got = server.stream()
    assert got == run.lines
    records = [orjson.loads(line) for line in got]
    assert [r["seq"] for r in records] == list(range(len(run.lines)))
    assert (records[0]["kind"], records[-1]["kind"]) == ("open", "close")
    report = verify_lines(iter(got), options=anchored(run.manager.last_digest))
    assert report.ok, report.violations[:3]
    assert report.run_count == 1
    assert report.runs[0].complete


# --------------------------------------------------------------------------------------------


def test_a_healthy_server_gets_every_receipt_once_in_order(server: Server) -> None:
    run = start_run(make_sink(server.url))
    run.evict(150)
    run.close()
    sink = run.sink
    # 150 receipts, and the run's open and close records.
    assert sink.counters.to_dict() == {"accepted": 152, "delivered": 152, "dropped": 0,
                                       "failed": 0}  # fmt: skip
    assert_exactly_once_in_order(server, run)
    assert len(server.attempts) == sink.batches_sent == sink.attempts
    run_id = run.manager.run_id
    for attempt in server.attempts:
        assert attempt.status == 200
        assert attempt.content_type == "application/x-ndjson"
        lines = attempt.body.splitlines(keepends=True)
        assert 1 <= len(lines) <= 16
        seqs = [orjson.loads(line)["seq"] for line in lines]
        assert attempt.key == f"{run_id}:{seqs[0]}-{seqs[-1]}"
    # The bodies are the sealed lines themselves, byte for byte.
    assert b"".join(a.body for a in server.attempts) == b"".join(run.lines)


def test_a_failing_server_gets_everything_after_retries(server: Server) -> None:
    server.behaviour.fail_first = 4
    run = start_run(make_sink(server.url))
    run.evict(60)
    run.close()
    counters = run.sink.counters
    assert counters.delivered == counters.accepted == 60 + 2  # with the open and close
    assert counters.failed == counters.dropped == 0
    assert_exactly_once_in_order(server, run)
    statuses = [a.status for a in server.attempts]
    assert statuses[:4] == [503] * 4
    assert set(statuses[4:]) == {200}
    # The first batch was retried until it got through, always under the same key.
    assert len({a.key for a in server.attempts[:5]}) == 1
    assert run.sink.attempts == len(server.attempts) == run.sink.batches_sent + 4


def test_a_slow_server_never_blocks_the_manager(server: Server) -> None:
    # Every request that arrives in the slow phase is answered after 0.6 s; the sink waits
    # 0.1 s. A manager that waited on the network would need seconds for these evictions.
    server.behaviour.delay_first = 10**9
    server.behaviour.delay_s = 0.6
    run = start_run(make_sink(server.url, batch_size=8, timeout_s=0.1, max_attempts=10))
    taken = run.evict(400)
    assert taken < 1.0, f"400 evictions took {taken:.2f} s while the server was slow"
    _wait(lambda: len(server.attempts) >= 2)
    server.behaviour.delay_first = len(server.attempts)  # fast from now on
    run.close()
    counters = run.sink.counters
    assert counters.delivered == counters.accepted == 400 + 2  # with the open and close
    assert counters.failed == 0
    assert run.sink.attempts > run.sink.batches_sent  # the slow answers were retried
    assert_exactly_once_in_order(server, run)


def test_retries_reuse_the_idempotency_key_so_a_deduplicating_server_keeps_one_copy(
    server: Server,
) -> None:
    server.behaviour.process_then_fail_once = True
    run = start_run(make_sink(server.url))
    run.evict(40)
    run.close()
    counters = run.sink.counters
    assert counters.delivered == counters.accepted == 40 + 2  # with the open and close
    assert counters.failed == 0
    # Every batch went twice, in a row, under one key and with the very same body.
    attempts = server.attempts
    assert len(attempts) == 2 * run.sink.batches_sent >= 6
    for failed, retried in zip(attempts[::2], attempts[1::2], strict=True):
        assert (failed.status, retried.status) == (500, 200)
        assert failed.key == retried.key
        assert failed.body == retried.body
    # Without the key, the server would have kept every batch twice: a broken chain.
    everything = [line for a in server.attempts for line in a.body.splitlines(True)]
    assert not verify_lines(iter(everything)).ok
    assert_exactly_once_in_order(server, run)


def _wait(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.mark.parametrize("batch_size", [8, 1])
def test_a_full_buffer_drops_and_declares_the_loss(server: Server, batch_size: int) -> None:
    how = server.behaviour
    how.block_first = 2  # the first batch, and the one after it, wait for release
    run = start_run(make_sink(server.url, batch_size=batch_size, max_buffer=12))
    run.evict(1)
    _wait(server.arrived.is_set)  # the sender is stuck on the first batch
    # The open record went first; the eviction is in that batch or still buffered.
    waiting = len(run.sink._buffer)
    run.evict(60)  # what fits in the buffer of 12 stays, the rest are dropped
    dropped = run.sink.counters.dropped
    assert dropped == 60 - (12 - waiting)
    second = threading.Event()
    how.release.set()
    # Let the next batch in and hold it, then drop some more.
    how.release = second
    _wait(lambda: len(server.attempts) >= 2)
    run.evict(30)
    second.set()
    _wait(lambda: len(run.sink._buffer) == 0)
    run.evict(10)  # room again: these get through (fewer than the buffer holds)
    _wait(lambda: len(run.sink._buffer) == 0)
    run.close()  # and so does the close record
    counters = run.sink.counters
    assert counters.accepted == 101 + 2  # with the open and close
    assert counters.delivered + counters.dropped == counters.accepted
    assert counters.failed == 0

    got = server.stream()
    losses = [orjson.loads(line) for line in got if b'"kind":"loss"' in line]
    assert losses
    assert sum(loss["count"] for loss in losses) == counters.dropped
    # Declared losses fail verification unless the auditor accepts them.
    strict = verify_lines(iter(got), options=anchored(run.manager.last_digest))
    assert not strict.ok
    report = verify_lines(iter(got), options=anchored(run.manager.last_digest, allow_loss=True))
    assert report.ok, report.violations
    declared = {s for gap in report.losses for s in range(gap.first_seq, gap.last_seq + 1)}
    kept = {orjson.loads(line)["seq"] for line in got if b'"kind":"loss"' not in line}
    assert declared == set(range(len(run.lines))) - kept
    assert len(declared) == counters.dropped == report.lost_records
    assert {gap.sink for gap in report.losses} == {"http"}


def test_close_gives_up_at_its_deadline_and_counts_what_it_could_not_deliver(
    server: Server,
) -> None:
    server.behaviour.silent = True
    timeout_s, close_timeout_s = 0.2, 0.4
    run = start_run(make_sink(server.url, batch_size=10, timeout_s=timeout_s,
                              close_timeout_s=close_timeout_s))  # fmt: skip
    run.evict(80)
    _wait(server.arrived.is_set)
    taken = run.close()
    assert taken <= close_timeout_s + timeout_s + 0.3, taken
    sink = run.sink
    assert sink.counters.delivered == 0
    assert sink.counters.failed == sink.counters.accepted == 80 + 2  # with the open and close
    assert sink.undelivered > 0
    sink._thread.join(timeout_s + 1)
    assert not sink._thread.is_alive()
    assert sink.counters.failed == 82  # and nothing is counted twice afterwards


def test_simulate_posts_to_an_http_sink_and_reports_its_counters(server: Server) -> None:
    result = CliRunner().invoke(
        app,
        ["simulate", "--workload", "burst", "--requests", "120", "--capacity-mb", "4",
         "--http-sink", server.url, "-f", "json", "-q"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = orjson.loads(result.stdout)
    receipts = summary["receipts"]
    assert receipts > 50
    records = receipts + 2  # the run's open and close records too
    assert summary["sinks"]["http"] == {"accepted": records, "delivered": records,
                                        "dropped": 0, "failed": 0}  # fmt: skip
    got = server.stream()
    assert len(got) == records
    report = verify_lines(iter(got), options=anchored(summary["last_digest"]))
    assert report.ok, report.violations[:3]
    assert report.records == records
    assert {a.key.split(":")[0] for a in server.attempts} == {summary["run_id"]}


@pytest.mark.parametrize("allow", [False, True])
def test_simulate_fails_when_its_http_sink_loses_receipts(server: Server, allow: bool) -> None:
    server.behaviour.fail_first = 10**9  # every POST is refused: nothing gets through
    args = ["simulate", "--workload", "burst", "--requests", "60", "--capacity-mb", "4",
            "--http-sink", server.url, "-f", "json", "-q"]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--allow-sink-loss"] if allow else args)
    assert result.exit_code == (0 if allow else 1), result.stderr
    summary = orjson.loads(result.stdout)
    counters = summary["sinks"]["http"]
    assert counters["delivered"] == 0
    assert counters["failed"] == counters["accepted"] == summary["receipts"] + 2
    assert "sink http lost" in result.stderr
    assert server.stream() == []
