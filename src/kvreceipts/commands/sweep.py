"""``kvreceipts sweep``: hit and miss ratios over a policy by capacity grid (no receipts)."""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
import time
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kvreceipts.commands.options import BlockTokensOption, PinOption, QuietOption
from kvreceipts.commands.output import Output
from kvreceipts.commands.simulate import Allocator, TraceFormat, Workload
from kvreceipts.commands.sweep_options import (
    DEFAULT_POINTS,
    check_outputs,
    check_sizing,
    parse_capacities,
    parse_policies,
    parse_sizes,
    parse_targets,
    size_capacities,
    tier_grid,
)
from kvreceipts.commands.sweep_summary import rerun_hint, summary, trace_dict
from kvreceipts.errors import UsageError, open_file
from kvreceipts.numbers import check_number

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from kvreceipts.sweep.grid import SweepSpec, Task, TraceFacts
    from kvreceipts.sweep.sources import Source

__all__ = ["sweep"]

EXAMPLES = """
[bold]Examples[/bold]

  kvreceipts sweep --trace mooncake.jsonl --capacity-blocks 1827,9139,18279
  kvreceipts sweep --trace mooncake.jsonl --no-pin --points 40 --plot curves.png
  kvreceipts sweep --trace mooncake.jsonl --policy lru --no-pin --method shards --sample-rate 0.05
  kvreceipts sweep --trace mooncake.jsonl --format csv > grid.csv
  kvreceipts sweep --trace /data/mooncake.jsonl --dask tcp://scheduler:8786 --html report.html
"""

DEFAULT_SAMPLE_RATE = 0.01
DEFAULT_PREFILL_TOKENS_PER_S = 10_000.0
"""Prompt tokens a second: the order of an 8B model's prefill on one H100-class GPU."""


class SweepFormat(StrEnum):
    """How ``sweep`` prints its rows."""

    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


class Method(StrEnum):
    """How each grid point is computed."""

    simulate = "simulate"
    exact = "exact"
    shards = "shards"


def sweep(  # noqa: PLR0912, PLR0915 - one check per option, each one line of error
    trace: Annotated[
        list[str] | None,
        typer.Option(
            metavar="PATH",
            help="A trace to sweep (Mooncake JSONL or Azure CSV; a path or an fsspec "
            "URL); repeat for several.",
            show_default=False,
        ),
    ] = None,
    workload: Annotated[
        Workload | None,
        typer.Option(help="A built-in synthetic workload instead.", show_default=False),
    ] = None,
    trace_format: Annotated[TraceFormat, typer.Option(help="Trace format.")] = TraceFormat.auto,
    requests: Annotated[
        int, typer.Option(help="Requests to use (0: the whole trace, or 2000 synthetic).", min=0)
    ] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic workload.")] = 0,
    max_memory: Annotated[
        str,
        typer.Option(
            metavar="SIZE",
            help="The most memory a sweep may take for a trace it holds (e.g. 2GB): reading "
            "stops with an error, naming the line, once the requests would pass it.",
        ),
    ] = "150MB",
    policy: Annotated[
        str | None,
        typer.Option(
            help="Policies, comma-separated: lru,fifo,lfu,s3fifo.", show_default="all four"
        ),
    ] = None,
    capacity: Annotated[
        str | None,
        typer.Option(
            help="Capacities as sizes, comma-separated: 64GiB,128GiB,1.5TiB (B, KiB, MiB, "
            "GiB, TiB, kB, MB, GB, TB). Paged: needs --model or --bytes-per-token, rounded "
            "down to whole blocks.",
            show_default=False,
        ),
    ] = None,
    capacity_blocks: Annotated[
        str | None,
        typer.Option(help="Paged capacities in blocks, comma-separated.", show_default=False),
    ] = None,
    capacity_mb: Annotated[
        str | None,
        typer.Option(help="Arena capacities in MiB, comma-separated.", show_default=False),
    ] = None,
    points: Annotated[
        int | None,
        typer.Option(
            help="Log-spaced capacities from one block (or entry) to the trace's "
            "distinct blocks (or sessions).",
            min=1,
            show_default=f"{DEFAULT_POINTS} unless capacities are given",
        ),
    ] = None,
    allocator: Annotated[
        Allocator,
        typer.Option(help="arena, paged, auto: paged for Mooncake traces and watch recordings."),
    ] = Allocator.auto,
    block_tokens: BlockTokensOption = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Size KV from a model (the GiB axis): llama-3-8b, llama-3-70b, "
            "qwen2.5-7b, bitnet-b1.58-2b4t, llama-2-7b.",
            show_default="the upstream bitnet rule",
        ),
    ] = None,
    bytes_per_token: Annotated[
        int, typer.Option(help="KV bytes per token, explicitly.", min=0, show_default=False)
    ] = 0,
    pin: PinOption = None,
    tier: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME=SIZE[,bw=RATE]",
            help="A memory tier, fastest first; repeat: --tier hbm=80GiB --tier "
            "dram=512GiB,bw=50GB/s. Exclusive: a block evicted from one tier moves to the "
            "next. One tier's size may be a range (dram=64GiB..1TiB) swept over --points.",
            show_default=False,
        ),
    ] = None,
    prefill_tokens_per_s: Annotated[
        float,
        typer.Option(
            help="Prefill speed, to turn saved prompt tokens into seconds next to the tiers' "
            "reload time.",
        ),
    ] = DEFAULT_PREFILL_TOKENS_PER_S,
    target_hit_rate: Annotated[
        str | None,
        typer.Option(
            help="Hit-ratio targets in (0, 1], comma-separated: for each policy the smallest "
            "capacity reaching each (exact for LRU with --no-pin, else a search by simulation).",
            show_default=False,
        ),
    ] = None,
    target_token_hit_rate: Annotated[
        str | None,
        typer.Option(
            help="Targets of the prefix token hit ratio (prefill tokens saved), as "
            "--target-hit-rate.",
            show_default=False,
        ),
    ] = None,
    method: Annotated[
        Method | None,
        typer.Option(
            help="simulate (a replay per point), exact (LRU stack distances, every "
            "capacity in one pass), shards (sampled).",
            show_default="exact for LRU with --no-pin, else simulate",
        ),
    ] = None,
    sample_rate: Annotated[
        float, typer.Option(help="SHARDS sampling rate R, in (0, 1].")
    ] = DEFAULT_SAMPLE_RATE,
    sample_max_blocks: Annotated[
        int,
        typer.Option(
            help="Fixed-size SHARDS: sample at most this many distinct blocks (the rate drops "
            "as needed), so memory stays bounded whatever the trace; 0: the rate alone.",
            min=0,
        ),
    ] = 0,
    shards_adj: Annotated[
        bool,
        typer.Option(
            "--shards-adj",
            help="SHARDS: count the sample's shortfall as hits at the smallest distance "
            "(SHARDS-adj, FAST'15 §3.3) instead of dividing by the sample's weight.",
        ),
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Worker processes for the grid points.", min=1, show_default="the CPU count"
        ),
    ] = None,
    dask: Annotated[
        str | None,
        typer.Option(
            help="Send grid points to this Dask scheduler (tcp://host:8786); its "
            "workers read the trace from the same path or URL.",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        SweepFormat | None,
        typer.Option(
            "--format",
            "-f",
            help="table, json (one document), jsonl or csv.",
            show_default="table on a terminal, jsonl otherwise",
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Write the miss-ratio curves to FILE.png or FILE.svg (needs kvreceipts\\[plot]).",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    html_file: Annotated[
        Path | None,
        typer.Option(
            "--html",
            help="Write a self-contained HTML report (needs kvreceipts\\[plot]).",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    quiet: QuietOption = False,
) -> None:
    """Sweep policies and capacities over a trace: hits, misses and miss-ratio curves.

    Never writes receipts; the summary shows how to re-run one point with them.
    """
    from kvreceipts.sweep import grid

    if not 0 < sample_rate <= 1:
        raise UsageError(f"--sample-rate must be in (0, 1] (got {sample_rate:g})")
    policies = parse_policies(policy)
    given = [(name, text) for name, text in (("--capacity", capacity),
             ("--capacity-blocks", capacity_blocks), ("--capacity-mb", capacity_mb))
             if text is not None]  # fmt: skip
    if len(given) > 1:
        raise UsageError(f"give one of --capacity, --capacity-blocks or --capacity-mb, not "
                         f"{' and '.join(name for name, _ in given)}")  # fmt: skip
    if given and points is not None:
        raise UsageError("give capacities or --points, not both")
    explicit = None
    sizes: list[int] | None = None
    if capacity is not None:
        sizes = parse_sizes(capacity)
    elif capacity_blocks is not None:
        explicit = parse_capacities(capacity_blocks, "--capacity-blocks", integral=True)
    elif capacity_mb is not None:
        explicit = parse_capacities(capacity_mb, "--capacity-mb", integral=False)
    targets = parse_targets(target_hit_rate, "--target-hit-rate", "hit_ratio")
    targets += parse_targets(target_token_hit_rate, "--target-token-hit-rate", "token_hit_ratio")
    check_outputs(plot, html_file)
    if trace and workload is not None:
        raise UsageError("give --workload or --trace, not both")
    check_sizing(model, bytes_per_token)
    from kvreceipts.sweep.sources import BASE_BYTES
    from kvreceipts.units import parse_size

    memory = parse_size(max_memory, "--max-memory")
    if memory <= BASE_BYTES:
        before = BASE_BYTES // 1_000_000
        raise UsageError(f"--max-memory: {max_memory} leaves nothing for the trace: a "
                         f"sweep takes about {before}MB before it reads one")  # fmt: skip
    sources = _sources(trace, workload, trace_format, requests, seed, block_tokens, memory)
    block_tokens = sources[0].block_tokens
    chosen_allocator = _allocator(allocator, sources)
    from kvreceipts.simulation import check_block_tokens

    for source in sources:
        check_block_tokens(source.trace_format, chosen_allocator, block_tokens)
    if chosen_allocator == "paged" and capacity_mb is not None:
        raise UsageError("--capacity-mb is for the arena allocator; use --capacity (a size, "
                         "e.g. 64GiB, with --model) or --capacity-blocks")  # fmt: skip
    if chosen_allocator == "arena" and capacity_blocks is not None:
        raise UsageError("--capacity-blocks is for the paged allocator; use --capacity or "
                         "--capacity-mb")  # fmt: skip
    if targets and chosen_allocator != "paged":
        raise UsageError("--target-hit-rate needs the paged allocator (block lookups)")
    pinned = pin if pin is not None else method not in (Method.exact, Method.shards)
    spec = grid.SweepSpec(chosen_allocator, (model or "").lower(), bytes_per_token,
                          block_tokens, pinned)  # fmt: skip
    notes: list[str] = []
    if sizes is not None:
        explicit = size_capacities(sizes, capacity or "", spec, notes)
    tier_sizes: list[tuple[int, ...]] = []
    if tier:
        if given or targets or method is Method.shards:
            raise UsageError("--tier sets the capacities: give it without --capacity*, "
                             "--target-* and --method shards")  # fmt: skip
        spec, tier_sizes = _with_tiers(spec, tier, points, prefill_tokens_per_s, notes)
        explicit = [float(sum(sizes_)) for sizes_ in tier_sizes]
        points = None
    out = Output(json_mode=fmt is SweepFormat.json, quiet=quiet)
    chosen = fmt or (SweepFormat.table if out.stdout_is_terminal else SweepFormat.jsonl)
    started = time.perf_counter()
    facts = [grid.source_facts(source, spec) for source in sources]
    capacities = [_grid_capacities(f, spec, explicit, points) for f in facts]
    per_source = [tier_sizes] * len(sources) if tier_sizes else []
    tasks = grid.build_tasks(sources, capacities, spec, policies,
                             method=method.value if method else None, sample_rate=sample_rate,
                             targets=targets, tier_sizes=per_source,
                             sample_max_blocks=sample_max_blocks,
                             shards_adj=shards_adj)  # fmt: skip
    notes.extend(f"note ({fact.name}): {caveat}" for fact in facts for caveat in fact.caveats)
    for note in notes:
        out.note(note)
    _run(out, chosen, tasks, facts, workers, dask, plot, html_file, started)


def _with_tiers(
    spec: SweepSpec, texts: list[str], points: int | None, rate: float, notes: list[str]
) -> tuple[SweepSpec, list[tuple[int, ...]]]:
    check_number("--prefill-tokens-per-s", rate, above=0)
    parsed, sizes = tier_grid(texts, spec, points, notes)
    return dataclasses.replace(spec, tiers=tuple(parsed), prefill_tokens_per_s=rate), sizes


def _sources(
    traces: list[str] | None,
    workload: Workload | None,
    trace_format: TraceFormat,
    requests: int,
    seed: int,
    block_tokens: int | None,
    max_memory: int,
) -> list[Source]:
    """The sources, with one block size for all: the one given, a recording's own, or 512."""
    from kvreceipts.config import DEFAULT_BLOCK_TOKENS
    from kvreceipts.sweep.sources import Source, local_path

    if not traces:
        block_tokens = block_tokens or DEFAULT_BLOCK_TOKENS
        name = workload.value if workload is not None else Workload.chat.value
        return [Source(workload=name, requests=requests, seed=seed, block_tokens=block_tokens)]
    sources = []
    for given in traces:
        trace = given
        if "://" not in given:
            open_file(given, "trace file").close()  # missing, a directory, unreadable: one line
            # Absolute: a Dask worker (or a process in another folder) reads the same file.
            trace = str(Path(given).resolve())
        fmt = trace_format.value
        if fmt == "auto":
            from kvreceipts.workloads import detect_format

            fmt = detect_format(local_path(trace))  # a URL is fetched here once
        if fmt == "kvrec":
            from kvreceipts.simulation import recording_block_size

            block_tokens = recording_block_size(local_path(trace), block_tokens)
        sources.append(Source(trace=trace, trace_format=fmt, requests=requests,
                              max_memory=max_memory))  # fmt: skip
    chosen = block_tokens or DEFAULT_BLOCK_TOKENS
    sources = [dataclasses.replace(s, block_tokens=chosen) for s in sources]
    labels = [s.label for s in sources]
    if len(set(labels)) != len(labels):
        raise UsageError("two --trace files have the same name; rows name traces by file name")
    return sources


def _allocator(allocator: Allocator, sources: list[Source]) -> str:
    if allocator is not Allocator.auto:
        return allocator.value
    paged = [s.trace_format in ("mooncake", "kvrec") for s in sources]
    if all(paged):
        return "paged"
    if any(paged):
        raise UsageError("these traces need different allocators; pass --allocator")
    return "arena"


def _grid_capacities(
    facts: TraceFacts, spec: SweepSpec, explicit: list[float] | None, points: int | None
) -> list[float]:
    from kvreceipts.config import MIB
    from kvreceipts.sweep.grid import log_capacities

    if explicit is not None:
        return explicit
    count = points or DEFAULT_POINTS
    if spec.allocator == "paged":
        if not facts.unique_blocks:
            raise UsageError(f"{facts.path}: no block lookups to sweep")
        return log_capacities(1, facts.unique_blocks, count, integral=True)
    low = max(facts.mean_entry_bytes / MIB, 0.001)
    return log_capacities(low, max(low, facts.unique_entry_bytes / MIB), count, integral=False)


@contextmanager
def _progress_bar(out: Output, total: int) -> Iterator[Callable[[int], None] | None]:
    """One bar for the whole grid on stderr, only on a terminal and not --quiet."""
    if not out.shows_progress:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=out.err, transient=True) as bar:  # fmt: skip
        task = bar.add_task("sweeping grid points", total=total)
        yield lambda done: bar.advance(task, done)


def _run(
    out: Output,
    fmt: SweepFormat,
    tasks: list[Task],
    facts: list[TraceFacts],
    workers: int | None,
    dask: str | None,
    plot: Path | None,
    html_file: Path | None,
    started: float,
) -> None:
    from kvreceipts.sweep import report
    from kvreceipts.sweep.executors import run_tasks

    total = sum(t.points or 1 for t in tasks)
    results = run_tasks(
        tasks,
        workers=workers or os.cpu_count() or 1,
        dask=dask,
        progress=lambda: _progress_bar(out, total),
    )
    rows = report.build_rows(tasks, results, facts)
    answers = report.build_answers(tasks, results, facts)
    paged = tasks[0].spec.allocator == "paged"
    keys = report.row_keys(
        tasks[0].spec.allocator, sized=facts[0].sized, tiers=bool(tasks[0].spec.tiers)
    )
    if plot is not None:
        _write(plot, "--plot", report.render_plot(rows, facts, plot.suffix.lower().lstrip("."),
                                                  answers=answers))  # fmt: skip
    if html_file is not None:
        command = shlex.join(["kvreceipts", *sys.argv[1:]])
        page = report.render_html(
            rows, facts, command, answers=answers, pinned=tasks[0].spec.pin if paged else None
        )
        _write(html_file, "--html", page.encode())
    if fmt is SweepFormat.json:
        trace_dicts = [trace_dict(f, paged=paged) for f in facts]
        document: dict[str, Any] = {"rows": rows, "trace": trace_dicts[0]}
        if len(facts) > 1:
            document["traces"] = trace_dicts
        if paged:
            document["ceiling"] = trace_dicts[0]["ceiling"]
        if answers:
            document["targets"] = answers
        document["duration_s"] = facts[0].span_s
        out.json(document)
    elif fmt is SweepFormat.jsonl:
        out.write(report.render_jsonl(rows))
        out.flush()
    elif fmt is SweepFormat.csv:
        out.write(report.render_csv(rows, keys))
        out.flush()
    else:
        out.show(*report.tables(rows, facts))
    total = sum(t.points for t in tasks)
    summary(out, tasks, facts, rows, answers, total, time.perf_counter() - started)
    for path in (plot, html_file):
        if path is not None:
            out.note(f"wrote {path}")
    out.note(rerun_hint(tasks, rows, answers))


def _write(path: Path, option: str, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:  # checked before the sweep; this is a race, still one line
        raise UsageError(f"{option}: cannot write {path}: {exc.strerror}") from None
