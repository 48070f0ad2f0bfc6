"""The long-run rows of scripts/bench.py: peak RSS over the trace once and ten times, and
the arena chat workload with receipts on.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bench_common import CONVERSATION, Row

_MEMORY_CHILD = """
import resource, sys
from kvreceipts import CachingConfig, PagedKVCacheManager
from kvreceipts.clock import SimClock
from kvreceipts.sinks import JsonlSink
from kvreceipts.workloads import read_trace
manager = PagedKVCacheManager(CachingConfig(enable_receipts=True), capacity_blocks=int(sys.argv[2]),
                              clock=SimClock(), sink=JsonlSink(sys.argv[3], flush="batch"))
for request in read_trace(sys.argv[1]):
    manager.clock.advance_to(request.arrival_ms)
    manager.serve(request)
manager.shutdown()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, manager.requests)
"""


def bench_memory(rows: list[Row], tmp: str) -> None:
    """Item 5: peak RSS replaying the trace once and ten times over (streamed)."""
    import orjson

    once = CONVERSATION
    tenfold = Path(tmp) / "conversation_x10.jsonl"
    lines = once.read_bytes().splitlines()
    span = orjson.loads(lines[-1])["timestamp"] + 1
    with tenfold.open("wb") as handle:
        for copy in range(10):
            for line in lines:
                row = orjson.loads(line)
                row["timestamp"] += copy * span
                handle.write(orjson.dumps(row) + b"\n")
    capacity = 9139
    peaks = []
    for path in (once, tenfold):
        result = subprocess.run(
            [sys.executable, "-c", _MEMORY_CHILD, str(path), str(capacity),
             str(Path(tmp) / "memory.jsonl")],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        kib, served = result.stdout.split()
        peaks.append((int(kib) / 1024, int(served)))
    (small, n1), (large, n10) = peaks
    rows.append(Row("peak RSS, trace once (receipts on)", small, "MiB", note=f"{n1:,} requests"))
    rows.append(Row("peak RSS, trace x10 (receipts on)", large, "MiB", note=f"{n10:,} requests"))
    rows.append(Row("ratio: x10 / once", large / small, "x", "<= 1.2", large / small <= 1.2))


def bench_arena(requests: int, rows: list[Row], tmp: str) -> None:
    """Item 6: the arena chat workload with receipts on."""
    from kvreceipts.config import CachingConfig, SimulationConfig
    from kvreceipts.simulation import build_manager, plan_simulation, run_simulation
    from kvreceipts.sinks import JsonlSink

    caching = CachingConfig(enable_receipts=True)
    plan = plan_simulation(caching, SimulationConfig(requests=requests))
    out = Path(tmp) / "arena.jsonl"
    manager = build_manager(plan, sink=JsonlSink(out, flush="batch", append=False))
    start = time.perf_counter()
    result = run_simulation(manager, plan.requests())
    manager.shutdown()
    elapsed = time.perf_counter() - start
    rows.append(Row(f"arena chat workload, {requests:,} requests, receipts on", requests / elapsed,
                    "req/s", note=f"{result.receipts:,} receipts in {elapsed:.1f} s"))  # fmt: skip
