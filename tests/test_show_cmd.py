"""``kvreceipts show``: a file's receipts as the table ``simulate`` prints, JSON lines when
piped, filtered by kind and session; bad input is one error line and exit 2.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from kvreceipts.cli import app

WATCH = Path(__file__).resolve().parent / "fixtures" / "watch" / "engine.jsonl"


def invoke(*args: str, stdin: bytes | None = None) -> Any:
    return CliRunner().invoke(app, list(args), input=stdin, env={"COLUMNS": "100"})


@pytest.fixture(scope="module")
def run_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("show") / "run.jsonl"
    result = invoke("simulate", "--requests", "400", "--capacity-mb", "64", "-q", "-f", "json",
                    "--snapshot-every", "100", "-o", str(out))  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return out


def records(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.mark.needs("receipts")
def test_the_table_is_simulates_table(run_file: Path) -> None:
    simulated = invoke("simulate", "--requests", "400", "--capacity-mb", "64", "-q",
                       "--snapshot-every", "100", "-f", "table", "--limit", "7")  # fmt: skip
    shown = invoke("show", str(run_file), "-f", "table", "--limit", "7")
    assert shown.exit_code == 0, shown.stderr
    table = shown.stdout
    assert simulated.stdout.startswith(table.rstrip("\n"))
    receipts = [r for r in records(run_file) if r["kind"] not in ("open", "close")]
    assert f"… {len(receipts) - 7:,} more (--limit N shows more" in table
    first = receipts[0]
    assert first["session_id"] in table


@pytest.mark.needs("receipts")
def test_piped_it_prints_the_files_lines_as_they_are(run_file: Path) -> None:
    shown = invoke("show", str(run_file), "--kind", "eviction")
    assert shown.exit_code == 0
    mine = [line + b"\n" for line in run_file.read_bytes().splitlines()
            if orjson.loads(line)["kind"] == "eviction"]  # fmt: skip
    assert shown.stdout_bytes == b"".join(mine)
    assert invoke("show", str(run_file), "--limit", "3").stdout_bytes.count(b"\n") == 3
    receipts = invoke("show", str(run_file), "-f", "jsonl").stdout_bytes
    assert receipts.count(b"\n") == len(records(run_file)) - 2  # all but open and close
    every = invoke("show", str(run_file), "--kind", "all", "-f", "jsonl").stdout_bytes
    assert every == run_file.read_bytes()
    close = invoke("show", str(run_file), "--kind", "close").stdout
    assert orjson.loads(close)["kind"] == "close"


@pytest.mark.needs("receipts")
def test_session_keeps_one_sessions_evictions(run_file: Path) -> None:
    evictions = [r for r in records(run_file) if r["kind"] == "eviction"]
    session = evictions[0]["session_id"]
    shown = invoke("show", str(run_file), "--session", session, "-f", "jsonl")
    got = [orjson.loads(line) for line in shown.stdout.splitlines()]
    assert [r["seq"] for r in got] == [r["seq"] for r in evictions if r["session_id"] == session]
    nothing = invoke("show", str(run_file), "--session", "nobody", "-f", "table")
    assert nothing.exit_code == 0
    assert "no records match" in nothing.stderr


@pytest.mark.needs("receipts")
def test_standard_input_and_compressed_files(run_file: Path, tmp_path: Path) -> None:
    import zstandard

    packed = tmp_path / "run.jsonl.zst"
    packed.write_bytes(zstandard.ZstdCompressor().compress(run_file.read_bytes()))
    plain = invoke("show", str(run_file), "-f", "jsonl").stdout_bytes
    assert invoke("show", str(packed), "-f", "jsonl").stdout_bytes == plain
    assert invoke("show", "-", "-f", "jsonl", stdin=run_file.read_bytes()).stdout_bytes == plain


def test_a_watch_file_gets_the_engine_table() -> None:
    shown = invoke("show", str(WATCH), "-f", "table")
    assert shown.exit_code == 0
    assert "engine receipts (kvreceipts watch)" in shown.stdout
    assert "restore" in shown.stdout
    assert "2.00 s after seq 1" in shown.stdout
    assert "sink loss" in shown.stdout  # the watch's dropped receipts, beside its lost batches
    assert "batch loss" in shown.stdout
    assert "KV eviction receipts" not in shown.stdout
    restores = invoke("show", str(WATCH), "--kind", "engine_restore", "-f", "jsonl")
    assert [orjson.loads(line)["kind"] for line in restores.stdout.splitlines()] == \
        ["engine_restore"]  # fmt: skip


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello\nworld\n", "not a kvreceipts receipts file"),
        (None, "receipts file not found"),
    ],
)
def test_bad_input_is_one_error_line(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "x.jsonl"
    if content is not None:
        path.write_bytes(content)
    shown = invoke("show", str(path))
    assert shown.exit_code == 2
    assert shown.stderr.startswith(f"error: {path}: ")
    assert message in shown.stderr
    assert shown.stderr.count("\n") == 1


@pytest.mark.needs("receipts")
def test_a_bad_line_names_its_number(run_file: Path, tmp_path: Path) -> None:
    lines = run_file.read_bytes().splitlines(keepends=True)
    broken = tmp_path / "broken.jsonl"
    broken.write_bytes(b"".join([*lines[:12], b"{not json\n", *lines[12:]]))
    shown = invoke("show", str(broken), "-f", "table")
    assert shown.exit_code == 2
    assert shown.stderr == f"error: {broken}:13: not valid JSON\n"
    assert invoke("show", str(run_file), "--kind", "nope").stderr.startswith(
        "error: --kind: 'nope' is not one of open, close, checkpoint, eviction"
    )


@pytest.mark.slow
@pytest.mark.needs("receipts")
def test_head_closes_the_pipe_quietly(run_file: Path) -> None:
    shown = subprocess.run(f"{sys.executable} -m kvreceipts show {run_file} | head -2",
                           shell=True, capture_output=True, check=True)  # fmt: skip
    assert shown.stdout.count(b"\n") == 2
    assert shown.stderr == b""
