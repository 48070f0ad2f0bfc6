"""``kvreceipts simulate``: run a workload against the KV cache and print its receipts."""

from __future__ import annotations

import dataclasses
import logging
import threading
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kvreceipts import features
from kvreceipts.commands.options import (
    AppendOption,
    BlockTokensOption,
    CheckpointEveryOption,
    CheckpointOutOption,
    ConfigOption,
    ForceOption,
    HmacKeyOption,
    OutputOption,
    PinOption,
    QuietOption,
    ReceiptFormat,
    SignKeyOption,
    check_output,
)
from kvreceipts.commands.output import Output
from kvreceipts.commands.simulate_report import progress, report, report_losses
from kvreceipts.config import LoadedConfig, SimulationConfig, check_capacity_mb, load_config
from kvreceipts.errors import UsageError
from kvreceipts.policies import POLICIES

if TYPE_CHECKING:
    from kvreceipts.checkpoints import Checkpoints
    from kvreceipts.simulation import Plan
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
    kvrec = "kvrec"
    """A watch recording (watch --record): the engine's own block references."""


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
    "prefill_ms_per_token": "--prefill-ms-per-token", "strict_time": "--strict-time",
    "layout": "--layout", "pin_admitting": "--pin", "tiers": "--tier",
}  # fmt: skip


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
    if sim.tiers and sim.capacity_blocks:
        raise UsageError("give --tier (the first tier is the cache's size) or "
                         "--capacity-blocks, not both")  # fmt: skip
    if sim.tiers and sim.allocator == "arena":
        raise UsageError("--tier needs the paged allocator (blocks move between tiers)")
    if sim.trace and "block_tokens" not in given | loaded.simulation_keys:
        sim = _recording_blocks(sim)
    try:
        return plan_simulation(loaded.caching, sim)
    except UsageError as exc:
        if exc.key not in given:
            raise
        option = _SIM_OPTIONS[exc.key]
        message = str(exc).replace(f"[simulation] {exc.key} =", option)
        raise UsageError(message.replace(f"[simulation] {exc.key}", option)) from None


def _recording_blocks(sim: SimulationConfig) -> SimulationConfig:
    """A watch recording replays with its engine's block size unless one is given."""
    from kvreceipts.simulation import recording_block_size
    from kvreceipts.workloads import detect_format

    fmt = sim.trace_format if sim.trace_format != "auto" else detect_format(sim.trace)
    if fmt != "kvrec":
        return sim
    return dataclasses.replace(sim, block_tokens=recording_block_size(sim.trace, None))


def _sinks(
    plan: Plan, out: Output, fmt: ReceiptFormat, limit: int, *, append: bool
) -> tuple[list[BaseSink], threading.Event | None]:
    """The run's sinks, and the event that says stdout's reader has gone."""
    from kvreceipts.commands.receipt_sinks import StdoutSink, TableSink, file_sink
    from kvreceipts.sinks import TracingSink

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
        sinks.append(file_sink(sim.output, append=append))
    if sim.http_sink:
        from kvreceipts.sinks import HttpSink

        sinks.append(HttpSink(sim.http_sink))
    if sim.tracing:
        from kvreceipts.sinks.base import KV_RECEIPTS_TARGET

        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        # A logger of the run's own, outside logging's registry: no handler or level is left
        # behind on the process-wide logger of that name.
        logger = logging.Logger(KV_RECEIPTS_TARGET, logging.INFO)
        logger.addHandler(handler)
        sinks.append(TracingSink(logger))
    return sinks, stop


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
            help="arena (sessions), paged (prefix blocks), auto: paged for Mooncake traces "
            "and watch recordings.",
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
    tier: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME=SIZE[,bw=RATE]",
            help="Paged: memory tiers, fastest first, repeatable (--tier hbm=80GiB --tier "
            "dram=512GiB); the first sets the cache's size. A block evicted from a tier is "
            "demoted to the next (a demotion receipt); only leaving the last is an eviction.",
            show_default=False,
        ),
    ] = None,
    block_tokens: BlockTokensOption = None,
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
    output: OutputOption = None,
    http_sink: Annotated[
        str | None,
        typer.Option(
            help="Also POST receipts (JSON lines, batched) to this URL.", show_default=False
        ),
    ] = None,
    append: AppendOption = False,
    force: ForceOption = False,
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
    sign_key: SignKeyOption = None,
    checkpoint_every: CheckpointEveryOption = 0,
    checkpoint_out: CheckpointOutOption = None,
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
    pin: PinOption = None,
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
            "layout": layout.value if layout else None, "pin_admitting": pin,
            "tiers": ";".join(tier) if tier else None,
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
        checkpoints = None
        if plan.caching.enable_receipts:
            from kvreceipts.checkpoints import make_checkpoints

            checkpoints = make_checkpoints(sign_key, checkpoint_every, checkpoint_out)
        lost = _run(plan, out, chosen, limit, append=append, checkpoints=checkpoints)
        if lost and not allow_sink_loss:
            raise typer.Exit(1)


def _check_output(plan: Plan, *, append: bool, force: bool) -> None:
    """``-o`` never overwrites by accident, and never goes silently unwritten."""
    output = plan.simulation.output
    if output and not plan.caching.enable_receipts:
        raise UsageError(f"-o {output}: receipts are off in this run (--no-receipts, "
                         "enable_receipts = false, or the 'receipts' feature), so there is "
                         "nothing to write")  # fmt: skip
    check_output(output, append=append, force=force)


def _run(
    plan: Plan,
    out: Output,
    fmt: ReceiptFormat,
    limit: int,
    *,
    append: bool,
    checkpoints: Checkpoints | None,
) -> int:
    """Run the plan and report it; returns how many sinks lost receipts."""
    from kvreceipts.simulation import build_manager, run_simulation

    sim = plan.simulation
    sinks: list[BaseSink] = []
    sink = stop = key = None
    if plan.caching.enable_receipts:
        from kvreceipts.chain import read_hmac_key
        from kvreceipts.sinks import fan_out

        key = read_hmac_key(sim.hmac_key_file, warn=out.warn) if sim.hmac_key_file else None
        sinks, stop = _sinks(plan, out, fmt, limit, append=append)
        sink = fan_out(sinks)
    manager = build_manager(plan, sink=sink, hmac_key=key, checkpoints=checkpoints)
    with progress(out, plan) as advance:
        result = run_simulation(
            manager,
            plan.requests(),
            prefill_ms_per_token=sim.prefill_ms_per_token,
            decode_ms_per_token=sim.decode_ms_per_token,
            trace_stats=plan.trace_stats,
            progress=advance,
            stop=stop,
        )
    manager.shutdown()
    result.last_digest = manager.last_digest  # the close record's: the run's anchor
    report(plan, out, fmt, result, sinks)
    return report_losses(out, sinks)
