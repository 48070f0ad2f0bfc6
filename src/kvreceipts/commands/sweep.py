"""``kvreceipts sweep``: hit and miss ratios over a policy by capacity grid (no receipts)."""

from __future__ import annotations

import os
import shlex
import sys
import time
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kvreceipts.commands.options import PinOption, QuietOption
from kvreceipts.commands.output import Output
from kvreceipts.commands.simulate import Allocator, TraceFormat, Workload
from kvreceipts.config import check_capacity_mb
from kvreceipts.errors import UsageError, open_file
from kvreceipts.numbers import MAX_BLOCKS, check_number
from kvreceipts.policies import POLICIES

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from kvreceipts.sweep.grid import Source, SweepSpec, Task, TraceFacts

__all__ = ["sweep"]

EXAMPLES = """
[bold]Examples[/bold]

  kvreceipts sweep --trace mooncake.jsonl --capacity-blocks 1827,9139,18279
  kvreceipts sweep --trace mooncake.jsonl --no-pin --points 40 --plot curves.png
  kvreceipts sweep --trace mooncake.jsonl --policy lru --no-pin --method shards --sample-rate 0.05
  kvreceipts sweep --trace mooncake.jsonl --format csv > grid.csv
  kvreceipts sweep --trace /data/mooncake.jsonl --dask tcp://scheduler:8786 --html report.html
"""

DEFAULT_POINTS = 20
DEFAULT_SAMPLE_RATE = 0.01


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


def _policies(text: str | None) -> list[str]:
    if text is None:
        return list(POLICIES)
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if not names:
        raise UsageError("--policy lists no policy")
    for name in names:
        if name not in POLICIES:
            choices = ", ".join(POLICIES)
            raise UsageError(f"--policy: unknown policy {name!r} (choose from: {choices})")
    return list(dict.fromkeys(names))


def _capacities(text: str, option: str, *, integral: bool) -> list[float]:
    values: list[float] = []
    for raw in text.split(","):
        item = raw.strip().replace("_", "")
        if not item:
            continue
        try:
            value = float(int(item)) if integral else float(item)
        except ValueError:
            kind = "a whole number of blocks" if integral else "a number of MiB"
            raise UsageError(f"{option}: {item!r} is not {kind}") from None
        if integral:
            check_number(f"{option}: capacities", value, above=0, high=MAX_BLOCKS)
        else:
            check_capacity_mb(f"{option}: capacities", value)
        values.append(value)
    if not values:
        raise UsageError(f"{option} lists no capacity")
    return sorted(set(values))


def sweep(  # noqa: PLR0912 - one check per option, each one line of error
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
        Allocator, typer.Option(help="arena, paged, auto: paged for Mooncake traces.")
    ] = Allocator.auto,
    block_tokens: Annotated[int, typer.Option(help="Tokens per paged block.", min=1)] = 512,
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
    policies = _policies(policy)
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
        sizes = _sizes(capacity)
    elif capacity_blocks is not None:
        explicit = _capacities(capacity_blocks, "--capacity-blocks", integral=True)
    elif capacity_mb is not None:
        explicit = _capacities(capacity_mb, "--capacity-mb", integral=False)
    targets = _targets(target_hit_rate, "--target-hit-rate", "hit_ratio")
    targets += _targets(target_token_hit_rate, "--target-token-hit-rate", "token_hit_ratio")
    _check_outputs(plot, html_file)
    if trace and workload is not None:
        raise UsageError("give --workload or --trace, not both")
    _check_sizing(model, bytes_per_token)
    sources = _sources(trace, workload, trace_format, requests, seed, block_tokens)
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
        explicit = _size_capacities(sizes, capacity or "", spec, notes)
    out = Output(json_mode=fmt is SweepFormat.json, quiet=quiet)
    chosen = fmt or (SweepFormat.table if out.stdout_is_terminal else SweepFormat.jsonl)
    started = time.perf_counter()
    facts = [grid.source_facts(source, spec) for source in sources]
    capacities = [_grid_capacities(f, spec, explicit, points) for f in facts]
    tasks = grid.build_tasks(sources, capacities, spec, policies,
                             method=method.value if method else None,
                             sample_rate=sample_rate, targets=targets)  # fmt: skip
    for note in notes:
        out.note(note)
    _run(out, chosen, tasks, facts, workers, dask, plot, html_file, started)


def _check_outputs(plot: Path | None, html_file: Path | None) -> None:
    if plot is not None and plot.suffix.lower() not in (".png", ".svg"):
        raise UsageError(f"--plot: {plot} must end in .png or .svg")
    for option, path in (("--plot", plot), ("--html", html_file)):
        if path is not None:
            check_writable(path, option)
    if plot is not None or html_file is not None:
        from kvreceipts.sweep.report import check_plot_available

        check_plot_available()


def _check_sizing(model: str | None, bytes_per_token: int) -> None:
    if bytes_per_token and model:
        raise UsageError("give either --model or --bytes-per-token, not both")
    if model:
        from kvreceipts.sizing import MODEL_PRESETS

        if model.lower() not in MODEL_PRESETS:
            raise UsageError(f"--model: unknown model {model!r} "
                             f"(choose from: {', '.join(MODEL_PRESETS)})")  # fmt: skip


def check_writable(path: Path, option: str) -> None:
    """Refuse, before any work, an output file that cannot be written: its directory is
    missing or not writable, or it is a directory itself.
    """
    parent = path.parent
    if path.is_dir():
        raise UsageError(f"{option}: {path} is a directory, not a file")
    if not parent.is_dir():
        raise UsageError(f"{option}: {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"{option}: {path}: cannot write there (permission denied)")


def _sizes(text: str) -> list[int]:
    from kvreceipts.units import parse_size

    values = [parse_size(raw, "--capacity") for raw in text.split(",") if raw.strip()]
    if not values:
        raise UsageError("--capacity lists no capacity")
    return sorted(set(values))


def _size_capacities(sizes: list[int], text: str, spec: SweepSpec, notes: list[str]) -> list[float]:
    """Sizes as the allocator's capacities: whole blocks (rounded down), or MiB."""
    from kvreceipts.commands.output import human_bytes
    from kvreceipts.config import MIB
    from kvreceipts.sizing import resolve_sizing

    if spec.allocator == "arena":
        values = [size / MIB for size in sizes]
        for value in values:
            check_capacity_mb("--capacity", value)
        return values
    if not (spec.model or spec.bytes_per_token):
        raise UsageError(f"--capacity {text.strip()}: a size needs the KV bytes per token to "
                         "make blocks: give --model or --bytes-per-token (or use "
                         "--capacity-blocks)")  # fmt: skip
    block = resolve_sizing(spec.model, spec.bytes_per_token).block_bytes(spec.block_tokens)
    blocks: list[float] = []
    rounded = []
    for size in sizes:
        count = size // block
        if count <= 0:
            raise UsageError(f"--capacity: {human_bytes(size)} holds no block of "
                             f"{human_bytes(block)} ({block:,} bytes)")  # fmt: skip
        check_number("--capacity: capacities", count, above=0, high=MAX_BLOCKS)
        if count * block != size:
            rounded.append(f"{human_bytes(size)} -> {count:,}")
        blocks.append(float(count))
    note = f"--capacity: blocks of {human_bytes(block)} ({block:,} bytes)"
    if rounded:
        note += "; rounded down to whole blocks: " + ", ".join(rounded)
    notes.append(note)
    return sorted(set(blocks))


def _targets(text: str | None, option: str, metric: str) -> list[tuple[str, float]]:
    if text is None:
        return []
    values: list[tuple[str, float]] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        try:
            value = float(item.removesuffix("%")) / (100 if item.endswith("%") else 1)
        except ValueError:
            raise UsageError(f"{option}: {item!r} is not a number in (0, 1]") from None
        if not 0 < value <= 1:
            raise UsageError(f"{option}: {item} must be in (0, 1] (a ratio: 0.3 for 30%)")
        values.append((metric, value))
    if not values:
        raise UsageError(f"{option} lists no target")
    return list(dict.fromkeys(values))


def _sources(
    traces: list[str] | None,
    workload: Workload | None,
    trace_format: TraceFormat,
    requests: int,
    seed: int,
    block_tokens: int,
) -> list[Source]:
    from kvreceipts.sweep.grid import Source

    if not traces:
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
            from kvreceipts.sweep.grid import local_path
            from kvreceipts.workloads import detect_format

            fmt = detect_format(local_path(trace))  # a URL is fetched here once
        sources.append(Source(trace=trace, trace_format=fmt, requests=requests,
                              block_tokens=block_tokens))  # fmt: skip
    labels = [s.label for s in sources]
    if len(set(labels)) != len(labels):
        raise UsageError("two --trace files have the same name; rows name traces by file name")
    return sources


def _allocator(allocator: Allocator, sources: list[Source]) -> str:
    if allocator is not Allocator.auto:
        return allocator.value
    mooncake = [s.trace_format == "mooncake" for s in sources]
    if all(mooncake):
        return "paged"
    if any(mooncake):
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
    keys = report.row_keys(tasks[0].spec.allocator, sized=facts[0].sized)
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
        trace_dicts = [_trace_dict(f, paged=paged) for f in facts]
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
    _summary(out, tasks, facts, answers, total, time.perf_counter() - started)
    for path in (plot, html_file):
        if path is not None:
            out.note(f"wrote {path}")
    out.note(_rerun_hint(tasks, rows, answers))


def _trace_dict(fact: TraceFacts, *, paged: bool) -> dict[str, Any]:
    from kvreceipts.sweep.report import ceiling

    found = fact.to_dict()
    if paged:
        found["ceiling"] = ceiling(fact)
    return found


def _write(path: Path, option: str, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:  # checked before the sweep; this is a race, still one line
        raise UsageError(f"{option}: cannot write {path}: {exc.strerror}") from None


def _pct(ratio: float) -> str:
    return f"{ratio * 100:.2f}%"


def _blocks_text(blocks: int, fact: TraceFacts) -> str:
    from kvreceipts.commands.output import human_bytes

    size = fact.block_size(blocks)
    return f"{blocks:,} blocks" + (f" ({human_bytes(size)})" if size is not None else "")


def _summary(
    out: Output,
    tasks: list[Task],
    facts: list[TraceFacts],
    answers: list[dict[str, Any]],
    total: int,
    elapsed: float,
) -> None:
    methods = ", ".join(dict.fromkeys(f"{t.policy}: {t.method}" for t in tasks if t.capacities))
    out.note(f"[dim]{total:,} grid points ({methods}) in {elapsed:.2f} s[/dim]")
    shards = next((t for t in tasks if t.method == "shards"), None)
    if shards is not None:
        out.note(f"shards: sample rate {shards.sample_rate:g} of {facts[0].block_refs:,} "
                 "block lookups (sampled_refs in the rows gives each sample's size)")  # fmt: skip
    paged = tasks[0].spec.allocator == "paged"
    for fact in facts if paged else ():
        name = f" ({fact.name})" if len(facts) > 1 else ""
        out.note(f"ceiling{name}: hit ratio {_pct(fact.ceiling)} ({fact.unique_blocks:,} of "
                 f"{fact.block_refs:,} lookups are first touches), token hit ratio "
                 f"{_pct(fact.token_ceiling)}; every policy reaches it at "
                 f"{_blocks_text(fact.unique_blocks, fact)}, the distinct blocks")  # fmt: skip
    by_name = {fact.name: fact for fact in facts}
    for answer in answers:
        out.note(_answer_text(answer, by_name[answer["trace"]], len(facts) > 1))


def _answer_text(answer: dict[str, Any], fact: TraceFacts, named: bool) -> str:
    what = "hit ratio" if answer["metric"] == "hit_ratio" else "token hit ratio"
    head = f"target {what} {_pct(answer['target'])}, {answer['policy']}"
    if named:
        head += f" ({fact.name})"
    if not answer["reachable"]:
        if answer["metric"] == "hit_ratio":
            touches = f"{fact.unique_blocks:,} of {fact.block_refs:,} lookups are first touches"
            why = f"the highest hit ratio this trace allows is {_pct(fact.ceiling)} ({touches})"
        else:
            why = (f"the highest token hit ratio this trace allows is "
                   f"{_pct(fact.token_ceiling)} (prompts whose leading blocks were never seen "
                   "before)")  # fmt: skip
        return f"{head}: unreachable: {why}"
    how = ("exact, read off the LRU stack distances" if answer["method"] == "exact"
           else f"search by full simulation, {answer['simulations']} simulations")  # fmt: skip
    got = answer[answer["metric"]]
    return (f"{head}: {_blocks_text(answer['capacity_blocks'], fact)} reach "
            f"{_pct(got)} ({how})")  # fmt: skip


def _rerun_hint(
    tasks: list[Task], rows: list[dict[str, Any]], answers: list[dict[str, Any]]
) -> str:
    """The point a user most likely wants with receipts: the first target reached, else the
    best hit ratio per byte among the points that reach half the grid's best hit ratio.
    """
    by_policy = {(t.source.label, t.policy): t for t in tasks}
    reached = next((a for a in answers if a["reachable"]), None)
    if reached is not None:
        task = by_policy[(reached["trace"], reached["policy"])]
        capacity = float(reached["capacity_blocks"])
        what = "hit ratio" if reached["metric"] == "hit_ratio" else "token hit ratio"
        why = (f"the first target reached: {what} {_pct(reached['target'])} with "
               f"{task.policy} at {int(capacity):,} blocks")  # fmt: skip
        return f"re-run {why}, with receipts: {_rerun(task, capacity)}"
    key = "capacity_blocks" if "capacity_blocks" in rows[0] else "capacity_mb"
    best = max(r["hit_ratio"] for r in rows)
    useful = [r for r in rows if r["hit_ratio"] > 0 and r["hit_ratio"] >= best / 2] or rows
    pick = max(useful, key=lambda r: (r["hit_ratio"] / r[key], -r[key]))
    task = by_policy[(pick["trace"], pick["policy"])]
    unit = "blocks" if key == "capacity_blocks" else "MiB"
    why = (f"the best hit ratio per byte among the points reaching half the best hit ratio "
           f"({_pct(best / 2)}): {pick['policy']} at {pick[key]:,g} {unit}, "
           f"{_pct(pick['hit_ratio'])}")  # fmt: skip
    return f"re-run {why}, with receipts: {_rerun(task, float(pick[key]))}"


def _rerun(task: Task, capacity: float) -> str:
    source, spec = task.source, task.spec
    args = ["kvreceipts", "simulate"]
    if source.trace:
        args += ["--trace", source.trace.removeprefix("file://")]
    else:
        args += ["--workload", source.workload, "--seed", str(source.seed)]
    if source.requests:
        args += ["--requests", str(source.requests)]
    args += ["--allocator", spec.allocator, "--policy", task.policy]
    if spec.allocator == "paged":
        args += ["--capacity-blocks", str(int(capacity)), "--block-tokens", str(spec.block_tokens)]
    else:
        args += ["--capacity-mb", f"{capacity:g}"]
    if spec.model:
        args += ["--model", spec.model]
    if spec.bytes_per_token:
        args += ["--bytes-per-token", str(spec.bytes_per_token)]
    if spec.allocator == "paged":
        args.append("--pin" if spec.pin else "--no-pin")
    args += ["-o", "point.jsonl"]
    return shlex.join(args)
