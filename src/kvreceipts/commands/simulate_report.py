"""How ``kvreceipts simulate`` reports a run: the receipts table, the summary panel, the JSON
summary document, the progress bar, and the lines about lossy sinks and the trace itself.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kvreceipts.commands.options import ReceiptFormat
from kvreceipts.commands.output import Output, human_bytes
from kvreceipts.commands.receipt_table import receipt_dict, receipt_table

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from kvreceipts.simulation import Plan, RunResult
    from kvreceipts.sinks.base import BaseSink

__all__ = ["progress", "progress_bar", "report", "report_losses"]


REJECTION_REASONS = {
    "too_large": "larger than the whole cache",
    "all_pinned": "all blocks pinned",
    "no_contiguous_space": "no contiguous space",
}
"""How the summary says each reason of ``requests.rejected_by_reason``."""


def _summary_panel(plan: Plan, result: RunResult, sinks: list[Any]) -> Any:
    from rich.panel import Panel
    from rich.table import Table

    stats = result.stats
    assert stats is not None
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("requests", f"{result.requests:,} ({result.admitted:,} admitted"
                 f"{_rejections_text(result)})")  # fmt: skip
    lookups = "block lookups" if plan.allocator == "paged" else "lookups"
    grid.add_row(lookups, f"{stats.cache_hits:,} hits, {stats.cache_misses:,} misses "
                 f"(hit rate {stats.hit_rate:.1%})")  # fmt: skip
    grid.add_row("evictions", f"{result.evictions:,} ({human_bytes(result.bytes_freed)} freed)")
    grid.add_row("memory", f"peak {human_bytes(result.peak_used_bytes)} of "
                 f"{human_bytes(stats.total_bytes)}; at the end {human_bytes(stats.used_bytes)}, "
                 f"pool efficiency {stats.memory_pool_efficiency:.3f}")  # fmt: skip
    if plan.caching.enable_receipts:
        delivered = "; ".join(f"{s.name}: {_counters_text(s)}" for s in sinks)
        grid.add_row("receipts", f"{result.receipts:,}" + (f" ({delivered})" if delivered else ""))
    else:
        grid.add_row("receipts", "off")
    grid.add_row("simulated", f"{result.sim_time_ms / 1000:,.1f} s, "
                 f"{result.requests_per_second:,.1f} req/s, mean latency "
                 f"{result.average_latency_ms:,.1f} ms")  # fmt: skip
    if result.skipped_lines:
        grid.add_row("skipped", f"{result.skipped_lines:,} bad trace lines")
    sim = plan.simulation
    title = (f"{Path(plan.workload).name} · {plan.allocator} · {sim.policy} · {plan.sizing.name} "
             f"· run {plan.run_id[:12]}")  # fmt: skip
    return Panel(grid, title=title, title_align="left", expand=False)


def _rejections_text(result: RunResult) -> str:
    """``, 386 rejected: larger than the whole cache`` (each reason with its count when
    there are several).
    """
    if not result.rejected:
        return ""
    reasons = result.rejected_by_reason
    if len(reasons) == 1:
        (reason,) = reasons
        return f", {result.rejected:,} rejected: {REJECTION_REASONS.get(reason, reason)}"
    parts = [f"{n:,} {REJECTION_REASONS.get(k, k)}" for k, n in reasons.items()]
    return f", {result.rejected:,} rejected: {'; '.join(parts)}"


HINT_SHARE = 0.1
"""Above this share of requests rejected as too large, the summary says what would hold them."""


def capacity_hint(plan: Plan, result: RunResult) -> dict[str, Any] | None:
    """When more than a tenth of the requests were larger than the whole cache: the capacity
    that would hold the largest of them (bytes, MiB, blocks of ``--block-tokens``) and the
    option that asks for it. ``None`` otherwise.
    """
    too_large = result.rejected_by_reason.get("too_large", 0)
    largest = result.largest_too_large_bytes
    if not largest or too_large <= HINT_SHARE * result.requests:
        return None
    block_tokens = plan.simulation.block_tokens
    block_bytes = plan.sizing.block_bytes(block_tokens)
    blocks = -(-largest // block_bytes)
    mib = -(-largest // (1 << 20))
    paged = plan.allocator == "paged"
    option = f"--capacity-blocks {blocks}" if paged else f"--capacity-mb {mib}"
    return {
        "too_large": too_large,
        "requests": result.requests,
        "largest_request_bytes": largest,
        "capacity_mb": mib,
        "capacity_blocks": blocks,
        "block_tokens": block_tokens,
        "option": option,
    }


def capacity_hint_text(hint: dict[str, Any], total_bytes: int) -> str:
    """The hint as one line for people."""
    share = hint["too_large"] / hint["requests"]
    return (
        f"hint: {hint['too_large']:,} of {hint['requests']:,} requests ({share:.0%}) were "
        f"larger than the whole {human_bytes(total_bytes)} cache; the largest needs "
        f"{human_bytes(hint['largest_request_bytes'])} ({hint['capacity_blocks']:,} blocks of "
        f"{hint['block_tokens']} tokens): pass {hint['option']}"
    )


def _counters_text(sink: Any) -> str:
    c = sink.counters
    parts = [f"{c.delivered:,} delivered"]
    parts += [f"{n:,} {k}" for k, n in (("dropped", c.dropped), ("failed", c.failed)) if n]
    return ", ".join(parts)


def _summary_document(plan: Plan, result: RunResult, sinks: list[Any]) -> dict[str, Any]:
    stats = result.stats
    return {
        "run_id": plan.run_id,
        "config": {
            "caching": plan.caching.to_dict(),
            "simulation": dataclasses.asdict(plan.simulation),
        },
        "workload": plan.describe(),
        "stats": stats.to_dict() if stats is not None else None,
        "requests": {
            "total": result.requests,
            "admitted": result.admitted,
            "rejected": result.rejected,
            "rejected_by_reason": result.rejected_by_reason,
            "skipped_lines": result.skipped_lines,
            "backwards_timestamps": plan.trace_stats.backwards if plan.trace_stats else 0,
        },
        "evictions": result.evictions,
        "bytes_freed": result.bytes_freed,
        "peak_used_bytes": result.peak_used_bytes,
        "receipts": result.receipts,
        "sinks": {s.name: s.counters.to_dict() for s in sinks if hasattr(s, "counters")},
        "last_digest": result.last_digest,
        "performance": {
            "average_requests_per_second": result.requests_per_second,
            "average_latency_ms": result.average_latency_ms,
        },
        "duration_s": round(result.sim_time_ms / 1000.0, 6),
        "capacity_hint": capacity_hint(plan, result),
    }


def report_losses(out: Output, sinks: list[BaseSink]) -> int:
    """One line per sink that dropped or failed to deliver receipts."""
    lossy = 0
    for sink in sinks:
        if sink.name in ("table", "stdout"):
            continue  # a closed stdout ends the run on purpose
        c = sink.counters
        lost = c.dropped + c.failed
        if lost:
            lossy += 1
            out.error(f"sink {sink.name} lost {lost:,} of {c.accepted:,} records ({c.dropped:,} "
                      f"dropped, {c.failed:,} failed); --allow-sink-loss accepts this")  # fmt: skip
    return lossy


@contextmanager
def progress(out: Output, plan: Plan) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr, only when stderr is a terminal and not --quiet."""
    if not out.shows_progress:
        yield None
        return
    bar, update = progress_bar(out.err, plan)
    with bar:
        yield update


def progress_bar(console: Any, plan: Plan) -> tuple[Any, Callable[[int], None]]:
    """The bar and its update function (called with the requests done so far). A trace's
    total is its size on disk and its progress the bytes read (compressed ones too), so the
    ETA holds from the start; a synthetic workload counts requests. At most 80 columns.
    """
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )

    # Bytes for a whole trace; requests for a synthetic workload or a trace cut by --requests.
    stats = plan.trace_stats if not plan.simulation.requests else None
    name = Path(plan.workload).name if plan.workload != "-" else "stdin"
    name = name if len(name) <= 20 else name[:19] + "…"
    size = _file_size(plan.workload) if stats is not None else None
    amount = DownloadColumn() if stats is not None else MofNCompleteColumn()
    bar = Progress(TextColumn("{task.description}"), BarColumn(bar_width=16),
                   TaskProgressColumn(), amount, TextColumn("{task.fields[requests]}"),
                   TimeRemainingColumn(), console=console, transient=True,
                   expand=False)  # fmt: skip
    total = size if stats is not None else plan.simulation.requests or 2000
    task = bar.add_task(name, total=total, requests="")

    def update(done: int) -> None:
        completed = stats.bytes_read if stats is not None else done
        bar.update(task, completed=completed, requests=f"{done:,} req")

    return bar, update


def _file_size(path: str) -> int | None:
    try:
        return Path(path).stat().st_size if path != "-" else None
    except OSError:
        return None


def report(
    plan: Plan, out: Output, fmt: ReceiptFormat, result: RunResult, sinks: list[BaseSink]
) -> None:
    """The run's summary: a JSON document, or the table, panel and chain head for people."""
    shown = [s for s in sinks if s.name != "table"]
    for line in result.skip_errors:
        out.warn(f"skipped {line}")
    if result.skipped_lines > len(result.skip_errors):
        out.warn(f"… {result.skipped_lines - len(result.skip_errors):,} more bad lines skipped")
    for note in _trace_notes(plan):
        out.note(note)
    hint = capacity_hint(plan, result)
    hint_text = None if hint is None or result.stats is None else \
        capacity_hint_text(hint, result.stats.total_bytes)  # fmt: skip
    if fmt is ReceiptFormat.json:
        if hint_text:
            out.note(hint_text)
        out.json(_summary_document(plan, result, shown))
        return
    panel = _summary_panel(plan, result, shown)
    # The chain head in full, on a line of its own: a panel would cut it at 80 columns.
    head = f"chain head  {result.last_digest}" if plan.caching.enable_receipts else None
    if fmt is ReceiptFormat.table:
        table = next((s for s in sinks if s.name == "table"), None)
        kept = getattr(table, "kept", [])
        if plan.caching.enable_receipts:
            rows = [receipt_dict(record) for record in kept]
            out.show(receipt_table(rows, result.receipts, paged=plan.allocator == "paged"))
        out.show(panel)
        if head:
            out.show(head)
    else:
        out.flush()
        if out.closed:  # `| head -1`: one line about the pipe, not the summary
            out.note(f"stdout was closed after {result.requests:,} requests; the run stopped "
                     "there")  # fmt: skip
            return
        out.note(panel)
        if head:
            out.note(head)
    if hint_text:
        out.note(hint_text)  # after the summary it explains, on stderr
    out.note(f"[dim]ran in {result.duration_s:.2f} s[/dim]")


def _trace_notes(plan: Plan) -> list[str]:
    """What a reader of the summary should know about the trace itself."""
    notes = []
    stats = plan.trace_stats
    if stats is not None and stats.backwards:
        rows = "row goes" if stats.backwards == 1 else "rows go"
        notes.append(
            f"note: {stats.backwards:,} trace {rows} back in time, served in file "
            f"order (first: {stats.first_backwards}); --strict-time refuses them"
        )
    if plan.trace_format == "azure":
        notes.append("note: Azure traces carry no prefix hashes or session ids: every request "
                     "is new to the cache, so every lookup misses by construction")  # fmt: skip
    if stats is not None:
        notes.extend(f"note: {caveat}" for caveat in stats.caveats)
    return notes
