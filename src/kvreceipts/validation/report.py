"""Reading nox's ``--report`` file into step results and one verdict.

nox itself exits 0 when a session is skipped (a missing interpreter, ``session.skip()``), so
the verdict is taken from the report, session by session: only ``success`` passes. A skipped,
failed or aborted session fails its step, and so does a session that is not in the report at
all (nox stopped early, or the noxfile does not define it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from kvreceipts.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

    from kvreceipts.validation.steps import Selection, Step

__all__ = [
    "SCHEMA",
    "NoxSession",
    "SessionResult",
    "Status",
    "StepResult",
    "ValidationReport",
    "build_report",
    "parse_nox_report",
    "read_nox_report",
]

SCHEMA = "kvreceipts.validate/1"


class Status(StrEnum):
    """What became of a session or a step. Only ``passed`` is green."""

    passed = "passed"
    failed = "failed"
    aborted = "aborted"
    missing = "missing"
    skipped = "skipped"


_NOX_RESULTS = {
    "success": Status.passed,
    "failed": Status.failed,
    "aborted": Status.aborted,
    "skipped": Status.skipped,
}
_SEVERITY = (Status.failed, Status.aborted, Status.missing, Status.skipped, Status.passed)


@dataclass(frozen=True, slots=True)
class NoxSession:
    """One entry of a nox report."""

    names: tuple[str, ...]
    """The session's name and every signature nox gives it (``tests``, ``tests-3.13``)."""
    status: Status
    reason: str | None
    duration_s: float
    cached_at: str | None = None
    """When the pass on record ran, for a session the result cache did not run again."""


def _fail(source: str, message: str) -> InputError:
    return InputError(f"not a nox report: {message}", path=source)


def parse_nox_report(document: Any, *, source: str = "nox report") -> list[NoxSession]:
    """The sessions of a nox ``--report`` document, in the order nox ran them.

    Raises:
        InputError: the document is not shaped like a nox report.
    """
    if not isinstance(document, dict) or not isinstance(document.get("sessions"), list):
        raise _fail(source, 'expected an object with a "sessions" list')
    sessions: list[NoxSession] = []
    for index, entry in enumerate(document["sessions"]):
        where = f"sessions[{index}]"
        if not isinstance(entry, dict):
            raise _fail(source, f"{where} is not an object")
        name, result = entry.get("name"), entry.get("result")
        signatures = entry.get("signatures") or []
        if not isinstance(name, str) or not isinstance(result, str):
            raise _fail(source, f'{where} needs a string "name" and "result"')
        if not isinstance(signatures, list) or not all(isinstance(s, str) for s in signatures):
            raise _fail(source, f"{where}.signatures is not a list of strings")
        reason = entry.get("reason")
        duration = entry.get("duration", 0.0)
        status = _NOX_RESULTS.get(result, Status.failed)
        if result not in _NOX_RESULTS:
            reason = f"unknown nox result {result!r}" + (f": {reason}" if reason else "")
        sessions.append(
            NoxSession(
                # A parametrized session shares its name with its siblings: match signatures.
                names=tuple(signatures) if signatures else (name,),
                status=status,
                reason=str(reason) if reason else None,
                duration_s=float(duration) if isinstance(duration, (int, float)) else 0.0,
            )
        )
    return sessions


def read_nox_report(path: Path) -> list[NoxSession]:
    """Read and parse a nox ``--report`` file.

    Raises:
        InputError: the file is missing, not JSON, or not a nox report.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("nox report not found", path=str(path)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"unreadable nox report: {exc}", path=str(path)) from None
    return parse_nox_report(document, source=str(path))


@dataclass(frozen=True, slots=True)
class SessionResult:
    """One session of a step, as it ended."""

    name: str
    status: Status
    reason: str | None
    duration_s: float
    cached_at: str | None = None
    """When the pass on record ran (UTC, ISO 8601), if the result cache did not run it again;
    ``duration_s`` is then that run's."""

    @property
    def ok(self) -> bool:
        """Whether the session passed."""
        return self.status is Status.passed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {
            "name": self.name,
            "status": str(self.status),
            "reason": self.reason,
            "duration_s": round(self.duration_s, 3),
            "cached": self.cached_at is not None,
            "run_at": self.cached_at,
        }


@dataclass(frozen=True, slots=True)
class StepResult:
    """One step: it passed only if every session of it passed."""

    step: Step
    required: bool
    sessions: tuple[SessionResult, ...]

    @property
    def status(self) -> Status:
        """The worst status of its sessions (failed, aborted, missing, skipped, passed)."""
        statuses = {session.status for session in self.sessions}
        return next((s for s in _SEVERITY if s in statuses), Status.missing)

    @property
    def ok(self) -> bool:
        """Whether the step passed."""
        return self.status is Status.passed

    @property
    def reason(self) -> str | None:
        """Why the step did not pass, from its sessions' reasons."""
        bad = [s for s in self.sessions if not s.ok]
        if not bad:
            return None
        if len(self.sessions) == 1:
            return bad[0].reason
        return "; ".join(
            f"{s.name} {s.status}" + (f": {s.reason}" if s.reason else "") for s in bad
        )

    @property
    def duration_s(self) -> float:
        """Time its sessions took, together."""
        return sum(session.duration_s for session in self.sessions)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {
            "number": self.step.number,
            "name": self.step.name,
            "title": self.step.title,
            "required": self.required,
            "status": str(self.status),
            "ok": self.ok,
            "reason": self.reason,
            "duration_s": round(self.duration_s, 3),
            "sessions": [session.to_dict() for session in self.sessions],
        }


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """Every selected step and the verdict: green only when every required step passed."""

    steps: tuple[StepResult, ...]
    duration_s: float = 0.0
    """Wall-clock time of the whole run."""
    nox_exit_code: int | None = None
    command: tuple[str, ...] = ()

    @property
    def failures(self) -> list[StepResult]:
        """Required steps that did not pass."""
        return [step for step in self.steps if step.required and not step.ok]

    @property
    def advisory_failures(self) -> list[StepResult]:
        """Steps that did not pass but do not count against the verdict."""
        return [step for step in self.steps if not step.required and not step.ok]

    @property
    def ok(self) -> bool:
        """Whether every required step passed (and at least one step ran)."""
        return bool(self.steps) and not self.failures

    @property
    def verdict(self) -> str:
        """The verdict in one line."""
        required = sum(1 for step in self.steps if step.required)
        took = f" in {self.duration_s:.1f} s" if self.duration_s else ""
        if not self.steps:
            return "❌ failed: no steps were selected"
        if self.ok:
            advisory = self.advisory_failures
            note = f" ({len(advisory)} advisory step(s) did not pass)" if advisory else ""
            return f"✅ passed: all {required} required step(s) passed{took}{note}"
        listed = ", ".join(
            f"{step.step.number} {step.step.name} ({step.status}"
            + (f": {step.reason}" if step.reason and len(step.sessions) == 1 else "")
            + ")"
            for step in self.failures
        )
        return (
            f"❌ failed: {len(self.failures)} of {required} required step(s) did not pass"
            f"{took}: {listed}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The machine-readable report (``kvreceipts validate --json``)."""
        return {
            "schema": SCHEMA,
            "verdict": "passed" if self.ok else "failed",
            "ok": self.ok,
            "summary": self.verdict,
            "duration_s": round(self.duration_s, 3),
            "nox_exit_code": self.nox_exit_code,
            "command": list(self.command),
            "steps": [step.to_dict() for step in self.steps],
        }


def build_report(
    selections: Sequence[Selection],
    nox_sessions: Iterable[NoxSession] | None,
    *,
    missing_reason: str = "not in the nox report",
    undefined: Iterable[str] = (),
    duration_s: float = 0.0,
    nox_exit_code: int | None = None,
    command: Sequence[str] = (),
) -> ValidationReport:
    """Match the selected steps' sessions with what nox reported.

    ``nox_sessions`` is ``None`` when nox wrote no report; every session is then missing, with
    ``missing_reason``. Sessions in ``undefined`` are missing because the noxfile lacks them.
    """
    found: dict[str, NoxSession] = {}
    for entry in nox_sessions or ():
        for name in entry.names:
            found[name] = entry
    absent = set(undefined)
    steps: list[StepResult] = []
    for selection in selections:
        results: list[SessionResult] = []
        for name in selection.sessions:
            ran = found.get(name)
            if ran is not None:
                results.append(
                    SessionResult(name, ran.status, ran.reason, ran.duration_s, ran.cached_at)
                )
                continue
            if name in absent:
                reason = "noxfile.py defines no such session"
            elif nox_sessions is None:
                reason = missing_reason
            else:
                reason = "not in the nox report (nox stopped before running it?)"
            results.append(SessionResult(name, Status.missing, reason, 0.0))
        steps.append(StepResult(selection.step, selection.required, tuple(results)))
    return ValidationReport(
        steps=tuple(steps),
        duration_s=duration_s,
        nox_exit_code=nox_exit_code,
        command=tuple(command),
    )
