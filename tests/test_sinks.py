"""Sinks: a failing or full sink never stalls or corrupts the manager, and each built-in sink
delivers what it promises.
"""

from __future__ import annotations

import io
import logging
import threading
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from kvreceipts import CachingConfig, KVCacheManager, features
from kvreceipts.clock import SimClock
from kvreceipts.config import MIB

if TYPE_CHECKING or features.enabled("receipts"):
    from kvreceipts.chain import canonical, chain_digest
    from kvreceipts.receipts import (
        KvEvictionReport,
        LossReceipt,
        Record,
        RunClose,
        RunOpen,
        SealedRecord,
        as_receipt,
    )
    from kvreceipts.sinks import (
        KV_RECEIPTS_TARGET,
        BaseSink,
        ChannelSink,
        FanoutSink,
        JsonlSink,
        TracingSink,
    )
    from kvreceipts.verify import VerifyOptions, VerifyReport, verify_lines

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


def assert_sealed(record: Record) -> None:
    """The record's line is its canonical JSON with ``digest`` added last, and the digest is
    the SHA-256 of the digest it follows and that canonical JSON.
    """
    body = orjson.loads(record.line)
    if isinstance(record, LossReceipt):  # a loss record's fields are the ones it wrote
        assert body == record.to_dict()
    assert (body["kind"], body["run_id"], body["seq"]) == (record.kind, record.run_id, record.seq)
    digest = body.pop("digest")
    assert digest == record.digest
    payload = canonical(body)
    assert record.line == payload[:-1] + b',"digest":"%b"}\n' % digest.encode()
    assert chain_digest(record.prev_digest, payload) == record.digest


def verify(lines: list[bytes], **options: Any) -> VerifyReport:
    return verify_lines(lines, options=VerifyOptions(**options))


def checks(report: VerifyReport) -> set[str]:
    return {v.check for v in report.violations}


if TYPE_CHECKING or features.enabled("receipts"):

    class Recorder(BaseSink):
        """Keeps every record it is handed, the run's open and close records included."""

        name = "recorder"

        def __init__(self) -> None:
            super().__init__()
            self.records: list[Record] = []

        def deliver(self, record: Record) -> None:
            self.records.append(record)
            self.count("delivered")


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
    # Every other receipt got through, and numbering went on past the failures (the run's
    # open record, seq 0, and the batch and snapshot receipts this sink has no method for
    # take seqs too).
    assert [(r.session_id, r.seq) for r in sink.received] == [("s1", 4), ("s3", 9)]
    assert manager.receipts_emitted == 10
    # A sink of one's own gets upstream's full report, sealed and chained.
    for report in sink.received:
        assert isinstance(report, KvEvictionReport)
        assert report.trigger_session_id == f"s{int(report.session_id[1:]) + 1}"
        assert (report.before.total_sessions, report.after.total_sessions) == (1, 0)
        assert report.after.evictions == report.before.evictions + 1
        assert_sealed(report)
    failures = [r for r in caplog.records if r.name == KV_RECEIPTS_TARGET]
    assert len(failures) == 2
    assert all(r.levelno == logging.WARNING for r in failures)
    assert failures[0].getMessage() == "receipt sink raised on seq=1"
    assert failures[0].exc_info is not None
    assert isinstance(failures[0].exc_info[1], RuntimeError)


@pytest.fixture
def broken() -> BaseSink:
    """A sink whose destination always fails."""

    class BrokenSink(BaseSink):
        name = "broken"

        def deliver(self, record: Record) -> None:
            raise OSError("destination unreachable")

    return BrokenSink()


def test_a_failing_deliver_is_counted_by_the_sink(
    broken: BaseSink, caplog: pytest.LogCaptureFixture
) -> None:
    sink = broken
    manager = make(sink)

    with caplog.at_level(logging.WARNING, logger=KV_RECEIPTS_TARGET):
        evict(manager, 3)
        manager.shutdown()

    # The run's open record (seq 0), three evictions and the close record (seq 4).
    assert sink.counters.to_dict() == {"accepted": 5, "delivered": 0, "dropped": 0, "failed": 5}
    assert manager.sink_failures == 0  # contained inside the sink
    assert manager.evictions == manager.receipts_emitted == 3
    messages = [r.getMessage() for r in caplog.records if r.name == KV_RECEIPTS_TARGET]
    assert messages == [f"sink broken failed to deliver receipt seq={seq}" for seq in range(5)]
    assert sink.closed


def test_a_full_channel_drops_newest_and_reports_the_loss() -> None:
    sink = ChannelSink(2)
    manager = make(sink)

    evict_in_thread(manager, 5)  # seq 1-5 (the open record, seq 0, is not queued); room for two

    assert sink.counters.to_dict() == {"accepted": 5, "delivered": 2, "dropped": 3, "failed": 0}
    assert manager.evictions == 5
    (opened,) = sink.frames
    assert isinstance(opened, RunOpen)
    kept = sink.drain()
    assert [r.seq for r in kept] == [1, 2]
    assert all(isinstance(r, KvEvictionReport) for r in kept)

    evict_in_thread(manager, 1)  # seq 6: the loss record goes first, then seq 6

    loss, after = sink.drain()
    assert isinstance(loss, LossReceipt)
    assert (loss.first_seq, loss.last_seq, loss.count, loss.seq) == (3, 5, 3, 5)
    assert loss.sink == "channel"
    assert loss.run_id == manager.run_id
    # The chain can be followed across the gap: ... 2 -> [3..5 lost] -> 6.
    assert loss.prev_digest == kept[-1].digest
    assert after.seq == 6
    assert after.prev_digest == loss.last_lost_digest
    assert_sealed(loss)
    assert_sealed(after)
    assert sink.losses == [loss]
    assert sink.counters.dropped == 3

    # What the reader got, written out, verifies only when declared losses are allowed.
    manager.shutdown()
    (_, closed) = sink.frames
    assert isinstance(closed, RunClose)
    lines = [r.line for r in (opened, *kept, loss, after, closed)]
    assert checks(verify(lines)) == {"loss"}
    assert verify(lines, allow_loss=True).ok


def test_a_full_channel_can_drop_oldest_and_keep_the_newest() -> None:
    sink = ChannelSink(2, overflow="drop_oldest")
    manager = make(sink)

    evict_in_thread(manager, 5)  # seq 1-5

    assert sink.counters.dropped == 3
    kept = sink.drain()
    assert [r.seq for r in kept] == [4, 5]
    evict_in_thread(manager, 1)
    loss, after = sink.drain()
    assert isinstance(loss, LossReceipt)
    assert (loss.first_seq, loss.last_seq, loss.count) == (1, 3, 3)
    (opened,) = sink.frames
    assert loss.prev_digest == opened.digest  # the gap starts right after the open record
    assert loss.last_lost_digest == kept[0].prev_digest
    assert after.seq == 6
    assert after.prev_digest == kept[-1].digest
    assert_sealed(loss)


def test_separate_gaps_give_separate_loss_records() -> None:
    sink = ChannelSink(2)
    manager = make(sink)
    evict(manager, 4)  # 1-2 kept, 3-4 dropped
    assert [r.seq for r in sink.drain()] == [1, 2]
    evict(manager, 3)  # the loss of 3-4 and seq 5 fill the queue; 6-7 are dropped
    queued = sink.drain()
    assert [(r.kind, r.seq) for r in queued] == [("loss", 4), ("eviction", 5)]

    manager.shutdown()  # closes the open range 6-7

    assert [(r.kind, r.seq) for r in sink.drain()] == [("loss", 7)]
    assert [(r.first_seq, r.last_seq, r.count) for r in sink.losses] == [(3, 4, 2), (6, 7, 2)]
    assert sink.counters.dropped == 4
    assert sink.losses[1].prev_digest == queued[1].digest
    assert [(r.kind, r.seq) for r in sink.frames] == [("open", 0), ("close", 8)]


def test_closing_a_channel_queues_its_pending_loss() -> None:
    sink = ChannelSink(2)
    manager = make(sink)
    evict(manager, 4)
    assert [r.seq for r in sink.drain()] == [1, 2]

    manager.shutdown()

    (loss,) = sink.drain()
    assert isinstance(loss, LossReceipt)
    assert (loss.first_seq, loss.last_seq, loss.count) == (3, 4, 2)
    assert_sealed(loss)
    assert sink.closed
    assert [r.kind for r in sink.frames] == ["open", "close"]


def test_channel_sink_arguments_and_receiving() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ChannelSink(0)
    with pytest.raises(ValueError, match="overflow"):
        ChannelSink(1, overflow="block")  # type: ignore[arg-type]
    sink = ChannelSink(4)
    assert sink.try_recv() is None
    evict(make(sink), 1)
    report = sink.recv(timeout=1)  # the first eviction; the open record is not queued
    assert isinstance(report, KvEvictionReport)
    assert (report.seq, report.session_id, report.trigger_session_id) == (1, "s0", "s1")
    assert sink.try_recv() is None


def test_a_base_sink_gets_lean_evictions_as_sealed_lines() -> None:
    recorder = Recorder()
    manager = make(recorder)

    evict(manager, 1)

    opened, sealed = recorder.records
    assert isinstance(opened, RunOpen)
    assert (opened.seq, opened.run_id) == (0, manager.run_id)
    assert isinstance(sealed, SealedRecord)
    assert (sealed.kind, sealed.run_id, sealed.seq) == ("eviction", manager.run_id, 1)
    assert sealed.prev_digest == opened.digest
    assert_sealed(sealed)
    report = as_receipt(sealed)  # the full report, when a sink needs its fields
    assert isinstance(report, KvEvictionReport)
    assert (report.session_id, report.trigger_session_id) == ("s0", "s1")
    assert (report.block_offset, report.block_size_bytes) == (0, ENTRY)
    assert (report.before.total_sessions, report.after.total_sessions) == (1, 0)
    assert (report.before.used_bytes, report.after.used_bytes) == (ENTRY, 0)
    assert (report.digest, report.prev_digest, report.line) == (
        sealed.digest,
        sealed.prev_digest,
        sealed.line,
    )


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
    with caplog.at_level(logging.INFO, logger=KV_RECEIPTS_TARGET):
        manager = make(sink, batch_receipts=True, snapshot_every=2)
        evict(manager, 1)
        manager.shutdown()

    events = [getattr(r, "kv_event", None) for r in caplog.records]
    assert events == ["open", "eviction", "eviction_batch", "snapshot", "close"]
    assert caplog.records[0].getMessage() == "KV open recorded"
    assert [getattr(r, "seq", None) for r in caplog.records] == [0, 1, 2, 3, 4]
    assert sink.counters.delivered == 5


def test_tracing_sink_stays_quiet_below_info(caplog: pytest.LogCaptureFixture) -> None:
    sink = TracingSink()
    with caplog.at_level(logging.WARNING, logger=KV_RECEIPTS_TARGET):
        evict(make(sink), 2)
    assert caplog.records == []
    assert sink.counters.delivered == 3  # the open record and two evictions


def read_lines(path: Path) -> list[dict[str, Any]]:
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    return [orjson.loads(line) for line in raw.splitlines()]


def test_jsonl_sink_writes_one_json_line_per_receipt(tmp_path: Path) -> None:
    path = tmp_path / "receipts.jsonl"
    received = Recorder()
    sink = JsonlSink(path)
    manager = make(FanoutSink([sink, received]))

    evict(manager, 3)

    # flush="line": every record is on disk as soon as it is emitted, the open record first.
    lines = read_lines(path)
    assert lines == [orjson.loads(record.line) for record in received.records]
    assert [(line["kind"], line["seq"]) for line in lines] == [
        ("open", 0),
        ("eviction", 1),
        ("eviction", 2),
        ("eviction", 3),
    ]
    # The chain needs no field of its own: each digest covers the digest before it.
    for before, line in pairwise(lines):
        body = dict(line)
        assert "prev_digest" not in body
        digest = body.pop("digest")
        assert chain_digest(before["digest"], canonical(body)) == digest
    assert sink.counters.delivered == 4
    # A run still going verifies as a valid prefix only when incomplete runs are allowed.
    assert checks(verify(path.read_bytes().splitlines(keepends=True))) == {"incomplete"}
    assert verify(path.read_bytes().splitlines(keepends=True), allow_incomplete=True).ok

    manager.shutdown()

    assert sink.closed
    lines = read_lines(path)
    assert (lines[-1]["kind"], lines[-1]["seq"], lines[-1]["records"]) == ("close", 4, 4)
    assert lines[-1]["head"] == lines[-2]["digest"]  # the chain head it closes
    assert lines[-1]["digest"] == manager.last_digest  # the anchor to publish
    report = verify(path.read_bytes().splitlines(keepends=True), anchors={"": manager.last_digest})
    assert report.ok, report.violations
    assert report.runs[0].complete


def test_jsonl_sink_batches_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "receipts.jsonl"
    sink = JsonlSink(path, flush="batch", batch_lines=3)
    manager = make(sink)

    evict(manager, 3)  # the open record and three evictions

    assert len(read_lines(path)) == 3  # one full batch written, one receipt pending
    assert sink.counters.delivered == 3
    manager.shutdown()  # the close record joins the pending one; close writes both
    assert [line["seq"] for line in read_lines(path)] == [0, 1, 2, 3, 4]
    assert read_lines(path)[-1]["kind"] == "close"
    assert sink.counters.delivered == 5


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
    # Each run: its open record, then two evictions (no close record: only the sink closed).
    assert [(line["kind"], line["seq"]) for line in lines[1:4]] == [
        ("open", 0),
        ("eviction", 1),
        ("eviction", 2),
    ]
    assert [line["seq"] for line in lines[4:]] == [0, 1, 2]
    assert lines[1]["run_id"] != lines[4]["run_id"]
    assert all(line["run_id"] == lines[1]["run_id"] for line in lines[1:4])
    assert all(line["run_id"] == lines[4]["run_id"] for line in lines[4:])


def test_jsonl_sink_on_a_stream_leaves_it_open() -> None:
    stream = io.BytesIO()
    sink = JsonlSink(stream, flush="batch")
    evict(make(sink), 2)
    sink.close()
    assert not stream.closed
    assert len(stream.getvalue().splitlines()) == 3  # the open record and two evictions


def test_jsonl_sink_counts_a_failed_write(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.BytesIO()
    sink = JsonlSink(stream, flush="line")
    manager = make(sink)
    evict(manager, 1)  # the open record and one eviction are written
    stream.close()  # the destination goes away under the sink

    with caplog.at_level(logging.WARNING, logger=KV_RECEIPTS_TARGET):
        evict(manager, 2)

    assert sink.counters.to_dict() == {"accepted": 4, "delivered": 2, "dropped": 0, "failed": 2}
    assert manager.evictions == 3
    assert len(caplog.records) == 2


def test_jsonl_sink_rejects_an_unknown_flush_policy(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="flush policy"):
        JsonlSink(tmp_path / "x.jsonl", flush="never")  # type: ignore[arg-type]


def test_fanout_delivers_to_every_child_even_when_one_raises(
    broken: BaseSink, caplog: pytest.LogCaptureFixture
) -> None:
    first, last = Recorder(), Recorder()
    fanout = FanoutSink([first, broken, last])
    with caplog.at_level(logging.WARNING, logger=KV_RECEIPTS_TARGET):
        manager = make(fanout, batch_receipts=True)
        evict(manager, 2)  # the open record, two evictions and two batch receipts

    expected = [("open", 0), ("eviction", 1), ("eviction_batch", 2), ("eviction", 3),
                ("eviction_batch", 4)]  # fmt: skip
    assert [(r.kind, r.seq) for r in first.records] == expected
    assert [(r.kind, r.seq) for r in last.records] == expected
    assert broken.counters.failed == 5
    assert len(caplog.records) == 5
    assert fanout.counters.accepted == fanout.counters.delivered == 5
    assert manager.sink_failures == 0


def test_fanout_hands_the_run_records_to_each_childs_on_frame() -> None:
    channel = ChannelSink(100)
    manager = make(FanoutSink([channel]))
    evict(manager, 1)
    manager.shutdown()

    assert [(r.kind, r.seq) for r in channel.drain()] == [("eviction", 1)]
    assert [(r.kind, r.seq) for r in channel.frames] == [("open", 0), ("close", 2)]


def test_fanout_closes_every_child_even_when_one_fails(caplog: pytest.LogCaptureFixture) -> None:
    class CloseFails(BaseSink):
        name = "close-fails"

        def deliver(self, record: Record) -> None:
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
