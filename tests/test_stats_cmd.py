"""``kvreceipts stats``: what a receipts file says in aggregate, checked against counting the
file by hand.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import TYPE_CHECKING, Any

import orjson
import pytest
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
    assert set(summary["kinds"]) == {"eviction", "eviction_batch", "snapshot"}
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
    memory = stats_json(str(run_file))["memory"]
    assert SERIES_POINTS <= len(memory) < 2 * SERIES_POINTS
    times = [p["sim_time_ms"] for p in memory]
    assert times == sorted(times)
    real = [
        {"sim_time_ms": r["sim_time_ms"], "used_bytes_before": r["before"]["used_bytes"],
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
    assert summary["policies"] == dict(
        Counter(r["policy"] for r in mine if r["kind"] == "eviction")
    )
    assert set(summary["policies"]) == {"lru", "fifo"}
    assert len(summary["runs"]) == 2
    assert sum(summary["runs"].values()) == len(mine)


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
    assert "memory in use over simulated time" in text


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
