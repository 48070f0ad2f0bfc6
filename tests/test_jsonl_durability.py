"""A process killed mid-run leaves a receipts file that verifies as a crashed run's valid
prefix (no close record, at most a torn last line).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import IO, TYPE_CHECKING

import pytest

from kvreceipts.verify import VerifyOptions, VerifyReport, verify_lines

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

pytestmark = [pytest.mark.needs("receipts"), pytest.mark.slow]


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("KVRECEIPTS_HMAC_KEY_FILE", None)
    env["KVRECEIPTS_FEATURES"] = "receipts,tuning"
    return env


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


def _kill(process: subprocess.Popen[bytes]) -> None:
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=10) == -signal.SIGKILL


def _verify_file(path: Path) -> VerifyReport:
    # The run never wrote its close record: only an auditor who accepts a crashed run's valid
    # prefix passes the file, and the report says the run is incomplete.
    with path.open("rb") as handle:
        strict = verify_lines(handle, path=str(path))
    assert not strict.ok
    assert {v.check for v in strict.violations} == {"incomplete"}, strict.violations[:5]
    with path.open("rb") as handle:
        report = verify_lines(handle, path=str(path), options=VerifyOptions(allow_incomplete=True))
    assert report.ok, report.violations[:5]
    assert report.records > 0
    assert report.incomplete_runs == report.run_count == 1
    assert not report.runs[0].complete
    assert report.kinds["open"] == 1
    assert "close" not in report.kinds
    return report


def test_simulate_killed_mid_run_leaves_a_file_that_verifies(tmp_path: Path) -> None:
    out = tmp_path / "killed.jsonl"
    command = [sys.executable, "-m", "kvreceipts", "simulate", "--workload", "uniform",
               "--requests", "200000", "--capacity-mb", "4", "--batch-receipts",
               "--snapshot-every", "100", "-f", "json", "-q", "-o", str(out)]  # fmt: skip
    with subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_child_env()
    ) as process:
        try:
            # A few of simulate's 512-line batches, then kill it without warning.
            _wait_for(lambda: out.exists() and out.stat().st_size > 1_500_000, 20, "receipts")
            _kill(process)
        finally:
            if process.poll() is None:
                process.kill()
        stderr = process.stderr.read() if process.stderr else b""
    assert b"Traceback" not in stderr
    report = _verify_file(out)
    assert report.records >= 1024  # at least two whole batches made it
    assert set(report.kinds) >= {"eviction", "eviction_batch"}


CHILD = textwrap.dedent(
    """
    import itertools, sys
    from kvreceipts.config import CachingConfig
    from kvreceipts.manager import KVCacheManager
    from kvreceipts.sinks import JsonlSink

    manager = KVCacheManager(
        CachingConfig(kv_cache_size_mb=0.0625, enable_receipts=True),
        sink=JsonlSink(sys.argv[1], flush="line"),
    )
    for i in itertools.count():
        manager.get_or_create_cache(f"session-{i}", 16)
        if i % 500 == 0:
            # Everything emitted so far has been handed to the sink.
            print(manager.receipts_emitted, flush=True)
    """
)


def _read_counts(stream: IO[bytes], at_least: int) -> int:
    """Read the child's progress lines until it reports ``at_least`` receipts."""
    while True:
        line = stream.readline()
        assert line, "the child stopped reporting"
        if int(line) >= at_least:
            return int(line)


def test_jsonl_sink_flushing_each_line_loses_nothing_emitted_when_killed(
    tmp_path: Path,
) -> None:
    out = tmp_path / "lines.jsonl"
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_child_env(),
    ) as process:
        try:
            assert process.stdout is not None
            reported = _read_counts(process.stdout, 3_000)
            _kill(process)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.stderr is not None
        assert b"Traceback" not in process.stderr.read()
    report = _verify_file(out)
    # flush="line": every receipt emitted before the last progress line is in the file (after
    # the run's open record).
    assert report.records - 1 >= reported > 0
    assert report.kinds == {"open": 1, "eviction": report.records - 1}
