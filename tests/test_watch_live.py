"""``watch`` against a real ZMQ publisher on 127.0.0.1 (XPUB + ROUTER replay), in-process."""

from __future__ import annotations

import urllib.request
from typing import TYPE_CHECKING, Any

import pytest

from kvreceipts import features

pytest.importorskip("zmq")
pytestmark = pytest.mark.needs("receipts")
if not features.enabled("receipts"):  # the watch writes receipts: its modules need them
    pytest.skip("needs feature(s) receipts", allow_module_level=True)

from kvreceipts.engine.session import watch_recording  # noqa: E402
from kvreceipts.shape import check_record  # noqa: E402
from kvreceipts.verify import VerifyOptions, verify_lines  # noqa: E402
from watch_harness import Lines, Watch  # noqa: E402
from watch_publisher import Publisher, cleared, removed, stored  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def pub() -> Iterator[Publisher]:
    with Publisher() as publisher:
        yield publisher


def kinds(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in records if r["kind"] == kind]


def verified(watch: Watch, *, lost: int = 0) -> None:
    """Every line fits its schema, the run is framed and verifies; ``lost`` declared losses
    fail verify unless allowed.
    """
    records = watch.sink.records
    for record in records:
        assert check_record(record) is None, record
    assert (records[0]["kind"], records[0]["source"], records[-1]["kind"]) == (
        "open", "watch", "close",
    )  # fmt: skip
    report = verify_lines(watch.sink.lines, options=VerifyOptions(allow_loss=True))
    assert report.ok, report.violations
    assert len(report.losses) == lost
    strict = verify_lines(watch.sink.lines)
    assert strict.ok is (lost == 0)
    assert [v.check for v in strict.violations] == ["loss"] * lost


@pytest.mark.parametrize("layout", ["map", "array"])
def test_both_layouts_give_removal_receipts_with_residency(pub: Publisher, layout: str) -> None:
    watch = Watch(pub, max_batches=2)
    pub.batch([stored([11, 12, 13], parent=10, layout=layout, extra=True)], ts=100.0)
    pub.batch([removed([11, 12], layout=layout)], ts=101.5)
    records = watch.done()
    assert [(r["block_hash"], r["parent_block_hash"], r["stored_ts"], r["residency_ms"])
            for r in records] == [(11, 10, 100.0, 1500.0), (12, 11, 100.0, 1500.0)]  # fmt: skip
    assert {(r["medium"], r["engine_seq"], r["engine_ts"], r["topic"]) for r in records} == {
        ("GPU", 1, 101.5, "")
    }
    assert [r["seq"] for r in records] == [1, 2]  # after the open record
    verified(watch)
    assert watch.result is not None
    assert watch.result.lost_batches == 0


def test_byte_hashes_become_hex(pub: Publisher) -> None:
    watch = Watch(pub, max_batches=2)
    digest = bytes(range(8))
    pub.batch([stored([digest], parent=b"\xff" * 8, medium="CPU")], ts=5.0)
    pub.batch([removed([digest], medium="CPU")], ts=6.0)
    (record,) = watch.done()
    assert record["block_hash"] == "0001020304050607"
    assert record["parent_block_hash"] == "ff" * 8
    assert record["medium"] == "CPU"
    verified(watch)


@pytest.mark.parametrize("old_replies", [False, True], ids=["topic-replies", "old-replies"])
def test_a_skipped_batch_is_recovered_by_replay(old_replies: bool) -> None:
    with Publisher(old_replies=old_replies) as pub:
        watch = Watch(pub, max_batches=2)
        pub.batch([stored([1, 2])], ts=1.0)
        pub.batch([removed([1])], ts=2.0, skip=True)  # PUB "dropped" it; replay keeps it
        pub.batch([removed([2])], ts=3.0)
        records = watch.done()
        assert pub.replay_requests == [0]  # from the last batch processed: the proof
    assert [(r["kind"], r["block_hash"], r["engine_seq"]) for r in records] == [
        ("engine_removal", 1, 1), ("engine_removal", 2, 2),
    ]  # fmt: skip
    assert watch.result is not None
    assert watch.result.lost_batches == 0
    assert watch.result.core.engines[b""].recovered_batches == 1
    verified(watch)


def test_a_gap_without_replay_is_a_loss_record(pub: Publisher) -> None:
    watch = Watch(pub, replay=False, max_batches=2)
    pub.batch([stored([1])], ts=1.0)
    pub.batch([removed([1])], ts=2.0, skip=True)
    pub.batch([removed([7])], ts=3.0, skip=True)
    pub.batch([stored([2])], ts=4.0)
    records = watch.done()
    (loss,) = kinds(records, "engine_loss")
    assert (loss["first_engine_seq"], loss["last_engine_seq"], loss["batches"]) == (1, 2, 2)
    assert (loss["cause"], loss["replay_attempted"]) == ("not_received", False)
    assert watch.result is not None
    assert watch.result.lost_batches == 2
    # A loss record declares the receipts the batches would have given: verify fails
    # unless --allow-loss, and the engine_loss receipt says which batches and why.
    verified(watch, lost=1)
    (declared,) = kinds(watch.sink.records, "loss")
    assert declared["seq"] == loss["loss_seq"] == loss["seq"] - 1
    assert declared["sink"] == "engine '' seq 1..2 (not_received)"


def test_replay_that_cannot_give_the_batch_is_a_loss(pub: Publisher) -> None:
    watch = Watch(pub, max_batches=2)
    pub.batch([stored([1])], ts=1.0)
    pub.batch([removed([1])], ts=2.0, skip=True)
    pub.engine().buffer.clear()  # the engine's replay buffer no longer holds seq 1
    pub.batch([stored([2])], ts=3.0)
    (loss,) = kinds(watch.done(), "engine_loss")
    assert (loss["first_engine_seq"], loss["last_engine_seq"]) == (1, 1)
    assert loss["replay_attempted"] is True
    # From the last batch processed (the proof), then again from the hole: an answer cut
    # short by a ROUTER's high-water mark is asked again while each brings new batches.
    assert pub.replay_requests == [0, 1]


def test_an_engine_restart_resets_what_it_holds(pub: Publisher) -> None:
    watch = Watch(pub, replay=False, max_batches=4)
    pub.batch([stored([1, 2, 3])], ts=10.0)
    pub.batch([stored([4])], ts=11.0)
    pub.restart()
    pub.batch([stored([9])], ts=20.0)  # seq 0 again
    pub.batch([removed([1, 9])], ts=21.0)
    records = watch.done()
    (restart,) = kinds(records, "engine_restart")
    assert (restart["previous_seq"], restart["engine_seq"], restart["resident_dropped"]) == (
        1, 0, 4,
    )  # fmt: skip
    removals = kinds(records, "engine_removal")
    # Block 1 was stored by the old process: the new one's removal has no known store.
    assert [(r["block_hash"], r["stored_ts"]) for r in removals] == [(1, None), (9, 20.0)]
    assert not kinds(records, "engine_loss")
    verified(watch)


def test_all_blocks_cleared_clears_the_gpu_only(pub: Publisher) -> None:
    watch = Watch(pub, max_batches=4)
    pub.batch([stored([1, 2, 3]), stored([4], medium="CPU")], ts=1.0)
    pub.batch([cleared(layout="array")], ts=2.0)
    pub.batch([removed([2])], ts=3.0)
    pub.batch([removed([4], medium="CPU")], ts=4.0)
    records = watch.done()
    (clear,) = kinds(records, "engine_clear")
    # vLLM resets its GPU prefix cache; the block offloaded to CPU stays.
    assert (clear["count"], clear["kept"], clear["engine_seq"]) == (3, 1, 1)
    gpu, cpu = kinds(records, "engine_removal")
    assert gpu["residency_ms"] is None  # cleared, so its store is forgotten
    assert (cpu["medium"], cpu["residency_ms"]) == ("CPU", 3000.0)
    verified(watch)


def test_two_topics_keep_their_own_state_and_seqs(pub: Publisher) -> None:
    watch = Watch(pub, max_batches=4)
    for topic in (b"kv@a@m", b"kv@b@m"):
        pub.batch([stored([1])], topic=topic, ts=1.0)
    pub.batch([removed([1])], topic=b"kv@a@m", ts=2.0)
    pub.batch([removed([1])], topic=b"kv@b@m", ts=4.0)
    records = watch.done()
    assert sorted((r["topic"], r["residency_ms"]) for r in records) == [
        ("kv@a@m", 1000.0), ("kv@b@m", 3000.0),
    ]  # fmt: skip
    assert not kinds(records, "engine_loss")  # each topic counts its own seq from 0


def test_topic_option_subscribes_to_one_engine(pub: Publisher) -> None:
    watch = Watch(pub, topic="kv@b", max_batches=2)
    for ts, topic in enumerate((b"kv@a@m", b"kv@b@m", b"kv@a@m", b"kv@b@m")):
        pub.batch([stored([ts])] if ts < 2 else [removed([ts - 2])], topic=topic, ts=float(ts))
    records = watch.done()
    assert [(r["topic"], r["block_hash"]) for r in records] == [("kv@b@m", 1)]


def test_malformed_messages_are_reported_and_the_watch_goes_on(pub: Publisher) -> None:
    watch = Watch(pub, replay=False, max_batches=3)
    pub.batch([stored([1])], ts=1.0)
    pub.raw([b"", b"\x00" * 8])  # two frames
    pub.raw([b"", b"\x00\x01", b"x"])  # a 2-byte seq
    pub.batch([], payload=b"\xc1 not msgpack")  # seq 1, undecodable
    pub.batch([removed([1])], ts=3.0)
    records = watch.done()
    assert [r["kind"] for r in records] == ["engine_loss", "engine_removal"]
    assert (records[0]["cause"], records[0]["first_engine_seq"]) == ("undecodable", 1)
    assert len(watch.reports) == 3
    assert "2 frames (expected 3" in watch.reports[0]
    assert "seq frame has 2 bytes, expected 8" in watch.reports[1]
    assert "engine seq 1: payload is not msgpack" in watch.reports[2]
    assert all("\n" not in line for line in watch.reports)
    verified(watch, lost=1)


def test_a_block_stored_again_soon_after_removal_is_regret(pub: Publisher) -> None:
    watch = Watch(pub, regret_window_s=30.0, max_batches=6)
    pub.batch([stored([1, 2])], ts=100.0)
    pub.batch([removed([1, 2])], ts=101.0)
    pub.batch([stored([1])], ts=120.0)  # 19 s later: regret
    pub.batch([stored([2], medium="CPU")], ts=121.0)  # another medium: an offload, no regret
    pub.batch([removed([1])], ts=122.0)
    pub.batch([stored([1])], ts=160.0)  # 38 s later: outside the window
    records = watch.done()
    (restore,) = kinds(records, "engine_restore")
    removal_seqs = {r["block_hash"]: r["seq"] for r in kinds(records, "engine_removal")[:2]}
    assert restore["removal_seq"] == removal_seqs[1]
    assert (restore["gap_ms"], restore["removed_ts"], restore["engine_ts"]) == (
        19000.0, 101.0, 120.0,
    )  # fmt: skip
    assert watch.result is not None
    assert watch.result.core.engines[b""].regret == {"GPU": 1}
    verified(watch)


def test_metrics_endpoint_serves_the_counters(pub: Publisher) -> None:
    watch = Watch(pub, replay=False, metrics_port=0)
    pub.batch([stored([1, 2, 3])], ts=1.0)
    pub.batch([removed([1])], ts=2.0, skip=True)
    pub.batch([removed([2]), stored([1])], ts=3.0)
    watch.wait_for(2)
    url = f"http://127.0.0.1:{watch.metrics.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    watch.stop.set()
    watch.done()
    expected = [
        'kvreceipts_engine_events_total{topic="",type="BlockStored"} 2.0',
        'kvreceipts_engine_events_total{topic="",type="BlockRemoved"} 1.0',
        'kvreceipts_engine_removals_total{medium="GPU",topic=""} 1.0',
        'kvreceipts_engine_stores_total{medium="GPU",topic=""} 3.0',  # block 1 again: a hit
        'kvreceipts_engine_hits_total{medium="GPU",topic=""} 1.0',
        'kvreceipts_engine_resident_blocks{medium="GPU",topic=""} 2.0',
        'kvreceipts_engine_regret_total{medium="GPU",topic=""} 0.0',
        'kvreceipts_engine_gaps_total{topic=""} 1.0',
        'kvreceipts_engine_lost_batches_total{topic=""} 1.0',
        'kvreceipts_engine_last_seq{topic=""} 2.0',
        "kvreceipts_engine_queue_dropped_total 0.0",
    ]
    lines = set(text.splitlines())
    assert [line for line in expected if line not in lines] == []


def test_a_slow_output_never_blocks_the_subscriber_and_every_batch_is_accounted(
    pub: Publisher,
) -> None:
    sink = Lines(delay=0.002)
    watch = Watch(pub, replay=False, sink=sink, queue_size=4, idle_timeout_s=1.0)
    sent = 300
    for n in range(sent):
        pub.batch([removed([n])], ts=float(n))
    records = watch.done()
    seen = {r["engine_seq"] for r in kinds(records, "engine_removal")}
    lost: set[int] = set()
    for loss in kinds(records, "engine_loss"):
        assert loss["cause"] == "queue_full"
        lost.update(range(loss["first_engine_seq"], loss["last_engine_seq"] + 1))
    assert lost, "the queue of 4 should have overflowed"
    assert seen | lost == set(range(sent))
    assert not seen & lost
    assert watch.result is not None
    assert watch.result.queue_dropped == len(lost)
    verified(watch, lost=len(kinds(records, "engine_loss")))


def test_record_then_from_gives_identical_receipts(pub: Publisher, tmp_path: Path) -> None:
    recording = tmp_path / "run.kvrec"
    watch = Watch(pub, record=str(recording), max_batches=6)
    pub.batch([stored([1, 2, 3])], ts=1.0)
    pub.batch([removed([1])], ts=2.0, skip=True)  # recovered through replay
    pub.batch([removed([2])], ts=3.0)
    pub.batch([stored([1])], ts=4.0)
    watch.wait_for(3)  # seq 1 was asked for and given back before the buffer goes
    pub.batch([removed([9])], ts=5.0, skip=True)
    pub.engine().buffer.clear()  # ... and this one lost
    pub.batch([cleared()], ts=6.0)
    pub.restart()
    pub.batch([stored([5])], ts=7.0)
    pub.batch([], payload=b"\x93\x01")  # undecodable
    records = watch.done()
    assert {r["kind"] for r in records} == {
        "engine_removal", "engine_restore", "engine_loss", "engine_clear", "engine_restart",
    }  # fmt: skip
    again = Lines()
    result = watch_recording(str(recording), again)
    assert again.lines == watch.sink.lines
    assert result.lost_batches == watch.result.lost_batches == 2  # type: ignore[union-attr]
