"""``./ci-local.sh`` argument handling and ``.ci/run``, through ``--print``: nothing is
bootstrapped and nox never runs.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "ci-local.sh"
CI_RUN = ROOT / ".ci" / "run"
BASH = shutil.which("bash")

pytestmark = pytest.mark.skipif(BASH is None, reason="ci-local.sh is a bash script")


def run(*args: str, venv: Path, script: Path = SCRIPT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KVRECEIPTS_CI_VENV": str(venv)}
    env.pop("KVRECEIPTS_CI_JOBS", None)
    return subprocess.run(
        [str(script), *args], capture_output=True, text=True, env=env, check=False, timeout=30
    )


def planned(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The validate command line that ``--print`` shows."""
    (line,) = (line for line in result.stdout.splitlines() if line.startswith("run:"))
    return shlex.split(line.removeprefix("run:"))


def test_scripts_are_executable_bash_with_strict_mode() -> None:
    for script in (SCRIPT, CI_RUN):
        assert os.access(script, os.X_OK), f"{script} is not executable"
        assert script.read_text(encoding="utf-8").startswith("#!/usr/bin/env bash\n")
        assert "set -euo pipefail" in script.read_text(encoding="utf-8")
        subprocess.run([BASH or "bash", "-n", str(script)], check=True)


def test_help(tmp_path: Path) -> None:
    result = run("--help", venv=tmp_path / "venv")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: ./ci-local.sh [receipts|all|quick]")
    assert result.stderr == ""


def test_unknown_target_prints_usage_and_exits_2(tmp_path: Path) -> None:
    result = run("everything", venv=tmp_path / "venv")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(
        "ci-local.sh: unknown target 'everything' (choose from: receipts, all, quick)\nusage:"
    )
    assert not (tmp_path / "venv").exists()  # nothing was bootstrapped


@pytest.mark.parametrize("args", [("--jobs", "0"), ("--jobs", "x"), ("quick", "--jobs")])
def test_bad_jobs_exit_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = run(*args, venv=tmp_path / "venv")
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_print_shows_the_bootstrap_and_the_validate_command(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    result = run("receipts", "--print", venv=venv)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"bootstrap: {venv} (python -m venv")
    command = planned(result)
    assert command[:3] == [str(venv / "bin" / "kvreceipts"), "validate", "receipts"]
    assert command[command.index("--output") + 1] == str(ROOT / ".ci-local/validate-receipts.json")
    assert "--reuse" in command
    assert int(command[command.index("--jobs") + 1]) >= 1
    assert not venv.exists()


def test_default_target_is_all(tmp_path: Path) -> None:
    command = planned(run("--print", venv=tmp_path / "venv"))
    assert command[1:3] == ["validate", "all"]


def test_fresh_and_jobs(tmp_path: Path) -> None:
    command = planned(run("quick", "--fresh", "--jobs", "1", "--print", venv=tmp_path / "v"))
    assert "--reuse" not in command
    assert "--fresh" in command  # validate reuses by default: fresh must be said
    assert "--no-cache" not in command
    cached = planned(run("quick", "--no-cache", "--print", venv=tmp_path / "v"))
    assert "--no-cache" in cached
    assert command[command.index("--jobs") + 1] == "1"


def test_other_arguments_go_to_nox(tmp_path: Path) -> None:
    result = run("quick", "--print", "--verbose", "--", "-k", "receipts", venv=tmp_path / "v")
    command = planned(result)
    nox_args = [arg.removeprefix("--nox-arg=") for arg in command if arg.startswith("--nox-arg=")]
    assert nox_args == ["--verbose", "--", "-k", "receipts"]


def test_ci_run_runs_the_readme_command(tmp_path: Path) -> None:
    result = run("--print", venv=tmp_path / "venv", script=CI_RUN)
    assert result.returncode == 0, result.stderr
    assert planned(result)[1:3] == ["validate", "all"]
