"""Opening inputs whatever their compression (``kvreceipts.inputs``), and what the trace reader
does with them: compressed traces, standard input, a byte-order mark, time going backwards.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import sys
from typing import TYPE_CHECKING

import pytest
import zstandard
from typer.testing import CliRunner

from kvreceipts.cli import app
from kvreceipts.errors import InputError
from kvreceipts.inputs import open_input
from kvreceipts.workloads import TraceStats, detect_format, read_trace

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

TEXT = b"".join(b'{"n": %d}\n' % n for n in range(5000))
COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
    "xz": lzma.compress,
    "bzip2": bz2.compress,
}
MOONCAKE = b"".join(
    b'{"timestamp": %d, "input_length": 1024, "output_length": 8, "hash_ids": [%d, %d]}\n'
    % (t, t, t + 1)
    for t in (0, 5, 10, 7, 20)
)


@pytest.mark.parametrize("compression", [*COMPRESS, None])
def test_every_compression_reads_back_by_its_magic_not_its_name(
    tmp_path: Path, compression: str | None
) -> None:
    path = tmp_path / "data.jsonl"  # the name says plain text, whatever it holds
    data = COMPRESS[compression](TEXT) if compression else TEXT
    path.write_bytes(data)
    with open_input(path) as stream:
        assert stream.compression == compression
        assert stream.size == len(data)
        assert stream.bytes_read() == 0
        assert list(stream) == TEXT.splitlines(keepends=True)
        assert stream.bytes_read() == len(data)
    assert stream.closed


def test_corrupt_and_truncated_compressed_files_are_input_errors(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl.gz"
    path.write_bytes(gzip.compress(TEXT)[:200])
    with (
        pytest.raises(InputError, match=r"trace.jsonl.gz: the gzip data ends early"),
        open_input(path, "trace file") as stream,
    ):
        stream.read()
    packed = COMPRESS["zstd"](TEXT)
    path.write_bytes(packed[:10] + b"\xff" * 20 + packed[30:])
    with pytest.raises(InputError, match=r"corrupt zstd data"), open_input(path) as stream:
        stream.read()
    for compression in ("zstd", "xz", "bzip2"):
        path.write_bytes(COMPRESS[compression](TEXT)[:-20])
        with (
            pytest.raises(InputError, match=rf"the {compression} data ends early"),
            open_input(path) as stream,
        ):
            stream.read()


def test_missing_and_directory_inputs_name_what_they_should_be(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope: trace file not found"):
        open_input(tmp_path / "nope", "trace file")
    with pytest.raises(InputError, match=r"is a directory, not a receipts file"):
        open_input(tmp_path, "receipts file")


def test_standard_input_is_peeked_then_read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = io.BufferedReader(io.BytesIO(gzip.compress(MOONCAKE)))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(raw))
    assert detect_format("-") == "mooncake"  # a look at the first line loses nothing
    requests = list(read_trace("-"))
    assert [r.arrival_ms for r in requests] == [0, 5, 10, 7, 20]
    assert not sys.stdin.closed


@pytest.mark.parametrize("compression", ["gzip", "zstd", "xz"])
def test_a_compressed_trace_replays_like_the_plain_one(tmp_path: Path, compression: str) -> None:
    plain = tmp_path / "t.jsonl"
    plain.write_bytes(MOONCAKE)
    packed = tmp_path / f"t.jsonl.{compression}"
    packed.write_bytes(COMPRESS[compression](MOONCAKE))
    assert list(read_trace(str(packed))) == list(read_trace(str(plain)))


def test_backwards_timestamps_are_counted_or_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(MOONCAKE)
    stats = TraceStats(str(path), "mooncake")
    assert len(list(read_trace(str(path), stats=stats))) == 5
    assert stats.backwards == 1
    assert stats.first_backwards == f"{path}:4: 7 ms after 10 ms"
    with pytest.raises(InputError, match=r"t.jsonl:4: timestamp goes backwards"):
        list(read_trace(str(path), strict_time=True))


def test_a_csv_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = tmp_path / "azure.csv"
    path.write_bytes(
        b"\xef\xbb\xbfTIMESTAMP,ContextTokens,GeneratedTokens\n"
        b"2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n"
    )
    assert detect_format(str(path)) == "azure"
    assert [r.input_tokens for r in read_trace(str(path))] == [374, 396]


def test_simulate_reads_a_trace_from_stdin_and_reports_time_going_back(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["simulate", "--trace", "-", "--format", "json"], input=gzip.compress(MOONCAKE)
    )
    assert result.exit_code == 0, result.stderr
    assert '"backwards_timestamps": 1' in result.stdout
    assert "1 trace row goes back in time" in result.stderr
    strict = CliRunner().invoke(
        app, ["simulate", "--trace", "-", "--strict-time", "-q"], input=MOONCAKE
    )
    assert strict.exit_code == 2
    assert strict.stderr.startswith("error: <stdin>:4: timestamp goes backwards")
