"""Replaying a workload through a manager on a simulated clock.

The flow is one-way: a workload yields requests, the manager serves them (emitting receipts to
its sink), and :func:`run_simulation` returns the figures. Nothing here prints.
"""

from __future__ import annotations

import hashlib
import heapq
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from kvreceipts import features
from kvreceipts.clock import SIM_EPOCH, SimClock
from kvreceipts.errors import UsageError
from kvreceipts.manager import KVCacheManager
from kvreceipts.numbers import MAX_BLOCKS, check_number
from kvreceipts.paged import PagedKVCacheManager
from kvreceipts.sizing import Sizing, resolve_sizing
from kvreceipts.workloads import TraceStats, detect_format, read_trace, synthetic_workload
from kvreceipts.workloads.traces import MOONCAKE_BLOCK_TOKENS

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Iterable, Iterator

    from kvreceipts.checkpoints import Checkpoints
    from kvreceipts.config import CachingConfig, SimulationConfig
    from kvreceipts.core import ManagerCore
    from kvreceipts.sinks.base import KvEventSink
    from kvreceipts.stats import KVCacheStatistics
    from kvreceipts.tiers import Tier
    from kvreceipts.workloads import Request

__all__ = [
    "Plan",
    "RunResult",
    "build_manager",
    "check_block_tokens",
    "plan_simulation",
    "run_simulation",
]

_OUTPUT_ONLY = ("output", "http_sink", "hmac_key_file", "tracing", "strict_time")
"""Simulation keys that change where receipts go, or whether a run may start, not what its
receipts say (kept out of run_id)."""


@dataclass(slots=True)
class Plan:
    """A simulation with every choice resolved, before anything runs."""

    caching: CachingConfig
    simulation: SimulationConfig
    allocator: str
    sizing: Sizing
    trace_format: str | None
    run_id: str
    trace_stats: TraceStats | None = None

    @property
    def workload(self) -> str:
        """The trace path, or the synthetic workload's name."""
        return self.simulation.trace or self.simulation.workload

    def requests(self) -> Iterator[Request]:
        """The request stream (read lazily; a trace is streamed)."""
        sim = self.simulation
        if not sim.trace:
            return synthetic_workload(
                sim.workload, requests=sim.requests, seed=sim.seed, block_tokens=sim.block_tokens
            )
        assert self.trace_stats is not None
        rows = read_trace(
            sim.trace,
            self.trace_format or "auto",
            skip_bad_lines=sim.skip_bad_lines,
            stats=self.trace_stats,
            strict_time=sim.strict_time,
        )
        if sim.requests:
            return (request for _, request in zip(range(sim.requests), rows, strict=False))
        return rows

    def describe(self) -> dict[str, Any]:
        """The resolved plan as plain values (the ``workload`` part of a summary)."""
        return {
            "source": "trace" if self.simulation.trace else "synthetic",
            "name": self.workload,
            "format": self.trace_format,
            "allocator": self.allocator,
            "policy": self.simulation.policy,
            "sizing": self.sizing.name,
            "bytes_per_token": self.sizing.bytes_per_token,
            "block_tokens": self.simulation.block_tokens if self.allocator == "paged" else None,
            "seed": self.simulation.seed,
        }


def _trace_identity(path: str) -> dict[str, Any]:
    file = Path(path)
    try:
        size = file.stat().st_size
    except OSError:
        size = None
    return {"name": file.name, "size": size}


def derive_run_id(caching: CachingConfig, simulation: SimulationConfig) -> str:
    """A run id fixed by the seed, config and trace, so the same command prints the same
    bytes. Options that only pick destinations do not change it.
    """
    sim = {k: v for k, v in asdict(simulation).items() if k not in _OUTPUT_ONLY}
    if simulation.pin_admitting:  # the default: run ids from before the option stay the same
        del sim["pin_admitting"]
    if not simulation.tiers:  # likewise
        del sim["tiers"]
    if simulation.trace:
        sim["trace"] = _trace_identity(simulation.trace)
    material = orjson.dumps(
        {
            "caching": caching.to_dict(),
            "simulation": sim,
            "features": sorted(features.active_features()),
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(material).hexdigest()[:16]  # 64 bits name a run; the chain proves it


def check_block_tokens(trace_format: str | None, allocator: str, block_tokens: int) -> None:
    """A paged replay of a Mooncake trace needs its block size: the hashes name 512-token
    blocks, and any other size would give every block the wrong bytes.
    """
    if (
        trace_format == "mooncake"
        and allocator == "paged"
        and block_tokens != MOONCAKE_BLOCK_TOKENS
    ):
        raise UsageError(
            f"Mooncake traces hash {MOONCAKE_BLOCK_TOKENS}-token blocks; "
            f"--block-tokens must be {MOONCAKE_BLOCK_TOKENS} (got {block_tokens})"
        )


def recording_block_size(path: str, block_tokens: int | None) -> int:
    """The block size to replay a watch recording with: the engine's own (its first store's
    ``block_size``) unless ``block_tokens`` is given, which must then match it.
    """
    if block_tokens is not None:
        check_recording_block_tokens(path, block_tokens)
        return block_tokens
    from kvreceipts.config import DEFAULT_BLOCK_TOKENS
    from kvreceipts.workloads.engine_trace import recording_block_tokens

    return recording_block_tokens(path) or DEFAULT_BLOCK_TOKENS


def check_recording_block_tokens(path: str, block_tokens: int) -> None:
    """A watch recording's blocks hold the engine's ``block_size`` tokens: the replay must
    size them alike.
    """
    from kvreceipts.workloads.engine_trace import recording_block_tokens

    size = recording_block_tokens(path)
    if size is not None and size != block_tokens:
        raise UsageError(
            f"{path}: the engine's blocks hold {size} tokens; --block-tokens must be {size} "
            f"(got {block_tokens})"
        )


def plan_simulation(caching: CachingConfig, simulation: SimulationConfig) -> Plan:
    """Resolve the allocator, sizing and trace format; check that they fit together."""
    caching.validate()
    simulation.validate()
    sizing = resolve_sizing(simulation.model, simulation.bytes_per_token)
    trace_format = None
    stats = None
    if simulation.trace:
        trace_format = simulation.trace_format
        if trace_format == "auto":
            trace_format = detect_format(simulation.trace)
        stats = TraceStats(simulation.trace, trace_format)
    allocator = simulation.allocator
    if allocator == "auto":
        allocator = "paged" if trace_format in ("mooncake", "kvrec") else "arena"
    if trace_format == "kvrec" and simulation.trace:
        check_recording_block_tokens(simulation.trace, simulation.block_tokens)
    check_block_tokens(trace_format, allocator, simulation.block_tokens)
    return Plan(
        caching,
        simulation,
        allocator,
        sizing,
        trace_format,
        derive_run_id(caching, simulation),
        stats,
    )


def plan_tiers(text: str, block_bytes: int) -> list[Tier]:
    """``[simulation] tiers`` as tiers of whole blocks (sizes rounded down)."""
    from kvreceipts.tiers import Tier, parse_tier

    tiers = []
    for item in text.split(";") if text else ():
        name, sizes, bandwidth = parse_tier(item)
        if len(sizes) != 1:
            raise UsageError(f"--tier {name}: simulate takes one size, not a range")
        blocks = sizes[0] // block_bytes
        if blocks <= 0:
            raise UsageError(f"--tier {name}: {sizes[0]:,} bytes hold no block of "
                             f"{block_bytes:,} bytes")  # fmt: skip
        check_number(f"--tier {name}: size", blocks, above=0, high=MAX_BLOCKS)
        tiers.append(Tier(name, blocks, bandwidth))
    return tiers


def build_manager(
    plan: Plan,
    *,
    sink: KvEventSink | None = None,
    hmac_key: bytes | None = None,
    checkpoints: Checkpoints | None = None,
) -> ManagerCore:
    """The manager the plan asks for, on a fresh simulated clock."""
    sim = plan.simulation
    common: dict[str, Any] = {
        "sink": sink,
        "clock": SimClock(SIM_EPOCH),
        "policy": sim.policy,
        "sizing": plan.sizing,
        "run_id": plan.run_id,
        "hmac_key": hmac_key,
        "checkpoints": checkpoints,
        "batch_receipts": sim.batch_receipts,
        "snapshot_every": sim.snapshot_every,
        "layout": sim.layout,
        "source": "simulate",
        "workload": plan.describe(),
    }
    if plan.allocator == "paged":
        tiers = plan_tiers(sim.tiers, plan.sizing.block_bytes(sim.block_tokens))
        return PagedKVCacheManager(
            plan.caching,
            capacity_blocks=tiers[0].capacity_blocks if tiers else sim.capacity_blocks,
            block_tokens=sim.block_tokens,
            pin_admitting=sim.pin_admitting,
            lower_tiers=tiers[1:],
            top_tier=tiers[0].name if tiers else "tier1",
            **common,
        )
    return KVCacheManager(plan.caching, **common)


@dataclass(slots=True)
class RunResult:
    """What a run did."""

    requests: int = 0
    admitted: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    largest_too_large_bytes: int = 0
    """The largest request rejected as larger than the whole cache (0: none was)."""
    stats: KVCacheStatistics | None = None
    evictions: int = 0
    bytes_freed: int = 0
    peak_used_bytes: int = 0
    receipts: int = 0
    sink_failures: int = 0
    last_digest: str | None = None
    sim_time_ms: float = 0.0
    duration_s: float = 0.0
    requests_per_second: float = 0.0
    average_latency_ms: float = 0.0
    trace_rows: int | None = None
    skipped_lines: int = 0
    skip_errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (``stats`` as a dict)."""
        data = asdict(self)
        data["stats"] = self.stats.to_dict() if self.stats is not None else None
        return data


def run_simulation(
    manager: ManagerCore,
    requests: Iterable[Request],
    *,
    prefill_ms_per_token: float = 0.05,
    decode_ms_per_token: float = 0.0,
    trace_stats: TraceStats | None = None,
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> RunResult:
    """Serve every request in arrival order on the manager's simulated clock.

    A request's simulated latency is the prefill of the tokens it did not find cached plus
    the decode of its output. With ``decode_ms_per_token`` above 0, a request holds its KV
    until it finishes; otherwise it completes at once (the default). Setting ``stop`` ends
    the run early (checked every 1,024 requests).
    """
    clock = manager.clock
    if not isinstance(clock, SimClock):
        raise TypeError("run_simulation needs a manager on a SimClock")
    serve = manager.serve
    record = manager.meter.record
    hold = decode_ms_per_token > 0
    running: list[tuple[float, int, Request]] = []
    started = time.perf_counter()
    count = admitted = 0
    for count, request in enumerate(requests, start=1):
        if count == 1 and trace_stats is not None and trace_stats.epoch_s is not None:
            clock.set_epoch(trace_stats.epoch_s)
        now = request.arrival_ms
        while running and running[0][0] <= now:
            finish, _, done = heapq.heappop(running)
            clock.advance_to(finish)
            manager.release(done)
        clock.advance_to(now)
        served = serve(request, hold=hold)
        if served.admitted:
            admitted += 1
            latency = (
                served.prefill_tokens * prefill_ms_per_token
                + request.output_tokens * decode_ms_per_token
            )
            record(now, now + latency)
            if hold:
                heapq.heappush(running, (now + latency, count, request))
        if count % 1024 == 0:
            if progress is not None:
                progress(count)
            if stop is not None and stop.is_set():
                break
    while running:
        finish, _, done = heapq.heappop(running)
        clock.advance_to(finish)
        manager.release(done)
    if manager.snapshot_every:
        manager.snapshot()
    result = _result(manager, trace_stats)
    result.duration_s = time.perf_counter() - started
    result.requests = count
    result.admitted = admitted
    if progress is not None:
        progress(count)
    return result


def _result(manager: ManagerCore, trace_stats: TraceStats | None) -> RunResult:
    result = RunResult(
        rejected=manager.rejected,
        rejected_by_reason=dict(sorted(manager.rejected_by_reason.items())),
        largest_too_large_bytes=manager.largest_too_large_bytes,
        stats=manager.get_statistics(),
        evictions=manager.evictions,
        bytes_freed=manager.bytes_freed,
        peak_used_bytes=manager.peak_used_bytes,
        receipts=manager.receipts_emitted,
        sink_failures=manager.sink_failures,
        last_digest=manager.last_digest,
        sim_time_ms=manager.clock.now_ms(),
        requests_per_second=manager.meter.requests_per_second,
        average_latency_ms=manager.meter.average_latency_ms,
    )
    if trace_stats is not None:
        result.trace_rows = trace_stats.rows
        result.skipped_lines = trace_stats.skipped
        result.skip_errors = list(trace_stats.first_errors)
    return result
