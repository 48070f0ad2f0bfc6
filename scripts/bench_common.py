"""What every group of scripts/bench.py shares: the results row, paired timing, the
trace, the paged replay and the peers it is measured against (a bare OrderedDict LRU,
libCacheSim's), and the ``kvreceipts`` command.
"""

from __future__ import annotations

import dataclasses
import gc
import statistics
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


ROOT = Path(__file__).resolve().parent.parent
TRACES = ROOT.parent / "shared" / "traces"
CONVERSATION = TRACES / "mooncake_conversation_trace.jsonl"
# A receipts-off turn takes a fraction of a second, where a noisy neighbour's burst moves a
# single ratio by 10% or more: those pairs get this many times the turns, to steady the median.
SHORT_PAIR_TURNS = 3


@dataclasses.dataclass
class Row:
    """One line of the results table."""

    name: str
    value: float
    unit: str
    goal: str = ""
    ok: bool | None = None
    note: str = ""


def _timed(fn: Callable[[], object], before: Callable[[], object] | None = None) -> float:
    """Wall time of ``fn``, after ``before`` (untimed: e.g. removing the last turn's output)."""
    if before is not None:
        before()
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@dataclasses.dataclass
class Pair:
    """Medians of two measures taken in turns, and the median of their per-turn ratios."""

    a: float
    b: float
    ratio: float


def paired(
    fn_a: Callable[[], object],
    fn_b: Callable[[], object],
    reps: int,
    before: Callable[[], object] | None = None,
) -> Pair:
    """Warm both up, then time them in turns (a, b, a, b, ...), each after ``before``.

    This machine's speed drifts by up to 2x within a minute; timing the two in turns and
    taking the median of the per-turn ratios keeps that drift out of the ratio. Every other
    turn runs b first, so that neither side always runs after the other's garbage.
    """
    _timed(fn_a, before)
    _timed(fn_b, before)
    samples = []
    for turn in range(reps):
        if turn % 2:
            b = _timed(fn_b, before)
            samples.append((_timed(fn_a, before), b))
        else:
            samples.append((_timed(fn_a, before), _timed(fn_b, before)))
    return Pair(
        statistics.median(a for a, _ in samples),
        statistics.median(b for _, b in samples),
        statistics.median(a / b for a, b in samples),
    )


def load_requests(path: Path) -> list[Any]:
    """A trace's requests, parsed once (parsing is not what is measured)."""
    from kvreceipts.workloads import read_trace

    return list(read_trace(str(path)))


def ordered_dict_lru(blocks: Sequence[int], capacity: int) -> int:
    """The bare loop the paged replay is measured against."""
    cache: OrderedDict[int, None] = OrderedDict()
    hits = 0
    for block in blocks:
        if block in cache:
            cache.move_to_end(block)
            hits += 1
        else:
            cache[block] = None
            if len(cache) > capacity:
                cache.popitem(last=False)
    return hits


def libcachesim_lru(trace_file: str, capacity: int, requests: int) -> int:
    """The hit count of libCacheSim's C LRU over an oracleGeneral file."""
    import libcachesim as lcs

    reader = lcs.TraceReader(trace_file, lcs.TraceType.ORACLE_GENERAL_TRACE)
    cache = lcs.LRU(cache_size=capacity, hashpower=20)
    miss_ratio, _ = cache.process_trace(reader)
    return round((1 - float(miss_ratio)) * requests)


def write_oracle_general(blocks: Sequence[int], path: str) -> None:
    """The block sequence as libCacheSim's binary oracleGeneral trace."""
    import numpy as np

    record = np.dtype([("t", "<u4"), ("id", "<u8"), ("sz", "<u4"), ("nv", "<i8")])
    array = np.zeros(len(blocks), record)
    array["t"] = np.arange(len(blocks))
    array["id"] = blocks
    array["sz"] = 1
    array["nv"] = -1
    array.tofile(path)


def paged_replay(
    requests: Sequence[Any],
    capacity: int,
    *,
    sink: Any = None,
    receipts: bool = False,
    checkpoints: Any = None,
) -> Any:
    """Serve every request with instant completion; the manager afterwards."""
    from kvreceipts import CachingConfig, PagedKVCacheManager
    from kvreceipts.clock import SimClock

    manager = PagedKVCacheManager(
        CachingConfig(enable_receipts=receipts),
        capacity_blocks=capacity,
        clock=SimClock(),
        sink=sink,
        checkpoints=checkpoints,
    )
    serve = manager.serve
    for request in requests:
        serve(request)
    manager.shutdown()
    return manager


def _kvreceipts() -> list[str]:
    exe = Path(sys.executable).with_name("kvreceipts")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "kvreceipts"]
