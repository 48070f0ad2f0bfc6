"""The result cache of ``kvreceipts validate``: a session that passed is not run again while
none of its inputs changed (as Bazel or Pants do for a test target).

A session's key is a SHA-256 over everything its outcome depends on:

* the content of every file git tracks or would track (``git ls-files -co
  --exclude-standard``) that the session reads, chosen by :data:`SESSION_INPUTS`;
* its name and parameters, and the extra nox arguments (posargs reach pytest);
* its virtualenv: the interpreter (``pyvenv.cfg``, and the real interpreter binary's path,
  size and modification time) and the resolved dependencies (every ``*.dist-info`` in
  site-packages, which names each distribution and its version);
* the environment that steers it: ``KVRECEIPTS_*`` (the feature set among them),
  ``HYPOTHESIS_*``, ``PYTHON*``, ``NOX_*``, ``UV_*``, ``PYENV_VERSION``;
* for the test sessions, the real traces they replay (name, size, modification time).

Only passes are stored, in ``.nox/kvreceipts-results.json``; a failure removes the entry.
``--no-cache`` and ``CI=true`` bypass the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "RESULTS",
    "SESSION_INPUTS",
    "CachedPass",
    "ResultCache",
    "cache_disabled_by_env",
    "inputs_of",
]

RESULTS = Path(".nox") / "kvreceipts-results.json"
VERSION = 1

_EVERYWHERE = ("noxfile.py", "pyproject.toml", ".python-version", "uv.lock")
"""Read by every session: nox reads the noxfile (and through it pyproject.toml and the pyenv
versions); each session installs from pyproject.toml."""

_PYTHON = ("*.py", "*.pyi", "ruff.toml", ".ruff.toml", "setup.cfg", "mypy.ini")
_TESTS = (
    "src/", "tests/", "scripts/", "ci-local.sh",
    # tests/test_docs.py checks that these generated pages are current.
    "docs/cli.md", "docs/receipts.md", "mkdocs.yml",
)  # fmt: skip

SESSION_INPUTS: dict[str, tuple[str, ...]] = {
    # ruff and mypy read every Python file of the checkout and their configs.
    "lint": _PYTHON,
    "format": _PYTHON,
    # mkdocs reads docs/ and mkdocs.yml; mkdocstrings reads the package's source.
    "docs": ("docs/", "mkdocs.yml", "src/"),
}
"""What each session reads, beyond :data:`_EVERYWHERE`: a folder (``src/``), a file, or a
name pattern matched anywhere (``*.py``). Every other session runs tests (or the benchmarks)
and reads :data:`_TESTS`; a session the table does not know reads every file."""

_TEST_SESSIONS = ("baseline", "msrv", "features(", "happy", "guard", "tests", "crosscheck",
                  "bench")  # fmt: skip
_ENV_PREFIXES = ("KVRECEIPTS_", "HYPOTHESIS_", "PYTHON", "NOX_", "UV_")
_ENV_NAMES = ("PYENV_VERSION",)


def cache_disabled_by_env(environ: Mapping[str, str] | None = None) -> bool:
    """``CI=true`` (any true value) turns the cache off: CI runs everything."""
    value = (environ if environ is not None else os.environ).get("CI", "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def inputs_of(session: str) -> tuple[str, ...] | None:
    """The input patterns of a session; ``None``: every file."""
    if session in SESSION_INPUTS:
        return _EVERYWHERE + SESSION_INPUTS[session]
    if session.startswith(_TEST_SESSIONS):
        return _EVERYWHERE + _TESTS
    return None


def _matches(path: str, patterns: Sequence[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    for pattern in patterns:
        if pattern.endswith("/"):
            if path.startswith(pattern):
                return True
        elif pattern.startswith("*"):
            if name.endswith(pattern[1:]):
                return True
        elif path == pattern:
            return True
    return False


def _tracked_files(root: Path) -> list[str]:
    """Every file git tracks or would track (untracked but not ignored), sorted."""
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],  # noqa: S607
            cwd=root, capture_output=True, check=True,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return sorted(
            str(path.relative_to(root))
            for path in root.rglob("*")
            if path.is_file() and not any(part.startswith(".") for part in path.parts)
        )
    return sorted({name.decode() for name in listing.stdout.split(b"\0") if name})


def _venv_dir(root: Path, session: str, python: str | None) -> Path:
    """Where nox keeps the session's virtualenv (nox's own name normalization)."""
    name = f"{session}-{python}" if python else session
    name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    name = re.sub(r"[^\w\s-]", "-", name).strip().lower()
    name = re.sub(r"[-\s]+", "-", name).strip("-")
    return root / ".nox" / name


def _venv_identity(venv: Path) -> dict[str, object]:
    """The interpreter and the resolved dependencies of a session's virtualenv."""
    config = venv / "pyvenv.cfg"
    if not config.is_file():
        return {"venv": None}
    python = venv / "bin" / "python"
    try:
        real = python.resolve(strict=True)
        status = real.stat()
        interpreter: object = [str(real), status.st_size, status.st_mtime_ns]
    except OSError:
        interpreter = None
    packages = sorted(p.name for p in venv.glob("lib/python*/site-packages/*.dist-info"))
    return {
        "pyvenv.cfg": config.read_text(encoding="utf-8", errors="replace"),
        "interpreter": interpreter,
        "packages": packages,
    }


def _traces(root: Path, environ: Mapping[str, str]) -> list[object]:
    """The real traces the test sessions replay (found as tests/conftest.py finds them)."""
    folders = [Path(environ["KVRECEIPTS_TRACES"])] if environ.get("KVRECEIPTS_TRACES") else []
    folders += [folder / "shared" / "traces" for folder in root.parents]
    folder = next((f for f in folders if f.is_dir()), None)
    if folder is None:
        return []
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


@dataclass(frozen=True, slots=True)
class CachedPass:
    """A pass on record: when it ran and how long it took."""

    run_at: str
    duration_s: float


class ResultCache:
    """Keys of the sessions of one checkout, and the passes on record."""

    def __init__(self, root: Path, environ: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.environ = dict(environ if environ is not None else os.environ)
        self._digests: dict[str, str] | None = None
        self._traces: list[object] | None = None
        self._results: dict[str, dict[str, object]] | None = None

    def _files(self) -> dict[str, str]:
        """Each tracked (or trackable) file's SHA-256, read once per run."""
        if self._digests is None:
            digests = {}
            for name in _tracked_files(self.root):
                try:
                    digests[name] = hashlib.sha256((self.root / name).read_bytes()).hexdigest()
                except OSError:  # deleted but still in the index
                    digests[name] = "absent"
            self._digests = digests
        return self._digests

    def key(self, session: str, python: str | None, extra: Sequence[str] = ()) -> str:
        """The session's key now (input files as first read in this run)."""
        patterns = inputs_of(session)
        files = {
            name: digest
            for name, digest in self._files().items()
            if patterns is None or _matches(name, patterns)
        }
        environment = {
            name: value
            for name, value in self.environ.items()
            if name.startswith(_ENV_PREFIXES) or name in _ENV_NAMES
        }
        environment.pop("PYTHONUNBUFFERED", None)  # output buffering changes no outcome
        material: dict[str, object] = {
            "version": VERSION,
            "session": session,
            "python": python,
            "extra": list(extra),
            "files": files,
            "environment": environment,
            "venv": _venv_identity(_venv_dir(self.root, session, python)),
        }
        if patterns is None or "tests/" in patterns:
            if self._traces is None:
                self._traces = _traces(self.root, self.environ)
            material["traces"] = self._traces
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()

    def _load(self) -> dict[str, dict[str, object]]:
        """The passes on record, read once per run."""
        if self._results is None:
            try:
                data = json.loads((self.root / RESULTS).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {}
            self._results = data if isinstance(data, dict) else {}
        return self._results

    def lookup(self, session: str, key: str) -> CachedPass | None:
        """The pass on record for this key, if any."""
        entry = self._load().get(session)
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None
        run_at, duration = entry.get("run_at"), entry.get("duration_s")
        if not isinstance(run_at, str) or not isinstance(duration, (int, float)):
            return None
        return CachedPass(run_at, float(duration))

    def record(self, outcomes: Iterable[tuple[str, str, bool, float]]) -> None:
        """Store passes (session, key, passed, duration); a failure drops the session's entry.
        Keys are given by the caller: computed after the run, with the files as before it.
        """
        data = self._load()
        now = datetime.now(UTC).isoformat(timespec="seconds")
        for session, key, passed, duration in outcomes:
            if passed:
                data[session] = {"key": key, "run_at": now, "duration_s": round(duration, 2)}
            else:
                data.pop(session, None)
        path = self.root / RESULTS
        try:
            path.parent.mkdir(exist_ok=True)
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
            temporary.replace(path)
        except OSError:
            pass  # a cache that cannot be written only costs time
