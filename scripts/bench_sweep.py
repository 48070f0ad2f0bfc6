"""The sweep and answers rows of scripts/bench.py: the exact LRU curve and SHARDS against
one replay, the worker grid, and targets, tokens and tiers (issue 24).
"""

from __future__ import annotations

import functools
import os
import statistics
import time
from typing import Any

import bench_baselines as baselines
from bench_common import CONVERSATION, SHORT_PAIR_TURNS, Row, load_requests, paged_replay, paired


def _log_capacities(unique: int, count: int) -> list[int]:
    """At least ``count`` distinct log-spaced capacities from 1 to ``unique`` (rounding merges
    some small ones, so more points are drawn until enough are distinct).
    """
    points = count
    while True:
        capacities = {max(1, round(unique ** (i / (points - 1)))) for i in range(points)}
        if len(capacities) >= count:
            return sorted(capacities)
        points += 1


def bench_sweep(reps: int, rows: list[Row], *, grid_reps: int) -> None:
    """Items 7-9: sweep's exact LRU curve and SHARDS against one replay; workers 2 vs 1."""
    from kvreceipts.sweep import methods
    from kvreceipts.sweep.executors import run_tasks
    from kvreceipts.sweep.grid import SweepSpec, build_tasks
    from kvreceipts.sweep.profile import lru_profile
    from kvreceipts.sweep.sources import Source

    requests = load_requests(CONVERSATION)
    blocks = [h for r in requests for h in r.block_hashes]
    unique = len(set(blocks))
    capacity = int(unique * 0.05)
    replay = functools.partial(paged_replay, requests, capacity)

    def exact(capacities: list[int]) -> list[Any]:
        profile = lru_profile(requests, 512)
        return [profile.counts(c) for c in capacities]

    hundred = _log_capacities(unique, 100)
    curve = paired(lambda: exact(hundred), replay, reps)
    assert exact([capacity])[0].hits == paged_replay(requests, capacity).hits, "exact != replay"
    note = f"{len(hundred)} capacities, {len(blocks):,} block refs"
    rows.append(Row("sweep exact LRU curve (stack distances, prefix tokens)", curve.a * 1000, "ms",
                    note=note))  # fmt: skip
    rows.append(Row("ratio: exact curve / one replay", curve.ratio, "x", "<= 10",
                    curve.ratio <= 10))  # fmt: skip

    from kvreceipts.sweep import shards as shards_module

    def shards() -> list[Any]:
        flat = [h for r in requests for h in r.block_hashes]
        return methods.lru_counts(shards_module.shards(flat, 0.01), forty, len(flat))

    forty = _log_capacities(unique, 40)
    sampled = paired(shards, replay, SHORT_PAIR_TURNS * reps)
    rows.append(Row("sweep shards R=0.01, 40 capacities", sampled.a * 1000, "ms",
                    note=f"{shards()[0].sampled_refs:,} sampled refs"))  # fmt: skip
    rows.append(Row("ratio: shards / one replay", sampled.ratio, "x", "<= 0.5",
                    sampled.ratio <= 0.5))  # fmt: skip
    twenty = _log_capacities(unique, 20)
    truth = exact(twenty)

    def mae(distances: Any) -> float:
        estimate = methods.lru_counts(distances, twenty, len(blocks))
        return float(statistics.mean(abs(a.misses - b.misses) / len(blocks)
                               for a, b in zip(truth, estimate, strict=True)))  # fmt: skip

    variants = [
        ("uniform SHARDS-adj (before issue 24)", baselines.shards_distances(blocks, 0.01)),
        ("SHARDS-adj, heavy blocks exact, short reuses bounded",
         shards_module.shards(blocks, 0.01, adjust=True)),
        ("kvreceipts: heavy exact, short reuses bounded, / sample weight",
         shards_module.shards(blocks, 0.01)),
        ("the same, fixed size S=1,000 blocks",
         shards_module.shards(blocks, 0.01, max_blocks=1000)),
    ]  # fmt: skip
    for label, distances in variants:
        error = mae(distances)
        goal = "<= 0.01" if label.startswith("kvreceipts") else ""
        rows.append(Row(f"shards R=0.01 MAE: {label}", error, "", goal,
                        error <= 0.01 if goal else None,
                        note="vs exact, 20 log-spaced capacities"))  # fmt: skip
    expected = shards_module.expected_error(blocks, 0.01, twenty)
    rows.append(Row("shards R=0.01 expected error (split-half), as printed", expected, "",
                    note="beside the sampled rows"))  # fmt: skip

    synthetic = CONVERSATION.with_name("mooncake_synthetic_trace.jsonl")
    source = Source(trace=str(synthetic), trace_format="mooncake")
    grid_unique = len({h for r in load_requests(synthetic) for h in r.block_hashes})
    tasks = build_tasks([source], [[float(c) for c in _log_capacities(grid_unique, 25)]],
                        SweepSpec("paged"), ["lru", "fifo", "lfu", "s3fifo"], method="simulate",
                        sample_rate=1.0)  # fmt: skip
    one = functools.partial(run_tasks, tasks, workers=1)
    two = functools.partial(run_tasks, tasks, workers=2)
    assert one() == two(), "workers 1 and 2 disagree"
    grid = paired(one, two, grid_reps)
    speedup = grid.ratio  # per-turn time with 1 worker / with 2
    note = f"{len(tasks)} replays of {synthetic.name}, {os.cpu_count()} CPUs"
    rows.append(Row("sweep grid 4 policies x 25 capacities, --workers 1", grid.a, "s", note=note))
    rows.append(Row("sweep grid, --workers 2", grid.b, "s"))
    rows.append(Row("speed-up: workers 2 / 1", speedup, "x", ">= 1.7", speedup >= 1.7))


def bench_answers(reps: int, rows: list[Row], *, search: bool = True) -> None:
    """Issue 24: exact LRU with targets, prefix tokens and three tiers against today's exact
    curve (stack distances and 100 capacities, as before the issue); the simulations a
    non-LRU target takes.
    """
    from kvreceipts.sweep import methods
    from kvreceipts.sweep.grid import SweepSpec, Task, run_task
    from kvreceipts.sweep.profile import lru_profile
    from kvreceipts.sweep.sources import Source
    from kvreceipts.sweep.targets import Answer

    requests = load_requests(CONVERSATION)
    blocks = [h for r in requests for h in r.block_hashes]
    hundred = _log_capacities(len(set(blocks)), 100)
    block = 512 * 131072  # llama-3-8b: 64 MiB a block
    tiers = (80 * 2**30 // block, 512 * 2**30 // block, 4 * 2**40 // block)

    def today() -> list[Any]:
        flat = [h for r in requests for h in r.block_hashes]
        return methods.lru_counts(baselines.stack_distances(flat), hundred, len(flat))

    def answers() -> list[Any]:
        profile = lru_profile(requests, 512)
        out: list[Any] = [profile.counts(c) for c in hundred]
        out += [profile.smallest_capacity(t) for t in (0.3, 0.35, 0.4)]
        out.append(profile.smallest_capacity(0.3, tokens=True))
        out.append(profile.counts(sum(tiers), tiers))
        return out

    got = answers()
    assert [c.hits for c in today()] == [c.hits for c in got[: len(hundred)]], "exact changed"
    pair = paired(answers, today, reps)
    rows.append(Row("sweep exact LRU + 3 targets, token target, tokens, 3 tiers", pair.a * 1000,
                    "ms", note=f"{len(hundred)} capacities, conversation trace"))  # fmt: skip
    rows.append(Row("sweep exact LRU curve as before issue 24", pair.b * 1000, "ms"))
    rows.append(Row("ratio: with answers / as before", pair.ratio, "x", "<= 2",
                    pair.ratio <= 2))  # fmt: skip
    if not search:
        return
    source = Source(trace=str(CONVERSATION), trace_format="mooncake")
    for policy in ("fifo", "lfu", "s3fifo"):
        task = Task(0, source, SweepSpec("paged", pin=False), policy, "simulate", (), 1.0,
                    (("hit_ratio", 0.3),))  # fmt: skip
        start = time.perf_counter()
        answer = run_task(task)[0]
        elapsed = time.perf_counter() - start
        assert isinstance(answer, Answer)
        rows.append(Row(f"target hit ratio 0.3, {policy} --no-pin: simulations",
                        answer.simulations, "", "<= 12", answer.simulations <= 12,
                        note=f"answer {answer.capacity:,} blocks, {elapsed:.1f} s"))  # fmt: skip
