"""The result cache of ``kvreceipts validate``: which changes make which sessions run again,
and how cached passes show.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvreceipts.cli import app
from kvreceipts.validation import runner
from kvreceipts.validation.cache import ResultCache, cache_disabled_by_env

SESSIONS = {"lint": None, "format": None, "docs": None, "tests": "3.13",
            "features(receipts)": None}  # fmt: skip
FILES = {
    "src/pkg/a.py": "A = 1\n",
    "tests/test_a.py": "def test_a() -> None: ...\n",
    "docs/index.md": "# Home\n",
    "docs/cli.md": "# CLI\n",
    "mkdocs.yml": "site_name: x\n",
    "noxfile.py": "# sessions\n",
    "pyproject.toml": "[project]\nname = 'x'\n",
    "README.md": "# x\n",
    ".gitignore": "ignored.txt\n.nox/\n",
}

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git_checkout(root: Path) -> None:
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)


def _keys(root: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    cache = ResultCache(root, environ or {})
    return {name: cache.key(name, python) for name, python in SESSIONS.items()}


def _changed(root: Path, change: str, text: str = "changed\n") -> set[str]:
    before = _keys(root)
    (root / change).parent.mkdir(parents=True, exist_ok=True)
    (root / change).write_text(text, encoding="utf-8")
    after = _keys(root)
    return {name for name in SESSIONS if before[name] != after[name]}


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    _git_checkout(tmp_path)
    return tmp_path


def test_a_docs_only_change_reruns_only_the_docs_session(checkout: Path) -> None:
    assert _changed(checkout, "docs/index.md") == {"docs"}
    assert _changed(checkout, "README.md") == set()  # no session reads it


def test_a_generated_docs_page_is_a_test_input_too(checkout: Path) -> None:
    # tests/test_docs.py checks that docs/cli.md is current.
    assert _changed(checkout, "docs/cli.md") == {"docs", "tests", "features(receipts)"}


def test_source_test_and_noxfile_changes(checkout: Path) -> None:
    assert _changed(checkout, "src/pkg/a.py", "A = 2\n") == set(SESSIONS)
    assert _changed(checkout, "tests/test_a.py", "X = 1\n") == {
        "lint", "format", "tests", "features(receipts)"}  # fmt: skip
    assert _changed(checkout, "noxfile.py", "# more\n") == set(SESSIONS)
    # A new file git would track counts; an ignored one does not.
    assert _changed(checkout, "src/pkg/new.py", "B = 1\n") == set(SESSIONS)
    assert _changed(checkout, "ignored.txt") == set()


def test_the_environment_and_the_interpreter_are_in_the_key(checkout: Path) -> None:
    plain = _keys(checkout)
    features = _keys(checkout, {"KVRECEIPTS_FEATURES": "receipts"})
    assert all(plain[name] != features[name] for name in SESSIONS)
    assert _keys(checkout, {"HOME": "/elsewhere"}) == plain  # unrelated variables do not
    venv = checkout / ".nox" / "tests-3-13"
    venv.mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("version_info = 3.13.1\n", encoding="utf-8")
    with_venv = _keys(checkout)
    assert {n for n in SESSIONS if with_venv[n] != plain[n]} == {"tests"}
    (venv / "pyvenv.cfg").write_text("version_info = 3.13.2\n", encoding="utf-8")
    assert _keys(checkout)["tests"] != with_venv["tests"]
    site = venv / "lib" / "python3.13" / "site-packages" / "pytest-8.4.1.dist-info"
    site.mkdir(parents=True)
    upgraded = _keys(checkout)
    assert upgraded["tests"] != with_venv["tests"]  # a resolved dependency changed


def test_ci_turns_the_cache_off() -> None:
    assert cache_disabled_by_env({"CI": "true"})
    assert not cache_disabled_by_env({"CI": ""})
    assert not cache_disabled_by_env({})


# --- the command, with the fake nox -----------------------------------------------------------

FIXTURES = Path(__file__).parent / "fixtures" / "nox"


@pytest.fixture
def fake(checkout: Path, tmp_path_factory: pytest.TempPathFactory,
         monkeypatch: pytest.MonkeyPatch) -> Path:  # fmt: skip
    log = tmp_path_factory.mktemp("log") / "calls.jsonl"
    monkeypatch.chdir(checkout)
    monkeypatch.setenv(runner.NOX_ENV, f"{sys.executable} {FIXTURES / 'fake_nox.py'}")
    monkeypatch.setenv("FAKE_NOX_LOG", str(log))
    monkeypatch.setenv("FAKE_NOX_REPORT", "all_pass.json")
    monkeypatch.delenv("FAKE_NOX_EXIT", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    return log


def _runs(log: Path) -> int:
    calls = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    return sum("--sessions" in call for call in calls)


def test_a_second_run_reuses_the_pass_and_says_so(fake: Path, checkout: Path) -> None:
    cli = CliRunner()
    first = cli.invoke(app, ["validate", "lint"])
    assert first.exit_code == 0, first.stderr
    assert _runs(fake) == 1
    second = cli.invoke(app, ["validate", "lint", "--json"])
    assert second.exit_code == 0
    assert _runs(fake) == 1  # nox did not run
    session = json.loads(second.stdout)["steps"][0]["sessions"][0]
    assert (session["status"], session["cached"]) == ("passed", True)
    table = cli.invoke(app, ["validate", "lint"])
    assert "✅ passed (cached, run at " in table.stdout
    assert cli.invoke(app, ["validate", "lint", "--no-cache"]).exit_code == 0
    assert _runs(fake) == 2
    assert cli.invoke(app, ["validate", "lint"], env={"CI": "true"}).exit_code == 0
    assert _runs(fake) == 3
    (checkout / "src" / "pkg" / "a.py").write_text("A = 3\n", encoding="utf-8")
    assert cli.invoke(app, ["validate", "lint"]).exit_code == 0
    assert _runs(fake) == 4


def test_a_failure_is_never_cached(fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli = CliRunner()
    monkeypatch.setenv("FAKE_NOX_REPORT", "one_failed.json")
    failed = json.loads((FIXTURES / "one_failed.json").read_text(encoding="utf-8"))
    name = next(s["name"] for s in failed["sessions"] if s["result"] == "failed")
    assert cli.invoke(app, ["validate", name]).exit_code == 1
    assert cli.invoke(app, ["validate", name]).exit_code == 1
    assert _runs(fake) == 2


def test_validate_finds_the_ci_venv_that_ci_local_sh_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(runner.NOX_ENV, raising=False)
    monkeypatch.delenv("KVRECEIPTS_CI_VENV", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    nox = tmp_path / ".venv-ci" / "bin" / "nox"
    nox.parent.mkdir(parents=True)
    nox.touch()
    assert runner.find_nox(tmp_path) == [str(nox)]


def test_validate_bootstraps_the_ci_venv_with_ci_local_sh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(runner.NOX_ENV, raising=False)
    monkeypatch.delenv("KVRECEIPTS_CI_VENV", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    # A stand-in for ci-local.sh: --bootstrap makes .venv-ci/bin/nox.
    (tmp_path / "ci-local.sh").write_text(
        '[ "$1" = --bootstrap ] && mkdir -p .venv-ci/bin && touch .venv-ci/bin/nox\n',
        encoding="utf-8",
    )
    assert runner.find_nox(tmp_path, bootstrap=True) == [str(tmp_path / ".venv-ci/bin/nox")]


def test_validate_has_the_defaults_of_ci_local_sh(
    fake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    line = CliRunner().invoke(app, ["validate", "--dry-run"]).stdout
    assert "--reuse-venv yes" in line
    assert "--parallel 4 --allow-parallel" in line  # the CPUs, at most 4
    fresh = CliRunner().invoke(app, ["validate", "--dry-run", "--fresh", "-j", "1"]).stdout
    assert "--reuse-venv" not in fresh
    assert "--parallel" not in fresh
