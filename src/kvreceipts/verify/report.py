"""What ``verify`` found: violations, declared losses, runs, and the verdict's facts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MAX_KEPT_RUNS",
    "MAX_KEPT_VIOLATIONS",
    "DeclaredLoss",
    "RunOutcome",
    "VerifyReport",
    "Violation",
]

MAX_KEPT_VIOLATIONS = 1000
"""Violations kept in the report; the rest are only counted."""
MAX_KEPT_RUNS = 1000
"""Runs listed in the report; the rest are only counted (hostile files hold millions)."""


@dataclass(slots=True)
class Violation:
    """One thing wrong, at one line."""

    line: int
    check: str
    """Short name of the check that failed: json, canonical, schema, seq, chain, digest, ..."""
    message: str
    seq: int | None = None
    run_id: str | None = None


@dataclass(slots=True)
class DeclaredLoss:
    """Seqs a sink dropped and said so with a sealed ``loss`` record."""

    run_id: str
    first_seq: int
    last_seq: int
    sink: str
    line: int

    @property
    def count(self) -> int:
        """How many records are missing."""
        return self.last_seq - self.first_seq + 1


@dataclass(slots=True)
class RunOutcome:
    """One run as the file holds it."""

    run_id: str
    records: int
    alg: str
    complete: bool
    """Whether the run ends with its close record."""
    last_digest: str
    """The close record's digest (the anchor to compare), or the last record's."""


@dataclass(slots=True)
class VerifyReport:
    """The outcome of verifying one stream."""

    path: str
    format: str = ""
    """The schema the file is written in (``kvreceipts.eviction/2`` or the old ``/1``)."""
    lines: int = 0
    records: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    runs: list[RunOutcome] = field(default_factory=list)
    run_count: int = 0
    violations: list[Violation] = field(default_factory=list)
    violation_count: int = 0
    losses: list[DeclaredLoss] = field(default_factory=list)
    lost_records: int = 0
    truncated_tail: bool = False
    hmac: bool = False
    """A key was given."""
    unauthenticated: int = 0
    """Records sealed with plain SHA-256: anyone could have re-chained them."""
    unchecked: int = 0
    """HMAC records whose digest could not be checked (no key given)."""
    incomplete_runs: int = 0
    digest_failures: int = 0
    checkpoints: int = 0
    """Signed checkpoints the file holds (checkpoint and close records)."""
    vkey: bool = False
    """A verifier key was given: every signed checkpoint was opened with it."""
    last_digest: str | None = None
    """Digest of the last record of the last run (its close record when complete)."""

    @property
    def ok(self) -> bool:
        """No violations."""
        return self.violation_count == 0

    @property
    def authentication(self) -> str:
        """``authenticated`` (every record HMAC-checked with the key), ``unauthenticated``
        (plain SHA-256 somewhere: anyone can re-chain it) or ``unchecked`` (HMAC-sealed, no key).
        """
        if self.unauthenticated:
            return "unauthenticated"
        if self.unchecked:
            return "unchecked"
        return "authenticated" if self.records else "unauthenticated"

    @property
    def signatures(self) -> str:
        """``verified`` (every signed checkpoint opened with the verifier key), ``unchecked``
        (signed checkpoints, no key given) or ``none`` (no signed checkpoint).
        """
        if self.vkey and (self.checkpoints or not self.ok):
            return "verified" if self.ok else "failed"
        return "unchecked" if self.checkpoints else "none"

    def add(self, violation: Violation) -> None:
        """Record a violation (keeping the first :data:`MAX_KEPT_VIOLATIONS`)."""
        self.violation_count += 1
        if len(self.violations) < MAX_KEPT_VIOLATIONS:
            self.violations.append(violation)

    def add_run(self, outcome: RunOutcome) -> None:
        """Count a finished run (keeping the first :data:`MAX_KEPT_RUNS`)."""
        self.run_count += 1
        if len(self.runs) < MAX_KEPT_RUNS:
            self.runs.append(outcome)

    def add_loss(self, loss: DeclaredLoss) -> None:
        """Count a declared loss (keeping the first :data:`MAX_KEPT_VIOLATIONS`)."""
        self.lost_records += loss.count
        if len(self.losses) < MAX_KEPT_VIOLATIONS:
            self.losses.append(loss)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for ``--format json``."""
        return {
            "path": self.path,
            "ok": self.ok,
            "format": self.format,
            "authentication": self.authentication,
            "signatures": self.signatures,
            "checkpoints": self.checkpoints,
            "records": self.records,
            "kinds": self.kinds,
            "run_count": self.run_count,
            "runs": [
                {"run_id": r.run_id, "records": r.records, "alg": r.alg, "complete": r.complete,
                 "last_digest": r.last_digest}
                for r in self.runs
            ],
            "incomplete_runs": self.incomplete_runs,
            "hmac": self.hmac,
            "truncated_tail": self.truncated_tail,
            "last_digest": self.last_digest,
            "violation_count": self.violation_count,
            "violations": [
                {"line": v.line, "check": v.check, "seq": v.seq, "run_id": v.run_id,
                 "message": v.message}
                for v in self.violations
            ],
            "lost_records": self.lost_records,
            "declared_losses": [
                {"run_id": g.run_id, "first_seq": g.first_seq, "last_seq": g.last_seq,
                 "count": g.count, "sink": g.sink, "line": g.line}
                for g in self.losses
            ],
        }  # fmt: skip
