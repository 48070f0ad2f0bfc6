"""Compressed receipt files: ``-o run.jsonl.gz`` / ``.zst`` write one gzip member or zstd frame
per flush; the reading commands decompress by magic bytes, and a torn last frame is a truncated
tail, not a traceback.
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import signal
import struct
import subprocess
import sys
import textwrap
import zlib
from typing import TYPE_CHECKING

import orjson
import pytest
import zstandard
from typer.testing import CliRunner, Result

from kvreceipts.cli import app
from kvreceipts.commands.reading import MAX_LINE, ReceiptLines, open_receipts
from kvreceipts.verify import VerifyOptions, VerifyReport, verify_lines
from receipt_files import lean_run, seal

if TYPE_CHECKING:
    from pathlib import Path


def invoke(*args: str, stdin: bytes | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=stdin)


def simulate(out: Path) -> Path:
    result = invoke("simulate", "--workload", "burst", "--requests", "400", "--capacity-mb", "4",
                    "--batch-receipts", "-f", "json", "-q", "-o", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same seeded run written plain, gzip and zstd."""
    folder = tmp_path_factory.mktemp("compressed")
    return {ext: simulate(folder / f"run.jsonl{ext}") for ext in ("", ".gz", ".zst")}


def read_lines(path: Path) -> tuple[list[bytes], ReceiptLines]:
    with open_receipts(str(path)) as lines:
        return list(lines), lines


def verify_file(path: Path, *, allow_incomplete: bool = False) -> VerifyReport:
    with open_receipts(str(path)) as stream:
        return verify_lines(
            stream, path=str(path), options=VerifyOptions(allow_incomplete=allow_incomplete)
        )


def check_incomplete_prefix(path: Path, whole: int) -> None:
    """A cut or killed run: its ``whole`` complete lines are a valid prefix of one run that
    never wrote its close record. Strict verify fails it for that alone (exit 1);
    ``--allow-incomplete`` accepts it (exit 0).
    """
    strict = verify_file(path)
    assert not strict.ok
    assert {v.check for v in strict.violations} == {"incomplete"}, strict.violations[:3]
    assert (strict.incomplete_runs, strict.run_count, strict.records) == (1, 1, whole)
    lenient = verify_file(path, allow_incomplete=True)
    assert lenient.ok, lenient.violations[:3]
    assert (lenient.incomplete_runs, lenient.records) == (1, whole)
    assert [run.complete for run in lenient.runs] == [False]
    assert "close" not in lenient.kinds
    # What a user sees on the command line.
    result = invoke("verify", str(path), "--format", "json")
    assert result.exit_code == 1, result.output
    report = orjson.loads(result.stdout)
    assert (report["ok"], report["incomplete_runs"], report["records"]) == (False, 1, whole)
    assert [v["check"] for v in report["violations"]] == ["incomplete"]
    result = invoke("verify", str(path), "--allow-incomplete", "--format", "json")
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout)
    assert (report["ok"], report["incomplete_runs"], report["records"]) == (True, 1, whole)
    assert [run["complete"] for run in report["runs"]] == [False]
    table = invoke("verify", str(path), "--allow-incomplete")
    assert table.exit_code == 0, table.output
    assert "have no close record" in " ".join(table.stderr.split())


def frames(data: bytes, kind: str) -> int:
    """Complete gzip members or zstd frames in ``data``."""
    count = 0
    while data:
        if kind == "gzip":
            member = zlib.decompressobj(wbits=31)
            member.decompress(data)
        else:
            member = zstandard.ZstdDecompressor().decompressobj()  # type: ignore[assignment]
            member.decompress(data)
        assert member.eof
        count += 1
        data = member.unused_data
    return count


@pytest.mark.needs("receipts")
@pytest.mark.parametrize(("ext", "kind"), [(".gz", "gzip"), (".zst", "zstd")])
def test_round_trip_gives_the_plain_file_back(runs: dict[str, Path], ext: str, kind: str) -> None:
    plain = runs[""].read_bytes()
    lines, reader = read_lines(runs[ext])
    assert b"".join(lines) == plain
    assert (reader.compression, reader.truncated_tail) == (kind, False)
    packed = runs[ext].read_bytes()
    assert len(packed) < len(plain) / 5
    # One frame per flushed batch of simulate's 512 lines: a kill loses at most one.
    assert frames(packed, kind) == -(-len(plain.splitlines()) // 512)
    # And the standard tools read them as they are.
    assert (gzip.decompress(packed) if kind == "gzip" else _zstd_all(packed)) == plain


def _zstd_all(data: bytes) -> bytes:
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    return reader.read()


@pytest.mark.needs("receipts")
@pytest.mark.parametrize("ext", [".gz", ".zst"])
def test_verify_and_stats_read_compressed_files(runs: dict[str, Path], ext: str) -> None:
    result = invoke("verify", str(runs[ext]))
    assert result.exit_code == 0, result.output
    plain = orjson.loads(invoke("stats", str(runs[""]), "--format", "json").stdout)
    packed = orjson.loads(invoke("stats", str(runs[ext]), "--format", "json").stdout)
    plain.pop("path"), packed.pop("path")
    assert packed == plain
    # By magic bytes, not by name: from standard input too.
    piped = invoke("stats", "-", "--format", "json", stdin=runs[ext].read_bytes())
    assert piped.exit_code == 0
    assert orjson.loads(piped.stdout)["records"] == plain["records"]
    table = invoke("stats", str(runs[ext]))
    assert table.exit_code == 0
    assert f"{plain['records']:,} in 1 run(s)" in " ".join(table.stdout.split())


@pytest.mark.needs("receipts")
@pytest.mark.parametrize("ext", [".gz", ".zst"])
@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_a_torn_last_frame_is_a_truncated_tail(
    runs: dict[str, Path], tmp_path: Path, ext: str, cut: float
) -> None:
    plain = runs[""].read_bytes().splitlines(keepends=True)
    packed = runs[ext].read_bytes()
    kind = "gzip" if ext == ".gz" else "zstd"
    whole = frames(packed, kind)
    torn = tmp_path / f"torn.jsonl{ext}"
    torn.write_bytes(packed[: int(len(packed) * cut)])
    lines, reader = read_lines(torn)
    assert reader.truncated_tail
    complete = [line for line in lines if line.endswith(b"\n")]
    assert complete == plain[: len(complete)]  # a prefix of whole lines
    assert lines[len(complete) :] in ([], [plain[len(complete)][: len(lines[-1])]])
    assert len(complete) >= (whole - 1) * 512 * cut - 512
    # The tail took the run's close record with it: an incomplete run, its prefix valid.
    check_incomplete_prefix(torn, len(complete))
    report = orjson.loads(invoke("verify", str(torn), "--allow-incomplete", "--format",
                                 "json").stdout)  # fmt: skip
    assert report["truncated_tail"] is True  # the torn frame, reported by verify too
    stats = invoke("stats", str(torn), "--format", "json")
    assert stats.exit_code == 0, stats.output
    assert orjson.loads(stats.stdout)["truncated_tail"] is True
    assert "truncated tail" in stats.stderr


def _frame(data: bytes, kind: str) -> bytes:
    if kind == "gzip":
        return gzip.compress(data, mtime=0)
    return zstandard.ZstdCompressor().compress(data)


_RUN = b"".join(seal(lean_run(4)))
_EXTRA = b"".join(seal(lean_run(3, run_id="smuggled")))


@pytest.mark.parametrize(
    ("kind", "tail"),
    [
        pytest.param("gzip", b"\x00" * 100, id="gz-garbage"),
        pytest.param("zstd", b"\x00" * 100, id="zst-garbage"),
        pytest.param("gzip", _frame(_EXTRA, "zstd"), id="gz-then-a-zstd-run"),
        pytest.param("zstd", _frame(_EXTRA, "gzip"), id="zst-then-a-gzip-run"),
        pytest.param("zstd", struct.pack("<II", 0x184D2A50, len(_EXTRA)) + _EXTRA,
                     id="zst-skippable-frame"),
        pytest.param("gzip", b"\x1e", id="gz-one-stray-byte"),
    ],
)  # fmt: skip
def test_bytes_after_the_last_frame_are_a_violation(tmp_path: Path, kind: str, tail: bytes) -> None:
    path = tmp_path / "hidden"
    path.write_bytes(_frame(_RUN, kind) + tail)
    lines, reader = read_lines(path)
    assert b"".join(lines) == _RUN  # nothing of the hidden part is read as the file's
    assert reader.hidden_bytes is not None
    assert not reader.truncated_tail
    report = verify_file(path)
    assert not report.ok
    assert report.hidden_bytes
    assert [v.check for v in report.violations] == ["bytes"]
    result = invoke("verify", str(path), "--format", "json")
    assert result.exit_code == 1
    assert "no " + kind + " frame" in orjson.loads(result.stdout)["violations"][0]["message"]
    stats = invoke("stats", str(path))
    assert "hidden from every reader" in " ".join(stats.stderr.split())


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_a_torn_frame_after_whole_ones_stays_a_truncated_tail(tmp_path: Path, kind: str) -> None:
    whole = b"".join(_frame(line, kind) for line in seal(lean_run(4)))
    last = len(_frame(seal(lean_run(4))[-1], kind))
    for keep in (1, 2, 5, last - 1):
        path = tmp_path / "torn"
        path.write_bytes(whole[: len(whole) - last + keep])
        _, reader = read_lines(path)
        assert reader.truncated_tail, keep
        assert reader.hidden_bytes is None


@pytest.mark.parametrize("compress", [gzip.compress, zstandard.compress])
def test_a_decompression_bomb_stops_at_the_line_limit(compress: object) -> None:
    assert callable(compress)
    bomb = compress(b"x" * (64 * MAX_LINE) + b"\n" + b'{"a": 1}\n')
    reader = ReceiptLines(io.BytesIO(bomb), "bomb")
    assert [len(line) for line in reader] == [MAX_LINE + 2]
    assert reader.stopped_at == 1


def test_an_overlong_plain_line_stops_reading_before_its_end() -> None:
    data = b"a\n" + b"y" * (30 * MAX_LINE) + b"\nb\n"
    stream = io.BufferedReader(io.BytesIO(data))
    reader = ReceiptLines(stream, "long")
    assert [line[:1] for line in reader] == [b"a", b"y"]
    assert reader.stopped_at == 2
    assert stream.tell() <= MAX_LINE + 3  # the rest of the line was never read


def test_an_overlong_line_is_one_violation_and_reading_stops(tmp_path: Path) -> None:
    lines = seal(lean_run(4))
    path = tmp_path / "long.jsonl"
    path.write_bytes(b"".join(lines[:3]) + b"{" + b"x" * (2 * MAX_LINE) + b"\n" +
                     b"".join(lines[3:]))  # fmt: skip
    report = verify_file(path)
    assert report.stopped_at == 4
    assert {(v.line, v.check) for v in report.violations} >= {(4, "bytes"), (4, "stopped")}
    assert report.lines == 4


@pytest.mark.parametrize("command", ["verify", "stats"])
def test_a_file_that_cannot_be_read_is_one_error_line(command: str) -> None:
    result = subprocess.run([sys.executable, "-m", "kvreceipts", command, "/proc/self/mem"],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["error: /proc/self/mem: cannot read: Input/output error"]


@pytest.mark.parametrize("command", ["verify", "stats"])
def test_dev_zero_stops_at_the_line_limit(command: str) -> None:
    result = subprocess.run([sys.executable, "-m", "kvreceipts", command, "/dev/zero"],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: /dev/zero: not a kvreceipts receipts file (line 1: binary data, not text)"
    ]


def test_xz_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl.xz"
    path.write_bytes(lzma.compress(b"{}\n"))
    result = invoke("stats", str(path))
    assert result.exit_code == 2
    expected = f"error: {path}: xz-compressed receipts are not supported (use .gz or .zst)"
    assert result.stderr.strip() == expected


CHILD = textwrap.dedent(
    """
    import itertools, sys
    from kvreceipts.config import CachingConfig
    from kvreceipts.manager import KVCacheManager
    from kvreceipts.sinks import JsonlSink

    manager = KVCacheManager(
        CachingConfig(kv_cache_size_mb=0.0625, enable_receipts=True),
        sink=JsonlSink(sys.argv[1], flush="batch", batch_lines=64),
    )
    for i in itertools.count():
        manager.get_or_create_cache(f"session-{i}", 16)
        if i % 500 == 0:
            print(manager.receipts_emitted, flush=True)
    """
)


@pytest.mark.needs("receipts")
@pytest.mark.slow
@pytest.mark.parametrize("ext", [".gz", ".zst"])
def test_a_compressed_writer_killed_mid_run_leaves_whole_lines(tmp_path: Path, ext: str) -> None:
    out = tmp_path / f"killed.jsonl{ext}"
    env = {**os.environ, "KVRECEIPTS_FEATURES": "receipts,tuning"}
    env.pop("KVRECEIPTS_HMAC_KEY_FILE", None)
    with subprocess.Popen([sys.executable, "-c", CHILD, str(out)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env) as process:  # fmt: skip
        try:
            assert process.stdout is not None
            while int(process.stdout.readline() or b"-1") < 20_000:
                assert process.poll() is None, "the child stopped"
            process.send_signal(signal.SIGKILL)
            assert process.wait(timeout=10) == -signal.SIGKILL
        finally:
            if process.poll() is None:
                process.kill()
        assert process.stderr is not None
        assert b"Traceback" not in process.stderr.read()
    lines, _ = read_lines(out)
    whole = [line for line in lines if line.endswith(b"\n")]
    assert len(whole) >= 20_000 - 64  # everything but the unflushed batch
    # Killed before shutdown(): no close record, so verify sees an incomplete run.
    check_incomplete_prefix(out, len(whole))
    assert [orjson.loads(line)["seq"] for line in whole] == list(range(len(whole)))
    assert orjson.loads(whole[0])["kind"] == "open"


@pytest.mark.needs("receipts")
@pytest.mark.parametrize(("ext", "kind"), [(".gz", "gzip"), (".zst", "zstd")])
def test_flushing_each_line_writes_a_frame_per_line(tmp_path: Path, ext: str, kind: str) -> None:
    from kvreceipts.config import CachingConfig
    from kvreceipts.manager import KVCacheManager
    from kvreceipts.sinks import JsonlSink

    out = tmp_path / f"lines.jsonl{ext}"
    sink = JsonlSink(out, flush="line")
    manager = KVCacheManager(CachingConfig(kv_cache_size_mb=0.0625, enable_receipts=True),
                             sink=sink)  # fmt: skip
    for i in range(40):
        manager.get_or_create_cache(f"session-{i}", 16)
    manager.shutdown()  # writes the close record, flushes and closes the sink
    emitted = manager.receipts_emitted  # receipts only: not the open and close records
    assert emitted > 10
    lines, reader = read_lines(out)
    assert len(lines) == emitted + 2 == frames(out.read_bytes(), kind)
    assert [orjson.loads(lines[i])["kind"] for i in (0, -1)] == ["open", "close"]
    assert reader.compression == kind
    report = verify_file(out)
    assert report.ok, report.violations[:3]
    assert (report.records, report.incomplete_runs, report.truncated_tail) == (len(lines), 0, False)


@pytest.mark.parametrize(("magic", "kind"), [(b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd")])
def test_a_corrupt_first_frame_is_one_error_line(tmp_path: Path, magic: bytes, kind: str) -> None:
    path = tmp_path / "corrupt"
    path.write_bytes(magic + b"\xff" * 64 + b"junk" * 100)
    for command in ("stats", "verify"):
        result = invoke(command, str(path))
        assert result.exit_code == 2, result.output
        assert result.stdout == ""
        [line] = result.stderr.splitlines()
        assert line.startswith(f"error: {path}: not a valid {kind} stream (")


@pytest.mark.parametrize("flag", [0x04, 0x10], ids=["extra-field", "comment"])
def test_a_gzip_header_that_can_hide_bytes_is_a_violation(tmp_path: Path, flag: int) -> None:
    plain = gzip.compress(_RUN, mtime=0)
    hiding = _EXTRA.replace(b"\x00", b"")
    if flag == 0x04:  # an extra field: XLEN, then that many bytes
        member = plain[:3] + bytes([flag]) + plain[4:10] + struct.pack("<H", len(hiding)) + \
            hiding + plain[10:]  # fmt: skip
    else:  # a zero-terminated comment
        member = plain[:3] + bytes([flag]) + plain[4:10] + hiding + b"\x00" + plain[10:]
    assert gzip.decompress(member) == _RUN  # every gzip reader takes it, and skips what it hides
    path = tmp_path / "hiding.gz"
    path.write_bytes(plain + member)
    lines, reader = read_lines(path)
    assert b"".join(lines) == _RUN
    assert reader.hidden_bytes is not None
    assert "extra field or a comment" in reader.hidden_bytes
