"""``kvreceipts watch``: receipts for what a real serving engine's KV cache removes."""

from __future__ import annotations

import signal
import threading
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kvreceipts.commands.options import (
    AppendOption,
    CheckpointEveryOption,
    CheckpointOutOption,
    ForceOption,
    HmacKeyOption,
    OutputOption,
    QuietOption,
    SignKeyOption,
    check_output,
)
from kvreceipts.commands.output import Output
from kvreceipts.errors import UsageError

if TYPE_CHECKING:
    from rich.console import RenderableType

    from kvreceipts.engine.core import WatchCore
    from kvreceipts.engine.session import WatchResult
    from kvreceipts.sinks.base import BaseSink

__all__ = ["watch"]

EXAMPLES = """
[bold]Examples[/bold]

  kvreceipts watch tcp://gpu-host:5557 -o removals.jsonl
  kvreceipts watch tcp://gpu-host:5557 --replay-endpoint tcp://gpu-host:5558 --format jsonl \\
      | jq -c 'select(.kind=="engine_removal") | {block_hash, medium, residency_ms}'
  kvreceipts watch tcp://gpu-host:5557 --metrics-port 9108 --record run.kvrec
  kvreceipts watch --from run.kvrec -o again.jsonl
"""

MAX_REPORTED = 50
"""Problem lines printed; later ones are only counted."""


class WatchFormat(StrEnum):
    """How ``watch`` prints."""

    table = "table"
    jsonl = "jsonl"


class _Problems:
    """Prints the first problems as one line each, counts the rest."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.count = 0

    def __call__(self, message: str) -> None:
        self.count += 1
        if self.count <= MAX_REPORTED:
            self.out.warn(message)
        elif self.count == MAX_REPORTED + 1:
            self.out.warn(f"more than {MAX_REPORTED} problems; the rest are only counted")


def watch(
    endpoint: Annotated[
        str | None,
        typer.Argument(
            help="The engine's ZMQ PUB address, e.g. tcp://gpu-host:5557.", show_default=False
        ),
    ] = None,
    topic: Annotated[str, typer.Option(help="Topic prefix to subscribe to (default: all).")] = "",
    replay_endpoint: Annotated[
        str | None,
        typer.Option(
            help="The engine's replay (ROUTER) address: gaps are asked for there.",
            show_default=False,
        ),
    ] = None,
    replay_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for a replay answer.", min=0.01)
    ] = 2.0,
    regret_window: Annotated[
        float | None,
        typer.Option(
            help="Seconds: a block stored again this soon after its removal is counted as regret.",
            min=0,
            show_default="60, or the recording's",
        ),
    ] = None,
    fmt: Annotated[
        WatchFormat | None,
        typer.Option(
            "--format",
            "-f",
            help="table (a live view) or jsonl (receipts on stdout).",
            show_default="table on a terminal, jsonl otherwise",
        ),
    ] = None,
    output: OutputOption = None,
    append: AppendOption = False,
    force: ForceOption = False,
    http_sink: Annotated[
        str | None,
        typer.Option(
            help="Also POST receipts (JSON lines, batched) to this URL.", show_default=False
        ),
    ] = None,
    hmac_key_file: HmacKeyOption = None,
    sign_key: SignKeyOption = None,
    checkpoint_every: CheckpointEveryOption = 0,
    checkpoint_interval: Annotated[
        float,
        typer.Option(
            "--checkpoint-interval",
            min=0.0,
            metavar="SECONDS",
            help="Also write a checkpoint record once this many seconds passed since the last "
            "one (a long live audit publishes as it goes); 0: by --checkpoint-every only.",
        ),
    ] = 0.0,
    checkpoint_out: CheckpointOutOption = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve Prometheus metrics on this port (0: any free port).",
            min=0,
            max=65535,
            show_default=False,
        ),
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address the metrics server binds.")] = (
        "127.0.0.1"
    ),
    idle_timeout: Annotated[
        float | None,
        typer.Option(
            help="Stop after this many seconds without a message.", min=0, show_default=False
        ),
    ] = None,
    max_batches: Annotated[
        int | None,
        typer.Option(help="Stop after this many batches.", min=1, show_default=False),
    ] = None,
    allow_loss: Annotated[
        bool, typer.Option("--allow-loss", help="Exit 0 even when batches were lost.")
    ] = False,
    record: Annotated[
        Path | None,
        typer.Option(
            help="Also keep the raw frames in this file (replay it with --from).",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    source: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="Re-read a recording made by --record instead of a socket.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    from_trtllm: Annotated[
        str | None,
        typer.Option(
            "--from-trtllm",
            help="Read TensorRT-LLM KV-cache events (JSON lines, - for stdin) instead of a socket.",
            show_default=False,
        ),
    ] = None,
    queue_size: Annotated[
        int, typer.Option(help="Messages held between the socket and the receipts.", min=1)
    ] = 100_000,
    bytes_per_token: Annotated[
        int | None,
        typer.Option(
            help="KV bytes per token of the served model: removals then carry bytes_freed.",
            min=1,
            show_default=False,
        ),
    ] = None,
    quiet: QuietOption = False,
) -> None:
    """Watch a serving engine's KV-cache events (vLLM, SGLang, TensorRT-LLM) and write one
    sealed receipt per removed block.

    Subscribes to the engine's ZMQ event stream, keeps what each engine holds, and writes
    engine_removal, engine_clear, engine_restore, engine_restart and engine_loss receipts.
    Stops on Ctrl-C / SIGTERM, --idle-timeout or --max-batches; exits 1 if batches were lost
    (unless --allow-loss). --from-trtllm reads TensorRT-LLM's KV-cache events instead.
    """
    _check_sources(endpoint, source, from_trtllm, record=record,
                   replay_endpoint=replay_endpoint, metrics_port=metrics_port)  # fmt: skip
    check_output(output, append=append, force=force)
    for name, path in (("-o", output), ("--record", record)):
        _check_writable(name, path)
    if metrics_port:
        _check_port(metrics_host, metrics_port)
    chosen = fmt or (WatchFormat.table if Output().stdout_is_terminal else WatchFormat.jsonl)
    out = Output(quiet=quiet)
    from kvreceipts.chain import read_hmac_key

    key = read_hmac_key(hmac_key_file, warn=out.warn) if hmac_key_file else None
    from kvreceipts.checkpoints import make_checkpoints

    checkpoints = make_checkpoints(sign_key, checkpoint_every, checkpoint_out)
    problems = _Problems(out)
    sinks = _sinks(out, chosen, output, http_sink, append=append)
    from kvreceipts.sinks import fan_out

    sink = fan_out(sinks)
    if from_trtllm is not None:
        from kvreceipts.engine.session import watch_trtllm

        result = watch_trtllm(from_trtllm, sink, key=key, regret_window_s=regret_window,
                              report=problems, max_batches=max_batches,
                              bytes_per_token=bytes_per_token)  # fmt: skip
    elif source is not None:
        from kvreceipts.engine.session import watch_recording

        result = watch_recording(str(source), sink, key=key, regret_window_s=regret_window,
                                 report=problems, max_batches=max_batches,
                                 bytes_per_token=bytes_per_token, checkpoints=checkpoints,
                                 checkpoint_interval_s=checkpoint_interval)  # fmt: skip
    else:
        from kvreceipts.engine.session import DEFAULT_REGRET_WINDOW_S, WatchOptions

        assert endpoint is not None
        options = WatchOptions(
            endpoint=endpoint, topic=topic, replay_endpoint=replay_endpoint,
            replay_timeout_s=replay_timeout,
            regret_window_s=DEFAULT_REGRET_WINDOW_S if regret_window is None else regret_window,
            idle_timeout_s=idle_timeout, max_batches=max_batches, queue_size=queue_size,
            record=str(record) if record else None, metrics_host=metrics_host,
            metrics_port=metrics_port, bytes_per_token=bytes_per_token,
            checkpoints=checkpoints, checkpoint_interval_s=checkpoint_interval,
        )  # fmt: skip
        result = _run_live(options, sink, key, out, chosen, problems)
    _report(out, chosen, result, sinks, problems.count)
    if endpoint is not None and result.received == 0:
        out.error(_nothing_received(endpoint or "", topic, result.connected))
        raise typer.Exit(1)
    if result.lost_batches and not allow_loss:
        out.error(f"{result.lost_batches:,} engine batch(es) lost (see the engine_loss "
                  "receipts); --allow-loss accepts that")  # fmt: skip
        raise typer.Exit(1)


def _check_sources(
    endpoint: str | None, source: Path | None, from_trtllm: str | None, *,
    record: Path | None, replay_endpoint: str | None, metrics_port: int | None,
) -> None:  # fmt: skip
    """One input, and only the options it takes (a live endpoint is checked here too)."""
    from kvreceipts import engine

    given = [endpoint is not None, source is not None, from_trtllm is not None]
    if sum(given) != 1:
        raise UsageError(
            "give an ENDPOINT to watch, --from RECORDING or --from-trtllm FILE, only one"
            if any(given)
            else "give an ENDPOINT to watch (or --from RECORDING, --from-trtllm FILE)"
        )
    if source is not None or from_trtllm is not None:
        for name, value in (("--record", record), ("--replay-endpoint", replay_endpoint),
                            ("--metrics-port", metrics_port)):  # fmt: skip
            if value is not None:
                raise UsageError(f"{name} is for live watches, not --from"
                                 + ("-trtllm" if source is None else ""))  # fmt: skip
    else:
        assert endpoint is not None
        engine.require("zmq", *(["prometheus_client"] if metrics_port is not None else []))
        from kvreceipts.engine.live import check_endpoint  # after require: it imports zmq

        check_endpoint(endpoint)
        if replay_endpoint is not None:
            check_endpoint(replay_endpoint, "--replay-endpoint")


def _check_writable(option: str, path: Path | None) -> None:
    """An output path that cannot be written fails now, before any work (one line, exit 2)."""
    import os

    if path is None:
        return
    parent = path.parent if str(path.parent) else Path()
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"{option} {path}: not writable")


def _check_port(host: str, port: int) -> None:
    """``--metrics-port`` already in use fails now, before the watch starts."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UsageError(
                f"--metrics-port: cannot serve on {host}:{port}: {exc.strerror}"
            ) from None


def _nothing_received(endpoint: str, topic: str, connected: int) -> str:
    where = "a publisher answered but sent no batch" if connected else "nothing answered there"
    return (
        f"nothing was received from {endpoint} ({where}); check that the engine runs with "
        '--kv-events-config \'{"enable_kv_cache_events": true, "publisher": "zmq", '
        '"endpoint": "tcp://*:PORT", ...}\', that PORT is the one watched (DP rank r '
        "publishes on PORT + r)"
        + (f", and that its topic starts with {topic!r}" if topic else ", and its topic")
    )


def _sinks(
    out: Output, fmt: WatchFormat, output: Path | None, http_sink: str | None, *, append: bool
) -> list[BaseSink]:
    from kvreceipts.commands.receipt_sinks import StdoutSink, file_sink

    sinks: list[BaseSink] = []
    if fmt is WatchFormat.jsonl:
        sinks.append(StdoutSink(out))
    if output is not None:
        sinks.append(file_sink(output, append=append))
    if http_sink:
        from kvreceipts.sinks import HttpSink

        sinks.append(HttpSink(http_sink))
    return sinks


def _run_live(
    options: Any, sink: BaseSink, key: bytes | None, out: Output, fmt: WatchFormat,
    problems: _Problems,
) -> WatchResult:  # fmt: skip
    from kvreceipts.engine.session import watch_live

    stop = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    def ready(metrics: Any) -> None:
        if metrics is not None:
            out.note(f"metrics: http://{options.metrics_host}:{metrics.port}/metrics")
        out.note(f"watching {options.endpoint}" + (f" (topic {options.topic!r})"
                 if options.topic else "") + "; Ctrl-C stops")  # fmt: skip

    with _signals(on_signal), _live_view(out, fmt) as tick:
        return watch_live(options, sink, stop=stop, key=key, report=problems, tick=tick,
                          ready=ready)  # fmt: skip


class _signals:  # noqa: N801 - used as a context manager, like a function
    """SIGINT and SIGTERM stop the watch cleanly (the old handlers come back afterwards)."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.old: dict[int, Any] = {}

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.old[signum] = signal.signal(signum, self.handler)

    def __exit__(self, *exc: object) -> None:
        for signum, old in self.old.items():
            signal.signal(signum, old)


class _live_view:  # noqa: N801 - used as a context manager, like a function
    """In table mode, a live view on stdout, redrawn at each tick of the watch."""

    def __init__(self, out: Output, fmt: WatchFormat) -> None:
        self.out = out
        self.enabled = fmt is WatchFormat.table and out.stdout_is_terminal
        self.live: Any = None
        self.started = time.monotonic()
        self.last: tuple[float, int] | None = None
        self.rate = 0.0

    def __enter__(self) -> Any:
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.live import Live

        self.live = Live(console=Console(), auto_refresh=False, transient=True)
        self.live.start()
        return self.tick

    def tick(self, core: WatchCore, sub: Any) -> None:
        now = time.monotonic()
        events = sum(sum(s.events.values()) for s in core.engines.values())
        if self.last is not None and now > self.last[0]:
            self.rate = (events - self.last[1]) / (now - self.last[0])
        self.last = (now, events)
        self.live.update(_view(core, self.rate, sub.dropped, now - self.started), refresh=True)

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()


def _view(core: WatchCore, rate: float, dropped: int, elapsed: float) -> RenderableType:
    from rich.console import Group
    from rich.text import Text

    queue = f" · {dropped:,} dropped by the queue" if dropped else ""
    title = Text(f"watching · {elapsed:,.0f} s · {rate:,.0f} events/s{queue}", style="bold")
    if not core.engines:
        return Group(title, Text("no message yet", style="dim"))
    return Group(title, _engines(core))


def _engines(core: WatchCore) -> RenderableType:
    """One entry per engine: its topic, then what it did, wrapped to the terminal (80
    columns hold it: no column is cut).
    """
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", max_width=24, overflow="fold")
    grid.add_column(overflow="fold")
    for state in core.engines.values():
        resident = ", ".join(f"{m} {n:,}" for m, n in sorted(state.resident_by_medium.items()))
        rate = state.hit_rate
        facts = [
            "seq -" if state.last_seq is None else f"seq {state.last_seq:,}",
            f"{state.batches:,} batches",
            f"resident {resident or '-'}",
            f"removed {sum(state.removals.values()):,}",
            f"hits {sum(state.hits.values()):,}" + ("" if rate is None else f" ({rate:.1%})"),
            f"gaps {state.gaps:,}",
            f"lost {state.lost_batches:,}",
            f"regret {sum(state.regret.values()):,}",
            f"restarts {state.restarts:,}",
        ]
        grid.add_row(state.topic or "''", " · ".join(facts))
    return grid


def _summary(result: WatchResult, sinks: list[BaseSink], problems: int) -> RenderableType:
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table

    core = result.core
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    source = result.header.get("endpoint") or "-"
    grid.add_row("source", f"{source}" + (f" (topic {result.header['topic']!r})"
                 if result.header.get("topic") else ""))  # fmt: skip
    grid.add_row("stopped by", result.stopped_by)
    handled = sum(s.batches for s in core.engines.values())
    recovered = sum(s.recovered_batches for s in core.engines.values())
    grid.add_row("batches", f"{handled:,} processed ({recovered:,} recovered by replay), "
                 f"{core.bad_messages:,} malformed messages")  # fmt: skip
    grid.add_row("lost", f"{result.lost_batches:,} batches"
                 + (f"; {result.queue_dropped:,} dropped by the queue"
                    if result.queue_dropped else ""))  # fmt: skip
    delivered = "; ".join(f"{s.name}: {s.counters.delivered:,} delivered"
                          + (f", {s.counters.failed:,} failed" if s.counters.failed else "")
                          for s in sinks)  # fmt: skip
    grid.add_row("receipts", f"{result.receipts:,}" + (f" ({delivered})" if delivered else ""))
    grid.add_row("chain head", result.writer.last_digest)
    if problems:
        grid.add_row("problems", f"{problems:,} (see the warnings above)")
    grid.add_row("duration", f"{result.duration_s:,.2f} s")
    title = f"watch · run {result.run_id[:12]}"
    body = Group(grid, _engines(core)) if core.engines else grid
    return Panel(body, title=title, title_align="left", expand=False)


def _report(
    out: Output, fmt: WatchFormat, result: WatchResult, sinks: list[BaseSink], problems: int
) -> None:
    panel = _summary(result, sinks, problems)
    if fmt is WatchFormat.table and out.stdout_is_terminal:
        out.show(panel)
    else:
        out.flush()
        out.note(panel)
