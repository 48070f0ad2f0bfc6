"""libCacheSim as the live oracle of ``sweep --no-pin``: on both Mooncake traces, every policy's
hits equal libCacheSim's at every capacity tested, and the exact LRU curve does too.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np
import pytest

from kvreceipts.sweep.grid import SweepSpec, build_tasks, run_task
from kvreceipts.sweep.methods import Counts
from kvreceipts.sweep.sources import Source, load_source

if TYPE_CHECKING:
    from pathlib import Path

lcs = pytest.importorskip("libcachesim")

pytestmark = [pytest.mark.oracle, pytest.mark.traces]

TRACES = ("mooncake_synthetic_trace.jsonl", "mooncake_conversation_trace.jsonl")
FRACTIONS = (0.001, 0.01, 0.05, 0.2)
LCS_POLICIES = {"lru": "LRU", "fifo": "FIFO", "lfu": "LFU", "s3fifo": "S3FIFO"}
ORACLE_DTYPE = np.dtype([("t", "<u4"), ("id", "<u8"), ("sz", "<u4"), ("nv", "<i8")])


@functools.cache
def _oracle_file(trace: Path, out_dir: Path) -> tuple[str, int, int]:
    """The trace's block sequence as an oracleGeneral file; its length and distinct blocks."""
    blocks = [h for r in load_source(_source(trace)) for h in r.block_hashes or ()]
    records = np.zeros(len(blocks), dtype=ORACLE_DTYPE)
    records["t"] = np.arange(len(blocks))
    records["id"] = blocks
    records["sz"] = 1
    records["nv"] = -1
    path = out_dir / f"{trace.stem}.oracleGeneral"
    records.tofile(path)
    return str(path), len(blocks), len(set(blocks))


def _source(trace: Path) -> Source:
    return Source(trace=str(trace), trace_format="mooncake")


def _libcachesim_hits(oracle_file: str, refs: int, policy: str, capacity: int) -> int:
    cache = getattr(lcs, LCS_POLICIES[policy])(cache_size=capacity, hashpower=20)
    reader = lcs.TraceReader(oracle_file, lcs.TraceType.ORACLE_GENERAL_TRACE)
    miss_ratio: float = cache.process_trace(reader)[0]
    return round((1 - miss_ratio) * refs)


@pytest.fixture(scope="module")
def oracle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sweep-oracle")


@pytest.mark.parametrize("name", TRACES)
@pytest.mark.parametrize("policy", list(LCS_POLICIES))
def test_unpinned_sweep_equals_libcachesim(
    traces_dir: Path, oracle_dir: Path, name: str, policy: str
) -> None:
    trace = traces_dir / name
    oracle_file, refs, unique = _oracle_file(trace, oracle_dir)
    # libCacheSim's S3-FIFO aborts the process below ~10 objects: keep every capacity above.
    capacities = [float(max(16, int(unique * f))) for f in FRACTIONS]
    methods = ["simulate", "exact"] if policy == "lru" else ["simulate"]
    for method in methods:
        tasks = build_tasks([_source(trace)], [capacities], SweepSpec("paged", pin=False),
                            [policy], method=method, sample_rate=1.0)  # fmt: skip
        counts = [c for task in tasks for c in run_task(task) if isinstance(c, Counts)]
        for capacity, c in zip(capacities, counts, strict=True):
            expected = _libcachesim_hits(oracle_file, refs, policy, int(capacity))
            assert (method, int(capacity), c.hits) == (method, int(capacity), expected)
            assert c.hits + c.misses == refs
            assert c.rejected == 0
