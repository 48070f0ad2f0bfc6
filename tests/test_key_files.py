"""An HMAC key file its group or others can read still works, with a warning on stderr that
says how to fix it; a private one (mode 0600, as the README makes it) gets none.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvreceipts.chain import read_hmac_key
from kvreceipts.cli import app

ROOT = Path(__file__).resolve().parent.parent


def key_file(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / "key.bin"
    path.write_text("00" * 32 + "\n", encoding="utf-8")
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    ("mode", "who"),
    [(0o644, "its group and everyone"), (0o640, "its group"), (0o604, "everyone")],
)
def test_a_readable_key_file_is_used_with_a_warning(tmp_path: Path, mode: int, who: str) -> None:
    path = key_file(tmp_path, mode)
    said: list[str] = []
    assert read_hmac_key(path, warn=said.append) == b"00" * 32
    expected = (f"{path}: the HMAC key file can be read by {who} (mode {mode:04o}); anyone "
                f"who can read it can forge receipts: chmod 600 {path}")  # fmt: skip
    assert said == [expected]


def test_a_private_key_file_gets_no_warning(tmp_path: Path) -> None:
    said: list[str] = []
    read_hmac_key(key_file(tmp_path, 0o600), warn=said.append)
    read_hmac_key(key_file(tmp_path, 0o644))  # no warn given: the library stays quiet
    assert said == []


@pytest.mark.needs("receipts")
def test_simulate_and_verify_warn_on_stderr(tmp_path: Path) -> None:
    path = key_file(tmp_path, 0o644)
    out = tmp_path / "signed.jsonl"
    made = CliRunner().invoke(app, ["simulate", "--requests", "50", "-q", "-f", "json", "-o",
                                    str(out), "--hmac-key-file", str(path)])  # fmt: skip
    assert made.exit_code == 0
    assert made.stderr.startswith(f"warning: {path}: the HMAC key file can be read by")
    assert made.stdout.startswith("{")  # data stays on stdout
    checked = CliRunner().invoke(app, ["verify", str(out), "--hmac-key-file", str(path)])
    assert checked.exit_code == 0
    assert "chmod 600" in checked.stderr
    path.chmod(0o600)
    again = CliRunner().invoke(app, ["verify", str(out), "--hmac-key-file", str(path)])
    assert "warning" not in again.stderr


def test_the_readmes_way_makes_a_private_key(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (line,) = [x for x in readme.splitlines() if "secrets.token_hex(32)" in x]
    subprocess.run(["bash", "-c", line.replace("python ", f"{sys.executable} ")], cwd=tmp_path,
                   check=True)  # fmt: skip
    key = tmp_path / "key.bin"
    assert key.stat().st_mode & 0o777 == 0o600
    assert len(bytes.fromhex(key.read_text(encoding="utf-8").strip())) == 32


def test_the_bench_names_what_is_missing_in_one_line() -> None:
    probe = ("import runpy, sys\nsys.modules['libcachesim'] = None  # as if not installed\n"
             f"sys.argv = ['bench.py']\nrunpy.run_path({str(ROOT / 'scripts' / 'bench.py')!r}, "
             "run_name='__main__')\n")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("error: scripts/bench.py needs libcachesim, not installed here;")
    assert "pip install --group test -e ." in done.stderr
    assert ".venv-ci/bin/nox -s bench" in done.stderr
    assert done.stderr.count("\n") == 1
