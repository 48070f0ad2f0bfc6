"""The engine wire decoder, the recording format and the watch's pieces without sockets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvreceipts import features

pytestmark = pytest.mark.needs("receipts")
if not features.enabled("receipts"):  # the watch writes receipts: its modules need them
    pytest.skip("needs feature(s) receipts", allow_module_level=True)

from kvreceipts import engine  # noqa: E402
from kvreceipts.chain import canonical  # noqa: E402
from kvreceipts.engine.core import WatchCore  # noqa: E402
from kvreceipts.engine.live import check_endpoint  # noqa: E402
from kvreceipts.engine.receipts import (  # noqa: E402
    EngineRemovalReceipt,
    batch_fragment,
    removal_template,
    tier_fragments,
)
from kvreceipts.engine.recording import MESSAGE, Recorder, RecordingReader  # noqa: E402
from kvreceipts.engine.wire import (  # noqa: E402
    CLEARED,
    END_SEQ,
    REMOVED,
    STORED,
    Event,
    WireError,
    decode_batch,
    parse_reply,
    parse_seq,
)
from kvreceipts.engine.writer import RunWriter  # noqa: E402
from kvreceipts.errors import InputError, UsageError  # noqa: E402
from kvreceipts.shape import check_record  # noqa: E402
from watch_harness import Lines  # noqa: E402
from watch_publisher import cleared, removed, stored  # noqa: E402

if TYPE_CHECKING:
    from pathlib import Path


def facts(events: list[Event]) -> list[tuple[int, Any, Any, Any]]:
    """What the core reads of each event, whatever class decoded it."""
    return [(e.op, getattr(e, "hashes", None), getattr(e, "parent", None),
             getattr(e, "medium", None)) for e in events]  # fmt: skip


def encode(events: list[Any], ts: float = 1.5, *rest: object) -> bytes:
    return bytes(msgspec.msgpack.encode([ts, events, *rest]))


@pytest.mark.parametrize("layout", ["map", "array"])
def test_both_layouts_decode_to_the_same_events(layout: str) -> None:
    batch = decode_batch(encode([stored([1, 2], parent=0, layout=layout, extra=True),
                                 removed([3], medium="CPU", layout=layout),
                                 cleared(layout=layout)], 7, None))  # fmt: skip
    assert batch.ts == 7.0
    assert facts(batch.events) == [(STORED, [1, 2], 0, "GPU"), (REMOVED, [3], None, "CPU"),
                                   (CLEARED, None, None, None)]  # fmt: skip


def test_older_batches_without_a_rank_and_unknown_events() -> None:
    events = [{"type": "BlockPinned", "x": 1}, ["Future", 1],
              {"type": "BlockRemoved", "block_hashes": [b"\x01\x02"]}]  # fmt: skip
    batch = decode_batch(encode(events))
    assert batch.dp_rank is None
    assert batch.unknown_events == 2
    assert facts(batch.events) == [(REMOVED, ["0102"], None, None)]


@pytest.mark.parametrize("layout", ["map", "array"])
def test_byte_hashes_and_mixed_layouts_take_the_lenient_path(layout: str) -> None:
    events = [stored([b"\x00\x01", 5], parent=b"\xff", layout=layout),
              removed([b"\x00\x01"], layout="array" if layout == "map" else "map")]  # fmt: skip
    assert facts(decode_batch(encode(events)).events) == [
        (STORED, ["0001", 5], "ff", "GPU"), (REMOVED, ["0001"], None, "GPU"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xc1", "payload is not msgpack"),
        (bytes(msgspec.msgpack.encode({"ts": 1})), "not a [ts, events"),
        (bytes(msgspec.msgpack.encode(["now", []])), "batch ts must be a number"),
        (bytes(msgspec.msgpack.encode([1.0, {}])), "batch events must be a list"),
        (bytes(msgspec.msgpack.encode([1.0, [7]])), "an event must be a map or an array"),
        (bytes(msgspec.msgpack.encode([1.0, [["BlockRemoved", 5]]])), "must be a list"),
        (bytes(msgspec.msgpack.encode([1.0, [["BlockRemoved", [1.5]]]])), "integer or bytes"),
        (bytes(msgspec.msgpack.encode([1.0, [["BlockRemoved", [1], 3]]])), "medium must be"),
    ],
)
def test_bad_payloads_give_one_line_reasons(payload: bytes, message: str) -> None:
    with pytest.raises(WireError, match=message.replace("[", r"\[")) as info:
        decode_batch(payload)
    assert "\n" not in str(info.value)


def test_seq_is_eight_bytes_big_endian() -> None:
    assert parse_seq((258).to_bytes(8, "big")) == 258
    with pytest.raises(WireError, match="3 bytes, expected 8"):
        parse_seq(b"\x00\x01\x02")


def test_replay_replies_in_both_layouts() -> None:
    seq = (5).to_bytes(8, "big")
    assert parse_reply([b"", b"t", seq, b"p"], b"x") == (b"t", 5, b"p")
    assert parse_reply([b"", seq, b"p"], b"x") == (b"x", 5, b"p")
    assert parse_reply([b"", b"", END_SEQ, b""], b"x") is None
    assert parse_reply([b"", END_SEQ, b""], b"x") is None
    with pytest.raises(WireError, match="5 frames"):
        parse_reply([b"", b"a", b"b", b"c", b"d"], b"x")


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("not-an-endpoint", "is not a ZMQ address"),
        ("tcp://gpu-host", "is not a ZMQ address"),
        ("http://gpu-host:5557", "is not a ZMQ address"),
        ("tcp://*:5557", "bind address"),
        ("tcp://gpu-host:70000", "port must be"),
    ],
)
def test_endpoints_that_are_not_zmq_addresses(endpoint: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        check_endpoint(endpoint)


@pytest.mark.parametrize(
    "endpoint", ["tcp://gpu-host:5557", "tcp://10.0.0.7:5557", "tcp://[::1]:5557", "ipc:///tmp/kv"]
)
def test_endpoints_that_are(endpoint: str) -> None:
    assert check_endpoint(endpoint) == endpoint


def test_a_missing_dependency_names_the_extra() -> None:
    with pytest.raises(UsageError, match=r"needs no_such_module_kvr.*kvreceipts\[watch\]"):
        engine.require("no_such_module_kvr")


def test_a_torn_recording_replays_its_whole_entries(tmp_path: Path) -> None:
    path = tmp_path / "r.kvrec"
    recorder = Recorder(path, {"run_id": "r", "start_s": 1.0})
    recorder.entry(MESSAGE, 2.0, [b"", (0).to_bytes(8, "big"), b"x" * 10])
    recorder.entry(MESSAGE, 3.0, [b"", (1).to_bytes(8, "big"), b"y" * 10])
    recorder.close()
    path.write_bytes(path.read_bytes()[:-4])
    reader = RecordingReader(str(path))
    entries = list(reader.entries())
    reader.close()
    assert [e.at_s for e in entries] == [2.0]
    assert reader.torn


def test_a_file_that_is_not_a_recording(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text("{}\n")
    with pytest.raises(InputError, match="not a kvreceipts watch recording"):
        RecordingReader(str(path))
    path.write_bytes(b"KVRWATCH\x01\n\x00\x00\x00\x09{broken")
    with pytest.raises(InputError, match="header is damaged"):
        RecordingReader(str(path))


def test_receipt_times_never_go_backwards() -> None:
    lines = Lines()
    writer = RunWriter(lines, run_id="r", start_s=100.0)
    core = WatchCore(writer)
    seq = (0).to_bytes(8, "big")
    core.message([b"", seq, encode([stored([1, 2]), removed([2])], 1.0)], 105.0)
    core.message([b"", (1).to_bytes(8, "big"), encode([removed([1])], 2.0)], 104.0)
    assert [r["timestamp"] for r in lines.records] == ["1970-01-01T00:01:45.000000Z"] * 2


def test_a_seq_that_goes_back_but_not_to_zero_is_a_restart_with_a_gap() -> None:
    lines = Lines()
    core = WatchCore(RunWriter(lines, run_id="r", start_s=0.0))
    for seq in (0, 1, 2, 3):
        core.message([b"", seq.to_bytes(8, "big"), encode([])], 1.0)
    core.message([b"", (2).to_bytes(8, "big"), encode([])], 1.0)  # the restart's 0, 1 missed
    assert [(r["kind"], r.get("first_engine_seq"), r.get("last_engine_seq"))
            for r in lines.records] == [("engine_restart", None, None), ("loss", None, None),
                                        ("engine_loss", 0, 1)]  # fmt: skip


_HASHES = st.one_of(st.integers(0, 2**64 - 1), st.binary(min_size=1, max_size=32).map(bytes.hex))
_TIMES = st.floats(0, 2e9, allow_nan=False)


@given(
    block_hash=_HASHES,
    parent=st.none() | _HASHES,
    medium=st.none() | st.sampled_from(["GPU", "CPU", "DISK"]) | st.text(max_size=8),
    topic=st.text(max_size=12),
    engine_ts=_TIMES,
    stored_ts=st.none() | _TIMES,
    residency=st.none() | st.floats(-1e9, 1e9, allow_nan=False),
    seqs=st.tuples(st.integers(0, 2**63), st.integers(0, 2**63)),
    key_id=st.none() | st.just("0123456789abcdef"),
    tier=st.tuples(
        st.none() | st.integers(0, 64),
        st.none() | st.integers(0, 8),
        st.none() | st.just("LOCAL"),
        st.none() | st.text(max_size=6),
    ),
    tokens=st.none() | st.integers(0, 64),
    store=st.none()
    | st.fixed_dictionaries(
        {
            "cache_salt": st.none() | st.text(max_size=6),
            "kv_cache_spec_kind": st.none() | st.just("sliding_window"),
            "kv_cache_spec_sliding_window": st.none() | st.integers(0, 4096),
            "lora_name": st.none() | st.text(max_size=6),
            "session_id": st.none() | st.text(max_size=6),
        }
    ),
)
def test_the_removal_template_is_the_canonical_json(  # noqa: PLR0917 - hypothesis
    block_hash: int | str, parent: int | str | None, medium: str | None, topic: str,
    engine_ts: float, stored_ts: float | None, residency: float | None,
    seqs: tuple[int, int], key_id: str | None,
    tier: tuple[int | None, int | None, str | None, str | None], tokens: int | None,
    store: dict[str, Any] | None,
) -> None:  # fmt: skip
    alg = "hmac-sha256" if key_id else "sha256"
    rank, group, locality, ownership = tier
    freed = None if tokens is None else tokens * 131072
    record = EngineRemovalReceipt(
        run_id="r%x", seq=seqs[0], timestamp="2026-01-01T00:00:00.000000Z", alg=alg,
        key_id=key_id, topic=topic, engine_seq=seqs[1], engine_ts=engine_ts, medium=medium,
        block_hash=block_hash, parent_block_hash=parent, stored_ts=stored_ts,
        residency_ms=residency, dp_rank=rank, group_idx=group, locality=locality,
        ownership=ownership, tokens=tokens, bytes_freed=freed, store=store,
    )  # fmt: skip
    dumps = orjson.dumps
    rank_json, group_json, place_json = tier_fragments(rank, group, locality, medium, ownership)
    payload = removal_template("r%x", alg, key_id) % (
        dumps(block_hash), dumps(freed),
        batch_fragment(rank_json, seqs[1], dumps(engine_ts), group_json), place_json,
        dumps(parent), dumps(residency), seqs[0],
        dumps(store, option=orjson.OPT_SORT_KEYS), dumps(stored_ts),
        record.timestamp.encode(), dumps(tokens), dumps(topic),
    )  # fmt: skip
    assert payload == canonical(record.to_dict())
    assert check_record({**orjson.loads(payload), "digest": "0" * 64}) is None


def test_batches_our_queue_dropped_are_not_asked_of_the_replay_socket() -> None:
    asked: list[tuple[int, int]] = []

    def recover(_topic: bytes, first: int, last: int) -> list[tuple[int, bytes, float]]:
        asked.append((first, last))
        return []

    lines = Lines()
    core = WatchCore(RunWriter(lines, run_id="r", start_s=0.0), recover=recover)

    def message(seq: int) -> list[bytes]:
        return [b"", seq.to_bytes(8, "big"), encode([])]

    core.message(message(0), 1.0)
    core.dropped(b"", 1, 3)  # the watch's own queue overflowed
    core.message(message(4), 1.0)
    core.dropped(b"", 5, 5)
    core.message(message(7), 1.0)  # 5 dropped here, 6 lost on the way: ask for 5..6
    # ... from 4, the last batch processed (the answer must hold it byte for byte to prove it
    # comes from the same process), through 7, the batch that showed the gap.
    assert asked == [(4, 7)]
    losses = [(r["first_engine_seq"], r["last_engine_seq"], r["cause"], r["replay_attempted"])
              for r in lines.records if r["kind"] == "engine_loss"]  # fmt: skip
    assert losses == [(1, 3, "queue_full", False), (5, 5, "queue_full", True),
                      (6, 6, "not_received", True)]  # fmt: skip
