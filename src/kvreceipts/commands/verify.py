"""``kvreceipts verify``: check a receipts file and say where it was tampered with."""

from __future__ import annotations

from typing import Annotated

import typer

from kvreceipts.commands.options import (
    HmacKeyOption,
    InputArgument,
    ReportFormat,
    ReportFormatOption,
)
from kvreceipts.commands.output import Output
from kvreceipts.commands.reading import open_receipts

__all__ = ["verify"]

EXAMPLES = """
[bold]Examples[/bold]

  kvreceipts simulate -o run.jsonl && kvreceipts verify run.jsonl
  kvreceipts verify run.jsonl --hmac-key-file key.bin --format json | jq .violations
  cat run.jsonl | kvreceipts verify - --expect-last-digest <last_digest from the summary>

Exit status: 0 clean, 1 violations found, 2 unreadable input.
"""


def verify(
    path: InputArgument = "-",
    hmac_key_file: HmacKeyOption = None,
    expect_last_digest: Annotated[
        str | None,
        typer.Option(
            help="The run's last_digest (from its summary): records cut off the end are caught.",
            show_default=False,
        ),
    ] = None,
    fmt: ReportFormatOption = ReportFormat.table,
) -> None:
    """Verify a receipt stream: schema, seq, hash chain, HMAC, byte conservation, time."""
    from kvreceipts.chain import read_hmac_key
    from kvreceipts.verify import verify_lines

    out = Output(json_mode=fmt is ReportFormat.json)
    key = read_hmac_key(hmac_key_file) if hmac_key_file else None
    with open_receipts(path) as lines:
        report = verify_lines(lines, path=path, key=key, expect_last_digest=expect_last_digest)
    if out.json_mode:
        out.json(report.to_dict())
    else:
        _print_report(out, report)
    if not report.ok:
        raise typer.Exit(1)


def _print_report(out: Output, report: object) -> None:
    from rich.table import Table

    from kvreceipts.verify import VerifyReport

    assert isinstance(report, VerifyReport)
    if report.violations:
        table = Table(title=f"{report.violation_count:,} violation(s) in {report.path}",
                      title_justify="left")  # fmt: skip
        for column in ("line", "check", "seq", "what is wrong"):
            table.add_column(column, justify="right" if column in ("line", "seq") else "left")
        for v in report.violations:
            table.add_row(str(v.line), v.check, "" if v.seq is None else str(v.seq), v.message)
        if report.violation_count > len(report.violations):
            table.caption = f"… {report.violation_count - len(report.violations):,} more"
        out.show(table)
    kinds = ", ".join(f"{n:,} {k}" for k, n in sorted(report.kinds.items())) or "no records"
    runs = len(report.runs)
    signed = " (HMAC-SHA-256)" if report.hmac else ""
    for gap in report.declared_losses:
        out.warn(f"{gap.count:,} record(s) of run {gap.run_id[:12]} (seq {gap.first_seq}.."
                 f"{gap.last_seq}) were dropped by sink {gap.declared_by}; the chain links "
                 "across the gap")  # fmt: skip
    if report.truncated_tail:
        out.warn("the last line is cut short (a truncated tail, as a crash mid-write leaves); "
                 "everything before it was checked")  # fmt: skip
    if report.ok:
        out.show(
            f"[green]✓[/green] {report.path}: {report.records:,} records ({kinds}) in "
            f"{runs} run(s) verified{signed}; chain head {report.last_digest}"
        )
    else:
        hint = ""
        if report.digest_failures and report.digest_failures == report.records and not report.hmac:
            hint = " - no digest matched: was the run signed? pass --hmac-key-file"
        out.show(
            f"[red]✗[/red] {report.path}: {report.violation_count:,} violation(s) in "
            f"{report.records:,} records{signed}{hint}"
        )
