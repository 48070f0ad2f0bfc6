"""``kvreceipts validate``: the local CI harness. Runs each step's nox sessions and says, step
by step, what passed; a skipped step is a failure, whatever nox's exit status says.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kvreceipts.commands.output import Output
from kvreceipts.numbers import INT64_MAX

if TYPE_CHECKING:
    from rich.table import Table

    from kvreceipts.validation.report import SessionResult, ValidationReport
    from kvreceipts.validation.runner import NoxOptions
    from kvreceipts.validation.steps import Selection

__all__ = ["validate"]

EXAMPLES = """
[bold]Examples[/bold]

  kvreceipts validate                          every default step (what ./ci-local.sh runs)
  kvreceipts validate receipts -j 2            upstream's nine steps, two at a time
  kvreceipts validate --no-cache               run every session, passed before or not
  kvreceipts validate 2 3 docs                 steps by number or name
  kvreceipts validate "features(tuning)"       one nox session
  kvreceipts validate quick --nox-arg=--verbose
  kvreceipts validate --list
  kvreceipts validate --json | jq '.steps[] | select(.ok | not)'

Exit status: 0 when every required step passed, 1 when one did not (skipped, aborted or
missing counts as not passed), 2 for bad usage or outside a source checkout.
"""

_LOOK = {
    "passed": ("green", "✅ passed"),
    "failed": ("red", "❌ failed"),
    "aborted": ("red", "❌ aborted"),
    "missing": ("red", "❌ missing"),
    "skipped": ("yellow", "⏭ skipped"),
}


def validate(
    steps: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="STEP",
            help="Steps to run: numbers (1-14), step or session names, or a target (receipts: "
            "upstream's nine; all: the default set; quick: lint and the tests). Default: all.",
            show_default=False,
        ),
    ] = None,
    list_steps: Annotated[
        bool, typer.Option("--list", "-l", help="List the steps and their sessions; run nothing.")
    ] = False,
    json_mode: Annotated[
        bool,
        typer.Option("--json", help="A machine-readable report on stdout (nox's output: stderr)."),
    ] = False,
    reuse: Annotated[
        bool,
        typer.Option("--reuse/--fresh", "-r",
                     help="Reuse the session venvs (installs still run, as no-ops), or "
                     "recreate them. The same default as ./ci-local.sh."),
    ] = True,
    jobs: Annotated[
        int | None,
        typer.Option("--jobs", "-j", min=1, max=INT64_MAX, help="Run up to N sessions at once.",
                     show_default="the number of CPUs, at most 4, as ./ci-local.sh"),
    ] = None,
    no_cache: Annotated[
        bool,
        typer.Option("--no-cache", help="Run every session, even those whose inputs have not "
                     "changed since they passed (CI=true does the same)."),
    ] = False,
    nox_args: Annotated[
        list[str] | None,
        typer.Option("--nox-arg", metavar="ARG",
                      help="One more argument for nox (repeat it; e.g. --nox-arg=--verbose).",
                      show_default=False),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the nox command line; run nothing.")
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", dir_okay=False, show_default=False,
                     help="Also write the JSON report to this file."),
    ] = None,
) -> None:  # fmt: skip
    """Run the local CI harness: upstream's nine validation steps and ours, as nox sessions,
    then print each step's result and one verdict.
    """
    from kvreceipts.validation.steps import STEPS, Selection, select

    out = Output(json_mode=json_mode)
    if list_steps and not steps:  # every step, the advisory ones too
        selections = [Selection(step, step.sessions, step.required) for step in STEPS]
    else:
        selections = select(steps or [])
    if list_steps:
        _list(out, selections)
        return
    from kvreceipts.validation.cache import cache_disabled_by_env
    from kvreceipts.validation.runner import NoxOptions, run_validation

    options = NoxOptions(reuse=reuse, jobs=jobs or default_jobs(), extra=tuple(nox_args or ()))
    if dry_run:
        _dry_run(out, selections, options)
        return
    report = run_validation(selections, options, announce=lambda cmd: out.note(f"$ {cmd}"),
                            use_cache=not no_cache and not cache_disabled_by_env())  # fmt: skip
    document = report.to_dict()
    if output is not None:
        import orjson

        output.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    if out.json_mode:
        out.json(document)
    else:
        out.show(_render(report))
        _verdict(out, report)
    if output is not None:
        out.note(f"report: {output}")
    if not report.ok:
        raise typer.Exit(1)


def _dry_run(out: Output, selections: list[Selection], options: NoxOptions) -> None:
    import shlex

    from kvreceipts.errors import UsageError
    from kvreceipts.validation.runner import find_checkout, find_nox, nox_command, schedule

    root = find_checkout()
    try:
        nox = find_nox(root)
    except UsageError as exc:
        out.warn(str(exc))
        nox = ["nox"]
    wanted = [session for selection in selections for session in selection.sessions]
    sessions = schedule(wanted, options, root)
    report = Path("$TMPDIR/nox-report.json")
    out.write(shlex.join(nox_command(nox, root, sessions, report, options)).encode() + b"\n")
    out.flush()


def _list(out: Output, selections: list[Selection]) -> None:
    from kvreceipts.validation.steps import TARGETS, select

    in_target = {target: {s.step.name for s in select([target])} for target in TARGETS}

    def targets_of(name: str) -> list[str]:
        return [target for target, names in in_target.items() if name in names]

    if out.json_mode:
        out.json({
            "steps": [
                {"number": s.step.number, "name": s.step.name, "title": s.step.title,
                 "sessions": list(s.sessions), "python": s.step.python,
                 "required": s.required, "default": s.step.default,
                 "upstream": s.step.upstream, "targets": targets_of(s.step.name)}
                for s in selections
            ],
            "targets": {name: list(items) for name, items in TARGETS.items()},
        })  # fmt: skip
        return
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    # At most 80 columns, whatever the terminal: the sessions and titles wrap inside their cells.
    table = Table(title="validation steps", title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False, width=min(80, out.err.width))  # fmt: skip
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("step", no_wrap=True)
    table.add_column("nox sessions", ratio=2, overflow="fold")
    table.add_column("what it checks", ratio=3, overflow="fold")
    for s in selections:
        title = s.step.title + ("" if s.required else " [dim](advisory)[/dim]")
        table.add_row(str(s.step.number), s.step.name, escape(", ".join(s.sessions)), title)
    out.show(table)
    for target in TARGETS:
        numbers = [str(s.step.number) for s in selections if target in targets_of(s.step.name)]
        out.show(f"target {target}: steps {', '.join(numbers) or '-'}")
    out.note(r"run them: kvreceipts validate \[STEP]... (or ./ci-local.sh \[receipts|all|quick])")


def _cell(session: SessionResult) -> str:
    from rich.markup import escape

    colour, label = _LOOK[str(session.status)]
    reason = f": {escape(session.reason)}" if session.reason else ""
    if session.cached_at is not None:
        reason = f" (cached, run at {_when(session.cached_at)})"
    return f"[{colour}]{label}[/{colour}]{reason}"


def _when(moment: str) -> str:
    """``21:59:05 UTC`` today, ``2026-12-02 21:59 UTC`` before."""
    from datetime import UTC, datetime

    try:
        at = datetime.fromisoformat(moment).astimezone(UTC)
    except ValueError:
        return moment
    if at.date() == datetime.now(UTC).date():
        return f"{at:%H:%M:%S} UTC"
    return f"{at:%Y-%m-%d %H:%M} UTC"


def default_jobs() -> int:
    """Sessions at once by default: the CPUs, at most 4 (what ./ci-local.sh picks)."""
    import os

    return max(1, min(4, os.cpu_count() or 1))


def _render(report: ValidationReport) -> Table:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="kvreceipts validate", title_justify="left")
    for column in ("#", "step", "session", "result", "time"):
        table.add_column(column, justify="right" if column in ("#", "time") else "left")
    for step in report.steps:
        name = step.step.name + ("" if step.required else " [dim](advisory)[/dim]")
        for index, session in enumerate(step.sessions):
            took = f"{session.duration_s:.1f} s" if session.duration_s else "-"
            first = index == 0
            table.add_row(str(step.step.number) if first else "", name if first else "",
                          escape(session.name), _cell(session), took)  # fmt: skip
    return table


def _verdict(out: Output, report: ValidationReport) -> None:
    """The verdict on one line: rich would wrap it at 80 columns when stdout is a file."""
    if out.stdout_is_terminal:
        from rich.markup import escape

        colour = "green" if report.ok else "red"
        out.show(f"[{colour}]{escape(report.verdict)}[/{colour}]")
    else:
        out.write(report.verdict.encode() + b"\n")
        out.flush()
