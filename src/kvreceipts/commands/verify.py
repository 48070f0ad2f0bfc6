"""``kvreceipts verify``: check a receipts file and say where it was tampered with."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kvreceipts.commands.options import (
    HmacKeyOption,
    InputArgument,
    ReportFormat,
    ReportFormatOption,
)
from kvreceipts.commands.output import Output
from kvreceipts.commands.reading import open_receipts
from kvreceipts.errors import UsageError
from kvreceipts.proofs.keyfiles import read_verifier

if TYPE_CHECKING:
    from kvreceipts.verify import VerifyReport

__all__ = ["verify"]

EXAMPLES = """
[bold]Examples[/bold]

  kvreceipts simulate -o run.jsonl && kvreceipts verify run.jsonl
  kvreceipts verify run.jsonl --hmac-key-file key.bin --format json | jq .violations
  cat run.jsonl | kvreceipts verify - --expect-last-digest <last_digest from the summary>
  kvreceipts verify runs.jsonl --expect-last-digest RUN_ID=DIGEST --expect-last-digest ...

Exit status: 0 clean, 1 violations found, 2 unreadable input.
"""

_Flag = Annotated[bool, typer.Option(show_default=False)]


def _auth(report: VerifyReport) -> str:
    """What the verdict established about who sealed the records, in words."""
    level = report.authentication
    if level == "hmac":
        return (f"authenticated: every record was sealed with the HMAC key {report.key_id}, in "
                "this order")  # fmt: skip
    if level == "signed":  # the checkpoint checks (verify/tree.py) set it
        return (f"signed: {report.checkpoints:,} checkpoint(s) verified with the --vkey key; "
                "each binds every record before it")  # fmt: skip
    if level == "failed" and not report.hmac:
        return (f"SIGNATURES FAILED: {report.signature_failures:,} checkpoint or close "
                "record(s) are not signed by the --vkey key, or sign another tree than the "
                "records before them")  # fmt: skip
    if level == "failed":
        return (f"AUTHENTICATION FAILED: {report.auth_failures:,} record(s) failed a check under "
                f"the HMAC key {report.key_id}, and {report.hmac_verified:,} of "
                f"{report.lines:,} line(s) were proven sealed with it")  # fmt: skip
    if report.unchecked:
        return "NOT AUTHENTICATED: HMAC-sealed, but no key was given"
    return ("UNAUTHENTICATED: plain SHA-256, anyone who can rewrite the file can re-chain it; "
            "use HMAC (--hmac-key-file) and an anchor to prove more")  # fmt: skip


def _anchors(values: list[str]) -> dict[str, str]:
    anchors: dict[str, str] = {}
    for value in values:
        run_id, _, digest = value.rpartition("=")
        if len(digest) != 64 or digest.strip("0123456789abcdef"):
            raise UsageError(f"--expect-last-digest {value!r}: expected 64 lowercase hex digits, "
                             "or RUN_ID=DIGEST")  # fmt: skip
        if run_id in anchors or (anchors and ("" in anchors or run_id == "")):
            raise UsageError("--expect-last-digest: give one DIGEST for a one-run file, or one "
                             "RUN_ID=DIGEST per run")  # fmt: skip
        anchors[run_id] = digest
    return anchors


def verify(
    path: InputArgument = "-",
    hmac_key_file: HmacKeyOption = None,
    expect_last_digest: Annotated[
        list[str] | None,
        typer.Option(
            help="The run's last_digest (from its summary), or RUN_ID=DIGEST per run "
            "(repeatable): records cut off the end are caught.",
            show_default=False,
        ),
    ] = None,
    allow_incomplete: Annotated[
        bool,
        typer.Option(
            "--allow-incomplete",
            help="Accept runs without a close record (a crashed run's valid prefix).",
            show_default=False,
        ),
    ] = False,
    allow_loss: Annotated[
        bool,
        typer.Option(
            "--allow-loss",
            help="Accept records a sink dropped and declared with a loss record.",
            show_default=False,
        ),
    ] = False,
    require_hmac: Annotated[
        bool,
        typer.Option(
            "--require-hmac", help="Fail any record not sealed with HMAC.", show_default=False
        ),
    ] = False,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth",
            help="Check an HMAC-sealed file's structure without its key.",
            show_default=False,
        ),
    ] = False,
    vkey: Annotated[
        Path | None,
        typer.Option(
            "--vkey",
            dir_okay=False,
            help="Verifier key (kvreceipts keygen's .pub): open every signed checkpoint with "
            "it; a run whose close record is not signed by it fails.",
            show_default=False,
        ),
    ] = None,
    fmt: ReportFormatOption = ReportFormat.table,
) -> None:
    """Verify a receipt stream: bytes, framing, seq, hash chain, Merkle roots, signed
    checkpoints, HMAC, anchors, byte conservation, time.
    """
    from kvreceipts.chain import read_hmac_key
    from kvreceipts.verify import VerifyOptions, verify_lines

    out = Output(json_mode=fmt is ReportFormat.json)
    options = VerifyOptions(
        key=read_hmac_key(hmac_key_file, warn=out.warn) if hmac_key_file else None,
        anchors=_anchors(expect_last_digest or []),
        allow_incomplete=allow_incomplete,
        allow_loss=allow_loss,
        require_hmac=require_hmac,
        no_auth=no_auth,
        verifier=read_verifier(vkey) if vkey else None,
    )
    with open_receipts(path) as lines:
        report = verify_lines(lines, path=path, options=options)
    if out.json_mode:
        out.json(report.to_dict())
        if report.authentication not in ("hmac", "signed"):
            out.warn(f"{report.path}: {_auth(report)}")
    else:
        _print_report(out, report)
    if not report.ok:
        raise typer.Exit(1)


def _print_report(out: Output, report: VerifyReport) -> None:  # noqa: PLR0912 - one line per fact
    from rich.markup import escape
    from rich.table import Table

    if report.violations:
        table = Table(title=f"{report.violation_count:,} violation(s) in {report.path}",
                      title_justify="left")  # fmt: skip
        for column in ("line", "check", "seq", "what is wrong"):
            table.add_column(column, justify="right" if column in ("line", "seq") else "left")
        for v in report.violations:
            table.add_row(str(v.line), v.check, "" if v.seq is None else str(v.seq),
                          escape(v.message))  # fmt: skip
        if report.violation_count > len(report.violations):
            table.caption = f"… {report.violation_count - len(report.violations):,} more"
        out.show(table)
    for loss in report.losses:
        out.warn(f"{loss.count:,} record(s) of run {loss.run_id} (seq {loss.first_seq}.."
                 f"{loss.last_seq}) were dropped by sink {escape(loss.sink)}")  # fmt: skip
    if report.incomplete_runs:
        out.warn(f"{report.incomplete_runs:,} run(s) have no close record: incomplete (a crash "
                 "or a cut file); only their valid prefix was checked")  # fmt: skip
    if report.truncated_tail:
        out.warn("the last line is cut short (a truncated tail, as a crash mid-write leaves)")
    if report.untracked_evictions:
        out.warn(f"{report.untracked_evictions:,} eviction(s) came past the verifier's memory "
                 "bound for block hashes and were not checked for a repeated block")  # fmt: skip
    if report.unsummed_batches:
        out.warn(f"{report.unsummed_batches:,} batch(es) end a round longer than the verifier "
                 "remembers: their byte totals were not recomputed")  # fmt: skip
    kinds = ", ".join(f"{n:,} {k}" for k, n in sorted(report.kinds.items())) or "no records"
    auth = _auth(report)
    if report.ok:
        out.show(
            f"[green]✓[/green] {escape(report.path)}: {report.records:,} records ({kinds}) in "
            f"{report.run_count:,} run(s) verified; chain head {report.last_digest}"
        )
    else:
        hint = ""
        if report.digest_failures and report.digest_failures == report.records and not report.hmac:
            hint = " - no digest matched: was the run signed? pass --hmac-key-file"
        out.show(
            f"[red]✗[/red] {escape(report.path)}: {report.violation_count:,} violation(s) in "
            f"{report.records:,} records{hint}"
        )
    trusted = report.authentication in ("hmac", "signed")
    colour = "" if trusted else "[red]" if report.authentication == "failed" else "[yellow]"
    out.show(f"{colour}{escape(auth)}")
    for anchor in report.anchors_matched:
        out.show(f"anchor matched: run {escape(anchor.run_id)} ends at seq {anchor.seq:,} with "
                 f"digest {anchor.digest}")  # fmt: skip
    if report.signatures == "unchecked":
        out.show(
            f"[yellow]{report.checkpoints:,} signed checkpoint(s) not checked: give the "
            "signer's public key (--vkey FILE.pub)[/yellow]"
        )
    if not trusted and not out.stdout_is_terminal:
        out.warn(f"{report.path}: {auth}")  # stdout may be a pipe nobody reads
