"""What ``verify`` found: violations, declared losses, runs, and the verdict's facts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AUTHENTICATION",
    "MAX_KEPT_RUNS",
    "MAX_KEPT_VIOLATIONS",
    "DeclaredLoss",
    "MatchedAnchor",
    "RunOutcome",
    "VerifyReport",
    "Violation",
]

MAX_KEPT_VIOLATIONS = 1000
"""Violations kept in the report; the rest are only counted."""
MAX_KEPT_RUNS = 1000
"""Runs listed in the report; the rest are only counted (hostile files hold millions)."""
AUTHENTICATION = ("failed", "hmac", "signed", "none")
"""What a verdict can say was established about who sealed the records (see
:attr:`VerifyReport.authentication`)."""


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
class MatchedAnchor:
    """An ``--expect-last-digest`` the file met: its run ended exactly there."""

    run_id: str
    seq: int
    """Seq of the record whose digest is the anchor (the run's close record)."""
    digest: str


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
    last_seq: int = 0
    """Seq of the record :attr:`last_digest` belongs to."""


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
    truncated_tail_lines: int = 0
    """Lines that are a torn tail (not records, so not checked under the key)."""
    hmac: bool = False
    """A key was given."""
    key_id: str | None = None
    """The given key's id."""
    unauthenticated: int = 0
    """Records sealed with plain SHA-256: anyone could have re-chained them."""
    unchecked: int = 0
    """HMAC records whose digest could not be checked (no key given)."""
    hmac_verified: int = 0
    """Records whose HMAC under the given key was checked and matched."""
    auth_failures: int = 0
    """Records that failed a check made under the given key (a digest that does not match,
    another key, plain SHA-256 where HMAC was required)."""
    signed: bool = False
    """Set by the checkpoint checks (``--vkey``) when every checkpoint's Ed25519 signature
    verified and the signed roots are the file's: :attr:`authentication` is then
    ``signed``."""
    anchors_matched: list[MatchedAnchor] = field(default_factory=list)
    incomplete_runs: int = 0
    digest_failures: int = 0
    checkpoints: int = 0
    """Signed checkpoints the file holds (checkpoint and close records)."""
    signature_failures: int = 0
    """Checkpoint or close records that failed a check under the verifier key (no note, a
    note another key signed, a signed tree that is not the file's)."""
    vkey: bool = False
    """A verifier key was given: every signed checkpoint was opened with it."""
    last_digest: str | None = None
    """Digest of the last record of the last run (its close record when complete)."""
    untracked_evictions: int = 0
    """Evictions whose block hash was past the re-eviction table's bound (not checked for a
    repeat)."""
    unsummed_batches: int = 0
    """Batches whose round was longer than the verifier remembers (their byte total was not
    recomputed)."""
    stopped_at: int | None = None
    """The line at which reading stopped (a line longer than the reader's limit)."""
    hidden_bytes: str | None = None
    """What a compressed file holds after its last frame that is no frame of its format."""

    @property
    def ok(self) -> bool:
        """No violations."""
        return self.violation_count == 0

    @property
    def authentication(self) -> str:
        """What was established about who sealed the records (one of :data:`AUTHENTICATION`).

        - ``failed``: a key was given and some record failed a check made under it, or some
          line could not be checked under it at all;
        - ``hmac``: a key was given and every line is a record whose HMAC under it matched;
        - ``signed``: the checkpoint signatures verified (:attr:`signed`, set by the
          checkpoint checks), and no check under a key failed;
        - ``none``: nothing (plain SHA-256, which anyone can recompute, or HMAC-sealed
          records and no key).
        """
        if self.vkey and self.signatures == "failed":
            return "failed"
        if self.hmac:
            whole = self.lines - self.truncated_tail_lines
            if self.auth_failures or not self.hmac_verified or self.hmac_verified < whole:
                return "failed"
            return "signed" if self.signed else "hmac"
        return "signed" if self.signed else "none"

    @property
    def signatures(self) -> str:
        """``verified`` (every signed checkpoint opened with the verifier key), ``unchecked``
        (signed checkpoints, no key given) or ``none`` (no signed checkpoint).
        """
        if self.vkey:
            return "failed" if self.signature_failures or not self.checkpoints else "verified"
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
                 "last_digest": r.last_digest, "last_seq": r.last_seq}
                for r in self.runs
            ],
            "key_id": self.key_id,
            "anchors_matched": [
                {"run_id": a.run_id, "seq": a.seq, "digest": a.digest}
                for a in self.anchors_matched
            ],
            "untracked_evictions": self.untracked_evictions,
            "unsummed_batches": self.unsummed_batches,
            "stopped_at": self.stopped_at,
            "hidden_bytes": self.hidden_bytes,
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
