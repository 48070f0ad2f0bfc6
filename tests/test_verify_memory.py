"""``verify`` holds at most 150 MB whatever the file (issue 26's verify rows): each hostile file
of tests/receipt_files.py is verified in a subprocess under ``/usr/bin/time -f %M``. Before the
bounds, the first four rows took 300 MB or more at these sizes (each ~1 MB identifier kept
whole, once per violation, kind name, closed run or declared loss).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pytest

import receipt_files as files

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

LIMIT_KB = 150 * 1024
TIME = Path("/usr/bin/time")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not TIME.exists(), reason="needs /usr/bin/time for the peak RSS"),
]


def peak_rss(*args: str) -> tuple[int, subprocess.CompletedProcess[bytes]]:
    """Peak RSS (KiB) of ``kvreceipts ARGS`` run as its own process, and the process."""
    result = subprocess.run(
        [str(TIME), "-f", "%M", sys.executable, "-m", "kvreceipts", *args],
        capture_output=True, timeout=900, check=False, env=os.environ.copy(),
    )  # fmt: skip
    return int(result.stderr.splitlines()[-1]), result


@pytest.mark.parametrize(
    ("make", "check"),
    [
        pytest.param(lambda: files.hostile_violation_run_ids(300), "frame", id="violation-ids"),
        pytest.param(lambda: files.hostile_kind_names(300), "schema", id="kind-names"),
        pytest.param(lambda: files.hostile_closed_run_ids(300), None, id="closed-run-ids"),
        pytest.param(lambda: files.hostile_sink_names(300), "loss", id="sink-names"),
        pytest.param(lambda: files.hostile_field_names(300), "schema", id="field-names"),
        pytest.param(lambda: files.hostile_interleaved_blocks(64, 12_000), None,
                     id="interleaved-blocks"),
    ],
)  # fmt: skip
def test_verify_stays_within_150_mb(
    tmp_path: Path, make: Callable[[], Iterator[bytes]], check: str | None
) -> None:
    path = files.write_lines(tmp_path / "hostile.jsonl", make())
    try:
        kb, result = peak_rss("verify", str(path), "--format", "json", "--allow-incomplete")
        report = orjson.loads(result.stdout)
        assert kb <= LIMIT_KB, f"{kb / 1024:.0f} MB"
        if check is not None:
            assert check in {v["check"] for v in report["violations"]}
        assert all(len(v["run_id"] or "") <= 64 for v in report["violations"])
        assert all(len(v["message"]) <= 400 for v in report["violations"])
        assert all(len(r["run_id"]) <= 64 for r in report["runs"])
        assert all(len(g["sink"]) <= 64 for g in report["declared_losses"])
    finally:
        path.unlink()


def test_the_block_table_is_bounded_and_says_so(tmp_path: Path) -> None:
    blocks = files.hostile_interleaved_blocks(64, 12_000)
    path = files.write_lines(tmp_path / "blocks.jsonl", blocks)
    try:
        kb, result = peak_rss("verify", str(path), "--format", "json", "--allow-incomplete")
        report = orjson.loads(result.stdout)
        assert report["ok"], report["violations"][:3]
        assert report["untracked_evictions"] == 64 * 12_000 - 500_000
        assert kb <= LIMIT_KB
    finally:
        path.unlink()


@pytest.mark.parametrize("command", ["verify", "stats"])
def test_a_valid_open_then_300_huge_lines_of_their_own_runs(tmp_path: Path, command: str) -> None:
    path = files.write_lines(tmp_path / "huge.jsonl", files.hostile_distinct_run_evictions(300))
    try:
        kb, result = peak_rss(command, str(path), "--format", "json")
        # verify: violations; stats: the open record summarized, the rest unreadable
        assert result.returncode == (1 if command == "verify" else 0), result.stderr[-500:]
        assert b"Traceback" not in result.stderr
        if command == "stats":
            assert orjson.loads(result.stdout)["unreadable_lines"] == 300
        assert kb <= LIMIT_KB, f"{command}: {kb / 1024:.0f} MB"
    finally:
        path.unlink()
