"""Simulations end to end: plan, build the manager, replay the real traces under every policy
and both allocators, and check that the figures and the receipts agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
import pytest

from kvreceipts.config import CachingConfig, SimulationConfig
from kvreceipts.errors import UsageError
from kvreceipts.manager import KVCacheManager
from kvreceipts.paged import PagedKVCacheManager
from kvreceipts.policies import POLICIES
from kvreceipts.simulation import Plan, build_manager, plan_simulation, run_simulation

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from pathlib import Path

    from kvreceipts.manager import ManagerCore
    from kvreceipts.receipts import KvEvictionReport
    from kvreceipts.simulation import RunResult
    from kvreceipts.workloads import Request

TRACES = {
    "mooncake_conversation_trace.jsonl": "mooncake",
    "mooncake_synthetic_trace.jsonl": "mooncake",
    "azure_llm_2023_conv.csv": "azure",
    "azure_llm_2023_code.csv": "azure",
}
REQUESTS = 120
"""Rows replayed per run: enough for hundreds of evictions, few enough for 32 runs."""
CACHE_MB = {"mooncake": 128, "azure": 16}
"""Small enough that each trace evicts within ``REQUESTS`` rows (Azure prompts are short);
in blocks of 512 tokens at 512 bytes a token: 512 and 64 blocks.
"""


def _plan(trace: Path, **simulation: object) -> Plan:
    options: dict[str, object] = {"trace": str(trace), "requests": REQUESTS, **simulation}
    return plan_simulation(
        CachingConfig(enable_receipts=True, kv_cache_size_mb=CACHE_MB[TRACES[trace.name]]),
        SimulationConfig(**options),  # type: ignore[arg-type]
    )


def _run(plan: Plan, manager: ManagerCore, requests: Iterable[Request] | None = None) -> RunResult:
    return run_simulation(
        manager,
        plan.requests() if requests is None else requests,
        prefill_ms_per_token=plan.simulation.prefill_ms_per_token,
        decode_ms_per_token=plan.simulation.decode_ms_per_token,
        trace_stats=plan.trace_stats,
    )


@pytest.mark.traces
@pytest.mark.needs("receipts")
@pytest.mark.parametrize("allocator", ["arena", "paged"])
@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("name", sorted(TRACES))
def test_replay_of_a_real_trace_adds_up(
    traces_dir: Path, name: str, policy: str, allocator: str
) -> None:
    from kvreceipts.sinks import ChannelSink

    plan = _plan(traces_dir / name, policy=policy, allocator=allocator)
    assert (plan.allocator, plan.trace_format) == (allocator, TRACES[name])
    sink = ChannelSink(1_000_000)
    manager = build_manager(plan, sink=sink)
    assert isinstance(manager, PagedKVCacheManager if allocator == "paged" else KVCacheManager)
    result = _run(plan, manager)
    head = manager.last_digest
    manager.shutdown()

    assert result.requests == REQUESTS
    assert result.trace_rows == REQUESTS  # the limit stops the reader, not just the replay
    assert result.admitted + result.rejected == result.requests
    assert result.admitted > 0
    assert result.stats is not None
    assert result.stats.cache_hits + result.stats.cache_misses > 0
    assert result.evictions > 0
    receipts: list[KvEvictionReport] = sink.drain()  # type: ignore[assignment]
    assert sink.counters.dropped == 0
    assert len(receipts) == result.evictions == result.receipts
    assert [r.seq for r in receipts] == list(range(1, len(receipts) + 1))
    assert {r.run_id for r in receipts} == {plan.run_id}
    assert sum(r.block_size_bytes for r in receipts) == result.bytes_freed
    assert result.last_digest == head == receipts[-1].digest
    # The run is framed: what it replays, how, with which policy; and what it wrote.
    from kvreceipts.receipts import RunClose, RunOpen

    opened, closed = sink.frames
    assert isinstance(opened, RunOpen)
    assert isinstance(closed, RunClose)
    assert (opened.seq, opened.run_id) == (0, plan.run_id)
    assert (opened.source, opened.layout) == ("simulate", "lean")
    assert (opened.allocator, opened.policy) == (allocator, policy)
    assert opened.workload == plan.describe()
    assert opened.config == plan.caching.to_dict()
    assert opened.total_bytes == manager.get_statistics().total_bytes
    assert receipts[0].prev_digest == opened.digest
    assert closed.seq == len(receipts) + 1
    assert closed.counts == {"eviction": result.evictions, "open": 1}
    assert closed.bytes_freed == result.bytes_freed
    assert closed.head == head
    assert manager.last_digest == closed.digest
    assert 0 < result.peak_used_bytes <= manager.get_statistics().total_bytes
    assert result.requests_per_second > 0
    if allocator == "paged":
        assert all(r.block_hash is not None for r in receipts)
        assert result.stats.cache_hits + result.stats.cache_misses >= REQUESTS  # per block
    else:
        assert all(r.block_hash is None for r in receipts)
        assert result.stats.cache_hits + result.stats.cache_misses == REQUESTS  # per request
    year = "2023-11-16T" if TRACES[name] == "azure" else "2025-01-01T"
    assert receipts[0].timestamp.startswith(year)  # Azure times are the trace's own


@pytest.mark.traces
@pytest.mark.parametrize(
    ("name", "paged"), [(name, fmt == "mooncake") for name, fmt in TRACES.items()]
)
def test_auto_allocator_is_paged_for_mooncake_only(
    traces_dir: Path, name: str, paged: bool
) -> None:
    plan = _plan(traces_dir / name)
    assert plan.allocator == ("paged" if paged else "arena")
    manager = build_manager(plan)
    assert isinstance(manager, PagedKVCacheManager) is paged


def test_auto_allocator_is_arena_for_synthetic_workloads() -> None:
    plan = plan_simulation(CachingConfig(), SimulationConfig(workload="chat", requests=10))
    assert plan.allocator == "arena"
    assert plan.trace_format is None


@pytest.mark.traces
@pytest.mark.parametrize("allocator", ["auto", "paged"])
def test_mooncake_paged_needs_512_token_blocks(traces_dir: Path, allocator: str) -> None:
    trace = traces_dir / "mooncake_synthetic_trace.jsonl"
    with pytest.raises(UsageError, match="--block-tokens must be 512") as caught:
        _plan(trace, allocator=allocator, block_tokens=256)
    assert "got 256" in str(caught.value)
    # The arena does not use the trace's block hashes, so any block size is fine there.
    assert _plan(trace, allocator="arena", block_tokens=256).allocator == "arena"


def _watch(requests: Iterator[Request], manager: ManagerCore, seen: list[int]) -> Iterator[Request]:
    """Pass the requests on, noting before each how many blocks or entries are pinned."""
    for request in requests:
        if isinstance(manager, PagedKVCacheManager):
            seen.append(len(manager.pinned_blocks()))
        else:
            assert isinstance(manager, KVCacheManager)
            seen.append(sum(entry.pins for entry in manager.entries()))
        yield request


@pytest.mark.traces
@pytest.mark.parametrize(
    ("name", "allocator"),
    [("mooncake_synthetic_trace.jsonl", "paged"), ("azure_llm_2023_code.csv", "arena")],
)
def test_decode_time_holds_kv_until_each_request_ends(
    traces_dir: Path, name: str, allocator: str
) -> None:
    plan = _plan(traces_dir / name, allocator=allocator, decode_ms_per_token=20.0)
    manager = build_manager(plan)
    pinned: list[int] = []
    result = _run(plan, manager, _watch(plan.requests(), manager, pinned))
    assert result.requests == REQUESTS
    assert result.admitted + result.rejected == REQUESTS
    assert max(pinned) > 0  # requests overlapped, each holding its KV
    if isinstance(manager, PagedKVCacheManager):
        assert manager.pinned_blocks() == {}
    else:
        assert isinstance(manager, KVCacheManager)
        assert all(entry.pins == 0 for entry in manager.entries())
    # Instant completion never holds anything.
    instant = _plan(traces_dir / name, allocator=allocator)
    manager = build_manager(instant)
    pinned.clear()
    _run(instant, manager, _watch(instant.requests(), manager, pinned))
    assert max(pinned) == 0


@pytest.mark.traces
@pytest.mark.needs("receipts")
@pytest.mark.parametrize("layout", ["lean", "upstream"])
@pytest.mark.parametrize(
    ("name", "allocator"),
    [("mooncake_synthetic_trace.jsonl", "paged"), ("azure_llm_2023_conv.csv", "arena")],
)
def test_same_plan_gives_byte_identical_receipts(
    traces_dir: Path, tmp_path: Path, name: str, allocator: str, layout: str
) -> None:
    from kvreceipts.sinks import JsonlSink

    outputs = []
    run_ids = set()
    for attempt in range(2):
        plan = _plan(traces_dir / name, allocator=allocator, policy="s3fifo", seed=5, layout=layout)
        run_ids.add(plan.run_id)
        path = tmp_path / f"run{attempt}.jsonl"
        manager = build_manager(plan, sink=JsonlSink(path))
        result = _run(plan, manager)
        manager.shutdown()
        outputs.append(path.read_bytes())
        assert result.receipts > 0
    assert outputs[0] == outputs[1]
    assert len(run_ids) == 1
    records = [orjson.loads(line) for line in outputs[0].splitlines()]
    assert len(records) == result.receipts + 2  # between the run's open and close records
    assert [records[0]["kind"], records[-1]["kind"]] == ["open", "close"]
    assert records[0]["layout"] == layout
    assert records[0]["run_id"] == run_ids.pop()
    evictions = [r for r in records if r["kind"] == "eviction"]
    assert evictions
    assert all(("policy" in r) == (layout == "upstream") for r in evictions)
    # A different seed is a different run.
    other = _plan(traces_dir / name, allocator=allocator, policy="s3fifo", seed=6)
    assert other.run_id != plan.run_id
