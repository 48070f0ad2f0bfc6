"""``kvreceipts stats``: what a receipts file says, in aggregate."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from kvreceipts.commands.options import InputArgument, ReportFormat, ReportFormatOption
from kvreceipts.commands.output import Output, human_bytes
from kvreceipts.commands.reading import MAX_LINE, open_receipts

if TYPE_CHECKING:
    from rich.console import RenderableType

    from kvreceipts.summarize import ReceiptSummary

__all__ = ["stats"]

EXAMPLES = """
[bold]Examples[/bold]

  kvreceipts stats run.jsonl
  kvreceipts simulate --format jsonl | kvreceipts stats -
  kvreceipts stats run.jsonl --format json | jq .top_sessions
  kvreceipts stats run.jsonl --format json | jq '{hit_rate, top_blocks}'
"""

_BARS = "▁▂▃▄▅▆▇█"


def stats(
    path: InputArgument = "-",
    top: Annotated[
        int, typer.Option(help="Sessions (and paged blocks) shown in the top lists.", min=1)
    ] = 10,
    fmt: ReportFormatOption = ReportFormat.table,
) -> None:
    """Summarize a receipts file: counts, hit rate, bytes freed, top sessions and blocks, memory.

    Counts by kind, reason and policy; runs; the hit rate (from each run's close record); the
    sessions and, in paged runs, the prefix blocks evicted most; memory in use before and after
    each eviction, as a chart over time. On a watch file: what the engine stored and removed
    (by medium), restored, lost and restarted. Reads schema /2 (and old /1
    files), plain, gzip or zstd.
    Exit status: 0 summarized, 1 no records, 2 not a receipts file or unreadable.
    """
    from kvreceipts.engine.figures import EngineFigures
    from kvreceipts.summarize import summarize_lines

    out = Output(json_mode=fmt is ReportFormat.json)
    engine = EngineFigures()
    with open_receipts(path) as lines:
        summary = summarize_lines(lines, path=path, engine=engine)
    if out.json_mode:
        document = summary.to_dict(top)
        if engine.records:
            document["engine"] = engine.to_dict()
        out.json(document)
    elif summary.records or summary.unreadable_lines:
        from rich.console import Console

        out.show(*_render(summary, top, Console().width))
        if engine.records:
            from kvreceipts.commands.engine_stats import render_engine

            out.show(render_engine(engine))
    if lines.stopped_at is not None:
        out.warn(f"{path}: line {lines.stopped_at:,} is longer than {MAX_LINE:,} bytes: no "
                 "receipt is, and reading stopped there; the summary covers the lines before "
                 "it")  # fmt: skip
    if lines.hidden_bytes is not None:
        out.warn(f"{path}: {lines.hidden_bytes}")
    if summary.truncated_tail:
        out.warn(f"{path}: the stream ends in a truncated tail (a torn last line or compressed "
                 "frame, as a killed writer leaves); everything before it was read")  # fmt: skip
    if not summary.records:
        out.err.print(f"{path}: no records" + (f" ({summary.unreadable_lines:,} unreadable "
                      "lines)" if summary.unreadable_lines else ""), markup=False)  # fmt: skip
        raise typer.Exit(1)


def _sparkline(values: list[int], ceiling: int, width: int) -> str:
    """One bar per bucket of samples (the bucket's highest), at most ``width`` bars."""
    if not values or ceiling <= 0:
        return ""
    per = -(-len(values) // max(1, width))
    peaks = [max(values[i : i + per]) for i in range(0, len(values), per)]
    top = len(_BARS) - 1
    return "".join(_BARS[max(0, min(top, round(v / ceiling * top)))] for v in peaks)


def _overview(summary: ReceiptSummary) -> RenderableType:
    from rich.table import Table

    overview = Table.grid(padding=(0, 2))
    overview.add_column(style="bold")
    overview.add_column()
    overview.add_row("file", summary.path)
    runs = f"{summary.records:,} in {summary.run_count:,} run(s)"
    if summary.unreadable_lines:
        runs += f"; {summary.unreadable_lines:,} unreadable lines"
        if summary.invalid_records:
            runs += f" ({summary.invalid_records:,} invalid_records)"
    overview.add_row("records", runs)
    for problem in summary.problems:
        where = f"line {problem['line']}" + (f", {problem['field']}" if problem["field"] else "")
        overview.add_row("", f"{where}: {problem['problem']}")
    if len(summary.problems) < summary.unreadable_lines:
        overview.add_row("", f"… {summary.unreadable_lines - len(summary.problems):,} more")
    tables = [("kinds", summary.kinds)]
    if not summary.engine_only:  # a watch evicts nothing itself: no hit rate, reasons or bytes
        overview.add_row("hit rate", _hit_rate(summary))
        tables += [("reasons", summary.reasons), ("policies", summary.policies)]
    for title, counts in tables:
        overview.add_row(title, ", ".join(f"{k} {n:,}" for k, n in counts.most_common()) or "-")
    if summary.demotions:  # memory tiers: a block moved one tier down is not an eviction
        moves = ", ".join(f"{k} {n:,}" for k, n in sorted(summary.demotions.items()))
        overview.add_row("demotions", moves)
    if not summary.engine_only:
        overview.add_row("bytes freed", human_bytes(summary.bytes_freed))
    if summary.lost:
        overview.add_row("lost", f"{summary.lost:,} receipts dropped by sinks (loss records)")
    if summary.first_timestamp:
        overview.add_row("time", f"{summary.first_timestamp} → {summary.last_timestamp}")
    return overview


def _hit_rate(summary: ReceiptSummary) -> str:
    """``64.9% (1,298 hits, 702 misses; from the close record)``: the runs' own figures."""
    if not summary.closed_runs:
        return "- (no close record: no run finished)"
    closes = "the close record" if summary.closed_runs == 1 else \
        f"{summary.closed_runs:,} close records"  # fmt: skip
    rate = "-" if summary.hit_rate is None else f"{summary.hit_rate:.1%}"
    return f"{rate} ({summary.hits:,} hits, {summary.misses:,} misses; from {closes})"


def _render(summary: ReceiptSummary, top: int, width: int) -> list[RenderableType]:
    from rich.table import Table

    overview = _overview(summary)
    parts: list[RenderableType] = [overview]
    if summary.runs:
        parts.append(_runs_table(summary))
    if summary.sessions:
        sessions = Table(title=f"top {top} sessions by evictions", title_justify="left")
        if not summary.sessions.exact:
            sessions.caption = (f"{len(summary.sessions):,} sessions tracked; counts may be up "
                                f"to {summary.sessions.floor:,} too high")  # fmt: skip
        sessions.add_column("session")
        sessions.add_column("evictions", justify="right")
        for session, count in summary.top_sessions(top):
            sessions.add_row(session, f"{count:,}")
        parts.append(sessions)
    if summary.blocks:
        parts.append(_blocks_table(summary, top))
    points = summary.series.points
    if points:
        ceiling = summary.total_bytes or max(b for _, b, _ in points)
        clock = "time" if isinstance(points[0][0], str) else "simulated time"
        chart = Table(title=f"memory in use over {clock} (each eviction, sampled)",
                      title_justify="left", show_header=False, box=None)  # fmt: skip
        chart.add_column(style="bold")
        chart.add_column()
        bars = max(10, width - 10)
        chart.add_row("before", _sparkline([b for _, b, _ in points], ceiling, bars))
        chart.add_row("after", _sparkline([a for _, _, a in points], ceiling, bars))
        chart.add_row(
            "",
            f"{_when(points[0][0])} … {_when(points[-1][0])}; "
            f"full bar = {human_bytes(ceiling)}; peak {human_bytes(summary.peak_used_bytes)}",
        )
        parts.append(chart)
    return parts


def _blocks_table(summary: ReceiptSummary, top: int) -> RenderableType:
    from rich.table import Table

    blocks = Table(title=f"top {top} prefix blocks by evictions (paged)", title_justify="left")
    if not summary.blocks.exact:
        blocks.caption = (f"{len(summary.blocks):,} blocks tracked; counts may be up to "
                          f"{summary.blocks.floor:,} too high")  # fmt: skip
    blocks.add_column("block hash")
    blocks.add_column("evictions", justify="right")
    for block, count in summary.blocks.most_common(top):
        blocks.add_row(block, f"{count:,}")
    return blocks


def _when(time: float | str) -> str:
    """Simulated milliseconds as seconds; a timestamp as it is."""
    return time if isinstance(time, str) else f"{time / 1000:,.1f} s"


RUNS_SHOWN = 10


def _runs_table(summary: ReceiptSummary) -> RenderableType:
    from rich.table import Table

    table = Table(title="runs", title_justify="left")
    runs = list(summary.runs.values())[:RUNS_SHOWN]
    # A watch's run evicts nothing itself; its pool and hit rate are not in its receipts.
    engine = summary.engine_only
    columns = ("run", "source", "records", "removals") if engine else \
        ("run", "records", "evictions", "hit rate", "policy", "pool")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("run", "source", "policy") else
                         "right")  # fmt: skip
    for run in runs:
        if engine:
            table.add_row(run.run_id, run.source or "-", f"{run.records:,}", f"{run.removals:,}")
            continue
        pool = "-" if run.total_bytes is None else human_bytes(run.total_bytes)
        rate = "-" if run.hit_rate is None else f"{run.hit_rate:.1%}"
        table.add_row(run.run_id, f"{run.records:,}", f"{run.evictions:,}", rate,
                      run.policy or "-", pool)  # fmt: skip
    more = summary.run_count - min(len(summary.runs), RUNS_SHOWN)
    if more:
        listed = len(summary.runs)
        table.caption = f"… and {more:,} more run(s) (--format json lists the first {listed:,})"
    return table
