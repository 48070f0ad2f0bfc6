"""Checking a receipt stream: bytes, shape, framing, sequence, hash chain, HMAC, anchors,
byte conservation and time.

``kvreceipts.eviction/2`` streams are checked by :mod:`kvreceipts.verify.runs`; files in the
old ``/1`` format by :mod:`kvreceipts.verify.legacy` (and said to be old).
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
    MAX_KEPT_VIOLATIONS,
    DeclaredLoss,
    RunOutcome,
    VerifyReport,
    Violation,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from kvreceipts.proofs.note import Verifier

__all__ = [
    "MAX_KEPT_VIOLATIONS",
    "DeclaredLoss",
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


def _format_of(first: bytes) -> str | None:
    """The schema a file's first line is written in, or ``None`` if it is no receipt."""
    try:
        record = orjson.loads(first)
    except orjson.JSONDecodeError:
        return None
    if not_a_receipt(record) is not None:
        return None
    return SCHEMA_ID_V1 if record.get("schema") == SCHEMA_ID_V1 else SCHEMA_ID


def verify_lines(
    lines: Iterable[bytes], *, path: str = "-", options: VerifyOptions | None = None
) -> VerifyReport:
    """Verify a stream of JSON lines (bytes, newline included).

    Raises :class:`~kvreceipts.errors.InputError` when the first line is no receipt at all.
    """
    options = options or VerifyOptions()
    report = VerifyReport(path, hmac=options.key is not None, vkey=options.verifier is not None)
    stream: Iterator[bytes] = iter(lines)
    first = next(stream, None)
    if first is None:
        report.add(Violation(0, "empty", "no records: the input is empty"))
        return report
    report.format = _format_of(first) or ""
    if not report.format:
        why = sniff_receipts([first]) or "line 1: a damaged first record"
        raise InputError(f"{path}: not a kvreceipts receipts file ({why})")
    if report.format == SCHEMA_ID_V1:
        from kvreceipts.verify.legacy import verify_v1

        return verify_v1(chain([first], stream), report, options)
    from kvreceipts.verify.runs import StreamVerifier

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
    _check_anchors(verifier.single, verifier.anchored, report, options)
    _check_authentication(report, options)
    if not report.records and report.ok:
        report.add(Violation(report.lines, "empty", "no records"))
    report.violations.sort(key=lambda v: v.line)
    return report


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
            report.add(Violation(end, "anchor", f"anchored run {run_id} is not in the file",
                                 None, run_id))  # fmt: skip
        elif outcome.last_digest != expected:
            report.add(Violation(
                end, "anchor", f"run {outcome.run_id} ends at {outcome.last_digest}, not at the "
                f"anchored {expected}: records are missing from its end or it was rewritten",
                None, outcome.run_id,
            ))  # fmt: skip


def _check_authentication(report: VerifyReport, options: VerifyOptions) -> None:
    if report.unchecked and not options.no_auth:
        report.add(Violation(
            report.lines, "auth", f"{report.unchecked:,} record(s) are HMAC-sealed and no key was "
            "given: they could not be authenticated (--hmac-key-file KEY, or --no-auth to check "
            "the rest)",
        ))  # fmt: skip
