"""``kvreceipts simulate``: run a workload against the KV cache and print its receipts."""

from __future__ import annotations

import dataclasses
import logging
import threading
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kvreceipts import features
from kvreceipts.commands.options import ConfigOption, HmacKeyOption, QuietOption, ReceiptFormat
from kvreceipts.commands.output import Output, human_bytes
from kvreceipts.config import LoadedConfig, check_capacity_mb, load_config
from kvreceipts.errors import InputError, UsageError
from kvreceipts.policies import POLICIES

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from rich.table import Table

    from kvreceipts.receipts import Receipt
    from kvreceipts.simulation import Plan, RunResult
    from kvreceipts.sinks.base import BaseSink

__all__ = ["simulate"]

EXAMPLES = """
[bold]Examples[/bold]

  kvreceipts simulate                                  [dim]# built-in chat workload, table[/dim]
  kvreceipts simulate --format jsonl | jq -c 'select(.kind=="eviction")'
  kvreceipts simulate --format json | jq .stats.hit_rate
  kvreceipts simulate --trace mooncake.jsonl --allocator paged --capacity-blocks 9000
  kvreceipts simulate --policy s3fifo --model llama-3-8b --capacity-mb 4096 -o run.jsonl
"""


class Workload(StrEnum):
    """Built-in synthetic workloads."""

    chat = "chat"
    agent = "agent"
    burst = "burst"
    uniform = "uniform"


class Layout(StrEnum):
    """Eviction receipt layouts."""

    lean = "lean"
    upstream = "upstream"


class Allocator(StrEnum):
    """KV allocators."""

    auto = "auto"
    arena = "arena"
    paged = "paged"


class TraceFormat(StrEnum):
    """Trace file formats."""

    auto = "auto"
    mooncake = "mooncake"
    azure = "azure"


def _policy_names() -> list[str]:
    return list(POLICIES)


# Which config field each command-line option sets, for precedence and for error messages.
_SIM_OPTIONS = {
    "workload": "--workload", "trace": "--trace", "trace_format": "--trace-format",
    "requests": "--requests", "seed": "--seed", "allocator": "--allocator",
    "policy": "--policy", "capacity_blocks": "--capacity-blocks",
    "block_tokens": "--block-tokens", "model": "--model", "bytes_per_token": "--bytes-per-token",
    "batch_receipts": "--batch-receipts", "snapshot_every": "--snapshot-every",
    "output": "--output", "http_sink": "--http-sink", "hmac_key_file": "--hmac-key-file",
    "skip_bad_lines": "--skip-bad-lines", "decode_ms_per_token": "--decode-ms-per-token",
    "prefill_ms_per_token": "--prefill-ms-per-token", "layout": "--layout",
    "strict_time": "--strict-time",
}  # fmt: skip

REJECTION_REASONS = {
    "too_large": "larger than the whole cache",
    "all_pinned": "all blocks pinned",
    "no_contiguous_space": "no contiguous space",
}
"""How the summary says each reason of ``requests.rejected_by_reason``."""


def _merge(
    loaded: LoadedConfig, cli: dict[str, Any], capacity_mb: float | None, receipts: bool | None
) -> tuple[LoadedConfig, list[str]]:
    """Apply command-line values over the file's; work out ``enable_receipts``."""
    notes = []
    caching = loaded.caching
    if capacity_mb is not None:
        check_capacity_mb("--capacity-mb", capacity_mb)
        caching = dataclasses.replace(caching, kv_cache_size_mb=capacity_mb)
    # Precedence: --receipts/--no-receipts, then the file's enable_receipts, then "on".
    if receipts is not None:
        wanted, source = receipts, "--receipts"
    elif "enable_receipts" in loaded.caching_keys:
        wanted, source = caching.enable_receipts, f"enable_receipts in {loaded.path}"
    else:
        wanted, source = True, ""
    if wanted and not features.enabled("receipts"):
        if source:
            features.require("receipts", f"receipts (asked for by {source})")
        wanted = False
        notes.append(
            "receipts: off - the 'receipts' feature is off in this process "
            f"(features: {features.describe()})"
        )
    caching = dataclasses.replace(caching, enable_receipts=wanted)
    for key, value in cli.items():
        if value is not None and key in _SIM_OPTIONS:
            loaded.simulation = dataclasses.replace(loaded.simulation, **{key: value})
    loaded.caching = caching
    return loaded, notes


def _plan(loaded: LoadedConfig, given: set[str]) -> Plan:
    from kvreceipts.simulation import plan_simulation

    sim = loaded.simulation
    if "trace" in given and "workload" in given:
        raise UsageError("give --workload or --trace, not both")
    if sim.capacity_blocks and sim.allocator == "arena":
        raise UsageError("--capacity-blocks is for the paged allocator; use --capacity-mb")
    try:
        return plan_simulation(loaded.caching, sim)
    except UsageError as exc:
        if exc.key not in given:
            raise
        option = _SIM_OPTIONS[exc.key]
        message = str(exc).replace(f"[simulation] {exc.key} =", option)
        raise UsageError(message.replace(f"[simulation] {exc.key}", option)) from None


def _sinks(
    plan: Plan, out: Output, fmt: ReceiptFormat, limit: int, *, append: bool
) -> tuple[list[BaseSink], threading.Event | None]:
    """The run's sinks, and the event that says stdout's reader has gone."""
    from kvreceipts.commands.receipt_sinks import StdoutSink, TableSink
    from kvreceipts.sinks import JsonlSink, TracingSink

    sim = plan.simulation
    sinks: list[BaseSink] = []
    stop = None
    if fmt is ReceiptFormat.jsonl:
        stdout_sink = StdoutSink(out)
        stop = stdout_sink.stop
        sinks.append(stdout_sink)
    elif fmt is ReceiptFormat.table:
        sinks.append(TableSink(limit))
    if sim.output:
        try:
            file_sink = JsonlSink(sim.output, flush="batch", append=append)
        except OSError as exc:
            raise InputError(f"cannot write the receipts file: {exc.strerror}",
                             path=sim.output) from None  # fmt: skip
        file_sink.name = f"file {sim.output}"
        sinks.append(file_sink)
    if sim.http_sink:
        from kvreceipts.sinks import HttpSink

        sinks.append(HttpSink(sim.http_sink))
    if sim.tracing:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        tracing = TracingSink()
        tracing.logger.addHandler(handler)
        tracing.logger.setLevel(logging.INFO)
        sinks.append(tracing)
    return sinks, stop


def _receipt_table(kept: list[Receipt], total: int, paged: bool) -> Table:
    from rich import box
    from rich.table import Table

    table = Table(title="KV eviction receipts", title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False)  # fmt: skip
    table.add_column("seq", justify="right", no_wrap=True)
    table.add_column("reason", no_wrap=True)
    table.add_column("session", overflow="fold", min_width=8)
    table.add_column("trigger", overflow="fold", min_width=8)
    # Paged entries are blocks: their count sits at capacity, so the column would say nothing.
    columns = ("block hash", "size", "used") if paged else ("offset", "size", "used", "entries")
    for name in columns:
        table.add_column(name, justify="right", no_wrap=True)
    from kvreceipts.receipts import as_receipt

    for record in kept:
        table.add_row(*_receipt_row(as_receipt(record), paged))
    more = total - len(kept)
    if more > 0:
        table.caption = f"… {more:,} more (--limit N shows more; --format jsonl prints all)"
    elif not total:
        table.caption = "no receipts: nothing was evicted"
    return table


def _receipt_row(record: Any, paged: bool) -> list[str]:
    kind = record.kind
    if kind == "eviction":
        where = str(record.block_hash) if paged else human_bytes(record.block_offset)
        return [
            str(record.seq), str(record.reason), record.session_id,
            record.trigger_session_id or "-", where, human_bytes(record.block_size_bytes),
            human_bytes(record.after.used_bytes), f"{record.after.total_sessions:,}",
        ][: 7 if paged else 8]  # fmt: skip
    if kind == "eviction_batch":
        row = [
            str(record.seq),
            "round",
            f"{record.count} evicted",
            "",
            "",
            human_bytes(record.total_bytes_freed),
            human_bytes(record.pool_used_after),
            "",
        ]
    elif kind == "snapshot":
        row = [
            str(record.seq),
            "snapshot",
            f"as of seq {record.as_of_seq if record.as_of_seq is not None else '-'}",
            "",
            "",
            "",
            human_bytes(record.pool_used),
            f"{record.active_sessions:,}",
        ]
    else:
        row = [str(record.seq), kind, "", "", "", "", "", ""]
    return row[: 7 if paged else 8]


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
    }


def simulate(
    workload: Annotated[
        Workload | None,
        typer.Option(help="Built-in synthetic workload.", show_default="chat"),
    ] = None,
    trace: Annotated[
        Path | None,
        typer.Option(
            help="Replay a trace file (Mooncake JSONL or Azure 2023 CSV) instead.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    trace_format: Annotated[
        TraceFormat | None,
        typer.Option(help="Trace format.", show_default="auto, from the first line"),
    ] = None,
    requests: Annotated[
        int | None,
        typer.Option(
            help="Requests to run (at least 1; leave it out for the default).",
            min=1,
            show_default="2000 synthetic, the whole trace",
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Seed of the synthetic workload.", show_default="0"),
    ] = None,
    config: ConfigOption = None,
    allocator: Annotated[
        Allocator | None,
        typer.Option(
            help="arena (sessions), paged (prefix blocks), auto: paged for Mooncake traces.",
            show_default=False,
        ),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option(
            help="Eviction policy: lru, fifo, lfu, s3fifo.",
            autocompletion=_policy_names,
            show_default="lru",
        ),
    ] = None,
    capacity_mb: Annotated[
        float | None, typer.Option(help="KV cache size in MiB.", show_default="512")
    ] = None,
    capacity_blocks: Annotated[
        int | None,
        typer.Option(
            help="Paged cache size in blocks.",
            min=1,
            show_default="from --capacity-mb",
        ),
    ] = None,
    block_tokens: Annotated[
        int | None,
        typer.Option(help="Tokens per paged block.", min=1, show_default="512"),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Size KV from a model: llama-3-8b, llama-3-70b, qwen2.5-7b, bitnet-b1.58-2b4t, "
            "llama-2-7b.",
            show_default="the upstream bitnet rule",
        ),
    ] = None,
    bytes_per_token: Annotated[
        int | None, typer.Option(help="KV bytes per token, explicitly.", min=1, show_default=False)
    ] = None,
    receipts: Annotated[
        bool | None,
        typer.Option(
            "--receipts/--no-receipts",
            help="Emit receipts.",
            show_default="the config's enable_receipts, else on",
        ),
    ] = None,
    features_: Annotated[
        str | None,
        typer.Option(
            "--features",
            help="Features for this run, e.g. receipts,tuning or ''.",
            show_default="KVRECEIPTS_FEATURES, else all",
        ),
    ] = None,
    batch_receipts: Annotated[
        bool | None,
        typer.Option(
            "--batch-receipts/--no-batch-receipts",
            help="Also emit one eviction_batch receipt per eviction round.",
            show_default=False,
        ),
    ] = None,
    snapshot_every: Annotated[
        int | None,
        typer.Option(help="Emit a snapshot receipt every N requests.", min=0, show_default=False),
    ] = None,
    fmt: Annotated[
        ReceiptFormat | None,
        typer.Option(
            "--format",
            "-f",
            help="table, jsonl (receipts only on stdout) or json (one summary).",
            show_default="table on a terminal, jsonl otherwise",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Also write the receipts to this JSONL file.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    http_sink: Annotated[
        str | None,
        typer.Option(
            help="Also POST receipts (JSON lines, batched) to this URL.", show_default=False
        ),
    ] = None,
    append: Annotated[
        bool,
        typer.Option(
            "--append",
            help="-o FILE exists: add this run after the runs in it.",
            show_default=False,
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="-o FILE exists: replace it.", show_default=False),
    ] = False,
    layout: Annotated[
        Layout | None,
        typer.Option(
            help="Eviction receipt layout: lean (the config once, in the open record) "
            "or upstream (its full payload in every receipt).",
            show_default="lean",
        ),
    ] = None,
    allow_sink_loss: Annotated[
        bool,
        typer.Option(
            "--allow-sink-loss",
            help="Exit 0 even if a sink dropped or failed to deliver receipts.",
            show_default=False,
        ),
    ] = False,
    limit: Annotated[int, typer.Option(help="Receipts shown in the table.", min=0)] = 20,
    hmac_key_file: HmacKeyOption = None,
    skip_bad_lines: Annotated[
        bool | None,
        typer.Option(
            "--skip-bad-lines",
            help="Skip malformed trace lines (and report how many).",
            show_default=False,
        ),
    ] = None,
    decode_ms_per_token: Annotated[
        float | None,
        typer.Option(
            help="Decode time per output token; above 0 requests hold their KV until done.",
            show_default=False,
        ),
    ] = None,
    prefill_ms_per_token: Annotated[
        float | None,
        typer.Option(help="Prefill time per uncached input token.", show_default="0.05"),
    ] = None,
    strict_time: Annotated[
        bool | None,
        typer.Option(
            "--strict-time",
            help="A trace timestamp that goes backwards is an error "
            "(default: counted and reported, rows served in file order).",
            show_default=False,
        ),
    ] = None,
    quiet: QuietOption = False,
) -> None:
    """Run a workload against the KV cache manager and print one receipt per eviction.

    With no options it replays the built-in, seeded chat workload on the arena allocator.
    """
    with features.overridden(features_):
        cli = {
            "workload": workload.value if workload else None,
            "trace": str(trace) if trace else None,
            "trace_format": trace_format.value if trace_format else None,
            "requests": requests, "seed": seed,
            "allocator": allocator.value if allocator else None,
            "policy": policy, "capacity_blocks": capacity_blocks, "block_tokens": block_tokens,
            "model": model.lower() if model else None, "bytes_per_token": bytes_per_token,
            "batch_receipts": batch_receipts, "snapshot_every": snapshot_every,
            "output": str(output) if output else None, "http_sink": http_sink,
            "hmac_key_file": str(hmac_key_file) if hmac_key_file else None,
            "skip_bad_lines": skip_bad_lines, "decode_ms_per_token": decode_ms_per_token,
            "prefill_ms_per_token": prefill_ms_per_token, "strict_time": strict_time,
            "layout": layout.value if layout else None,
        }  # fmt: skip
        given = {key for key, value in cli.items() if value is not None}
        loaded = load_config(config) if config else LoadedConfig()
        loaded, notes = _merge(loaded, cli, capacity_mb, receipts)
        plan = _plan(loaded, given)
        chosen = fmt or (
            ReceiptFormat.table if Output().stdout_is_terminal else ReceiptFormat.jsonl
        )
        out = Output(json_mode=chosen is ReceiptFormat.json, quiet=quiet)
        for note in notes:
            out.note(note)
        _check_output(plan, append=append, force=force)
        lost = _run(plan, out, chosen, limit, append=append)
        if lost and not allow_sink_loss:
            raise typer.Exit(1)


def _check_output(plan: Plan, *, append: bool, force: bool) -> None:
    """``-o`` never overwrites by accident, and never goes silently unwritten."""
    output = plan.simulation.output
    if append and force:
        raise UsageError("--append and --force contradict each other; give one")
    if not output:
        if append or force:
            raise UsageError("--append and --force are for -o FILE")
        return
    if not plan.caching.enable_receipts:
        raise UsageError(f"-o {output}: receipts are off in this run (--no-receipts, "
                         "enable_receipts = false, or the 'receipts' feature), so there is "
                         "nothing to write")  # fmt: skip
    path = Path(output)
    if path.exists() and path.is_file() and not (append or force):
        raise UsageError(f"-o {output}: the file exists; --append adds this run after the "
                         "runs in it, --force replaces it")  # fmt: skip


def _run(plan: Plan, out: Output, fmt: ReceiptFormat, limit: int, *, append: bool) -> int:
    """Run the plan and report it; returns how many sinks lost receipts."""
    with _tracing_restored():
        return _run_traced(plan, out, fmt, limit, append=append)


@contextmanager
def _tracing_restored() -> Iterator[None]:
    """The receipts logger as it was: ``tracing = true`` adds a stderr handler and sets INFO
    for one run only (a second run in the same process would otherwise log twice).
    """
    logger = logging.getLogger("kvreceipts.kv.receipts")
    handlers, level = list(logger.handlers), logger.level
    try:
        yield
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)


def _run_traced(plan: Plan, out: Output, fmt: ReceiptFormat, limit: int, *, append: bool) -> int:
    from kvreceipts.simulation import build_manager, run_simulation

    sim = plan.simulation
    sinks: list[BaseSink] = []
    sink = stop = key = None
    if plan.caching.enable_receipts:
        from kvreceipts.chain import read_hmac_key
        from kvreceipts.sinks import FanoutSink

        key = read_hmac_key(sim.hmac_key_file) if sim.hmac_key_file else None
        sinks, stop = _sinks(plan, out, fmt, limit, append=append)
        sink = FanoutSink(sinks)
    manager = build_manager(plan, sink=sink, hmac_key=key)
    with _progress(out, plan) as progress:
        result = run_simulation(
            manager,
            plan.requests(),
            prefill_ms_per_token=sim.prefill_ms_per_token,
            decode_ms_per_token=sim.decode_ms_per_token,
            trace_stats=plan.trace_stats,
            progress=progress,
            stop=stop,
        )
    manager.shutdown()
    result.last_digest = manager.last_digest  # the close record's: the run's anchor
    _report(plan, out, fmt, result, sinks)
    return _report_losses(out, sinks)


def _report_losses(out: Output, sinks: list[BaseSink]) -> int:
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
def _progress(out: Output, plan: Plan) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr, only when stderr is a terminal and not --quiet."""
    if out.quiet or not out.err.is_terminal:
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


def _report(
    plan: Plan, out: Output, fmt: ReceiptFormat, result: RunResult, sinks: list[BaseSink]
) -> None:
    shown = [s for s in sinks if s.name != "table"]
    for line in result.skip_errors:
        out.warn(f"skipped {line}")
    if result.skipped_lines > len(result.skip_errors):
        out.warn(f"… {result.skipped_lines - len(result.skip_errors):,} more bad lines skipped")
    for note in _trace_notes(plan):
        out.note(note)
    if fmt is ReceiptFormat.json:
        out.json(_summary_document(plan, result, shown))
        return
    panel = _summary_panel(plan, result, shown)
    # The chain head in full, on a line of its own: a panel would cut it at 80 columns.
    head = f"chain head  {result.last_digest}" if plan.caching.enable_receipts else None
    if fmt is ReceiptFormat.table:
        table = next((s for s in sinks if s.name == "table"), None)
        kept = getattr(table, "kept", [])
        if plan.caching.enable_receipts:
            out.show(_receipt_table(kept, result.receipts, plan.allocator == "paged"))
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
    return notes
