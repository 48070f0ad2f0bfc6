"""``kvreceipts stats`` answers what people ask first: the run's hit rate (its close record's),
the prefix blocks evicted most in paged runs, and, on a watch file, what the engine did rather
than "evictions 0, pool 0 B".
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from kvreceipts import summarize
from kvreceipts.cli import app

TRACES = Path(__file__).resolve().parent.parent.parent / "shared" / "traces"
WATCH = Path(__file__).resolve().parent / "fixtures" / "watch" / "engine.jsonl"


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "100"})


def run(tmp_path: Path, name: str, *args: str) -> Path:
    out = tmp_path / name
    result = invoke("simulate", "-q", "-f", "json", "-o", str(out), *args)
    assert result.exit_code == 0, result.stderr
    return out


def lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def paged_file(tmp_path: Path) -> Path:
    trace = tmp_path / "trace.jsonl"
    rows = [{"timestamp": i, "input_length": 2048, "output_length": 1,
             "hash_ids": [0, 1, 2 + i % 7, 100 + i]} for i in range(60)]  # fmt: skip
    trace.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return run(tmp_path, "paged.jsonl", "--trace", str(trace), "--capacity-blocks", "6")


@pytest.mark.needs("receipts")
def test_the_hit_rate_is_the_close_records(tmp_path: Path) -> None:
    path = run(tmp_path, "chat.jsonl", "--requests", "300")
    final = lines(path)[-1]["final_stats"]
    document = orjson.loads(invoke("stats", str(path), "-f", "json").stdout)
    assert document["cache_hits"] == final["cache_hits"]
    assert document["cache_misses"] == final["cache_misses"]
    assert document["hit_rate"] == pytest.approx(final["hit_rate"])
    assert document["per_run"][0]["hit_rate"] == pytest.approx(final["hit_rate"])
    assert 0 < final["hit_rate"] < 1
    table = invoke("stats", str(path)).stdout
    assert f"hit rate     {final['hit_rate']:.1%} ({final['cache_hits']:,} hits" in table


@pytest.mark.needs("receipts")
def test_a_run_without_its_close_record_says_so(tmp_path: Path) -> None:
    path = run(tmp_path, "chat.jsonl", "--requests", "300")
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:-1]))
    document = orjson.loads(invoke("stats", str(path), "-f", "json").stdout)
    assert document["hit_rate"] is None
    assert "no close record" in invoke("stats", str(path)).stdout


@pytest.mark.needs("receipts")
def test_the_most_evicted_blocks_of_a_paged_run(tmp_path: Path) -> None:
    path = paged_file(tmp_path)
    evicted = Counter(str(r["block_hash"]) for r in lines(path) if r["kind"] == "eviction")
    assert evicted.most_common(1)[0][1] > 1  # some block left more than once
    document = orjson.loads(invoke("stats", str(path), "-f", "json", "--top", "3").stdout)
    top = {b["block_hash"]: b["evictions"] for b in document["top_blocks"]}
    assert len(top) == 3
    assert all(evicted[block] == count for block, count in top.items())
    assert min(top.values()) >= sorted(evicted.values(), reverse=True)[2]
    assert document["top_blocks_exact"] is True
    table = invoke("stats", str(path), "--top", "3").stdout
    assert "prefix blocks" in table
    assert "block hash" in table


@pytest.mark.needs("receipts")
def test_an_arena_run_has_no_block_table(tmp_path: Path) -> None:
    path = run(tmp_path, "chat.jsonl", "--requests", "300")
    assert orjson.loads(invoke("stats", str(path), "-f", "json").stdout)["top_blocks"] == []
    assert "prefix blocks" not in invoke("stats", str(path)).stdout


def test_the_block_counts_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(summarize, "BLOCKS_KEPT", 4)
    common = {"run_id": "r", "schema": "kvreceipts.eviction/2", "alg": "sha256",
              "digest": "0" * 64, "timestamp": "2025-01-01T00:00:00Z"}  # fmt: skip
    records = [{**common, "kind": "open", "seq": 0, "policy": "lru", "total_bytes": 64,
                "source": "simulate"}]  # fmt: skip
    for seq in range(1, 500):
        block = 7 if seq % 2 else seq  # block 7 is evicted half the time, the others once
        records.append({**common, "kind": "eviction", "seq": seq, "reason": "lru",
                        "session_id": "s", "block_hash": block, "block_size_bytes": 1,
                        "before": {"used_bytes": 2}, "after": {"used_bytes": 1},
                        "sim_time_ms": seq})  # fmt: skip
    result = summarize.summarize_lines([orjson.dumps(r) + b"\n" for r in records])
    assert len(result.blocks) <= 8
    assert result.blocks.most_common(1)[0][0] == "7"
    assert not result.blocks.exact


def test_a_bad_block_hash_is_an_unreadable_line() -> None:
    common = {"run_id": "r", "schema": "kvreceipts.eviction/2", "alg": "sha256",
              "digest": "0" * 64, "timestamp": "2025-01-01T00:00:00Z", "kind": "eviction",
              "reason": "lru", "session_id": "s", "block_size_bytes": 1,
              "before": {"used_bytes": 2}, "after": {"used_bytes": 1}}  # fmt: skip
    rows = [{**common, "seq": 1, "block_hash": [1]}, {**common, "seq": 2, "block_hash": 3}]
    result = summarize.summarize_lines([orjson.dumps(r) + b"\n" for r in rows])
    assert result.problems[0]["field"] == "block_hash"
    assert result.blocks.most_common(5) == [("3", 1)]


def test_a_watch_file_says_what_the_engine_did() -> None:
    table = " ".join(invoke("stats", str(WATCH)).stdout.split())  # as read, not as aligned
    assert "removals 7 (GPU 5, CPU 1, unknown 1)" in table
    assert "stores 6 of the removed blocks were stored while watched" in table
    assert "regret" in table
    assert "restarts 1" in table
    assert "lost 2 batches" in table
    for false in ("bytes freed", "0 B", "evictions", "pool"):  # a simulation's, not a watch's
        assert false not in table, false
    document = orjson.loads(invoke("stats", str(WATCH), "-f", "json").stdout)
    assert document["per_run"][0]["source"] == "watch"
    assert document["per_run"][0]["removals"] == 7


@pytest.mark.needs("receipts")
@pytest.mark.skipif(not (TRACES / "mooncake_synthetic_trace.jsonl").exists(),
                    reason="the Mooncake traces are not beside the checkout")  # fmt: skip
def test_a_real_trace_names_its_hottest_blocks(tmp_path: Path) -> None:
    path = run(tmp_path, "moon.jsonl", "--trace", str(TRACES / "mooncake_synthetic_trace.jsonl"),
               "--capacity-blocks", "512", "--requests", "400")  # fmt: skip
    document = orjson.loads(invoke("stats", str(path), "-f", "json").stdout)
    evicted = Counter(str(r["block_hash"]) for r in lines(path) if r["kind"] == "eviction")
    assert [b["evictions"] for b in document["top_blocks"]] == \
        [n for _, n in evicted.most_common(10)]  # fmt: skip
