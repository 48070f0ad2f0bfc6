"""The command line as a shell pipeline meets it: real processes, real pipes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # real processes: the full-suite sessions run them

KVRECEIPTS = [sys.executable, "-m", "kvreceipts"]


def _env() -> dict[str, str]:
    # PYTHONUNBUFFERED hides the "Exception ignored ... BrokenPipeError" at exit: test without.
    return {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


@pytest.mark.parametrize(
    "args",
    [
        # Receipt lines need the receipts feature; the JSON summary and the rest do not.
        pytest.param(["simulate"], marks=pytest.mark.needs("receipts")),
        ["simulate", "--format", "json"],
        pytest.param(
            ["simulate", "--requests", "20000", "--format", "jsonl"],
            marks=pytest.mark.needs("receipts"),
        ),
        ["schema"],
        ["config", "show"],
    ],
)
def test_head_1_ends_quietly(args: list[str]) -> None:
    command = " ".join([*KVRECEIPTS, *args]) + " | head -1"
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        capture_output=True,
        env=_env(),
        timeout=60,
        check=False,
        shell=False,
    )
    assert result.stdout.count(b"\n") == 1
    assert b"Traceback" not in result.stderr
    assert b"Exception ignored" not in result.stderr
    assert b"BrokenPipeError" not in result.stderr
    assert result.returncode == 0, result.stderr


@pytest.mark.needs("receipts")
def test_two_processes_print_identical_bytes() -> None:
    runs = [
        subprocess.run([*KVRECEIPTS, "simulate", "--format", "jsonl", "--batch-receipts"],
                       capture_output=True, env=_env(), timeout=60, check=True)
        for _ in range(2)
    ]  # fmt: skip
    assert runs[0].stdout
    assert runs[0].stdout == runs[1].stdout


@pytest.mark.needs("receipts")
@pytest.mark.parametrize("quiet", [False, True])
def test_head_1_gets_one_line_about_the_pipe_not_the_summary(quiet: bool) -> None:
    command = " ".join([*KVRECEIPTS, "simulate", *(["-q"] if quiet else [])]) + " | head -1"
    result = subprocess.run(["bash", "-c", command], capture_output=True, env=_env(),
                            timeout=60, check=False)  # fmt: skip
    assert result.stdout.count(b"\n") == 1
    lines = result.stderr.decode().splitlines()
    if quiet:
        assert lines == []
    else:
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("stdout was closed after ")
