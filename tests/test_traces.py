"""Trace readers: the real Mooncake and Azure files, format detection, malformed rows (fuzzed),
skipping bad rows, and streaming in constant memory.
"""

from __future__ import annotations

import json
import math
import tracemalloc
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvreceipts.errors import InputError, UsageError
from kvreceipts.inputs import COMPRESSIONS
from kvreceipts.workloads import TraceStats, detect_format, read_trace

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from kvreceipts.workloads import Request

MOONCAKE_FIELDS = ("timestamp", "input_length", "output_length", "hash_ids")
AZURE_HEADER = b"TIMESTAMP,ContextTokens,GeneratedTokens"


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the fuzz tests, whose examples rewrite the same files (hypothesis runs
    many examples per test, and tmp_path is made once per test).
    """
    return tmp_path_factory.mktemp("fuzz")


def _read(path: Path, fmt: str = "auto", **options: bool) -> tuple[list[Request], TraceStats]:
    stats = TraceStats(str(path), fmt)
    rows = list(read_trace(str(path), fmt, stats=stats, **options))
    return rows, stats


def _outcome(path: Path, fmt: str) -> list[Request] | InputError:
    """The requests read strictly, or the :class:`InputError` raised (any other exception
    fails the test).
    """
    try:
        return _read(path, fmt)[0]
    except InputError as exc:
        return exc


def _write(path: Path, lines: list[bytes], *, trailing_newline: bool = True) -> None:
    path.write_bytes(b"\n".join(lines) + (b"\n" if trailing_newline else b""))


# --- the real traces --------------------------------------------------------------------------

REAL_TRACES = [
    ("mooncake_conversation_trace.jsonl", "mooncake", 12_031),
    ("mooncake_synthetic_trace.jsonl", "mooncake", 3_993),
    ("azure_llm_2023_conv.csv", "azure", 19_366),
    ("azure_llm_2023_code.csv", "azure", 8_819),
]


@pytest.mark.traces
@pytest.mark.parametrize(("name", "fmt", "rows"), REAL_TRACES)
def test_real_trace_parses_with_the_documented_row_count(
    traces_dir: Path, name: str, fmt: str, rows: int
) -> None:
    path = traces_dir / name
    assert detect_format(str(path)) == fmt
    requests, stats = _read(path)
    assert len(requests) == rows
    assert (stats.rows, stats.skipped, stats.format) == (rows, 0, fmt)
    assert len({r.request_id for r in requests}) == rows
    arrivals = [r.arrival_ms for r in requests]
    assert arrivals[0] == 0.0
    assert all(r.input_tokens >= 0 and r.output_tokens >= 0 for r in requests)
    assert all(r.context_length >= r.input_tokens for r in requests)
    if fmt == "mooncake":
        assert arrivals == sorted(arrivals)  # the README: non-decreasing milliseconds
        assert stats.epoch_s is None
        for r in requests:
            assert r.block_hashes is not None
            assert len(r.block_hashes) == math.ceil(r.input_tokens / 512)
    else:
        assert stats.epoch_s is not None
        assert all(r.block_hashes is None for r in requests)


@pytest.mark.traces
def test_mooncake_first_row_matches_the_file(traces_dir: Path) -> None:
    path = traces_dir / "mooncake_synthetic_trace.jsonl"
    with path.open("rb") as handle:
        first = json.loads(handle.readline())
    request = next(read_trace(str(path)))
    assert request.arrival_ms == float(first["timestamp"])
    assert request.input_tokens == first["input_length"]
    assert request.output_tokens == first["output_length"]
    assert list(request.block_hashes or ()) == first["hash_ids"]
    assert request.source_line == 1


@pytest.mark.traces
def test_azure_times_are_relative_to_the_first_row(traces_dir: Path) -> None:
    # azure_llm_2023_code.csv starts 2023-11-16 18:17:03.9799600, then 18:17:04.0319600.
    requests, stats = _read(traces_dir / "azure_llm_2023_code.csv")
    first = datetime(2023, 11, 16, 18, 17, 3, 979960, tzinfo=UTC).timestamp()
    assert stats.epoch_s == pytest.approx(first, abs=1e-6)
    assert requests[0].arrival_ms == 0.0
    assert requests[1].arrival_ms == pytest.approx(52.0, abs=1e-3)
    assert (requests[0].input_tokens, requests[0].output_tokens) == (4808, 10)
    assert requests[0].source_line == 2  # line 1 is the header


# --- small files --------------------------------------------------------------------------------


def test_azure_arrival_and_epoch_from_the_first_row(tmp_path: Path) -> None:
    path = tmp_path / "azure.csv"
    _write(
        path,
        [
            AZURE_HEADER,
            b"2023-11-16 18:17:03.5000000,10,2",
            b"2023-11-16 18:17:05.2500000,20,3",
            b"2023-11-16 18:18:03.5000000,30,4",
        ],
        trailing_newline=False,  # as the real files
    )
    requests, stats = _read(path, "azure")
    assert stats.epoch_s == datetime(2023, 11, 16, 18, 17, 3, 500000, tzinfo=UTC).timestamp()
    assert [r.arrival_ms for r in requests] == [0.0, 1750.0, 60000.0]
    assert [r.session_id for r in requests] == [r.request_id for r in requests]
    assert [r.context_length for r in requests] == [12, 23, 34]


def test_azure_trace_starting_at_the_unix_epoch(tmp_path: Path) -> None:
    # A first row at time 0 is still the first row: the epoch must not be taken as unset.
    path = tmp_path / "epoch.csv"
    _write(
        path,
        [AZURE_HEADER, b"1970-01-01 00:00:00.0000000,1,1", b"1970-01-01 00:00:02.0000000,1,1"],
    )
    requests, stats = _read(path, "azure")
    assert stats.epoch_s == 0.0
    assert [r.arrival_ms for r in requests] == [0.0, 2000.0]


def test_detect_format(tmp_path: Path) -> None:
    mooncake = tmp_path / "m.jsonl"
    row = b'{"timestamp": 0, "input_length": 1, "output_length": 1, "hash_ids": [7]}'
    _write(mooncake, [b"", row])
    azure = tmp_path / "a.csv"
    _write(azure, [b"timestamp , ContextTokens,GeneratedTokens"])
    assert detect_format(str(mooncake)) == "mooncake"  # blank lines before the first row
    assert detect_format(str(azure)) == "azure"  # the header, whatever its case and spaces
    for name, content in (("junk.txt", b"hello,world\n"), ("empty.txt", b""), ("ws", b"\n \n")):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(InputError, match="--trace-format") as caught:
            detect_format(str(path))
        assert str(caught.value).startswith(f"{path}:1: ")


def test_unknown_format_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(AZURE_HEADER + b"\n")
    with pytest.raises(UsageError, match="mooncake, azure"):
        read_trace(str(path), "parquet")


@pytest.mark.parametrize("fmt", ["auto", "mooncake", "azure"])
def test_missing_file_is_an_input_error(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(InputError) as caught:
        list(read_trace(str(path), fmt))
    assert str(caught.value) == f"{path}: trace file not found"
    assert caught.value.path == str(path)


def test_a_directory_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="directory"):
        list(read_trace(str(tmp_path), "mooncake"))


def test_blank_lines_are_ignored_but_counted_in_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    row = b'{"timestamp": 5, "input_length": 513, "output_length": 1, "hash_ids": [1, 2]}'
    _write(path, [row, b"", b"   ", row, b'{"timestamp": 6}'])
    with pytest.raises(InputError) as caught:
        _read(path, "mooncake")
    assert str(caught.value).startswith(f"{path}:5: ")
    requests, stats = _read(path, "mooncake", skip_bad_lines=True)
    assert [r.source_line for r in requests] == [1, 4]
    assert stats.skipped == 1
    assert stats.first_errors == [f"{path}:5: field 'input_length' is missing"]


# --- fuzzing malformed rows ------------------------------------------------------------------


@st.composite
def mooncake_rows(draw: st.DrawFn) -> dict[str, object]:
    """A valid Mooncake row."""
    input_length = draw(st.integers(0, 5000))
    first = draw(st.integers(0, 10**6))
    return {
        "timestamp": draw(st.one_of(st.integers(0, 10**9), st.floats(0, 1e9))),
        "input_length": input_length,
        "output_length": draw(st.integers(0, 2000)),
        "hash_ids": list(range(first, first + math.ceil(input_length / 512))),
    }


def _dump(row: object) -> bytes:
    return json.dumps(row).encode()


# Values of the wrong JSON type for each field (never a valid value by accident).
_NOT_A_NUMBER = st.one_of(
    st.text(max_size=5), st.booleans(), st.none(), st.lists(st.integers(), max_size=2)
)
_FINITE = st.floats(allow_nan=False, allow_infinity=False)  # JSON has no NaN or Infinity
_NOT_A_COUNT = st.one_of(_NOT_A_NUMBER, st.floats(0, 1e6, allow_nan=False))
_WRONG_TYPES = {
    "timestamp": _NOT_A_NUMBER,
    "input_length": _NOT_A_COUNT,
    "output_length": _NOT_A_COUNT,
    "hash_ids": st.one_of(
        st.integers(),
        st.text(max_size=5),
        st.none(),
        st.lists(
            st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.text(), st.booleans()),
            min_size=1,
        ),
    ),
}


def _no_newline(data: bytes) -> bytes:
    return data.replace(b"\n", b" ")


@st.composite
def bad_mooncake_lines(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A line no Mooncake reader may accept, and the field its error must name (if any)."""
    row = draw(mooncake_rows())
    kind = draw(
        st.sampled_from(
            ["bytes", "truncated", "not_object", "wrong_type", "missing", "negative", "hashes"]
        )
    )
    if kind == "bytes":  # "!" can start neither JSON nor a blank line
        return b"!" + _no_newline(draw(st.binary(max_size=40))), None
    if kind == "truncated":
        line = _dump(row)
        return line[: draw(st.integers(1, len(line) - 1))], None
    if kind == "not_object":
        value = draw(st.one_of(st.lists(st.integers()), st.integers(), st.text(), st.none()))
        return _dump(value), None
    field = draw(st.sampled_from(MOONCAKE_FIELDS))
    if kind == "wrong_type":
        row[field] = draw(_WRONG_TYPES[field])
    elif kind == "missing":
        del row[field]
    elif kind == "negative":
        field = draw(st.sampled_from(MOONCAKE_FIELDS[:3]))
        row[field] = draw(st.one_of(st.integers(max_value=-1), st.floats(-1e9, -0.001)))
    else:
        field = "hash_ids"
        hashes = row["hash_ids"]
        assert isinstance(hashes, list)
        extra = draw(st.integers(1, 3))
        row["hash_ids"] = hashes[extra:] if len(hashes) >= extra else hashes + [9] * extra
    return _dump(row), field


@st.composite
def azure_lines(draw: st.DrawFn) -> tuple[bytes, datetime]:
    """A valid Azure row (7 fractional digits, as the real files) and its time."""
    at = draw(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1))).replace(
        tzinfo=UTC
    )
    text = f"{at:%Y-%m-%d %H:%M:%S.%f}{draw(st.integers(0, 9))}"
    return f"{text},{draw(st.integers(0, 10**6))},{draw(st.integers(0, 5000))}".encode(), at


_BAD_TIMES = st.one_of(
    st.sampled_from(
        ["", "yesterday", "2023-13-01 00:00:00", "2023-11-16 25:00:00", "16/11/2023 18:17:03",
         "2023-11-16T18:17:03 UTC", "1700158623.97"]
    ),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz :-", max_size=12),
)  # fmt: skip
_BAD_COUNTS = st.one_of(
    st.sampled_from(["", "-1", "3.5", "1e3", "ten", "0x10", "--2"]),
    st.integers(max_value=-1).map(str),
)


@st.composite
def bad_azure_lines(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A line no Azure reader may accept, and the field its error must name (if any)."""
    line, _ = draw(azure_lines())
    cells = line.decode().split(",")
    kind = draw(st.sampled_from(["bytes", "columns", "time", "count"]))
    if kind == "bytes":
        return b"!" + _no_newline(draw(st.binary(max_size=40))), None
    if kind == "columns":
        count = draw(st.sampled_from([1, 2, 4, 5]))
        cells = (cells * 2)[:count]
        return ",".join(cells).encode(), None
    if kind == "time":
        cells[0] = draw(_BAD_TIMES)
        return ",".join(cells).encode(), "TIMESTAMP"
    column = draw(st.sampled_from([1, 2]))
    cells[column] = draw(_BAD_COUNTS)
    return ",".join(cells).encode(), ("ContextTokens", "GeneratedTokens")[column - 1]


@given(
    good=st.lists(mooncake_rows(), max_size=4),
    bad=bad_mooncake_lines(),
    position=st.integers(0, 4),
    fmt=st.sampled_from(["mooncake", "auto"]),
)
def test_malformed_mooncake_row_names_file_line_and_field(
    fuzz_dir: Path,
    good: list[dict[str, object]],
    bad: tuple[bytes, str | None],
    position: int,
    fmt: str,
) -> None:
    line, field = bad
    lines = [_dump(row) for row in good]
    position = min(position, len(lines))
    lines.insert(position, line)
    path = fuzz_dir / "bad.jsonl"
    _write(path, lines)
    with pytest.raises(InputError) as caught:
        _read(path, fmt)
    message = str(caught.value)
    assert message.startswith(f"{path}:{position + 1}: ")
    assert caught.value.line == position + 1
    if field is not None:
        assert f"'{field}'" in message


@given(
    good=st.lists(azure_lines(), max_size=4),
    bad=bad_azure_lines(),
    position=st.integers(0, 4),
)
def test_malformed_azure_row_names_file_line_and_field(
    fuzz_dir: Path,
    good: list[tuple[bytes, datetime]],
    bad: tuple[bytes, str | None],
    position: int,
) -> None:
    line, field = bad
    lines = [row for row, _ in good]
    position = min(position, len(lines))
    lines.insert(position, line)
    path = fuzz_dir / "bad.csv"
    _write(path, [AZURE_HEADER, *lines], trailing_newline=False)
    with pytest.raises(InputError) as caught:
        _read(path, "azure")
    message = str(caught.value)
    assert message.startswith(f"{path}:{position + 2}: ")  # after the header line
    if field is not None:
        assert f"'{field}'" in message


_ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)


@given(
    row=st.dictionaries(
        st.sampled_from([*MOONCAKE_FIELDS, "extra"]),
        st.one_of(_ANY_JSON, st.integers(0, 2000), st.lists(st.integers(), max_size=5)),
    )
)
def test_any_json_object_is_a_request_or_an_input_error(
    fuzz_dir: Path, row: dict[str, object]
) -> None:
    path = fuzz_dir / "any.jsonl"
    _write(path, [_dump(row)])
    outcome = _outcome(path, "mooncake")
    if isinstance(outcome, InputError):
        assert str(outcome).startswith(f"{path}:1: ")
    else:
        (request,) = outcome
        assert request.input_tokens == row["input_length"]
        assert list(request.block_hashes or ()) == row["hash_ids"]


@given(data=st.binary(max_size=200), fmt=st.sampled_from(["mooncake", "azure"]))
def test_any_bytes_are_requests_or_an_input_error(fuzz_dir: Path, data: bytes, fmt: str) -> None:
    path = fuzz_dir / "any.bin"
    path.write_bytes(data)
    outcome = _outcome(path, fmt)
    if any(data.startswith(magic) for magic in COMPRESSIONS.values()):
        # Bytes that open like a compressed file and are not one: an error about the file,
        # which no skipping of lines can get past.
        if isinstance(outcome, InputError):
            assert str(outcome).startswith(f"{path}: ")
            with pytest.raises(InputError):
                _read(path, fmt, skip_bad_lines=True)
        return
    # With skipping, nothing raises whatever the bytes; it skips what strict reading rejects.
    _, stats = _read(path, fmt, skip_bad_lines=True)
    assert stats.rows + stats.skipped <= data.count(b"\n") + 1
    if isinstance(outcome, InputError):
        assert outcome.line is not None
        assert str(outcome).startswith(f"{path}:{outcome.line}: ")
        assert stats.first_errors[0] == str(outcome)
    else:
        assert stats.skipped == 0
        assert stats.rows == len(outcome)


@given(
    lines=st.lists(
        st.one_of(
            mooncake_rows().map(lambda row: (_dump(row), True)),
            bad_mooncake_lines().map(lambda bad: (bad[0], False)),
        ),
        max_size=12,
    )
)
def test_skip_bad_mooncake_lines_counts_exactly(
    fuzz_dir: Path, lines: list[tuple[bytes, bool]]
) -> None:
    path = fuzz_dir / "mixed.jsonl"
    _write(path, [line for line, _ in lines])
    requests, stats = _read(path, "mooncake", skip_bad_lines=True)
    good = [number for number, (_, ok) in enumerate(lines, start=1) if ok]
    bad = [number for number, (_, ok) in enumerate(lines, start=1) if not ok]
    assert [r.source_line for r in requests] == good
    assert (stats.rows, stats.skipped) == (len(good), len(bad))
    assert len(stats.first_errors) == min(5, len(bad))
    for number, error in zip(bad, stats.first_errors, strict=False):
        assert error.startswith(f"{path}:{number}: ")


@given(
    lines=st.lists(
        st.one_of(
            azure_lines().map(lambda good: (good[0], good[1])),
            bad_azure_lines().map(lambda bad: (bad[0], None)),
        ),
        max_size=12,
    )
)
def test_skip_bad_azure_lines_counts_exactly(
    fuzz_dir: Path, lines: list[tuple[bytes, datetime | None]]
) -> None:
    path = fuzz_dir / "mixed.csv"
    _write(path, [AZURE_HEADER, *(line for line, _ in lines)])
    requests, stats = _read(path, "azure", skip_bad_lines=True)
    good = [(number, at) for number, (_, at) in enumerate(lines, start=2) if at is not None]
    bad = [number for number, (_, at) in enumerate(lines, start=2) if at is None]
    assert [r.source_line for r in requests] == [number for number, _ in good]
    assert (stats.rows, stats.skipped) == (len(good), len(bad))
    for number, error in zip(bad, stats.first_errors, strict=False):
        assert error.startswith(f"{path}:{number}: ")
    if good:
        epoch = good[0][1].timestamp()  # the 7th fractional digit is below a microsecond
        assert stats.epoch_s == pytest.approx(epoch, abs=1e-6)
        for request, (_, at) in zip(requests, good, strict=True):
            assert request.arrival_ms == pytest.approx((at.timestamp() - epoch) * 1000, abs=1e-3)
    else:
        assert stats.epoch_s is None


# --- streaming --------------------------------------------------------------------------------


def _mooncake_file(path: Path, rows: int) -> None:
    with path.open("wb") as handle:
        for i in range(rows):
            tokens = (i * 37) % 3000
            handle.write(
                _dump(
                    {
                        "timestamp": i,
                        "input_length": tokens,
                        "output_length": 5,
                        "hash_ids": list(range(i, i + math.ceil(tokens / 512))),
                    }
                )
                + b"\n"
            )


def _azure_file(path: Path, rows: int) -> None:
    with path.open("wb") as handle:
        handle.write(AZURE_HEADER + b"\n")
        for i in range(rows):
            minute, second, milli = i // 60_000 % 60, i // 1000 % 60, i % 1000
            handle.write(
                f"2023-11-16 18:{minute:02d}:{second:02d}.{milli:03d}0000,{i},7\n".encode()
            )


def _streaming_peak(path: Path, fmt: str) -> int:
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        count = sum(1 for _ in read_trace(str(path), fmt))
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert count > 0
    return peak


@pytest.mark.parametrize(("fmt", "make"), [("mooncake", _mooncake_file), ("azure", _azure_file)])
def test_memory_does_not_grow_with_trace_length(
    tmp_path: Path, fmt: str, make: Callable[[Path, int], None]
) -> None:
    short, long = tmp_path / "short", tmp_path / "long"
    make(short, 300)
    make(long, 3000)
    _streaming_peak(short, fmt)  # warm up: first-use allocations are not the reader's
    small, large = _streaming_peak(short, fmt), _streaming_peak(long, fmt)
    assert large <= 1.2 * small, f"peak {large} B for 10x the rows vs {small} B"


def test_azure_times_without_a_zone_are_utc_whatever_the_local_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    from kvreceipts.workloads.traces import _azure_time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert _azure_time("2023-11-16") == datetime(2023, 11, 16, tzinfo=UTC).timestamp()
        assert _azure_time("2023-11-16 18:17:03.9799600") == pytest.approx(1700158623.97996)
    finally:
        monkeypatch.undo()
        time.tzset()
