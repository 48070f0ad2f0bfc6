"""``sweep --dask`` on real Dask clusters: a LocalCluster of worker processes, a scheduler and
workers started as separate ``dask`` processes, a worker killed mid-sweep, and a scheduler
that is not there. Rows must equal the local run's, byte for byte.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from kvreceipts.cli import app

if TYPE_CHECKING:
    from collections.abc import Iterator

# Imported inside the tests: collecting this module must not import Dask (the sessions that
# leave out slow tests may run older dependency versions).
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("dask_installed")]

runner = CliRunner()
BIN = Path(sys.executable).parent
KVRECEIPTS = str(BIN / "kvreceipts")
DASK = str(BIN / "dask")


@pytest.fixture
def dask_installed() -> None:
    pytest.importorskip("distributed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _grid(trace: Path, *extra: str) -> list[str]:
    return ["sweep", "--trace", str(trace), "--points", "10", "--no-pin", "-f", "csv", *extra]


def _local(trace: Path, *extra: str) -> str:
    result = runner.invoke(app, [*_grid(trace, *extra), "--workers", "1"])
    assert result.exit_code == 0, result.stderr
    return result.stdout


def test_local_cluster_of_processes_gives_the_local_rows(traces_dir: Path) -> None:
    from distributed import LocalCluster

    trace = traces_dir / "mooncake_synthetic_trace.jsonl"
    expected = _local(trace, "--policy", "lru,fifo,s3fifo")
    # The dashboard on a free port: another cluster (a parallel session) may hold 8787.
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster:  # fmt: skip
        result = runner.invoke(
            app, [*_grid(trace, "--policy", "lru,fifo,s3fifo"), "--dask", cluster.scheduler_address]
        )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == expected


def _start(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_for_workers(address: str, count: int) -> None:
    from distributed import Client

    with Client(address, timeout="20s") as client:
        client.wait_for_workers(count, timeout=60)


@pytest.fixture
def scheduler(dask_installed: None) -> Iterator[str]:
    if not shutil.which(DASK):
        pytest.skip(f"{DASK} not found")
    port = _free_port()
    process = _start(DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                     "--no-dashboard")  # fmt: skip
    try:
        yield f"tcp://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture
def workers(scheduler: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    # Two single-process workers without a nanny: killing one really loses a worker.
    args = ("--nthreads", "1", "--no-nanny", "--no-dashboard", "--host", "127.0.0.1")
    started = [_start(DASK, "worker", scheduler, *args) for _ in range(2)]
    try:
        _wait_for_workers(scheduler, 2)
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.terminate()
            process.wait(30)


def test_separate_scheduler_and_worker_processes_give_the_local_rows(
    traces_dir: Path, scheduler: str, workers: list[subprocess.Popen[bytes]]
) -> None:
    trace = traces_dir / "mooncake_synthetic_trace.jsonl"
    result = subprocess.run([KVRECEIPTS, *_grid(trace), "--dask", scheduler],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == _local(trace)
    assert all(w.poll() is None for w in workers)


def test_a_worker_killed_mid_sweep_has_its_points_retried(
    traces_dir: Path, scheduler: str, workers: list[subprocess.Popen[bytes]]
) -> None:
    from distributed import Client

    trace = traces_dir / "mooncake_synthetic_trace.jsonl"
    extra = ("--points", "12", "--policy", "fifo,lfu,s3fifo")  # replays: one task per point
    grid = [*_grid(trace), *extra]
    sweep = subprocess.Popen([KVRECEIPTS, *grid, "--dask", scheduler],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    victim = workers[0]
    with Client(scheduler, timeout="20s") as client:
        deadline = time.monotonic() + 60
        # Kill the first worker once it is computing a grid point.
        while time.monotonic() < deadline:
            busy = client.processing()
            if any(busy.values()) and sweep.poll() is None:
                break
            time.sleep(0.05)
        assert sweep.poll() is None, "the sweep ended before a worker could be killed"
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(30)
    stdout, stderr = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, stderr
    expected = _local(trace, *extra)
    assert stdout == expected
    assert len(stdout.splitlines()) == 1 + 3 * 12


def test_an_unreachable_scheduler_is_one_line_within_10_s(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1]}\n')
    started = time.monotonic()
    result = subprocess.run(
        [KVRECEIPTS, "sweep", "--trace", str(trace), "--capacity-blocks", "1",
         "--dask", f"tcp://127.0.0.1:{_free_port()}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert time.monotonic() - started < 10
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: cannot reach the Dask scheduler at tcp://127.0.0.1:")
