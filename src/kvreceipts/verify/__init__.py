"""Checking a receipt stream: bytes, shape, framing, sequence, hash chain, HMAC, anchors,
byte conservation and time.

``kvreceipts.eviction/2`` streams are checked by :mod:`kvreceipts.verify.runs` (the per-kind
arithmetic in :mod:`kvreceipts.verify.kinds`); a file in the old ``/1`` format is refused with
one line (:class:`~kvreceipts.errors.InputError`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING

import orjson

from kvreceipts.errors import InputError
from kvreceipts.schema import SCHEMA_ID, SCHEMA_ID_V1
from kvreceipts.sniff import not_a_receipt, sniff_receipts
from kvreceipts.verify.report import (
    AUTHENTICATION,
    MAX_KEPT_VIOLATIONS,
    DeclaredLoss,
    MatchedAnchor,
    RunOutcome,
    VerifyReport,
    Violation,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from kvreceipts.proofs.note import Verifier

__all__ = [
    "AUTHENTICATION",
    "MAX_KEPT_VIOLATIONS",
    "DeclaredLoss",
    "MatchedAnchor",
    "RunOutcome",
    "VerifyOptions",
    "VerifyReport",
    "Violation",
    "verify_lines",
]


@dataclass(slots=True)
class VerifyOptions:
    """What the auditor asks of a stream."""

    key: bytes | None = None
    """Check HMAC digests with this key; records not sealed with it fail."""
    anchors: dict[str, str] = field(default_factory=dict)
    """Expected last digests by run id (``""``: the file's only run)."""
    allow_incomplete: bool = False
    """Accept runs without a close record (a crashed run's valid prefix)."""
    allow_loss: bool = False
    """Accept records that a sink dropped and declared with a loss record."""
    require_hmac: bool = False
    """Fail any record not sealed with HMAC."""
    no_auth: bool = False
    """Accept HMAC-sealed records that cannot be checked for want of the key."""
    verifier: Verifier | None = None
    """Open every signed checkpoint with this key; a close record without one fails."""


def _first_record(first: bytes) -> dict[str, object] | None:
    """The first line as a receipt (perhaps a damaged one), or ``None`` if it is none."""
    try:
        record = orjson.loads(first)
    except orjson.JSONDecodeError:
        return None
    return record if not_a_receipt(record) is None else None


def verify_lines(
    lines: Iterable[bytes], *, path: str = "-", options: VerifyOptions | None = None
) -> VerifyReport:
    """Verify a stream of JSON lines (bytes, newline included).

    Raises :class:`~kvreceipts.errors.InputError` when the first line is no receipt at all,
    when a line is in the old ``/1`` format, and when the stream cannot be read.
    """
    options = options or VerifyOptions()
    report = VerifyReport(path, hmac=options.key is not None, vkey=options.verifier is not None)
    stream: Iterator[bytes] = iter(lines)
    first = next(stream, None)
    if first is None:
        report.add(Violation(0, "empty", "no records: the input is empty"))
        return report
    record = _first_record(first)
    if record is None:
        why = sniff_receipts([first]) or "line 1: a damaged first record"
        raise InputError(f"{path}: not a kvreceipts receipts file ({why})")
    from kvreceipts.verify.runs import MAX_LINE_BYTES, V1_ERROR, StreamVerifier

    if record.get("schema") == SCHEMA_ID_V1:
        raise InputError(f"line 1: {V1_ERROR}", path=path)
    report.format = SCHEMA_ID

    verifier = StreamVerifier(report, options)
    torn = None
    for number, raw in enumerate(chain([first], stream), start=1):
        if raw.endswith(b"\n"):
            verifier.line(number, raw)
        else:  # only the last line can lack its newline
            report.lines += 1
            torn = (number, raw)
    verifier.finish(torn)
    report.truncated_tail |= bool(getattr(lines, "truncated_tail", False))  # a torn frame
    _check_reader(lines, report, MAX_LINE_BYTES)
    _check_anchors(verifier.single, verifier.anchored, report, options)
    _check_authentication(report, options)
    if not report.records and report.ok:
        report.add(Violation(report.lines, "empty", "no records"))
    report.violations.sort(key=lambda v: v.line)
    return report


def _check_reader(lines: object, report: VerifyReport, limit: int) -> None:
    """What the reader saw that no line shows: where it stopped, bytes a compressed file
    holds after its last frame.
    """
    stopped = getattr(lines, "stopped_at", None)
    if type(stopped) is int:
        report.stopped_at = stopped
        report.add(Violation(stopped, "stopped", f"line {stopped:,} is longer than {limit:,} "
                             "bytes, so reading stopped there: the rest of the input was not "
                             "read"))  # fmt: skip
    hidden = getattr(lines, "hidden_bytes", None)
    if type(hidden) is str:
        report.hidden_bytes = hidden
        report.add(Violation(report.lines, "bytes", hidden))


def _check_anchors(
    single: RunOutcome | None,
    anchored: dict[str, RunOutcome],
    report: VerifyReport,
    options: VerifyOptions,
) -> None:
    end = report.lines
    for run_id, expected in options.anchors.items():
        outcome = single if run_id == "" else anchored.get(run_id)
        if run_id == "" and report.run_count != 1:
            report.add(Violation(end, "anchor", f"one anchor without a run id needs a file of "
                                 f"exactly one run; this one holds {report.run_count:,} "
                                 "(use --expect-last-digest RUN_ID=DIGEST)"))  # fmt: skip
        elif outcome is None:
            from kvreceipts.verify.state import short_id

            report.add(Violation(end, "anchor", f"anchored run {short_id(run_id)} is not in "
                                 "the file", None, short_id(run_id)))  # fmt: skip
        elif outcome.last_digest != expected:
            report.add(Violation(
                end, "anchor", f"run {outcome.run_id} ends at {outcome.last_digest}, not at the "
                f"anchored {expected}: records are missing from its end or it was rewritten",
                None, outcome.run_id,
            ))  # fmt: skip
        else:
            report.anchors_matched.append(
                MatchedAnchor(outcome.run_id, outcome.last_seq, outcome.last_digest)
            )


def _check_authentication(report: VerifyReport, options: VerifyOptions) -> None:
    if options.verifier is not None and not report.checkpoints and report.records:
        report.signature_failures += 1
        report.add(Violation(report.lines, "auth", "--vkey: the file holds no signed checkpoint "
                             "(written without --sign-key?)"))  # fmt: skip
    report.signed = report.signatures == "verified"
    if report.unchecked and not options.no_auth:
        report.add(Violation(
            report.lines, "auth", f"{report.unchecked:,} record(s) are HMAC-sealed and no key was "
            "given: they could not be authenticated (--hmac-key-file KEY, or --no-auth to check "
            "the rest)",
        ))  # fmt: skip
