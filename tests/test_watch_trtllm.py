"""``watch --from-trtllm``: TensorRT-LLM's KV-cache events, written in the layout of its
``KVCacheEventSerializer`` (tensorrt_llm/_utils.py) as ``llm.get_kv_cache_events()`` returns
them, one JSON object (or list) per line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
import pytest
from typer.testing import CliRunner

from kvreceipts import features

pytestmark = pytest.mark.needs("receipts")
if not features.enabled("receipts"):
    pytest.skip("needs feature(s) receipts", allow_module_level=True)

from kvreceipts.cli import app  # noqa: E402
from kvreceipts.engine.session import watch_trtllm  # noqa: E402
from kvreceipts.shape import check_record  # noqa: E402
from kvreceipts.verify import VerifyOptions, verify_lines  # noqa: E402
from watch_harness import Lines  # noqa: E402

if TYPE_CHECKING:
    from pathlib import Path

BIG = 2**64 - 5  # hashes are unsigned 64-bit: half lie above 2**63


def event(event_id: int, data: dict[str, Any], window: int = 4096, **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "data": data, "window_size": window, **extra}


def block(block_hash: Any, tokens: int = 4, level: int = 0) -> dict[str, Any]:
    return {"type": "stored_block", "block_hash": block_hash, "cache_level": level,
            "priority": 35, "tokens": [{"type": "unique_token", "token_id": 100 + i,
                                        "token_extra_id": 0} for i in range(tokens)]}  # fmt: skip


def stored(parent: Any, *blocks: dict[str, Any]) -> dict[str, Any]:
    return {"type": "stored", "parent_hash": parent, "blocks": list(blocks)}


def removed(*hashes: Any) -> dict[str, Any]:
    return {"type": "removed", "block_hashes": list(hashes)}


def updated(block_hash: Any, old: int, new: int) -> dict[str, Any]:
    diff = {"type": "event_diff", "old_value": old, "new_value": new}
    return {"type": "updated", "block_hash": block_hash, "cache_level": diff,
            "priority": {"type": "event_diff", "old_value": 35, "new_value": 35}}  # fmt: skip


def run(tmp_path: Path, lines: list[Any]) -> list[dict[str, Any]]:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    sink = Lines()
    watch_trtllm(str(path), sink, bytes_per_token=2)
    for record in sink.records:
        assert check_record(record) is None, record
    assert verify_lines(sink.lines, options=VerifyOptions(allow_loss=True)).ok
    return sink.records


def kinds(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in records if r["kind"] == kind]


def test_stores_removals_and_offload_follow_the_cache_levels(tmp_path: Path) -> None:
    records = run(tmp_path, [
        event(0, {"type": "created", "num_blocks_per_cache_level": [128, 512]}),
        {"ts": 10.0, "events": [event(1, stored(None, block(1), block(2, tokens=3)))]},
        {"ts": 11.0, "events": [event(2, updated(2, 0, 1))]},  # offloaded to host memory
        {},  # the serializer's None
        {"ts": 15.0, "events": [event(3, removed(1, 2))]},  # removed names no level
    ])  # fmt: skip
    gone = [(r["block_hash"], r["medium"], r["parent_block_hash"], r["residency_ms"],
             r["tokens"], r["bytes_freed"], r["group_idx"])
            for r in kinds(records, "engine_removal")]  # fmt: skip
    assert gone == [
        (2, "GPU", 1, 1000.0, 3, 6, 4096),  # the offload: it left the GPU pool
        (1, "GPU", None, 5000.0, 4, 8, 4096),
        (2, "CPU", None, 4000.0, None, None, 4096),  # then left host memory
    ]  # fmt: skip
    assert not kinds(records, "engine_loss")


def test_window_sizes_are_namespaces_and_big_or_hex_hashes_are_one_hash(tmp_path: Path) -> None:
    records = run(tmp_path, [
        {"ts": 1.0, "events": [event(0, stored(None, block(BIG)), window=4096),
                               event(1, stored(None, block(f"{BIG:x}")), window=512)]},
        {"ts": 3.0, "events": [event(2, removed(f"0x{BIG:x}"), window=512)]},
        {"ts": 7.0, "events": [event(3, removed(BIG), window=4096)]},
    ])  # fmt: skip
    gone = [(r["block_hash"], r["group_idx"], r["residency_ms"])
            for r in kinds(records, "engine_removal")]  # fmt: skip
    assert gone == [(BIG, 512, 2000.0), (BIG, 4096, 6000.0)]


def test_a_gap_in_event_id_is_a_loss_and_created_at_zero_a_restart(tmp_path: Path) -> None:
    records = run(tmp_path, [
        event(0, {"type": "created", "num_blocks_per_cache_level": [8]}),
        event(1, stored(None, block(5))),
        event(4, removed(5)),  # 2..3 dropped by the engine's event buffer
        event(0, {"type": "created", "num_blocks_per_cache_level": [8]}),  # restarted
        event(1, stored(None, block(6))),
    ])  # fmt: skip
    (loss,) = kinds(records, "engine_loss")
    assert (loss["first_engine_seq"], loss["last_engine_seq"], loss["replay_attempted"]) == (
        2, 3, False,
    )  # fmt: skip
    (restart,) = kinds(records, "engine_restart")
    assert (restart["evidence"], restart["previous_seq"]) == ("seq_back", 4)


def test_attention_dp_ranks_count_their_own_event_ids(tmp_path: Path) -> None:
    records = run(tmp_path, [
        [event(0, stored(None, block(1)), attention_dp_rank=0),
         event(0, stored(None, block(1)), attention_dp_rank=1)],
        [event(1, removed(1), attention_dp_rank=1), event(1, removed(1), attention_dp_rank=0)],
    ])  # fmt: skip
    assert not kinds(records, "engine_loss")
    assert sorted((r["topic"], r["dp_rank"]) for r in kinds(records, "engine_removal")) == [
        ("trtllm/dp0", 0), ("trtllm/dp1", 1),
    ]  # fmt: skip


def test_unknown_event_types_are_counted_and_reported_once(tmp_path: Path) -> None:
    records = run(tmp_path, [event(0, {"type": "pinned"}), event(1, {"type": "pinned"})])
    (tally,) = kinds(records, "engine_tally")
    assert tally["unknown"] == {"type:trtllm:pinned": 2}


def test_the_command_reads_a_pipe_and_names_a_bad_line(tmp_path: Path) -> None:
    lines = [event(0, stored(None, block(1))), event(1, removed(1))]
    text = "".join(orjson.dumps(line).decode() + "\n" for line in lines)
    result = CliRunner().invoke(app, ["watch", "--from-trtllm", "-", "-f", "jsonl"], input=text)
    assert result.exit_code == 0, result.stderr
    kinds_seen = [orjson.loads(line)["kind"] for line in result.stdout.splitlines()]
    assert kinds_seen == ["open", "engine_removal", "engine_tally", "close"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(text + '{"event_id": 2, "data": {"type": "removed", "block_hashes": [-1]}}\n')
    result = CliRunner().invoke(app, ["watch", "--from-trtllm", str(bad), "-f", "jsonl"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {bad}:3: block_hashes: a block hash must be an unsigned integer or hex, not -1"
    )
