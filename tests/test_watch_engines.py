"""What real engines send and a stand-in did not (issue 27): GPU-only clears, hybrid groups,
offloading tiers, reuse reports, restarts the seq alone cannot show, every batch layout, the
fields receipts carry, unknown fields counted and reported once.

The core is fed messages as the subscriber hands them over; the replay socket is a function
answering from a list, as the engine's ROUTER would.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from kvreceipts import features

pytestmark = pytest.mark.needs("receipts")
if not features.enabled("receipts"):
    pytest.skip("needs feature(s) receipts", allow_module_level=True)

from kvreceipts.engine.core import WatchCore  # noqa: E402
from kvreceipts.engine.figures import EngineFigures  # noqa: E402
from kvreceipts.engine.session import _close  # noqa: E402
from kvreceipts.engine.wire import decode_batch  # noqa: E402
from kvreceipts.engine.writer import RunWriter  # noqa: E402
from kvreceipts.shape import check_record  # noqa: E402
from kvreceipts.verify import VerifyOptions, verify_lines  # noqa: E402
from watch_harness import Lines  # noqa: E402
from watch_publisher import cleared, removed, stored  # noqa: E402


def payload(events: list[Any], ts: float, rank: int | None = 0) -> bytes:
    return bytes(msgspec.msgpack.encode([ts, events, rank]))


class Engine:
    """One engine process: its seq counter and replay buffer (what its ROUTER would answer)."""

    def __init__(self) -> None:
        self.seq = 0
        self.buffer: list[tuple[int, bytes]] = []

    def batch(self, events: list[Any], ts: float) -> list[bytes]:
        body = payload(events, ts)
        frames = [b"", self.seq.to_bytes(8, "big"), body]
        self.buffer.append((self.seq, body))
        self.seq += 1
        return frames


class Run:
    """A core with a real writer and a replay socket answering from ``self.engine``."""

    def __init__(self, *, replay: bool = True, **options: Any) -> None:
        self.lines = Lines()
        self.engine = Engine()
        self.asked: list[tuple[int, int]] = []
        self.reports: list[str] = []
        writer = RunWriter(self.lines, run_id="r", start_s=0.0)
        writer.open(workload={})
        self.writer = writer
        self.core = WatchCore(writer, recover=self._recover if replay else None,
                              report=self.reports.append, **options)  # fmt: skip

    def _recover(self, _topic: bytes, first: int, last: int) -> list[tuple[int, bytes, float]]:
        self.asked.append((first, last))
        return [(s, p, 0.0) for s, p in self.engine.buffer if s >= first]

    def send(self, events: list[Any], ts: float, *, lost: bool = False) -> None:
        frames = self.engine.batch(events, ts)
        if not lost:
            self.core.message(frames, ts)

    def restart(self) -> None:
        self.engine = Engine()

    def close(self) -> list[dict[str, Any]]:
        _close(self.core, self.writer, 100.0)  # as a watch ends: the close counts removals
        records = self.lines.records
        for record in records:
            assert check_record(record) is None, record
        assert verify_lines(self.lines.lines, options=VerifyOptions(allow_loss=True)).ok
        return records


def kinds(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in records if r["kind"] == kind]


def test_hybrid_groups_keep_one_copy_of_a_hash_per_group() -> None:
    run = Run()
    full = {"group_idx": 0, "kv_cache_spec_kind": "full_attention"}
    window = {"group_idx": 1, "kv_cache_spec_kind": "sliding_window",
              "kv_cache_spec_sliding_window": 1024}  # fmt: skip
    run.send([stored([1, 2]) | full, stored([1, 2]) | window], 10.0)
    run.send([removed([1, 2]) | {"group_idx": 1}], 11.0)  # the window slid past them
    run.send([stored([1]) | full], 12.0)  # still resident in group 0: a reuse, no regret
    run.send([removed([1, 2]) | {"group_idx": 0}], 15.0)
    records = run.close()
    assert not kinds(records, "engine_restore")
    gone = [(r["group_idx"], r["block_hash"], r["residency_ms"], r["store"]["kv_cache_spec_kind"])
            for r in kinds(records, "engine_removal")]  # fmt: skip
    assert gone == [(1, 1, 1000.0, "sliding_window"), (1, 2, 1000.0, "sliding_window"),
                    (0, 1, 5000.0, "full_attention"), (0, 2, 5000.0, "full_attention")]  # fmt: skip
    assert kinds(records, "engine_removal")[0]["store"]["kv_cache_spec_sliding_window"] == 1024
    (reuse,) = kinds(records, "engine_reuse")
    assert (reuse["group_idx"], reuse["block_hashes"]) == (0, [1])


def test_two_storage_tiers_holding_one_hash_stay_apart() -> None:
    run = Run()
    run.send([stored([7], medium="STORAGE") | {"ownership": "lmcache"},
              stored([7], medium="STORAGE") | {"ownership": "nixl", "locality": "REMOTE"}],
             1.0)  # fmt: skip
    run.send([removed([7], medium="STORAGE") | {"ownership": "lmcache"}], 2.0)
    run.send([removed([7], medium="STORAGE") | {"ownership": "nixl", "locality": "REMOTE"}],
             4.0)  # fmt: skip
    removals = kinds(run.close(), "engine_removal")
    assert [(r["ownership"], r["locality"], r["residency_ms"]) for r in removals] == [
        ("lmcache", None, 1000.0), ("nixl", "REMOTE", 3000.0),
    ]  # fmt: skip


def test_reuse_reports_are_hits_and_keep_the_residency_clock() -> None:
    run = Run()
    run.send([stored([1, 2, 3], parent=0)], 10.0)
    # kv_cache_report_mode="full": the blocks a request found cached are sent again.
    run.send([stored([1, 2]) | {"session_id": "s-9"}, stored([4], parent=3)], 12.0)
    run.send([removed([1])], 20.0)
    records = run.close()
    (reuse,) = kinds(records, "engine_reuse")
    assert (reuse["blocks"], reuse["block_hashes"], reuse["session_id"]) == (2, [1, 2], "s-9")
    (removal,) = kinds(records, "engine_removal")
    assert (removal["stored_ts"], removal["residency_ms"], removal["parent_block_hash"]) == (
        10.0, 10000.0, 0,
    )  # fmt: skip
    (tally,) = kinds(records, "engine_tally")
    (tier,) = tally["tiers"]
    assert (tier["stores"], tier["hits"], tier["removals"], tier["resident"]) == (4, 2, 1, 3)
    assert tally["hit_rate"] == pytest.approx(2 / 6)
    state = run.core.engines[b""]
    assert (state.stores, state.hits) == ({"GPU": 4}, {"GPU": 2})
    figures = EngineFigures()
    list(figures.tap(run.lines.lines))
    summary = figures.to_dict()
    assert summary["hit_rate"] == pytest.approx(2 / 6)
    assert summary["reuse"]["by_medium"] == {"GPU": 2}
    assert summary["removals_by_group"] == {"-": 1}


def test_a_restart_the_seq_does_not_show_is_found_through_the_replay_buffer() -> None:
    """The new engine's first batches were lost to the slow-joiner window; the first seq seen
    is past the old engine's next one. Its replay buffer holds our last seq with other bytes:
    another process. Its own 0..2 are recovered from it, never filled with the old state.
    """
    run = Run()
    run.send([stored([1, 2])], 1.0)
    run.send([stored([3])], 2.0)  # old engine: seq 0, 1
    run.restart()
    run.send([stored([10])], 50.0, lost=True)  # new engine: seq 0..2, never received
    run.send([removed([10])], 51.0, lost=True)
    run.send([stored([11])], 52.0, lost=True)
    run.send([removed([1, 11])], 53.0)  # seq 3 > the old next seq 2
    records = run.close()
    (restart,) = kinds(records, "engine_restart")
    assert (restart["evidence"], restart["previous_seq"], restart["engine_seq"],
            restart["resident_dropped"], restart["incarnation"]) == (
        "replay", 1, 3, 3, 1,
    )  # fmt: skip
    assert run.asked == [(1, 3), (0, 3)]
    assert not kinds(records, "engine_loss")
    removals = [(r["block_hash"], r["engine_seq"], r["stored_ts"])
                for r in kinds(records, "engine_removal")]  # fmt: skip
    # Block 1 was the old process's: its removal by the new one has no known store.
    assert removals == [(10, 1, 50.0), (1, 3, None), (11, 3, 52.0)]
    (tally,) = kinds(records, "engine_tally")
    assert tally["incarnations"] == 2


def test_after_a_disconnect_continuity_must_be_proven() -> None:
    run = Run(replay=False)
    run.send([stored([1])], 1.0)
    run.core.disconnected()  # the socket monitor saw the connection drop
    run.restart()
    run.send([stored([5])], 9.0, lost=True)
    run.send([stored([6])], 9.5)  # seq 1: the old engine's next seq, but nothing proves it
    records = run.close()
    (restart,) = kinds(records, "engine_restart")
    assert (restart["evidence"], restart["resident_dropped"]) == ("reconnect", 1)
    (loss,) = kinds(records, "engine_loss")
    assert (loss["first_engine_seq"], loss["last_engine_seq"], loss["replay_attempted"]) == (
        0, 0, False,
    )  # fmt: skip


def test_a_disconnect_of_the_same_process_is_proven_by_its_replay_buffer() -> None:
    run = Run()
    run.send([stored([1])], 1.0)
    run.core.disconnected()  # a network blip; the engine lives on
    run.send([removed([1])], 2.0, lost=True)
    run.send([stored([2])], 3.0)
    records = run.close()
    assert not kinds(records, "engine_restart")
    assert not kinds(records, "engine_loss")
    (removal,) = kinds(records, "engine_removal")
    assert removal["residency_ms"] == 1000.0  # recovered, with the old state


def test_a_replay_buffer_that_rolled_past_our_last_batch_proves_nothing_after_a_disconnect() -> (
    None
):
    run = Run()
    run.send([stored([1])], 1.0)
    run.core.disconnected()
    run.send([removed([1])], 2.0, lost=True)
    run.engine.buffer = run.engine.buffer[1:]  # seq 0 is gone from the buffer
    run.send([stored([2])], 3.0)
    (restart,) = kinds(run.close(), "engine_restart")
    assert restart["evidence"] == "reconnect"


@pytest.mark.parametrize("layout", ["array-array", "array-map", "map-map"])
def test_every_vllm_batch_layout_decodes(layout: str) -> None:
    events_layout = "array" if layout == "array-array" else "map"
    events = [stored([1, 2], parent=0, layout=events_layout), removed([1], layout=events_layout),
              cleared(layout=events_layout)]  # fmt: skip
    if layout == "map-map":  # vLLM at commit 0181ea31: EventBatch without array_like
        body = msgspec.msgpack.encode({"ts": 3.0, "events": events, "data_parallel_rank": 2})
    else:
        body = msgspec.msgpack.encode([3.0, events, 2])
    batch = decode_batch(body)
    assert (batch.ts, batch.dp_rank, [e.op for e in batch.events]) == (3.0, 2, [1, 2, 3])


def test_receipts_carry_tokens_bytes_tenant_rank_and_upper_case_media() -> None:
    run = Run(bytes_per_token=131072)
    event = stored([1, 2], medium="cpu") | {
        "token_ids": list(range(16 + 5)), "block_size": 16, "lora_name": "sql-lora",
        "extra_keys": [["sql-lora", "tenant-a"], ["sql-lora", "tenant-a"]],
    }  # fmt: skip
    run.core.message([b"", (0).to_bytes(8, "big"), payload([event], 1.0, rank=3)], 1.0)
    run.core.message([b"", (1).to_bytes(8, "big"),
                      payload([removed([1, 2], medium="CPU")], 2.0, rank=3)], 2.0)  # fmt: skip
    removals = kinds(run.close(), "engine_removal")
    assert [(r["medium"], r["dp_rank"], r["tokens"], r["bytes_freed"]) for r in removals] == [
        ("CPU", 3, 16, 16 * 131072), ("CPU", 3, 5, 5 * 131072),  # the last block is partial
    ]  # fmt: skip
    assert removals[0]["store"] == {"cache_salt": "tenant-a", "kv_cache_spec_kind": None,
                                    "kv_cache_spec_sliding_window": None,
                                    "lora_name": "sql-lora", "session_id": None}  # fmt: skip


def test_unknown_types_and_fields_are_counted_and_reported_once() -> None:
    run = Run()
    for ts in (1.0, 2.0):
        run.send([{"type": "BlockPinned", "block_hashes": [1]},
                  stored([1]) | {"something_new": 1}, removed([1]) | {"why": "evicted"}],
                 ts)  # fmt: skip
    records = run.close()
    assert len(run.reports) == 3
    assert all("reported once" in line for line in run.reports)
    (tally,) = kinds(records, "engine_tally")
    assert tally["unknown"] == {"BlockRemoved.why": 2, "BlockStored.something_new": 2,
                                "type:BlockPinned": 2}  # fmt: skip
    assert len(kinds(records, "engine_removal")) == 2  # the known parts were handled


def test_a_group_or_rank_appearing_mid_stream_is_new_state() -> None:
    run = Run()
    run.send([stored([1])], 1.0)
    run.send([stored([1]) | {"group_idx": 4}], 2.0)
    run.send([removed([1]) | {"group_idx": 4}, removed([1])], 3.0)
    removals = kinds(run.close(), "engine_removal")
    assert [(r["group_idx"], r["residency_ms"]) for r in removals] == [(4, 1000.0), (None, 2000.0)]


def test_an_answer_cut_short_is_asked_again_from_the_hole() -> None:
    """A ROUTER past its send high-water mark (ZMQ's default 1,000 in SGLang and vLLM 0.10)
    drops the rest of an answer, end marker included: the core asks again from there."""
    run = Run()
    cut = 3

    def short(_topic: bytes, first: int, last: int) -> list[tuple[int, bytes, float]]:
        run.asked.append((first, last))
        return [(s, p, 0.0) for s, p in run.engine.buffer if s >= first][:cut]

    run.core.recover = short
    run.send([stored([0])], 1.0)
    for n in range(1, 9):
        run.send([stored([n])], 1.0 + n, lost=True)
    run.send([removed(list(range(9)))], 20.0)
    records = run.close()
    assert run.asked == [(0, 9), (3, 9), (6, 9)]
    assert not kinds(records, "engine_loss")
    assert [r["residency_ms"] for r in kinds(records, "engine_removal")] == [
        (20.0 - 1.0 - n) * 1000.0 for n in range(9)
    ]
