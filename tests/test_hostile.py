"""Hostile files (issue 26): every reader other than ``verify`` holds a bounded amount of memory
whatever the file says, and answers a mistyped field with one line, never a traceback.

The files come from tests/hostile.py; RSS is measured in a fresh process by /usr/bin/time.
"""

from __future__ import annotations

import re
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

needs_receipts = pytest.mark.needs("receipts")  # watch writes receipts
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
def test_a_trace_of_many_requests_stops_a_sweep_at_its_memory_bound(tmp_path: Path) -> None:
    trace = hostile.many_requests_trace(tmp_path / "many.jsonl")
    run = hostile.peak_rss("sweep", "-q", "--format", "json", "--workers", "1", "--trace",
                           str(trace))  # fmt: skip
    assert run.code == 2
    line = _one_error_line(run.stderr)
    assert re.search(r"many\.jsonl:\d+: the trace does not fit in --max-memory 150MB: a sweep "
                     r"holds every request", line), line  # fmt: skip
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


# --- watch --from: the header and every entry typed, memory bounded ----------------------


def _watch(path: Path) -> Any:
    return runner.invoke(app, ["watch", "--from", str(path), "-f", "jsonl", "--allow-loss"])


@needs_receipts
@pytest.mark.parametrize(
    ("header", "message"),
    [
        ({k: v for k, v in hostile.GOOD_HEADER.items() if k != "start_s"},
         "header: start_s: expected Unix seconds from 0 to 253,402,300,799, found nothing"),
        ({**hostile.GOOD_HEADER, "start_s": "soon"}, "header: start_s: expected Unix seconds"),
        ({**hostile.GOOD_HEADER, "start_s": 1e300}, "found 1e+300"),
        ({**hostile.GOOD_HEADER, "start_s": True}, "found a boolean"),
        ({**hostile.GOOD_HEADER, "run_id": 5}, "header: run_id: expected a string of at most"),
        ({**hostile.GOOD_HEADER, "run_id": None}, "header: run_id: expected a string"),
        ({**hostile.GOOD_HEADER, "run_id": "r" * 1000}, "found a string of 1,000 characters"),
        ({**hostile.GOOD_HEADER, "topic": ["a"]}, ("header: topic: expected a string of at most "
                                                   "256 characters or null, found an array")),
        ({**hostile.GOOD_HEADER, "regret_window_s": -1}, "header: regret_window_s: expected"),
        ([1, 2], "the recording's header is damaged"),
    ],
)  # fmt: skip
def test_a_mistyped_recording_header_is_one_error_line(
    tmp_path: Path, header: object, message: str
) -> None:
    path = hostile.recording(tmp_path / "r.kvrec", header, hostile.entry(b"Z", 2000.0, []))
    result = _watch(path)
    assert result.exit_code == 2
    assert message in _one_error_line(result.stderr)


@needs_receipts
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (hostile.giant_header_recording, ("header declares 4,294,967,295 bytes (a header is at "
                                         "most 65,536)")),
        (hostile.giant_frame_recording, ("entry 1 (byte 173): frame 1 declares 4,294,967,295 "
                                        "bytes (at most 1,048,576)")),
        (hostile.huge_count_recording, ("entry 1 (byte 173): declares 65,535 frames (an entry "
                                       "has at most 16)")),
    ],
)  # fmt: skip
def test_a_recording_that_declares_too_much_is_refused_before_reading_it(
    tmp_path: Path, make: Any, message: str
) -> None:
    result = _watch(make(tmp_path / "r.kvrec"))
    assert result.exit_code == 2
    assert message in _one_error_line(result.stderr)


@needs_receipts
@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (hostile.entry(b"Q", 1.0, []), "entry 1 (byte 173): type b'Q' is not one of M, P, E, D, Z"),
        (hostile.entry(b"M", float("nan"), []), "entry 1 (byte 173): time nan is not Unix"),
        (hostile.entry(b"M", -5.0, []), "time -5 is not Unix seconds"),
        (hostile.entry(b"D", 1.0, [b"", b"1", b"2"]), "a drop entry must hold a topic and two"),
        (hostile.entry(b"D", 1.0, [b"", (9).to_bytes(8, "big"), (2).to_bytes(8, "big")]),
         "a drop entry's seqs 9..2 are not a range"),
        (hostile.entry(b"P", 1.0, []), "unexpected entry b'P' in the recording"),
    ],
)  # fmt: skip
def test_a_mistyped_entry_is_one_error_line(tmp_path: Path, entries: bytes, message: str) -> None:
    result = _watch(hostile.recording(tmp_path / "r.kvrec", hostile.GOOD_HEADER, entries))
    assert result.exit_code == 2
    assert message in _one_error_line(result.stderr)


@needs_receipts
def test_hostile_topics_and_media_are_skipped_or_lost_not_followed(tmp_path: Path) -> None:
    good = hostile.batch(1000.0, [hostile.stored_event([1, 2])])
    media = hostile.batch(1001.0, [hostile.stored_event([i], f"m{i}") for i in range(20)])
    long_medium = hostile.batch(1002.0, [hostile.stored_event([1], "m" * 100)])
    nan = hostile.batch(float("nan"), [hostile.stored_event([3])])
    messages = [(b"t" * 300, good), *((b"e%d" % i, good) for i in range(300)),
                (b"e0", media), (b"e0", long_medium), (b"e0", nan)]  # fmt: skip
    result = _watch(hostile.messages_recording(tmp_path / "r.kvrec", messages))
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "message on a topic of 300 bytes (at most 256); skipped" in result.stderr
    assert result.stderr.count("message on a topic past the first 256") == 44
    assert "more than 16 media named by one engine; batch lost" in result.stderr
    assert "a medium name of 100 characters (at most 64); batch lost" in result.stderr
    assert "batch ts nan is not a finite number; batch lost" in result.stderr
    records = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert {r["topic"] for r in records if r["kind"] == "engine_loss"} == {"e0"}


@needs_receipts
def test_hostile_tiers_are_lost_not_followed(tmp_path: Path) -> None:
    # A tier is (rank, medium, group, locality, ownership): each part comes from the stream.
    groups = hostile.batch(1001.0, [hostile.stored_event([i], group_idx=i) for i in range(300)])
    locality = hostile.batch(1002.0, [hostile.stored_event([1], locality="L" * 100)])
    ownership = hostile.batch(1003.0, [hostile.stored_event([1], ownership="o" * 65)])
    good = hostile.batch(1004.0, [hostile.stored_event([i], group_idx=i) for i in range(256)])
    result = _watch(hostile.messages_recording(tmp_path / "r.kvrec", [
        (b"", groups), (b"", locality), (b"", ownership), (b"", good)]))  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    tiers = "more than 256 tiers (rank, medium, group, locality, ownership) named by one engine"
    assert f"{tiers}; batch lost" in result.stderr
    assert "a locality name of 100 characters (at most 64); batch lost" in result.stderr
    assert "an ownership name of 65 characters (at most 64); batch lost" in result.stderr
    records = [orjson.loads(line) for line in result.stdout.splitlines()]
    losses = [r for r in records if r["kind"] == "engine_loss"]
    assert [(r["first_engine_seq"], r["cause"]) for r in losses] == [
        (0, "undecodable"), (1, "undecodable"), (2, "undecodable")]  # fmt: skip
    (tally,) = [r for r in records if r["kind"] == "engine_tally"]
    assert len(tally["tiers"]) == 256  # the fourth batch's, at the cap exactly
    assert sum(row["stores"] for row in tally["tiers"]) == 256


@needs_receipts
def test_an_engine_restarting_at_every_batch_keeps_its_old_tiers_bounded(tmp_path: Path) -> None:
    from kvreceipts.engine.state import MAX_OLD_TIERS

    batches = MAX_OLD_TIERS + 100
    payload = hostile.batch(1000.0, [hostile.stored_event([1, 2])])
    path = hostile.seq_recording(tmp_path / "r.kvrec", [(b"", 0, payload)] * batches)
    out = tmp_path / "o.jsonl"
    result = runner.invoke(app, ["watch", "--from", str(path), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.stderr
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert sum(r["kind"] == "engine_restart" for r in records) == batches - 1
    (tally,) = [r for r in records if r["kind"] == "engine_tally"]
    assert tally["incarnations"] == batches
    rows = tally["tiers"]
    assert len(rows) == MAX_OLD_TIERS + 1  # the old ones, then the live one
    assert sum(row.get("folded", 0) for row in rows) == batches - 1 - MAX_OLD_TIERS
    assert sum(row["stores"] for row in rows) == 2 * batches  # every count kept
    assert runner.invoke(app, ["verify", str(out)]).exit_code == 0


@needs_receipts
def test_unknown_event_names_are_counted_by_name_up_to_a_cap(tmp_path: Path) -> None:
    from kvreceipts.engine.session import watch_recording
    from kvreceipts.engine.state import MAX_UNKNOWN
    from watch_harness import Lines

    events = [{"type": f"Odd{i}" + "x" * 1000} for i in range(MAX_UNKNOWN + 36)]
    path = hostile.messages_recording(tmp_path / "r.kvrec", [(b"", hostile.batch(1000.0, events))])
    lines, reported = Lines(), list[str]()
    watch_recording(str(path), lines, report=reported.append)
    assert sum("unknown event type" in line for line in reported) == MAX_UNKNOWN
    assert all(len(line) < 300 for line in reported)  # each name shown by its head
    records = [orjson.loads(line) for line in lines.lines]
    (tally,) = [r for r in records if r["kind"] == "engine_tally"]
    assert len(tally["unknown"]) == MAX_UNKNOWN + 1
    assert tally["unknown"]["(other)"] == 36


@pytest.mark.parametrize(
    ("tiers", "field"),
    [
        ("GPU", "tiers"),
        (["GPU"], "tiers[0]"),
        ([{"stores": "4", "hits": 1}], "tiers[0].stores"),
        ([{"stores": 4, "hits": 1}, {"stores": 4, "hits": True}], "tiers[1].hits"),
        ([{"stores": 4}], "tiers[0].hits"),
        ([{"stores": -1, "hits": 0}], "tiers[0].stores"),
    ],
)
def test_a_mistyped_engine_tally_is_one_unreadable_line(
    tmp_path: Path, tiers: Any, field: str
) -> None:
    path = hostile.engine_receipts(tmp_path / "e.jsonl", hostile.engine_tally(1),
                                   hostile.engine_tally(2, tiers=tiers))  # fmt: skip
    document = _stats(path)
    assert [p["field"] for p in document["problems"]] == [field]
    assert document["engine"]["stores"] == 4  # the good tally alone


def test_group_and_tenant_names_past_the_cap_are_folded() -> None:
    figures = EngineFigures()
    for i in range(1, 201):
        store = {
            "cache_salt": f"tenant-{i}" + "s" * 500,
            "kv_cache_spec_kind": None,
            "kv_cache_spec_sliding_window": None,
            "lora_name": None,
            "session_id": None,
        }
        figures.add_checked(hostile.engine_removal(i, group_idx=i, store=store,
                                                   medium=f"m{i % 40}"))  # fmt: skip
    document = figures.to_dict()
    assert len(document["removals_by_tenant"]) == NAMES_KEPT + 1
    assert document["removals_by_tenant"]["(other)"] == 200 - NAMES_KEPT
    assert all(len(name) < 100 for name in document["removals_by_tenant"])
    assert document["removals_by_group"]["(other)"] == 200 - NAMES_KEPT
    assert set(document["folded_names"]) == {"removals_by_group", "removals_by_tenant"}
    by_medium = document["residency_p50_ms_by_medium"]
    assert len(by_medium) == 17  # 16 media apart, then (other)
    assert by_medium["(other)"] == 2000.0


@needs_receipts
@needs_time
@pytest.mark.slow  # 150 MB of recording
@pytest.mark.parametrize("make", [hostile.many_blocks_recording, hostile.many_removals_recording])
def test_watch_from_a_recording_of_millions_of_blocks_stays_bounded(
    tmp_path: Path, make: Any
) -> None:
    path = make(tmp_path / "r.kvrec")
    run = hostile.peak_rss("watch", "--from", str(path), "-o", str(tmp_path / "o.jsonl"), "-q")
    assert run.code == 0, run.stderr
    assert "the oldest are forgotten" in run.stderr
    assert run.rss_mb < hostile.RSS_BOUND_MB


def test_a_huge_value_in_a_trace_row_is_named_by_its_head(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    row = {"timestamp": 0, "input_length": "x" * 500_000, "output_length": 1, "hash_ids": []}
    path.write_bytes(orjson.dumps(row) + b"\n")
    result = runner.invoke(app, ["simulate", "-q", "--format", "json", "--trace", str(path)])
    assert result.exit_code == 2
    line = _one_error_line(result.stderr)
    assert line.endswith("field 'input_length': expected a non-negative integer, got "
                         "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…(500,002 chars)")  # fmt: skip
    assert len(line) < 300
