"""Sinks: a failing or full sink never stalls or corrupts the manager, and each built-in sink
delivers what it promises.
"""

from __future__ import annotations

import io
import logging
import threading
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from kvreceipts import CachingConfig, KVCacheManager, features
from kvreceipts.clock import SimClock
from kvreceipts.config import MIB

if TYPE_CHECKING or features.enabled("receipts"):
    from kvreceipts.chain import canonical, compute_digest
    from kvreceipts.receipts import ZERO_DIGEST, KvEvictionReport, LossReceipt, Receipt
    from kvreceipts.sinks import (
        KV_RECEIPTS_TARGET,
        BaseSink,
        ChannelSink,
        FanoutSink,
        JsonlSink,
        TracingSink,
    )

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.needs("receipts")

ENTRY = 8192


def make(sink: Any, *, slots: int = 1, **options: Any) -> KVCacheManager:
    config = CachingConfig(kv_cache_size_mb=slots * ENTRY / MIB, enable_receipts=True)
    return KVCacheManager(config, sink=sink, clock=SimClock(), **options)


def evict(manager: KVCacheManager, count: int) -> None:
    """Cause ``count`` evictions in a one-slot arena, each by a new session."""
    if not len(manager):
        assert manager.get_or_create_cache(f"s{manager.sessions_created}", 16) is not None
    for _ in range(count):
        assert manager.get_or_create_cache(f"s{manager.sessions_created}", 16) is not None


def evict_in_thread(manager: KVCacheManager, count: int) -> None:
    """As :func:`evict`, failing (not hanging) if the sink blocks the manager."""
    worker = threading.Thread(target=evict, args=(manager, count))
    worker.start()
    worker.join(timeout=5)
    assert not worker.is_alive(), "the sink blocked the manager"


def assert_sealed(record: Receipt) -> None:
    """The record's digest is the SHA-256 of its canonical JSON, and its line is that JSON."""
    body = record.to_dict()
    assert body.pop("digest") == record.digest
    assert compute_digest(canonical(body)) == record.digest
    assert orjson.loads(record.line) == record.to_dict()


class FlakySink:
    """A plain sink of one's own (no base class) that raises on every other receipt."""

    def __init__(self) -> None:
        self.calls = 0
        self.received: list[KvEvictionReport] = []

    def on_eviction(self, report: KvEvictionReport) -> None:
        self.calls += 1
        if self.calls % 2:
            raise RuntimeError("disk on fire")
        self.received.append(report)


def test_a_raising_sink_does_not_break_the_manager(caplog: pytest.LogCaptureFixture) -> None:
    sink = FlakySink()
    manager = make(sink, batch_receipts=True, snapshot_every=2)  # sink lacks on_batch etc.

    with caplog.at_level(logging.WARNING, logger=KV_RECEIPTS_TARGET):
        evict(manager, 4)

    assert manager.evictions == 4
    assert len(manager) == 1
    stats = manager.get_statistics()
    assert (stats.total_sessions, stats.used_bytes, stats.evictions) == (1, ENTRY, 4)
    assert manager.sink_failures == 2
    # Every other receipt got through, and numbering went on past the failures (the batch
    # and snapshot receipts this sink has no method for take seqs too).
    assert [(r.session_id, r.seq) for r in sink.received] == [("s1", 3), ("s3", 8)]
    assert manager.receipts_emitted == 10
    failures = [r for r in caplog.records if r.name == KV_RECEIPTS_TARGET]
    assert len(failures) == 2
    assert all(r.levelno == logging.WARNING for r in failures)
    assert failures[0].getMessage() == "receipt sink raised on seq=0"
    assert failures[0].exc_info is not None
    assert isinstance(failures[0].exc_info[1], RuntimeError)


@pytest.fixture
def broken() -> BaseSink:
    """A sink whose destination always fails."""

    class BrokenSink(BaseSink):
        name = "broken"

        def deliver(self, record: Receipt) -> None:
            raise OSError("destination unreachable")

    return BrokenSink()


def test_a_failing_deliver_is_counted_by_the_sink(
    broken: BaseSink, caplog: pytest.LogCaptureFixture
) -> None:
    sink = broken
    manager = make(sink)

    with caplog.at_level(logging.WARNING, logger=KV_RECEIPTS_TARGET):
        evict(manager, 3)

    assert sink.counters.to_dict() == {"accepted": 3, "delivered": 0, "dropped": 0, "failed": 3}
    assert manager.sink_failures == 0  # contained inside the sink
    assert manager.evictions == manager.receipts_emitted == 3
    messages = [r.getMessage() for r in caplog.records if r.name == KV_RECEIPTS_TARGET]
    assert messages == [f"sink broken failed to deliver receipt seq={seq}" for seq in range(3)]


def test_a_full_channel_drops_newest_and_reports_the_loss() -> None:
    sink = ChannelSink(2)
    manager = make(sink)

    evict_in_thread(manager, 5)  # seq 0-4; room for two

    assert sink.counters.to_dict() == {"accepted": 5, "delivered": 2, "dropped": 3, "failed": 0}
    assert manager.evictions == 5
    kept = sink.drain()
    assert [r.seq for r in kept] == [0, 1]

    evict_in_thread(manager, 1)  # seq 5: the loss record goes first, then seq 5

    loss, after = sink.drain()
    assert isinstance(loss, LossReceipt)
    assert (loss.first_seq, loss.last_seq, loss.count, loss.seq) == (2, 4, 3, 4)
    assert loss.sink == "channel"
    assert loss.run_id == manager.run_id
    # The chain can be followed across the gap: ... 1 -> [2..4 lost] -> 5.
    assert loss.prev_digest == kept[-1].digest
    assert after.seq == 5
    assert after.prev_digest == loss.last_lost_digest
    assert_sealed(loss)
    assert sink.losses == [loss]
    assert sink.counters.dropped == 3


def test_a_full_channel_can_drop_oldest_and_keep_the_newest() -> None:
    sink = ChannelSink(2, overflow="drop_oldest")
    manager = make(sink)

    evict_in_thread(manager, 5)

    assert sink.counters.dropped == 3
    kept = sink.drain()
    assert [r.seq for r in kept] == [3, 4]
    evict_in_thread(manager, 1)
    loss, after = sink.drain()
    assert isinstance(loss, LossReceipt)
    assert (loss.first_seq, loss.last_seq, loss.count) == (0, 2, 3)
    assert loss.prev_digest == ZERO_DIGEST  # the gap starts the run
    assert loss.last_lost_digest == kept[0].prev_digest
    assert after.seq == 5
    assert_sealed(loss)


def test_separate_gaps_give_separate_loss_records() -> None:
    sink = ChannelSink(2)
    manager = make(sink)
    evict(manager, 4)  # 0-1 kept, 2-3 dropped
    assert [r.seq for r in sink.drain()] == [0, 1]
    evict(manager, 3)  # the loss of 2-3 and seq 4 fill the queue; 5-6 are dropped
    queued = sink.drain()
    assert [(r.kind, r.seq) for r in queued] == [("loss", 3), ("eviction", 4)]

    manager.shutdown()  # closes the open range 5-6

    assert [(r.kind, r.seq) for r in sink.drain()] == [("loss", 6)]
    assert [(r.first_seq, r.last_seq, r.count) for r in sink.losses] == [(2, 3, 2), (5, 6, 2)]
    assert sink.counters.dropped == 4
    assert sink.losses[1].prev_digest == queued[1].digest


def test_closing_a_channel_queues_its_pending_loss() -> None:
    sink = ChannelSink(2)
    manager = make(sink)
    evict(manager, 4)
    assert [r.seq for r in sink.drain()] == [0, 1]

    manager.shutdown()

    (loss,) = sink.drain()
    assert isinstance(loss, LossReceipt)
    assert (loss.first_seq, loss.last_seq, loss.count) == (2, 3, 2)
    assert sink.closed


def test_channel_sink_arguments_and_receiving() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ChannelSink(0)
    with pytest.raises(ValueError, match="overflow"):
        ChannelSink(1, overflow="block")  # type: ignore[arg-type]
    sink = ChannelSink(4)
    assert sink.try_recv() is None
    evict(make(sink), 1)
    assert sink.recv(timeout=1).seq == 0


def test_tracing_sink_logs_the_upstream_fields(caplog: pytest.LogCaptureFixture) -> None:
    manager = make(TracingSink(), slots=2)
    assert manager.get_or_create_cache("a", 16) is not None
    entry = manager.get_or_create_cache("b", 16)
    assert entry is not None

    with caplog.at_level(logging.INFO, logger=KV_RECEIPTS_TARGET):
        assert manager.remove_cache_entry("b")

    (record,) = [r for r in caplog.records if r.name == KV_RECEIPTS_TARGET]
    assert record.levelno == logging.INFO
    assert record.getMessage() == "KV eviction recorded"
    fields = {
        name: getattr(record, name)
        for name in (
            "kv_event",
            "session_id",
            "block_offset",
            "block_size_bytes",
            "before_sessions",
            "after_sessions",
            "before_mem_mb",
            "after_mem_mb",
            "has_perf",
        )
    }
    assert fields == {
        "kv_event": "eviction",
        "session_id": "b",
        "block_offset": entry.block_offset,
        "block_size_bytes": ENTRY,
        "before_sessions": 2,
        "after_sessions": 1,
        "before_mem_mb": 2 * ENTRY / MIB,
        "after_mem_mb": ENTRY / MIB,
        "has_perf": features.enabled("tuning"),
    }


def test_tracing_sink_logs_batches_and_snapshots(caplog: pytest.LogCaptureFixture) -> None:
    sink = TracingSink()
    manager = make(sink, batch_receipts=True, snapshot_every=2)
    with caplog.at_level(logging.INFO, logger=KV_RECEIPTS_TARGET):
        evict(manager, 1)

    events = [getattr(r, "kv_event", None) for r in caplog.records]
    assert events == ["eviction", "eviction_batch", "snapshot"]
    assert sink.counters.delivered == 3


def test_tracing_sink_stays_quiet_below_info(caplog: pytest.LogCaptureFixture) -> None:
    sink = TracingSink()
    with caplog.at_level(logging.WARNING, logger=KV_RECEIPTS_TARGET):
        evict(make(sink), 2)
    assert caplog.records == []
    assert sink.counters.delivered == 2


def read_lines(path: Path) -> list[dict[str, Any]]:
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    return [orjson.loads(line) for line in raw.splitlines()]


def test_jsonl_sink_writes_one_json_line_per_receipt(tmp_path: Path) -> None:
    path = tmp_path / "receipts.jsonl"
    received = ChannelSink(100)
    sink = JsonlSink(path)
    manager = make(FanoutSink([sink, received]))

    evict(manager, 3)

    # flush="line": every receipt is on disk as soon as it is emitted.
    lines = read_lines(path)
    assert lines == [record.to_dict() for record in received.drain()]
    assert [line["seq"] for line in lines] == [0, 1, 2]
    assert lines[1]["prev_digest"] == lines[0]["digest"]
    assert sink.counters.delivered == 3
    manager.shutdown()
    assert sink.closed


def test_jsonl_sink_batches_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "receipts.jsonl"
    sink = JsonlSink(path, flush="batch", batch_lines=2)
    manager = make(sink)

    evict(manager, 3)

    assert len(read_lines(path)) == 2  # one full batch written, one receipt pending
    assert sink.counters.delivered == 2
    manager.shutdown()
    assert [line["seq"] for line in read_lines(path)] == [0, 1, 2]
    assert sink.counters.delivered == 3


def test_jsonl_sink_appends_and_closes_idempotently(tmp_path: Path) -> None:
    path = tmp_path / "receipts.jsonl"
    path.write_bytes(b'{"earlier":true}\n')
    for _ in range(2):
        sink = JsonlSink(path)
        evict(make(sink), 2)
        sink.close()
        sink.close()

    lines = read_lines(path)
    assert lines[0] == {"earlier": True}
    assert [line["seq"] for line in lines[1:]] == [0, 1, 0, 1]
    assert lines[1]["run_id"] != lines[3]["run_id"]


def test_jsonl_sink_on_a_stream_leaves_it_open() -> None:
    stream = io.BytesIO()
    sink = JsonlSink(stream, flush="batch")
    evict(make(sink), 2)
    sink.close()
    assert not stream.closed
    assert len(stream.getvalue().splitlines()) == 2


def test_jsonl_sink_counts_a_failed_write(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.BytesIO()
    sink = JsonlSink(stream, flush="line")
    manager = make(sink)
    evict(manager, 1)
    stream.close()  # the destination goes away under the sink

    with caplog.at_level(logging.WARNING, logger=KV_RECEIPTS_TARGET):
        evict(manager, 2)

    assert sink.counters.to_dict() == {"accepted": 3, "delivered": 1, "dropped": 0, "failed": 2}
    assert manager.evictions == 3
    assert len(caplog.records) == 2


def test_jsonl_sink_rejects_an_unknown_flush_policy(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="flush policy"):
        JsonlSink(tmp_path / "x.jsonl", flush="never")  # type: ignore[arg-type]


def test_fanout_delivers_to_every_child_even_when_one_raises(
    broken: BaseSink, caplog: pytest.LogCaptureFixture
) -> None:
    first, last = ChannelSink(100), ChannelSink(100)
    fanout = FanoutSink([first, broken, last])
    manager = make(fanout, batch_receipts=True)

    with caplog.at_level(logging.WARNING, logger=KV_RECEIPTS_TARGET):
        evict(manager, 2)  # two evictions and two batch receipts

    assert [r.seq for r in first.drain()] == [0, 1, 2, 3]
    assert [r.seq for r in last.drain()] == [0, 1, 2, 3]
    assert broken.counters.failed == 4
    assert fanout.counters.accepted == fanout.counters.delivered == 4
    assert manager.sink_failures == 0


def test_fanout_closes_every_child_even_when_one_fails(caplog: pytest.LogCaptureFixture) -> None:
    class CloseFails(BaseSink):
        name = "close-fails"

        def deliver(self, record: Receipt) -> None:
            pass

        def close(self) -> None:
            raise OSError("cannot flush")

    first, last = ChannelSink(1), ChannelSink(1)
    fanout = FanoutSink([first, CloseFails(), last])

    with caplog.at_level(logging.WARNING, logger=KV_RECEIPTS_TARGET):
        make(fanout).shutdown()

    assert first.closed
    assert last.closed
    assert fanout.closed
    assert [r.getMessage() for r in caplog.records] == ["closing sink close-fails failed"]
