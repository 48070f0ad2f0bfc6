"""A watch recording read as a trace (``simulate --trace run.kvrec``, ``sweep --trace``):
each new BlockStored a miss, each reuse report a hit, and the summary says what a recording
cannot know.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import msgspec
import orjson
import pytest
from typer.testing import CliRunner

from kvreceipts.cli import app
from kvreceipts.engine.recording import MESSAGE, REPLY, Recorder
from kvreceipts.workloads import TraceStats, detect_format, read_trace

if TYPE_CHECKING:
    from pathlib import Path


def store(hashes: list[int], parent: int | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "BlockStored", "block_hashes": hashes, "parent_block_hash": parent,
            "token_ids": [7] * 16 * len(hashes), "block_size": 16, "lora_id": None,
            "medium": "GPU", "lora_name": None, **extra}  # fmt: skip


def record(path: Path, batches: list[list[Any]], *, replayed: int | None = None) -> None:
    """A recording as ``watch --record`` writes it (batch ``replayed`` came by replay)."""
    recorder = Recorder(path, {"run_id": "r", "start_s": 0.0})
    for seq, events in enumerate(batches):
        frames = [b"", seq.to_bytes(8, "big"),
                  msgspec.msgpack.encode([100.0 + seq, events, 0])]  # fmt: skip
        recorder.entry(REPLY if seq == replayed else MESSAGE, 1.0 + seq,
                       [b"", *frames] if seq == replayed else frames)  # fmt: skip
    recorder.close()


def test_stores_and_reuse_reports_become_requests(tmp_path: Path) -> None:
    path = tmp_path / "run.kvrec"
    record(path, [
        [store([1, 2, 3])],
        [store([1, 2, 3]) | {"session_id": "a"}, store([4], parent=3) | {"session_id": "a"}],
        [store([5], parent=2)],  # a new branch: its prefix comes from the parent chain
        [{"type": "BlockRemoved", "block_hashes": [5], "medium": "GPU"}],
        [store([5], parent=2), store([9], medium="CPU")],  # CPU stores are not lookups
    ], replayed=2)  # fmt: skip
    assert detect_format(str(path)) == "kvrec"
    stats = TraceStats(str(path), "kvrec")
    requests = list(read_trace(str(path), "kvrec", stats=stats))
    assert [(r.block_hashes, r.session_id, r.arrival_ms, r.input_tokens) for r in requests] == [
        ([1, 2, 3], "p3", 0.0, 48),
        ([1, 2, 3, 4], "a", 1000.0, 64),  # the reuse report and the store extending it
        ([1, 2, 5], "p5", 2000.0, 48),
        ([1, 2, 5], "p5", 4000.0, 48),
    ]  # fmt: skip
    assert stats.rows == 4
    assert any("cannot know pinning" in c for c in stats.caveats)


def test_simulate_and_sweep_read_a_recording(tmp_path: Path) -> None:
    rng = random.Random(7)
    batches: list[list[Any]] = []
    prompts: list[list[int]] = []
    next_hash, new, reused = 1, 0, 0
    for n in range(200):
        if prompts and rng.random() < 0.5:
            prompt = rng.choice(prompts)
            batches.append([store(prompt, session_id=f"s{n}"),
                            store([next_hash], parent=prompt[-1], session_id=f"s{n}")])  # fmt: skip
            next_hash += 1
            new, reused = new + 1, reused + len(prompt)
        else:
            prompt = list(range(next_hash, next_hash + 4))
            next_hash += 4
            prompts.append(prompt)
            batches.append([store(prompt, session_id=f"s{n}")])
            new += 4
    path = tmp_path / "run.kvrec"
    record(path, batches)
    # The block size is the engine's own (16 tokens here) unless one is given.
    result = CliRunner().invoke(app, ["simulate", "--trace", str(path), "--format", "json"])
    assert result.exit_code == 0, result.stderr
    final = orjson.loads(result.stdout)["stats"]
    # Large enough a cache: the simulator's hits are the engine's reuse, its misses its stores.
    assert (final["cache_hits"], final["cache_misses"]) == (reused, new)
    assert "note: a watch recording is the engine's block reference stream" in result.stderr
    wrong = CliRunner().invoke(app, ["simulate", "--trace", str(path), "--block-tokens", "32"])
    assert wrong.exit_code == 2
    assert "the engine's blocks hold 16 tokens; --block-tokens must be 16" in wrong.stderr
    # A recording is paged block lookups: sweep picks that allocator and the block size itself,
    # and says what the recording cannot know.
    sweep = CliRunner().invoke(app, ["sweep", "--trace", str(path), "--policy", "lru",
                                     "--format", "jsonl"])  # fmt: skip
    assert sweep.exit_code == 0, sweep.stderr
    rows = [orjson.loads(line) for line in sweep.stdout.splitlines()]
    largest = max(rows, key=lambda row: row.get("capacity_blocks") or 0)
    assert (largest["hits"], largest["misses"]) == (reused, new)
    assert "note (run.kvrec): a watch recording is the engine's block reference" in sweep.stderr
    assert "--block-tokens 16" in sweep.stderr  # the re-run hint replays it alike
    document = CliRunner().invoke(app, ["sweep", "--trace", str(path), "--policy", "lru",
                                        "--format", "json", "--points", "2"])  # fmt: skip
    trace = orjson.loads(document.stdout)["trace"]
    assert trace["block_refs"] == reused + new
    assert any("cannot know pinning" in caveat for caveat in trace["caveats"])


def test_an_undecodable_batch_is_skipped_and_named(tmp_path: Path) -> None:
    path = tmp_path / "run.kvrec"
    record(path, [[store([1, 2])], [store([3])]])
    data = path.read_bytes()
    payload = msgspec.msgpack.encode([101.0, [store([3])], 0])
    path.write_bytes(data.replace(payload, b"\xc1" + payload[1:]))
    result = CliRunner().invoke(app, ["simulate", "--trace", str(path), "--format", "jsonl"])
    assert result.exit_code == 0, result.stderr
    assert f"warning: skipped {path}: batch seq 1: payload is not msgpack" in result.stderr
    assert "more bad lines" not in result.stderr


def test_a_recording_without_batches_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.kvrec"
    record(path, [])
    with pytest.raises(Exception, match="holds no batch"):
        list(read_trace(str(path), "kvrec"))


def test_replaying_another_trace_does_not_import_the_engine_decoder(tmp_path: Path) -> None:
    """Only a recording needs msgspec and the engine's wire decoder; start-up is budgeted."""
    import subprocess
    import sys

    trace = tmp_path / "one.jsonl"
    trace.write_text('{"timestamp": 0, "input_length": 600, "output_length": 10, '
                     '"hash_ids": [1, 2]}\n')  # fmt: skip
    probe = (
        "import sys, runpy\n"
        f"sys.argv = ['kvreceipts', 'simulate', '--trace', {str(trace)!r}, '-q', '-f', 'json']\n"
        "try:\n    runpy.run_module('kvreceipts', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print(' '.join(m for m in sys.modules if m in ('msgspec', 'kvreceipts.engine.wire')),"
        " file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)  # fmt: skip
    assert '"cache_misses": 2' in done.stdout
    assert done.stderr.split() == []
