"""``kvreceipts stats``: what a receipts file says in aggregate, checked against counting the
file by hand.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from kvreceipts.cli import app
from kvreceipts.summarize import SERIES_POINTS

if TYPE_CHECKING:
    from pathlib import Path


def invoke(*args: str, stdin: bytes | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=stdin)


def simulate(tmp_path: Path, name: str, *args: str) -> Path:
    """A receipts file written by ``kvreceipts simulate -o``."""
    out = tmp_path / name
    config = tmp_path / "ttl.toml"
    config.write_text("[caching]\nmodel_cache_ttl = 5\n")  # some sessions expire: reason ttl
    options = ["-c", str(config), "--capacity-mb", "4", "--batch-receipts",
               "--snapshot-every", "50", "-f", "json", "-q", "-o", str(out)]  # fmt: skip
    result = invoke("simulate", *options, *args)
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def run_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run with more evictions than the memory series keeps, and two reasons."""
    return simulate(tmp_path_factory.mktemp("stats"), "burst.jsonl", "--workload", "burst",
                    "--requests", "400")  # fmt: skip


def records(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def stats_json(*args: str, stdin: bytes | None = None) -> dict[str, Any]:
    result = invoke("stats", *args, "--format", "json", stdin=stdin)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    document: dict[str, Any] = orjson.loads(result.stdout)  # one document on stdout
    return document


@pytest.mark.needs("receipts")
def test_counts_equal_counting_the_file_by_hand(run_file: Path) -> None:
    mine = records(run_file)
    evictions = [r for r in mine if r["kind"] == "eviction"]
    summary = stats_json(str(run_file))
    assert summary["records"] == len(mine)
    assert summary["unreadable_lines"] == 0
    assert summary["kinds"] == dict(Counter(r["kind"] for r in mine))
    assert set(summary["kinds"]) == {"open", "eviction", "eviction_batch", "snapshot", "close"}
    assert summary["reasons"] == dict(Counter(r["reason"] for r in evictions))
    assert set(summary["reasons"]) == {"lru", "ttl"}
    assert summary["policies"] == {"lru": len(evictions)}
    assert summary["evictions"] == len(evictions)
    assert summary["runs"] == {mine[0]["run_id"]: len(mine)}
    assert summary["bytes_freed"] == sum(r["block_size_bytes"] for r in evictions)
    assert summary["peak_used_bytes"] == max(r["before"]["used_bytes"] for r in evictions)
    assert summary["total_bytes"] == 4 * 1024 * 1024
    assert summary["lost"] == 0
    assert (summary["first_timestamp"], summary["last_timestamp"]) == (
        mine[0]["timestamp"],
        mine[-1]["timestamp"],
    )


@pytest.mark.needs("receipts")
def test_top_sessions_are_the_most_evicted(run_file: Path) -> None:
    per_session = Counter(r["session_id"] for r in records(run_file) if r["kind"] == "eviction")
    assert len(per_session) > 10
    for top in (10, 3):
        listed = stats_json(str(run_file), "--top", str(top))["top_sessions"]
        assert len(listed) == top
        counts = [entry["evictions"] for entry in listed]
        assert counts == sorted(counts, reverse=True)
        assert all(per_session[e["session_id"]] == e["evictions"] for e in listed)
        names = {e["session_id"] for e in listed}
        assert max(n for s, n in per_session.items() if s not in names) <= counts[-1]
    assert listed[0]["evictions"] == max(per_session.values())


@pytest.mark.needs("receipts")
def test_the_memory_series_is_bounded_sampled_and_in_time_order(run_file: Path) -> None:
    evictions = [r for r in records(run_file) if r["kind"] == "eviction"]
    assert len(evictions) > 2 * SERIES_POINTS  # long enough to be thinned
    # Lean /2 eviction lines carry no sim_time_ms: the series runs on their timestamps.
    assert not any("sim_time_ms" in r for r in evictions)
    memory = stats_json(str(run_file))["memory"]
    assert SERIES_POINTS <= len(memory) < 2 * SERIES_POINTS
    times = [p["timestamp"] for p in memory]
    assert times == sorted(times)  # one fixed-width ISO format: string order is time order
    real = [
        {"timestamp": r["timestamp"], "used_bytes_before": r["before"]["used_bytes"],
         "used_bytes_after": r["after"]["used_bytes"]}
        for r in evictions
    ]  # fmt: skip
    assert memory[0] == real[0]
    # Every point is an eviction of the file, evenly strided through it.
    positions = [real.index(point) for point in memory]
    assert positions == sorted(positions)
    strides = {b - a for a, b in itertools.pairwise(positions)}
    assert len(strides) == 1


@pytest.mark.needs("receipts")
def test_several_runs_and_policies_in_one_file(tmp_path: Path) -> None:
    lru = simulate(tmp_path, "lru.jsonl", "--workload", "uniform", "--requests", "120")
    fifo = simulate(tmp_path, "fifo.jsonl", "--workload", "uniform", "--requests", "120",
                    "--policy", "fifo")  # fmt: skip
    both = tmp_path / "both.jsonl"
    both.write_bytes(lru.read_bytes() + fifo.read_bytes())
    summary = stats_json(str(both))
    mine = records(both)
    # Lean /2 evictions carry no policy: each run's open record names it.
    opened = {r["run_id"]: r["policy"] for r in mine if r["kind"] == "open"}
    evictions = [r for r in mine if r["kind"] == "eviction"]
    assert not any("policy" in r for r in evictions)
    assert summary["policies"] == dict(Counter(opened[r["run_id"]] for r in evictions))
    assert set(summary["policies"]) == {"lru", "fifo"}
    assert len(summary["runs"]) == len(opened) == 2
    assert summary["runs"] == dict(Counter(r["run_id"] for r in mine))
    assert summary["kinds"]["open"] == summary["kinds"]["close"] == 2


@pytest.mark.needs("receipts")
def test_a_dash_reads_standard_input(run_file: Path) -> None:
    from_file = stats_json(str(run_file))
    from_stdin = stats_json("-", stdin=run_file.read_bytes())
    assert from_stdin.pop("path") == "-"
    assert from_file.pop("path") == str(run_file)
    assert from_stdin == from_file


@pytest.mark.needs("receipts")
def test_the_table_format_shows_the_summary(run_file: Path) -> None:
    summary = stats_json(str(run_file))
    result = invoke("stats", str(run_file))
    assert result.exit_code == 0
    assert result.stderr == ""
    text = " ".join(result.stdout.split())  # undo rich's wrapping at 80 columns
    assert f"{summary['records']:,} in 1 run(s)" in text
    assert "top 10 sessions by evictions" in text
    assert summary["top_sessions"][0]["session_id"] in text
    # Lean lines have no simulated time, so the chart's axis is the timestamps.
    assert "memory in use over time" in text
    assert f"{summary['memory'][0]['timestamp']} …" in text


def test_a_missing_file_is_one_error_line_and_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-receipts.jsonl"
    for fmt in ("table", "json"):
        result = invoke("stats", str(missing), "--format", fmt)
        assert result.exit_code == 2
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: ")
        assert str(missing) in lines[0]
        assert "Traceback" not in result.stderr


@pytest.mark.needs("receipts")
def test_lines_that_are_not_receipts_are_counted_as_unreadable(
    run_file: Path, tmp_path: Path
) -> None:
    clean = stats_json(str(run_file))
    junk = [
        b"not json at all\n",
        b'{"level": "info", "msg": "a log line"}\n',
        b'{"kind": "request", "id": 7}\n',  # JSON with a kind, but not a receipt
        b"[1, 2, 3]\n",
        b'"a string"\n',
        b"42\n",
        b'{"schema": "kvreceipts.eviction/1", "kind": "eviction", "seq": 1}\n',  # cut short
    ]
    lines = run_file.read_bytes().splitlines(keepends=True)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(b"".join([junk[0], *lines[:50], *junk[1:], b"\n", *lines[50:]]))
    summary = stats_json(str(mixed))
    assert summary["unreadable_lines"] == len(junk)
    for key in ("records", "kinds", "reasons", "evictions", "bytes_freed", "top_sessions"):
        assert summary[key] == clean[key], key


# --- hostile input: never a traceback -------------------------------------------------------


def _eviction_v1(seq: int = 1, **fields: Any) -> dict[str, Any]:
    """A schema /1 eviction with every field stats reads (no valid digest needed)."""
    stats = {"used_bytes": 4096, "total_bytes": 8192}
    record = {
        "schema": "kvreceipts.eviction/1", "kind": "eviction", "run_id": "r1", "seq": seq,
        "timestamp": f"2025-01-01T00:00:{seq:02d}.000000Z", "sim_time_ms": 10.0 * seq,
        "reason": "lru", "policy": "lru", "session_id": f"s{seq % 3}",
        "block_size_bytes": 1024, "before": dict(stats), "after": {**stats, "used_bytes": 3072},
        "prev_digest": "0" * 64, "digest": "0" * 64,
    }  # fmt: skip
    record.update(fields)
    return record


def _lines(*records: Any) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)  # json: big ints too


def _check_one_error_line(result: Result) -> str:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


HOSTILE = [
    ("count", {"kind": "loss", "count": "abc"}, "count", "not an integer"),
    ("huge count", {"kind": "loss", "count": 1.7e308}, "count", "not an integer"),
    ("big int", {"block_size_bytes": 2**63}, "block_size_bytes", "out of range"),
    ("bigger int", {"block_size_bytes": 2**64}, "block_size_bytes", "not an integer"),
    ("bool size", {"block_size_bytes": True}, "block_size_bytes", "not an integer"),
    ("string total", {"before": {"used_bytes": 1, "total_bytes": "8192"}},
     "before.total_bytes", "not an integer"),
    ("string time", {"sim_time_ms": "12"}, "sim_time_ms", "not a number"),
    ("negative used", {"before": {"used_bytes": -5, "total_bytes": 8192}},
     "before.used_bytes", "out of range"),
    ("list kind", {"kind": []}, "kind", "not a string"),
    ("list before", {"before": [1]}, "before", "not an object"),
    ("null session", {"session_id": None}, "session_id", "not a string"),
    ("long session", {"session_id": "x" * 10_000}, "session_id", "characters"),
    ("unknown schema", {"schema": "kvreceipts.eviction/9"}, "schema", "not a schema"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "name", "problem"), [h[1:] for h in HOSTILE],
                         ids=[h[0] for h in HOSTILE])  # fmt: skip
def test_a_record_with_a_bad_field_is_counted_with_its_line(
    tmp_path: Path, change: dict[str, Any], name: str, problem: str
) -> None:
    bad = _eviction_v1(3, **change)
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(_lines(_eviction_v1(1), _eviction_v1(2), bad, _eviction_v1(4)))
    summary = stats_json(str(path))
    assert summary["records"] == 3
    assert (summary["unreadable_lines"], summary["invalid_records"]) == (1, 1)
    [described] = summary["problems"]
    assert (described["line"], described["field"]) == (3, name)
    assert problem in described["problem"]
    assert summary["bytes_freed"] == 3 * 1024  # the bad record changed nothing
    assert summary["kinds"] == {"eviction": 3}
    table = invoke("stats", str(path))
    assert table.exit_code == 0, table.output
    text = " ".join(table.stdout.split())
    assert "1 invalid_records" in text
    assert f"line 3, {name}:" in text


def test_schema_only_and_empty_objects_are_unreadable_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "odd.jsonl"
    path.write_bytes(_lines(_eviction_v1(1), {"schema": "kvreceipts.eviction/1", "kind": []},
                            {}, _eviction_v1(2)))  # fmt: skip
    summary = stats_json(str(path))
    assert (summary["records"], summary["unreadable_lines"], summary["invalid_records"]) == (
        2, 2, 1,
    )  # fmt: skip
    assert [p["line"] for p in summary["problems"]] == [2, 3]


def test_only_the_first_problems_are_described(tmp_path: Path) -> None:
    from kvreceipts.summarize import PROBLEMS_KEPT

    path = tmp_path / "many.jsonl"
    path.write_bytes(_lines(_eviction_v1(1), *[{"kind": "x"}] * 50))
    summary = stats_json(str(path))
    assert summary["unreadable_lines"] == 50
    assert len(summary["problems"]) == PROBLEMS_KEPT


@pytest.mark.parametrize("what", ["trace", "toml", "binary", "json array"])
def test_a_file_that_is_not_receipts_is_one_error_line(
    tmp_path: Path, what: str, traces_dir: Path
) -> None:
    path = tmp_path / "input"
    if what == "trace":
        path.write_bytes(b'{"timestamp": 0, "input_length": 10, "hash_ids": [1, 2]}\n' * 20)
    elif what == "toml":
        path.write_text('[caching]\nmodel_cache_ttl = 5\n# "kind"\n')
    elif what == "binary":
        path.write_bytes(bytes(range(256)) * 8)
    else:
        path.write_bytes(b"[1, 2]\n" * 3)
    for fmt in ("table", "json"):
        line = _check_one_error_line(invoke("stats", str(path), "--format", fmt))
        assert line.startswith(f"error: {path}: not a kvreceipts receipts file (line 1: ")


def test_receipts_after_a_few_junk_lines_are_still_a_receipts_file(tmp_path: Path) -> None:
    path = tmp_path / "late.jsonl"
    path.write_bytes(b"# a comment\n\n" + _lines(_eviction_v1(1)))
    summary = stats_json(str(path))
    assert (summary["records"], summary["unreadable_lines"]) == (1, 1)


def test_empty_input_says_no_records_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"\n\n")
    result = invoke("stats", str(path))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip() == f"{path}: no records"
    result = invoke("stats", "-", "--format", "json", stdin=b"")
    assert result.exit_code == 1
    assert orjson.loads(result.stdout)["records"] == 0


def test_a_torn_last_line_is_a_truncated_tail_not_an_unreadable_line(tmp_path: Path) -> None:
    path = tmp_path / "torn.jsonl"
    path.write_bytes(_lines(_eviction_v1(1), _eviction_v1(2)) + orjson.dumps(_eviction_v1(3))[:40])
    result = invoke("stats", str(path), "--format", "json")
    assert result.exit_code == 0
    summary = orjson.loads(result.stdout)
    assert (summary["records"], summary["unreadable_lines"]) == (2, 0)
    assert summary["truncated_tail"] is True
    assert "truncated tail" in result.stderr


# --- bounded memory ---------------------------------------------------------------------------


def test_the_session_counter_is_exact_when_small_and_bounded_when_not() -> None:
    from kvreceipts.summarize import TopCounter

    exact = TopCounter(capacity=10)
    for key in "aabbbc":
        exact.add(key)
    assert exact.most_common(2) == [("b", 3), ("a", 2)]
    assert exact.exact
    sketch = TopCounter(capacity=50)
    truth: Counter[str] = Counter()
    for i in range(20_000):
        # Five heavy sessions among a stream of one-off ones.
        key = f"heavy-{i % 5}" if i % 4 == 0 else f"once-{i}"
        sketch.add(key)
        truth[key] += 1
    assert len(sketch) <= 100
    assert not sketch.exact
    assert sketch.floor < 1000  # each heavy session is seen 1,000 times: more than the floor
    top = sketch.most_common(5)
    assert {k for k, _ in top} == {f"heavy-{n}" for n in range(5)}
    for key, count in top:  # upper bounds, at most floor too high
        assert truth[key] <= count <= truth[key] + sketch.floor


def test_runs_past_the_cap_are_counted_not_listed(tmp_path: Path) -> None:
    from kvreceipts.summarize import RUNS_KEPT

    path = tmp_path / "runs.jsonl"
    n = RUNS_KEPT + 7
    path.write_bytes(_lines(*[_eviction_v1(1, run_id=f"run-{i}") for i in range(n)]))
    summary = stats_json(str(path))
    assert summary["run_count"] == n
    assert len(summary["runs"]) == len(summary["per_run"]) == RUNS_KEPT
    assert summary["runs_not_listed"] == 7
    assert summary["records_in_unlisted_runs"] == 7
    text = " ".join(invoke("stats", str(path)).stdout.split())
    assert f"… and {n - 10:,} more run(s)" in text


# --- schema /2 -------------------------------------------------------------------------------

_STATS_V2 = {"cache_hits": 1, "cache_misses": 2, "evictions": 3, "total_sessions": 4}


def _open_v2(run_id: str, policy: str, total: int) -> dict[str, Any]:
    return {"alg": "sha256", "allocator": "paged", "config": {"kv_cache_size_mb": 2048},
            "kind": "open", "layout": "lean", "policy": policy, "run_id": run_id,
            "schema": "kvreceipts.eviction/2", "seq": 0, "source": "simulate",
            "timestamp": "2025-01-01T00:00:00.000000Z", "total_bytes": total,
            "workload": {"name": "chat"}, "digest": "ab" * 32}  # fmt: skip


def _lean_v2(run_id: str, seq: int, session: str, before: int, after: int) -> dict[str, Any]:
    return {"after": {**_STATS_V2, "used_bytes": after}, "alg": "sha256",
            "before": {**_STATS_V2, "used_bytes": before}, "block_hash": 123,
            "block_offset": 0, "block_size_bytes": before - after, "kind": "eviction",
            "performance": {"average_latency_ms": 42.4, "average_requests_per_second": 19.02},
            "reason": "lru", "run_id": run_id, "seq": seq, "session_id": session,
            "timestamp": f"2025-01-01T00:00:{seq:02d}.000000Z", "trigger_session_id": "9",
            "digest": "cd" * 32}  # fmt: skip


def _run_v2(run_id: str, policy: str) -> list[dict[str, Any]]:
    total = 2395734016
    return [
        _open_v2(run_id, policy, total),
        _lean_v2(run_id, 1, "7", 5 * 262144, 4 * 262144),
        _lean_v2(run_id, 2, "8", 6 * 262144, 4 * 262144),
        {"alg": "sha256", "kind": "eviction_batch", "run_id": run_id, "seq": 3,
         "timestamp": "2025-01-01T00:00:03.000000Z", "sim_time_ms": 3000.0, "evicted": 2,
         "pool_used_after_evictions": 4 * 262144, "allocated_bytes": 262144,
         "digest": "ef" * 32},
        {"alg": "sha256", "kind": "engine_removal", "run_id": run_id, "seq": 4,
         "timestamp": "2025-01-01T00:00:04.000000Z", "topic": "", "engine_seq": 1,
         "engine_ts": 4.0, "dp_rank": None, "group_idx": None, "locality": None,
         "ownership": None, "medium": None, "block_hash": 9, "parent_block_hash": None,
         "stored_ts": None, "residency_ms": None, "tokens": None, "bytes_freed": None,
         "store": None, "digest": "01" * 32},
        {"alg": "sha256", "kind": "loss", "run_id": run_id, "seq": 6, "count": 1,
         "first_seq": 5, "last_seq": 5, "sink": "channel",
         "timestamp": "2025-01-01T00:00:05.000000Z", "digest": "02" * 32},
        {"kind": "close", "run_id": run_id, "seq": 7, "counts": {"eviction": 2},
         "bytes_freed": 3 * 262144, "final_stats": {**_STATS_V2, "used_bytes": 0},
         "records": 8, "timestamp": "2025-01-01T00:00:07.000000Z", "digest": "03" * 32},
    ]  # fmt: skip


def test_schema_2_runs_take_policy_and_pool_from_the_open_record(tmp_path: Path) -> None:
    path = tmp_path / "v2.jsonl"
    path.write_bytes(_lines(*_run_v2("run-a", "s3fifo"), *_run_v2("run-b", "fifo")))
    summary = stats_json(str(path))
    assert summary["unreadable_lines"] == 0, summary["problems"]
    assert summary["records"] == 14
    assert summary["kinds"] == {"open": 2, "eviction": 4, "eviction_batch": 2,
                                "engine_removal": 2, "loss": 2, "close": 2}  # fmt: skip
    assert summary["policies"] == {"s3fifo": 2, "fifo": 2}
    assert summary["reasons"] == {"lru": 4}
    assert summary["total_bytes"] == 2395734016
    assert summary["bytes_freed"] == 2 * 3 * 262144
    assert summary["lost"] == 2
    assert summary["peak_used_bytes"] == 6 * 262144
    assert summary["top_sessions"] == [{"session_id": "7", "evictions": 2},
                                       {"session_id": "8", "evictions": 2}]  # fmt: skip
    assert [(r["run_id"], r["policy"], r["total_bytes"], r["evictions"])
            for r in summary["per_run"]] == [("run-a", "s3fifo", 2395734016, 2),
                                             ("run-b", "fifo", 2395734016, 2)]  # fmt: skip
    # No sim_time_ms on lean lines: the memory series runs on timestamps.
    assert summary["memory"][0] == {"timestamp": "2025-01-01T00:00:01.000000Z",
                                    "used_bytes_before": 5 * 262144,
                                    "used_bytes_after": 4 * 262144}  # fmt: skip
    table = invoke("stats", str(path))
    assert table.exit_code == 0
    text = " ".join(table.stdout.split())
    assert "memory in use over time" in text
    assert "2025-01-01T00:00:01.000000Z …" in text
    assert "s3fifo" in text


def test_schema_1_and_2_upstream_layout_mix_in_one_file(tmp_path: Path) -> None:
    upstream = {**_eviction_v1(1, run_id="run-u", policy="lfu"),
                "schema": "kvreceipts.eviction/2", "alg": "sha256"}  # fmt: skip
    del upstream["prev_digest"]
    path = tmp_path / "mix.jsonl"
    path.write_bytes(_lines(_eviction_v1(1), _open_v2("run-u", "lfu", 8192), upstream))
    summary = stats_json(str(path))
    assert summary["unreadable_lines"] == 0, summary["problems"]
    assert summary["policies"] == {"lru": 1, "lfu": 1}
    assert summary["run_count"] == 2
    assert summary["memory"][1]["sim_time_ms"] == 10.0


def test_a_lean_line_without_its_open_record_has_an_unknown_policy(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl"
    path.write_bytes(_lines(*_run_v2("run-a", "lru")[1:3]))
    assert stats_json(str(path))["policies"] == {"unknown": 2}


def test_a_bad_open_record_is_counted(tmp_path: Path) -> None:
    path = tmp_path / "open.jsonl"
    run = _run_v2("run-a", "lru")
    run[0]["total_bytes"] = "big"
    path.write_bytes(_lines(*run))
    summary = stats_json(str(path))
    assert summary["problems"] == [
        {"line": 1, "field": "total_bytes", "problem": '"big" is not an integer'}
    ]
    assert summary["policies"] == {"unknown": 2}


# --- property: whatever is in the fields, stats answers ---------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8,
)  # fmt: skip


def _templates() -> list[dict[str, Any]]:
    return [_eviction_v1(1), *_run_v2("run-p", "lru")]


@st.composite
def _hostile_records(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        obj: dict[str, Any] = draw(st.dictionaries(st.text(max_size=10), _JSON, max_size=6))
        return obj
    record = dict(draw(st.sampled_from(_templates())))
    for key in draw(st.lists(st.sampled_from(sorted(record)), min_size=1, max_size=3)):
        record[key] = draw(_JSON)
    for nested in ("before", "after"):
        if isinstance(record.get(nested), dict) and draw(st.booleans()):
            record[nested] = {**record[nested], "used_bytes": draw(_JSON)}
    return record


def _no_crash(result: Result) -> None:
    assert result.exit_code in (0, 1, 2), result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


@given(st.lists(_hostile_records(), min_size=1, max_size=6), st.booleans())
def test_random_values_in_every_field_never_crash_stats(
    records: list[dict[str, Any]], lead_with_a_good_one: bool
) -> None:
    data = _lines(*([_eviction_v1(9)] if lead_with_a_good_one else []), *records)
    as_json = invoke("stats", "-", "--format", "json", stdin=data)
    _no_crash(as_json)
    if as_json.exit_code != 2:
        document = orjson.loads(as_json.stdout)
        assert document["records"] + document["unreadable_lines"] == len(records) + int(
            lead_with_a_good_one
        )
    else:
        assert as_json.stderr.startswith("error: -: not a kvreceipts receipts file")
    _no_crash(invoke("stats", "-", stdin=data))


def test_a_watch_file_is_read_whole() -> None:
    """A watch run's open record names no policy (an engine has none of ours): still a record."""
    from pathlib import Path

    fixture = Path(__file__).parent / "fixtures" / "watch" / "engine.jsonl"
    result = CliRunner().invoke(app, ["stats", str(fixture), "--format", "json"])
    assert result.exit_code == 0, result.stderr
    document = orjson.loads(result.stdout)
    assert document["unreadable_lines"] == 0
    assert document["records"] == len(fixture.read_bytes().splitlines())
    assert document["engine"]["removals"] > 0
