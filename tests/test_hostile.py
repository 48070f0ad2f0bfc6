"""Hostile files (issue 26): every reader other than ``verify`` holds a bounded amount of memory
whatever the file says, and answers a mistyped field with one line, never a traceback.

The files come from tests/hostile.py; RSS is measured in a fresh process by /usr/bin/time.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

import hostile
from kvreceipts.cli import app
from kvreceipts.engine.figures import NAMES_KEPT, EngineFigures
from kvreceipts.errors import InputError
from kvreceipts.inputs import open_input
from kvreceipts.workloads.traces import _OVERLONG, MAX_ROW, _bounded_lines, read_trace

needs_time = pytest.mark.skipif(not Path("/usr/bin/time").is_file(), reason="no /usr/bin/time")
runner = CliRunner()


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


def _stats(path: Path) -> dict[str, Any]:
    result = runner.invoke(app, ["stats", str(path), "--format", "json"])
    assert "Traceback" not in result.stderr
    assert result.exit_code == 0, result.stderr
    document: dict[str, Any] = orjson.loads(result.stdout)
    return document


# --- stats: every engine field typed before use -----------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "problem"),
    [
        ({"medium": 7}, "medium", "must be string or null, not 7"),
        ({"medium": {"a": 1}}, "medium", "must be string or null"),
        ({"medium": ["GPU"]}, "medium", "must be string or null"),
        ({"residency_ms": "nan"}, "residency_ms", "must be number or null, not 'nan'"),
        ({"topic": None}, "topic", "must be string"),
        ({"engine_ts": True}, "engine_ts", "must be number"),
        ({"stray": 1}, "stray", "is not a field of this kind"),
        ({"x" * 100_000: 1}, "xxxxxxxxxxxx…(100,000 chars)", "is not a field of this kind"),
    ],
)
def test_a_mistyped_engine_removal_is_one_unreadable_line(
    tmp_path: Path, changes: dict[str, Any], field: str, problem: str
) -> None:
    path = hostile.engine_receipts(tmp_path / "e.jsonl", hostile.engine_removal(1),
                                   hostile.engine_removal(2, **changes))  # fmt: skip
    document = _stats(path)
    assert document["unreadable_lines"] == 1
    assert document["invalid_records"] == 1
    (found,) = document["problems"]
    assert (found["line"], found["field"]) == (3, field)
    assert found["problem"].startswith(problem)
    assert document["engine"]["removals"] == 1  # the good one, and only it
    table = runner.invoke(app, ["stats", str(path)])
    assert table.exit_code == 0
    assert "Traceback" not in table.stderr


@pytest.mark.parametrize(
    ("changes", "field"),
    [({"count": 1e300}, "count"), ({"count": -1}, "count"), ({"count": "3"}, "count"),
     ({"topic": 5}, "topic")],
)  # fmt: skip
def test_a_mistyped_engine_clear_is_one_unreadable_line(
    tmp_path: Path, changes: dict[str, Any], field: str
) -> None:
    path = hostile.engine_receipts(tmp_path / "e.jsonl", hostile.engine_clear(1, **changes))
    document = _stats(path)
    assert [p["field"] for p in document["problems"]] == [field]
    assert "engine" not in document  # no engine receipt was good


def test_names_past_the_cap_are_folded_and_counted(tmp_path: Path) -> None:
    removals = [hostile.engine_removal(i, topic=f"t{i}" + "x" * 5000, medium=f"m{i % 100}")
                for i in range(1, 201)]  # fmt: skip
    document = _stats(hostile.engine_receipts(tmp_path / "e.jsonl", *removals))
    engine = document["engine"]
    assert len(engine["topics"]) == NAMES_KEPT + 1
    assert engine["topics"]["(other)"] == 200 - NAMES_KEPT
    assert all(len(name) < 100 for name in engine["topics"])
    assert engine["removals_by_medium"]["(other)"] == 200 - 2 * NAMES_KEPT  # m0..m99, twice
    assert engine["folded_names"] == {
        "topics": f"(other): {200 - NAMES_KEPT} more names past the first {NAMES_KEPT}",
        "removals_by_medium": f"(other): {100 - NAMES_KEPT} more names past the first {NAMES_KEPT}",
    }
    assert engine["removals"] == 200
    table = runner.invoke(app, ["stats", str(tmp_path / "e.jsonl")])
    assert "topics (other): 136 more names past the first 64" in table.stdout


def test_residency_percentiles_stay_exact_for_a_real_run_and_bounded_past_it() -> None:
    figures = EngineFigures()
    for i in range(1, 101):
        figures.add_checked(hostile.engine_removal(i, residency_ms=float(i)))
    residency = figures.to_dict()["residency_ms"]
    assert residency == {"known": 100, "unknown": 0, "p50": 50.0, "p90": 90.0, "p99": 99.0,
                         "max": 100.0}  # fmt: skip
    record = hostile.engine_removal(1, residency_ms=1234.5)
    for _ in range(150_000):
        figures.add_checked(record)
    residency = figures.to_dict()["residency_ms"]
    assert residency["known"] == 150_100
    assert residency["relative_error"] == 0.01
    assert residency["p50"] == pytest.approx(1234.5, rel=0.01)
    assert residency["max"] == 1234.5


# --- traces: a row past the limit stops the reader at once -------------------------------


@pytest.mark.parametrize("compression", ["gzip", "zstd", "xz", "plain"])
def test_an_overlong_trace_row_is_refused_before_the_rest_is_read(
    tmp_path: Path, compression: str
) -> None:
    path = hostile.one_line_trace(tmp_path / "t", 16 * MAX_ROW, compression, noise=True)
    rows = read_trace(str(path), "mooncake")
    with pytest.raises(InputError, match=r":1: the row is longer than 1,048,576 bytes"):
        next(rows)
    with open_input(str(path), "trace file") as handle:
        assert next(_bounded_lines(handle)) is _OVERLONG
        consumed, size = handle.bytes_read(), handle.size
    assert consumed is not None
    assert size is not None
    assert consumed < size / 4  # the 16 MB line was not read to its end


def test_skipping_bad_lines_skips_an_overlong_row_whole(tmp_path: Path) -> None:
    good = b'{"timestamp": 5, "input_length": 1, "output_length": 1, "hash_ids": [3]}\n'
    long = tmp_path / "long"
    hostile.one_line_trace(long, size=3 * MAX_ROW, compression="plain")
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(good + long.read_bytes() + good)
    rows = list(read_trace(str(path), "mooncake", skip_bad_lines=True))
    assert [r.source_line for r in rows] == [1, 3]


@needs_time
@pytest.mark.parametrize("command", ["simulate", "sweep"])
def test_a_100_mb_one_line_gzip_trace_is_refused_in_bounded_memory(
    tmp_path: Path, command: str
) -> None:
    trace = hostile.one_line_gzip_trace(tmp_path / "one-line.jsonl.gz")
    run = hostile.peak_rss(command, "-q", "--format", "json", "--trace", str(trace))
    assert run.code == 2
    line = _one_error_line(run.stderr)
    assert line.endswith(":1: the row is longer than 1,048,576 bytes (the longest a trace row "
                         "can be: 10 million tokens' hash ids)")  # fmt: skip
    assert run.rss_mb < hostile.RSS_BOUND_MB


@needs_time
@pytest.mark.parametrize("compression", ["zstd", "xz"])
def test_other_compressions_stop_early_too(tmp_path: Path, compression: str) -> None:
    trace = hostile.one_line_trace(tmp_path / "t", compression=compression)
    run = hostile.peak_rss("simulate", "-q", "--format", "json", "--trace", str(trace))
    assert run.code == 2
    _one_error_line(run.stderr)
    assert run.rss_mb < hostile.RSS_BOUND_MB


# --- stats: the heavy rows of the table ------------------------------------------


@needs_time
@pytest.mark.slow  # writes 1 GB
def test_stats_on_a_thousand_megabyte_topics_stays_bounded(tmp_path: Path) -> None:
    if shutil.disk_usage(tmp_path).free < 4 << 30:
        pytest.skip("needs 4 GB free")
    path = hostile.long_topics(tmp_path / "topics.jsonl")
    for fmt in ("json", "table"):
        run = hostile.peak_rss("stats", str(path), "--format", fmt)
        assert run.code == 0, run.stderr
        assert "Traceback" not in run.stderr
        assert run.rss_mb < hostile.RSS_BOUND_MB, fmt


@needs_time
@pytest.mark.slow  # 4 M records: a minute or two
def test_stats_on_four_million_identical_removals_stays_bounded(tmp_path: Path) -> None:
    path = hostile.identical_removals(tmp_path / "same.jsonl.zst")
    run = hostile.peak_rss("stats", str(path), "--format", "json")
    assert run.code == 0, run.stderr
    assert run.rss_mb < hostile.RSS_BOUND_MB
