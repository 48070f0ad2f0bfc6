"""Finding the checkout and nox, building the nox command line, running it, and reading back
its report.

nox runs with ``--report`` into a temporary file and ``--download-python never`` (an offline
machine must report a missing interpreter, not spend seconds failing to download one). Its own
output goes to stderr, so that stdout stays free for the table or the JSON report.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kvreceipts.errors import UsageError
from kvreceipts.validation.report import (
    NoxSession,
    Status,
    ValidationReport,
    build_report,
    read_nox_report,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from kvreceipts.validation.cache import ResultCache
    from kvreceipts.validation.steps import Selection

__all__ = [
    "NOX_ENV",
    "NoxOptions",
    "ci_venv",
    "defined_sessions",
    "find_checkout",
    "find_nox",
    "nox_command",
    "run_validation",
    "schedule",
]

NOX_ENV = "KVRECEIPTS_NOX"
"""Overrides the nox command (split like a shell would), e.g. ``python -m nox``."""

NOX_HINT = (
    "nox is not installed: run ./ci-local.sh from the checkout (it bootstraps nox and uv into "
    ".venv-ci/ by itself), or install the ci dependency group into this environment "
    "(uv pip install --group ci, or pip install --group ci with pip >= 25.1)"
)

DURATIONS = Path(".nox") / "kvreceipts-durations.json"
"""Each session's last duration, kept in the checkout's nox folder, to schedule long ones first."""

# Selects every session, the non-default ones too (``bench``), which a plain --list omits.
_EVERY_SESSION = ["-k", "not kvreceipts_no_such_session"]


@dataclass(frozen=True, slots=True)
class NoxOptions:
    """How to run nox."""

    reuse: bool = False
    """Reuse the session venvs (``--reuse-venv yes``); installs still run, as no-ops."""
    jobs: int = 1
    """Sessions run at once (``--parallel N --allow-parallel`` above 1)."""
    extra: tuple[str, ...] = ()
    """More nox arguments, given last (``--`` and posargs work)."""


def find_checkout(start: Path | None = None) -> Path:
    """The nearest folder, from ``start`` (the cwd) upwards, holding a ``noxfile.py``.

    Raises:
        UsageError: there is none, so this is not a source checkout.
    """
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "noxfile.py").is_file():
            return folder
    raise UsageError(
        f"not in a kvreceipts source checkout: no noxfile.py in {here} or above it; "
        "validate runs the checkout's nox sessions, so cd into a clone of the repository"
    )


def find_nox(root: Path | None = None, *, bootstrap: bool = False) -> list[str]:
    """The nox command: ``$KVRECEIPTS_NOX``, the nox of this environment, the one in the
    checkout's ``.venv-ci/`` (``$KVRECEIPTS_CI_VENV``; what ``./ci-local.sh`` bootstraps), the
    one on PATH. With ``bootstrap`` and none found, ``./ci-local.sh --bootstrap`` creates
    ``.venv-ci/`` first, exactly as ``./ci-local.sh`` would.

    Raises:
        UsageError: nox is not installed; the message says how to get it.
    """
    override = os.environ.get(NOX_ENV, "").strip()
    if override:
        return shlex.split(override)
    executable = "nox.exe" if os.name == "nt" else "nox"
    beside = Path(sys.executable).parent / executable
    if beside.is_file():
        return [str(beside)]
    ci_nox = ci_venv(root) / "bin" / executable if root is not None else None
    if ci_nox is not None and ci_nox.is_file():
        return [str(ci_nox)]
    on_path = shutil.which("nox")
    if on_path:
        return [on_path]
    if importlib.util.find_spec("nox") is not None:
        return [sys.executable, "-m", "nox"]
    script = root / "ci-local.sh" if root is not None else None
    if bootstrap and ci_nox is not None and script is not None and script.is_file():
        _bootstrap(script)
        if ci_nox.is_file():
            return [str(ci_nox)]
    raise UsageError(NOX_HINT)


def ci_venv(root: Path) -> Path:
    """The checkout's CI virtualenv, as ``./ci-local.sh`` names it."""
    return Path(os.environ.get("KVRECEIPTS_CI_VENV") or root / ".venv-ci")


def _bootstrap(script: Path) -> None:
    """``./ci-local.sh --bootstrap``: nox, uv and the checkout into ``.venv-ci/``."""
    sys.stderr.write(
        f"validate: nox is not installed here; bootstrapping {ci_venv(script.parent)} "
        "as ./ci-local.sh does (once)\n"
    )
    code = _run(["bash", str(script), "--bootstrap"], script.parent)
    if code != 0:
        raise UsageError(f"bootstrapping nox failed ({script} --bootstrap exited "
                         f"{code}); {NOX_HINT}")  # fmt: skip


def nox_command(
    nox: Sequence[str], root: Path, sessions: Sequence[str], report: Path, options: NoxOptions
) -> list[str]:
    """The nox command line that runs ``sessions`` in this order and writes ``report``."""
    command = [*nox, "--noxfile", str(root / "noxfile.py"), "--report", str(report)]
    command += ["--download-python", "never"]
    if options.reuse:
        command += ["--reuse-venv", "yes"]
    if options.jobs > 1:
        command += ["--parallel", str(options.jobs), "--allow-parallel"]
    # The extra arguments come last: a "--" among them starts the sessions' posargs.
    return [*command, "--sessions", *sessions, *options.extra]


def defined_sessions(nox: Sequence[str], root: Path) -> set[str] | None:
    """Every session name the noxfile defines (``None`` if nox could not list them)."""
    command = [*nox, "--noxfile", str(root / "noxfile.py"), "--list", "--json", *_EVERY_SESSION]
    try:
        listing = subprocess.run(  # noqa: S603 - our own nox command line
            command, cwd=root, capture_output=True, text=True, check=False
        )
        entries = json.loads(listing.stdout) if listing.returncode == 0 else None
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(entries, list):
        return None
    names: set[str] = set()
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("session"), str):
            names.add(entry["session"])
            if isinstance(entry.get("python"), str):
                names.add(f"{entry['session']}-{entry['python']}")
    return names


def _load_durations(root: Path) -> dict[str, float]:
    try:
        data = json.loads((root / DURATIONS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float))}


def _save_durations(root: Path, sessions: Sequence[NoxSession]) -> None:
    durations = _load_durations(root)
    for session in sessions:
        if session.status in (Status.passed, Status.failed) and session.duration_s > 0:
            durations.update(dict.fromkeys(session.names, round(session.duration_s, 2)))
    try:
        (root / DURATIONS).parent.mkdir(exist_ok=True)
        (root / DURATIONS).write_text(json.dumps(durations, sort_keys=True), encoding="utf-8")
    except OSError:
        pass  # only a scheduling hint


def schedule(sessions: Sequence[str], options: NoxOptions, root: Path) -> list[str]:
    """The order to hand the sessions to nox: as given when they run one at a time; longest
    first (by their last run, unknown ones first) when they run in parallel, so that a long
    session does not start last. The results are shown in step order either way.
    """
    if options.jobs <= 1:
        return list(sessions)
    durations = _load_durations(root)
    return sorted(sessions, key=lambda name: -durations.get(name, float("inf")))


def _run(command: Sequence[str], root: Path) -> int:
    """Run nox (or the bootstrap) with both its streams on our stderr (live), keeping stdout
    for the results.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        target: int | None = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a captured stderr (tests) has no descriptor
        target = None
    try:
        if target is not None:
            return subprocess.run(  # noqa: S603 - our own nox command line
                command, cwd=root, stdout=target, stderr=target, check=False
            ).returncode
        done = subprocess.run(  # noqa: S603
            command, cwd=root, capture_output=True, text=True, check=False
        )
    except OSError as exc:
        raise UsageError(f"could not run {shlex.join(command)}: {exc}") from None
    sys.stderr.write(done.stdout + done.stderr)
    return done.returncode


def _python_of(session: str) -> str | None:
    from kvreceipts.validation.steps import STEPS

    return next((step.python for step in STEPS if session in step.sessions), None)


def run_validation(
    selections: Sequence[Selection],
    options: NoxOptions,
    *,
    root: Path | None = None,
    nox: Sequence[str] | None = None,
    announce: Callable[[str], None] | None = None,
    use_cache: bool = False,
) -> ValidationReport:
    """Run the selected steps' sessions under nox and read the verdict from its report.

    ``announce`` receives the nox command line before it runs. With ``use_cache`` a session
    whose inputs have not changed since it last passed is not run again (see
    :mod:`kvreceipts.validation.cache`); it shows as passed and cached.

    Raises:
        UsageError: not in a checkout, or nox is not installed.
    """
    from kvreceipts.validation.cache import ResultCache

    root = root if root is not None else find_checkout()
    wanted = [session for selection in selections for session in selection.sessions]
    started = time.perf_counter()
    cache = ResultCache(root) if use_cache else None
    cached: dict[str, NoxSession] = {}
    if cache is not None:
        for session in dict.fromkeys(wanted):
            hit = cache.lookup(session, cache.key(session, _python_of(session), options.extra))
            if hit is not None:
                cached[session] = NoxSession(
                    (session,), Status.passed, None, hit.duration_s, hit.run_at
                )
    pending = [s for s in wanted if s not in cached]
    undefined: list[str] = []
    to_run: list[str] = []
    command: list[str] = []
    code: int | None = None
    sessions: list[NoxSession] | None = []
    if pending:
        nox = list(nox) if nox is not None else find_nox(root, bootstrap=True)
        defined = defined_sessions(nox, root)
        undefined = [s for s in pending if defined is not None and s not in defined]
        to_run = schedule([s for s in pending if s not in undefined], options, root)
    if to_run:
        assert nox is not None
        with tempfile.TemporaryDirectory(prefix="kvreceipts-validate-") as tmp:
            report_path = Path(tmp) / "nox-report.json"
            command = nox_command(nox, root, to_run, report_path, options)
            if announce is not None:
                announce(shlex.join(command))
            code = _run(command, root)
            sessions = read_nox_report(report_path) if report_path.exists() else None
        if sessions:
            _save_durations(root, sessions)
            if cache is not None:
                _record(cache, to_run, sessions, options)
    return build_report(
        selections,
        None if sessions is None else [*sessions, *cached.values()],
        missing_reason=f"nox exited {code} without writing a report (see its output above)",
        undefined=undefined,
        duration_s=time.perf_counter() - started,
        nox_exit_code=code,
        command=command,
    )


def _record(
    cache: ResultCache, ran: Sequence[str], sessions: Sequence[NoxSession], options: NoxOptions
) -> None:
    """Store the passes of this run (keyed with their venvs as they are now), drop failures."""
    found = {name: entry for entry in sessions for name in entry.names}
    outcomes = []
    for session in ran:
        entry = found.get(session)
        if entry is None:
            continue
        passed = entry.status is Status.passed
        key = cache.key(session, _python_of(session), options.extra) if passed else ""
        outcomes.append((session, key, passed, entry.duration_s))
    cache.record(outcomes)
