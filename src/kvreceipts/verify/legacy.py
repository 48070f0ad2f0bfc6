"""Checking a file in the old ``kvreceipts.eviction/1`` format: shape, sequence, hash chain
(``prev_digest`` in every line), HMAC, byte conservation, time. The format has no run framing,
so a cut end shows only against an anchor.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from kvreceipts.chain import canonical
from kvreceipts.schema import ZERO_DIGEST
from kvreceipts.shape import check_record_v1
from kvreceipts.verify.report import MAX_KEPT_VIOLATIONS, DeclaredLoss, RunOutcome, Violation

if TYPE_CHECKING:
    from collections.abc import Iterable

    from kvreceipts.verify import VerifyOptions
    from kvreceipts.verify.report import VerifyReport

__all__ = ["verify_v1"]


@dataclass(slots=True)
class Gap:
    """Seqs missing from a run, explained by a ``loss`` record or not."""

    run_id: str
    first_seq: int
    last_seq: int
    line: int
    """Line of the first record after the gap."""
    digest_before: str
    prev_digest_after: str
    declared_by: str | None = None
    """The sink whose loss record explains the gap."""

    @property
    def count(self) -> int:
        """How many records are missing."""
        return self.last_seq - self.first_seq + 1


@dataclass(slots=True)
class _Run:
    """What the verifier remembers of one run between lines."""

    next_seq: int = 0
    last_digest: str = ZERO_DIGEST
    last_timestamp: str = ""
    last_evictions: int | None = None
    last_hits: int = 0
    last_misses: int = 0
    records: int = 0
    evicted_at_misses: dict[int, int] = field(default_factory=dict)
    losses: dict[tuple[int, int], tuple[str, str, str, int]] = field(default_factory=dict)


@dataclass(slots=True)
class _LegacyReport:
    """What the old checker finds; :func:`verify_v1` hands it on as a :class:`VerifyReport`."""

    path: str
    lines: int = 0
    records: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)
    """Records per run id."""
    violations: list[Violation] = field(default_factory=list)
    violation_count: int = 0
    gaps: list[Gap] = field(default_factory=list)
    truncated_tail: bool = False
    hmac: bool = False
    digest_failures: int = 0
    last_digest: str | None = None
    """Digest of the last record in the chain: compare it with the run's ``last_digest``."""

    @property
    def declared_losses(self) -> list[Gap]:
        """Gaps that a loss record explains (records a sink had to drop)."""
        return [g for g in self.gaps if g.declared_by is not None]

    def add(self, violation: Violation) -> None:
        """Record a violation (keeping the first :data:`MAX_KEPT_VIOLATIONS`)."""
        self.violation_count += 1
        if len(self.violations) < MAX_KEPT_VIOLATIONS:
            self.violations.append(violation)


class _Verifier:
    def __init__(self, report: _LegacyReport, key: bytes | None) -> None:
        self.report = report
        self.key = key
        self.runs: dict[str, _Run] = {}

    def fail(self, line: int, check: str, message: str, record: dict[str, Any] | None) -> None:
        seq = record.get("seq") if record else None
        run_id = record.get("run_id") if record else None
        self.report.add(Violation(line, check, message, seq, run_id))

    def line(self, number: int, raw: bytes, *, last: bool) -> None:
        report = self.report
        report.lines += 1
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            if last and not raw.endswith(b"\n"):
                report.truncated_tail = True
            else:
                self.fail(number, "json", f"not valid JSON: {exc.msg}", None)
            return
        problem = check_record_v1(record)
        if problem:
            self.fail(number, "schema", problem, record if isinstance(record, dict) else None)
            return
        report.records += 1
        kind = record["kind"]
        report.kinds[kind] = report.kinds.get(kind, 0) + 1
        run_id = record["run_id"]
        report.runs[run_id] = report.runs.get(run_id, 0) + 1
        run = self.runs.get(run_id)
        if run is None:
            run = self.runs[run_id] = _Run()
        self.check_digest(number, record, raw)
        if kind == "loss":
            key = (record["first_seq"], record["last_seq"])
            if key in run.losses:
                self.fail(number, "loss", f"repeated loss record for seq {key[0]}..{key[1]}",
                          record)  # fmt: skip
            elif record["seq"] != key[1] or record["count"] != key[1] - key[0] + 1:
                self.fail(number, "loss", f"seq {record['seq']} and count {record['count']} "
                          f"do not fit the lost range {key[0]}..{key[1]}", record)  # fmt: skip
            run.losses[key] = (record["prev_digest"], record["last_lost_digest"],
                               record["sink"], number)  # fmt: skip
            return
        self.check_sequence(number, record, run)
        if record["timestamp"] < run.last_timestamp:
            self.fail(number, "time", f"timestamp {record['timestamp']} is earlier than the "
                      f"previous record's {run.last_timestamp}", record)  # fmt: skip
        run.last_timestamp = max(run.last_timestamp, record["timestamp"])
        if kind == "eviction":
            self.check_eviction(number, record, run)

    def check_digest(self, number: int, record: dict[str, Any], raw: bytes) -> None:
        claimed = record.pop("digest")
        payload = canonical(record)
        record["digest"] = claimed
        if not hmac.compare_digest(claimed, _compute_digest(payload, self.key)):
            self.report.digest_failures += 1
            self.fail(number, "digest", "digest does not match the record's contents"
                      + (" (HMAC)" if self.key else ""), record)  # fmt: skip
        elif raw.rstrip(b"\r\n") != b'%b,"digest":"%b"}' % (payload[:-1], claimed.encode()):
            # The digest covers what a parser reads; the bytes must also be the sealer's own,
            # or a repeated key could show one reader one value and the digest another.
            self.fail(number, "canonical", "the line is not in the canonical form the sealer "
                      "writes (reformatted, or a key appears twice)", record)  # fmt: skip

    def check_sequence(self, number: int, record: dict[str, Any], run: _Run) -> None:
        seq = record["seq"]
        if seq < run.next_seq:
            self.fail(number, "seq", f"seq {seq} comes after seq {run.next_seq - 1}: a "
                      "repeated, reordered or inserted record", record)  # fmt: skip
            return
        if seq > run.next_seq:
            self.report.gaps.append(Gap(
                record["run_id"], run.next_seq, seq - 1, number, run.last_digest,
                record["prev_digest"],
            ))  # fmt: skip
            run.last_evictions = None  # counters may have moved in the gap
        elif record["prev_digest"] != run.last_digest:
            self.fail(number, "chain", "prev_digest does not match the previous record's "
                      "digest", record)  # fmt: skip
        run.next_seq = seq + 1
        run.last_digest = self.report.last_digest = record["digest"]
        run.records += 1

    def check_eviction(self, number: int, record: dict[str, Any], run: _Run) -> None:
        before, after = record["before"], record["after"]
        size = record["block_size_bytes"]
        if after["used_bytes"] != before["used_bytes"] - size:
            self.fail(number, "bytes", f"after.used_bytes {after['used_bytes']} != "
                      f"before.used_bytes {before['used_bytes']} - block_size_bytes {size}",
                      record)  # fmt: skip
        if after["total_sessions"] != before["total_sessions"] - 1:
            self.fail(number, "sessions", "total_sessions must drop by exactly one", record)
        if after["evictions"] != before["evictions"] + 1:
            self.fail(number, "counter", "evictions must rise by exactly one", record)
        if run.last_evictions is not None and before["evictions"] != run.last_evictions:
            self.fail(number, "counter", f"before.evictions {before['evictions']} does not "
                      f"follow the previous eviction's {run.last_evictions}: an eviction "
                      "receipt is missing or repeated", record)  # fmt: skip
        if before["cache_hits"] < run.last_hits or before["cache_misses"] < run.last_misses:
            self.fail(number, "counter", "hit or miss counters went backwards", record)
        run.last_evictions = after["evictions"]
        run.last_hits, run.last_misses = after["cache_hits"], after["cache_misses"]
        block_hash = record.get("block_hash")
        if block_hash is not None:
            seen = run.evicted_at_misses.get(block_hash)
            if seen is not None and before["cache_misses"] <= seen:
                self.fail(number, "block", f"block {block_hash} evicted again without a miss "
                          "that could have cached it in between", record)  # fmt: skip
            run.evicted_at_misses[block_hash] = after["cache_misses"]

    def finish(self) -> None:
        for gap in self.report.gaps:
            run = self.runs[gap.run_id]
            loss = run.losses.pop((gap.first_seq, gap.last_seq), None)
            if (
                loss is not None
                and loss[0] == gap.digest_before
                and (loss[1] == gap.prev_digest_after)
            ):
                gap.declared_by = loss[2]
                continue
            what = "does not link the chain across" if loss else "no loss record explains"
            self.report.add(Violation(
                gap.line, "gap", f"{gap.count} record(s) missing (seq {gap.first_seq}.."
                f"{gap.last_seq}); {what} the gap", gap.last_seq + 1, gap.run_id,
            ))  # fmt: skip
        for run_id, run in self.runs.items():
            self.trailing_loss(run_id, run)
            for (first, last), (_, _, sink, number) in run.losses.items():
                self.report.add(Violation(
                    number, "loss", f"loss record from {sink} for seq {first}..{last} "
                    "matches no gap in the stream", last, run_id,
                ))  # fmt: skip

    def trailing_loss(self, run_id: str, run: _Run) -> None:
        """Accept a loss record for the records that end a run (a sink dropped them and
        nothing came after): it must link to the run's last record; the chain then ends at
        the last lost record.
        """
        end = next((key for key in run.losses if key[0] == run.next_seq), None)
        if end is None or run.losses[end][0] != run.last_digest:
            return
        _, last_lost, sink, number = run.losses.pop(end)
        self.report.gaps.append(
            Gap(run_id, end[0], end[1], number, run.last_digest, last_lost, declared_by=sink)
        )
        if self.report.last_digest in (None, run.last_digest):
            self.report.last_digest = last_lost
        run.next_seq, run.last_digest = end[1] + 1, last_lost


def _compute_digest(payload: bytes, key: bytes | None) -> str:
    if key is None:
        return hashlib.sha256(payload).hexdigest()
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def verify_v1(lines: Iterable[bytes], out: VerifyReport, options: VerifyOptions) -> VerifyReport:
    """Verify a ``/1`` stream into ``out``; a single anchor (``""``) checks the chain's end."""
    key = options.key
    report = _LegacyReport(out.path, hmac=key is not None)
    verifier = _Verifier(report, key)
    pending: tuple[int, bytes] | None = None
    number = 0
    for number, raw in enumerate(lines, start=1):
        if pending is not None:
            verifier.line(*pending, last=False)
        pending = (number, raw) if raw.strip() else None
    if pending is not None:
        verifier.line(*pending, last=True)
    verifier.finish()
    for run_id, expected in options.anchors.items():
        if report.last_digest != expected:
            report.add(Violation(
                number, "anchor", f"the chain ends at {report.last_digest or 'nothing'}, not at "
                f"the expected {expected}: records are missing from the end", None, run_id or None,
            ))  # fmt: skip
    out.lines, out.records, out.kinds = report.lines, report.records, report.kinds
    out.truncated_tail, out.last_digest = report.truncated_tail, report.last_digest
    out.digest_failures = report.digest_failures
    out.violation_count, out.violations = report.violation_count, report.violations
    for run_id, records in report.runs.items():
        out.add_run(RunOutcome(run_id, records, "hmac-sha256" if key else "sha256", False,
                               report.last_digest or ""))  # fmt: skip
    for gap in report.declared_losses:
        out.add_loss(DeclaredLoss(gap.run_id, gap.first_seq, gap.last_seq, gap.declared_by or "",
                                  gap.line))  # fmt: skip
    if key is None:
        out.unauthenticated = report.records
    out.violations.sort(key=lambda v: v.line)
    return out
