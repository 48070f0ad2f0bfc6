"""kvreceipts benchmarks: measured side by side in one run, reported as medians and ratios.

    python scripts/bench.py            # the table
    python scripts/bench.py --json     # machine-readable
    python scripts/bench.py --quick    # fewer repetitions, smaller arena run

Reads the real traces from ../shared/traces (next to the checkout). Each measurement warms up
once and then repeats; the table shows the median of the repetitions.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
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


def bench_paged(reps: int, rows: list[Row], tmp: str) -> None:
    """Items 1-3: paged LRU replay vs its peers; receipts on; feature off vs disabled."""
    from kvreceipts import features
    from kvreceipts.sinks import JsonlSink

    requests = load_requests(CONVERSATION)
    blocks = [h for r in requests for h in r.block_hashes]
    capacity = int(len(set(blocks)) * 0.05)
    oracle_file = str(Path(tmp) / "conversation.oracleGeneral")
    write_oracle_general(blocks, oracle_file)

    replay = functools.partial(paged_replay, requests, capacity)
    turns = SHORT_PAIR_TURNS * reps
    vs_bare = paired(replay, lambda: ordered_dict_lru(blocks, capacity), turns)
    vs_lcs = paired(replay, lambda: libcachesim_lru(oracle_file, capacity, len(blocks)), turns)
    hits = paged_replay(requests, capacity).hits
    assert (
        hits
        == ordered_dict_lru(blocks, capacity)
        == libcachesim_lru(oracle_file, capacity, len(blocks))
    ), "the three LRUs disagree"
    refs = f"{len(requests):,} requests, {len(blocks):,} block refs, capacity {capacity:,}"
    rows.append(Row("paged LRU replay, receipts off", vs_bare.a * 1000, "ms", note=refs))
    rows.append(Row("bare OrderedDict LRU loop", vs_bare.b * 1000, "ms"))
    rows.append(Row("libCacheSim LRU (C, process_trace)", vs_lcs.b * 1000, "ms"))
    rows.append(Row("ratio: paged / OrderedDict", vs_bare.ratio, "x", "<= 2.0",
                    vs_bare.ratio <= 2.0))  # fmt: skip
    rows.append(Row("ratio: paged / libCacheSim", vs_lcs.ratio, "x", "<= 5", vs_lcs.ratio <= 5))

    out = Path(tmp) / "receipts.jsonl"

    def remove_output() -> None:  # untimed: freeing the last turn's 130 MB is no sealing
        out.unlink(missing_ok=True)

    def with_receipts() -> Any:
        return paged_replay(requests, capacity, sink=JsonlSink(out, flush="batch"), receipts=True)

    on = paired(with_receipts, replay, reps, remove_output)
    remove_output()
    emitted = with_receipts().receipts_emitted
    rate = emitted / on.a
    note = f"{emitted:,} receipts, chained, flush=batch, fsync on close"
    rows.append(Row("paged LRU replay, receipts on -> JSONL", on.a * 1000, "ms", note=note))
    rows.append(Row("receipts per second", rate, "/s", ">= 150,000", rate >= 150_000))
    rows.append(Row("ratio: receipts on / off", on.ratio, "x"))

    def without_tuning() -> Any:
        with features.overridden("receipts"):
            return with_receipts()

    lean = paired(without_tuning, with_receipts, reps, remove_output)
    rows.append(Row("receipts per second, tuning off", emitted / lean.a, "/s",
                    note="no performance block: smaller records"))  # fmt: skip

    def feature_off() -> Any:
        with features.overridden(""):
            return paged_replay(requests, capacity)

    def present_but_disabled() -> Any:
        sink = JsonlSink(out, flush="batch")
        return paged_replay(requests, capacity, sink=sink, receipts=False)

    remove_output()  # else the kernel writes the last turn's 130 MB back while the pair runs
    gate = paired(present_but_disabled, feature_off, turns)
    rows.append(Row("receipts feature off", gate.b * 1000, "ms"))
    rows.append(Row("feature on, sink set, enable_receipts=false", gate.a * 1000, "ms"))
    rows.append(Row("ratio: disabled / feature off", gate.ratio, "x", "<= 1.02",
                    gate.ratio <= 1.02))  # fmt: skip


def _kvreceipts() -> list[str]:
    exe = Path(sys.executable).with_name("kvreceipts")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "kvreceipts"]


def bench_receipt_files(reps: int, rows: list[Row], tmp: str) -> None:
    """Issue 16: lean receipts as a user makes and checks them, whole processes."""
    out = Path(tmp) / "conversation.jsonl"
    replay = [*_kvreceipts(), "simulate", "--trace", str(CONVERSATION), "--capacity-blocks",
              "9139", "-q", "--format", "json"]  # fmt: skip

    def receipts_on() -> None:
        subprocess.run([*replay, "-o", str(out)], check=True, capture_output=True)

    def receipts_off() -> None:
        subprocess.run([*replay, "--no-receipts"], check=True, capture_output=True)

    pair = paired(receipts_on, receipts_off, reps, lambda: out.unlink(missing_ok=True))
    receipts_on()  # the file the rows below read (the pair's last turn may have removed it)
    lines = sizes = 0
    with out.open("rb") as stream:
        for line in stream:
            if b'"kind":"eviction"' in line:
                lines += 1
                sizes += len(line)
    mean = sizes / lines
    rows.append(Row("mean bytes per eviction line, lean layout", mean, "B", "<= 600",
                    mean <= 600, f"{lines:,} eviction lines"))  # fmt: skip
    rows.append(Row("simulate -o, receipts on (process)", pair.a, "s"))
    rows.append(Row("simulate --no-receipts (process)", pair.b, "s"))
    rows.append(Row("ratio: receipts on / off, whole process", pair.ratio, "x", "<= 5",
                    pair.ratio <= 5))  # fmt: skip
    records = sum(1 for _ in out.open("rb"))
    check = [*_kvreceipts(), "verify", str(out), "--format", "json"]
    times = [_timed(lambda: subprocess.run(check, check=True, capture_output=True))
             for _ in range(reps + 1)][1:]  # fmt: skip
    rate = records / statistics.median(times)
    rows.append(Row("verify, records per second (process)", rate, "/s", ">= 100,000",
                    rate >= 100_000, f"{records:,} records"))  # fmt: skip
    plain = out.stat().st_size
    packed = {}
    for suffix in (".zst", ".gz"):  # the same (deterministic) run, written compressed
        target = out.with_name(out.name + suffix)
        target.unlink(missing_ok=True)
        subprocess.run([*replay, "-o", str(target)], check=True, capture_output=True)
        packed[suffix] = target.stat().st_size / plain
    rows.append(Row("file size, .zst / plain (the same run)", packed[".zst"], "", "<= 0.15",
                    packed[".zst"] <= 0.15, f"{plain:,} B plain; .gz / plain "
                    f"{packed['.gz']:.3f}"))  # fmt: skip


_PEAK_CHILD = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, capture_output=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""
"""Runs one command and prints its peak RSS in KiB (a fresh parent: the max is that child's)."""


def _process(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one whole process."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", _PEAK_CHILD, *argv], check=True,
                            capture_output=True, text=True)  # fmt: skip
    return time.perf_counter() - start, int(result.stdout) / 1024


def bench_proofs(reps: int, rows: list[Row], tmp: str, *, million: int) -> None:
    """Issue 23: sealing with a signing key, prove on a large file, verify-proof, verify --vkey."""
    from kvreceipts.checkpoints import Checkpoints
    from kvreceipts.proofs.note import generate
    from kvreceipts.sinks import JsonlSink

    signer = generate("bench")
    pub = Path(tmp) / "bench.pub"
    pub.write_text(signer.verifier.key_string + "\n")
    requests = load_requests(CONVERSATION)
    capacity = int(len({h for r in requests for h in r.block_hashes}) * 0.05)
    out = Path(tmp) / "signed.jsonl"
    every = 10_000

    def remove_output() -> None:
        out.unlink(missing_ok=True)

    def replay(checkpoints: Any) -> Any:
        sink = JsonlSink(out, flush="batch")
        return paged_replay(requests, capacity, sink=sink, receipts=True, checkpoints=checkpoints)

    signing = Checkpoints(signer=signer, every=every)
    pair = paired(lambda: replay(signing), lambda: replay(None), reps, remove_output)
    remove_output()
    emitted = replay(signing).receipts_emitted
    rate = emitted / pair.a
    rows.append(Row(f"receipts per second, --sign-key --checkpoint-every {every:,}", rate, "/s",
                    ">= 150,000", rate >= 150_000, f"{emitted:,} receipts to JSONL"))  # fmt: skip
    rows.append(Row("ratio: signed / unsigned sealing", pair.ratio, "x",
                    note="both with the Merkle frontier: it is always kept"))  # fmt: skip
    records = sum(1 for _ in out.open("rb"))
    check = [*_kvreceipts(), "verify", str(out), "--vkey", str(pub), "--format", "json"]
    times = [_timed(lambda: subprocess.run(check, check=True, capture_output=True))
             for _ in range(reps + 1)][1:]  # fmt: skip
    rate = records / statistics.median(times)
    rows.append(Row("verify --vkey, records per second (process)", rate, "/s", ">= 100,000",
                    rate >= 100_000, f"{records:,} records"))  # fmt: skip
    # A signed run of about `million` records: the trace over and over, at a tenth of the size.
    big = Path(tmp) / "million.jsonl"
    out.unlink()
    repeated = requests * -(-million // emitted)
    sink = JsonlSink(big, flush="batch")
    paged_replay(repeated, capacity // 10, sink=sink, receipts=True, checkpoints=signing)
    records = sum(1 for _ in big.open("rb"))
    bundle = Path(tmp) / "proof.json"
    prove = [*_kvreceipts(), "prove", str(big), "--seq", str(records // 2), "-o", str(bundle),
             "--force"]  # fmt: skip
    samples = [_process(prove) for _ in range(max(3, reps // 2))]
    seconds = statistics.median(s for s, _ in samples)
    peak = statistics.median(m for _, m in samples)
    note = f"{records:,} records, one run"
    rows.append(Row("prove one receipt (process)", seconds, "s", "<= 5", seconds <= 5, note))
    rows.append(Row("prove one receipt, peak RSS", peak, "MiB", "<= 100", peak <= 100, note))


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
    from kvreceipts.sweep.grid import Source, SweepSpec, build_tasks

    requests = load_requests(CONVERSATION)
    blocks = [h for r in requests for h in r.block_hashes]
    unique = len(set(blocks))
    capacity = int(unique * 0.05)
    replay = functools.partial(paged_replay, requests, capacity)

    def exact(capacities: list[int]) -> list[Any]:
        flat = [h for r in requests for h in r.block_hashes]
        return methods.lru_counts(methods.stack_distances(flat), capacities, len(flat))

    hundred = _log_capacities(unique, 100)
    curve = paired(lambda: exact(hundred), replay, reps)
    assert exact([capacity])[0].hits == paged_replay(requests, capacity).hits, "exact != replay"
    note = f"{len(hundred)} capacities, {len(blocks):,} block refs"
    rows.append(Row("sweep exact LRU curve (Fenwick stack distances)", curve.a * 1000, "ms",
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
        ("uniform SHARDS-adj (before issue 24)", methods.shards_distances(blocks, 0.01)),
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
    from kvreceipts.sweep.grid import Source, SweepSpec, Task, run_task
    from kvreceipts.sweep.profile import lru_profile
    from kvreceipts.sweep.targets import Answer

    requests = load_requests(CONVERSATION)
    blocks = [h for r in requests for h in r.block_hashes]
    hundred = _log_capacities(len(set(blocks)), 100)
    block = 512 * 131072  # llama-3-8b: 64 MiB a block
    tiers = (80 * 2**30 // block, 512 * 2**30 // block, 4 * 2**40 // block)

    def today() -> list[Any]:
        flat = [h for r in requests for h in r.block_hashes]
        return methods.lru_counts(methods.stack_distances(flat), hundred, len(flat))

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


def bench_startup(reps: int, rows: list[Row]) -> None:
    """Item 4: `kvreceipts --version` as a whole process."""
    command = _kvreceipts()

    def run(args: list[str]) -> None:
        subprocess.run(args, check=True, capture_output=True)

    start = paired(lambda: run([*command, "--version"]),
                   lambda: run([sys.executable, "-c", "pass"]), max(reps, 9))  # fmt: skip
    rows.append(Row("kvreceipts --version (process)", start.a, "s", "<= 0.2", start.a <= 0.2))
    rows.append(Row("python -c pass (process)", start.b, "s"))


def bench_proof_tools(reps: int, rows: list[Row], tmp: str) -> None:
    """Issue 23: the Merkle frontier's append (once per sealed receipt) and ``verify-proof``
    as a whole process, beside ``--version``.
    """
    import hashlib

    from kvreceipts.proofs import bundle, checkpoint, merkle, note

    hashes = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(200_000)]

    def appends() -> None:
        append = merkle.Frontier().append
        for h in hashes:
            append(h)

    samples = [_timed(appends) for _ in range(max(reps, 5))]
    per = statistics.median(samples) / len(hashes) * 1e6
    rows.append(Row("Frontier.append (Merkle leaf, in process)", per, "µs",
                    note=f"{len(hashes):,} appends, a 32-byte leaf hash each"))  # fmt: skip
    out = Path(tmp) / "proof"
    out.mkdir()
    command = _kvreceipts()

    def run(args: list[str]) -> bytes:
        return subprocess.run(args, check=True, capture_output=True).stdout

    run([*command, "keygen", "bench.example", "-o", str(out / "k")])
    lines = run([*command, "simulate", "--requests", "3000", "-q", "-f", "jsonl"])
    leaves = [merkle.leaf_hash(line) for line in lines.splitlines()]
    run_id, index = json.loads(lines.splitlines()[0])["run_id"], len(leaves) // 2
    signer = note.parse_signer((out / "k.key").read_text())
    signed = checkpoint.sign_checkpoint(checkpoint.Checkpoint(
        bundle.origin_for(run_id), len(leaves), merkle.root_of(leaves)), signer)  # fmt: skip
    document = bundle.proof_bundle(
        run_id=run_id, record=lines.splitlines()[index].decode(), leaf_index=index,
        tree_size=len(leaves), inclusion=merkle.inclusion_proof_of(leaves, index),
        checkpoint=signed)  # fmt: skip
    (out / "p.json").write_text(json.dumps(document))
    verify = [*command, "verify-proof", str(out / "p.json"), "--vkey", str(out / "k.pub")]
    pair = paired(lambda: run(verify), lambda: run([*command, "--version"]), max(reps, 9))
    rows.append(Row("verify-proof (process)", pair.a, "s", "<= 0.3", pair.a <= 0.3,
                    f"{pair.ratio:.2f}x kvreceipts --version ({pair.b:.3f} s), one receipt "
                    f"of {len(leaves):,}"))  # fmt: skip


ONE_REQUEST = '{"timestamp": 0, "input_length": 512, "output_length": 1, "hash_ids": [0]}\n'
BARE_LRU_SCRIPT = """
import sys
from collections import OrderedDict
import orjson
capacity = int(sys.argv[2])
cache = OrderedDict()
hits = 0
with open(sys.argv[1], "rb") as trace:
    for line in trace:
        for block in orjson.loads(line)["hash_ids"]:
            if block in cache:
                cache.move_to_end(block)
                hits += 1
            else:
                cache[block] = None
                if len(cache) > capacity:
                    cache.popitem(last=False)
print(hits)
"""
"""The whole-process peer of a replay: read the trace's JSON lines (orjson, as kvreceipts does)
and run the bare OrderedDict LRU over their block hashes."""


def bench_process_replay(reps: int, rows: list[Row], tmp: str) -> None:
    """Issue 25: start-up. ``simulate`` on a one-request trace, and a whole-process replay of
    the conversation trace against a whole-process bare OrderedDict LRU script, side by side.
    """
    one = Path(tmp) / "one_request.jsonl"
    one.write_text(ONE_REQUEST, encoding="utf-8")
    bare = Path(tmp) / "bare_lru.py"
    bare.write_text(BARE_LRU_SCRIPT, encoding="utf-8")
    capacity = "9139"
    single = [*_kvreceipts(), "simulate", "--trace", str(one), "-q", "--format", "json"]
    replay = [*_kvreceipts(), "simulate", "--trace", str(CONVERSATION), "--capacity-blocks",
              capacity, "--no-receipts", "-q", "--format", "json"]  # fmt: skip
    peer = [sys.executable, str(bare), str(CONVERSATION), capacity]

    def run(args: list[str]) -> bytes:
        return subprocess.run(args, check=True, capture_output=True).stdout

    hits = json.loads(run(replay))["stats"]["cache_hits"]
    assert hits == int(run(peer)), "the replay and the bare LRU disagree"
    start = paired(lambda: run(single), lambda: run([sys.executable, "-c", "pass"]),
                   max(reps, 9))  # fmt: skip
    cpu = []
    for _ in range(max(reps, 9)):  # a busy machine stretches wall time; CPU time says the cost
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        run(single)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    rows.append(Row("simulate, one-request trace (process)", start.a, "s", "<= 0.12",
                    start.a <= 0.12, f"{statistics.median(cpu):.3f} s CPU; python -c pass: "
                    f"{start.b:.3f} s; load average {os.getloadavg()[0]:.1f}"))  # fmt: skip
    whole = paired(lambda: run(replay), lambda: run(peer), reps)
    rows.append(Row("simulate --no-receipts, conversation trace (process)", whole.a, "s",
                    note=f"{hits:,} block hits, capacity {capacity} blocks"))  # fmt: skip
    rows.append(Row("bare OrderedDict LRU script, same trace (process)", whole.b, "s",
                    note="orjson per line, as kvreceipts reads it"))  # fmt: skip
    rows.append(Row("ratio: simulate / bare script, whole process", whole.ratio, "x", "<= 2.0",
                    whole.ratio <= 2.0))  # fmt: skip


def bench_stats(reps: int, rows: list[Row], tmp: str) -> None:
    """``stats`` on the lean default run (593 records) as a whole process, and the summary
    alone in this process (what the bounds of issue 26 could cost).
    """
    lean = Path(tmp) / "lean.jsonl"
    subprocess.run([*_kvreceipts(), "simulate", "-q", "-o", str(lean), "--format", "json"],
                   check=True, capture_output=True)  # fmt: skip
    command = [*_kvreceipts(), "stats", str(lean), "--format", "json"]
    process = [_timed(lambda: subprocess.run(command, check=True, capture_output=True))
               for _ in range(max(reps, 7))]  # fmt: skip
    from kvreceipts.commands.reading import open_receipts
    from kvreceipts.engine.figures import EngineFigures
    from kvreceipts.summarize import summarize_lines

    def summarize() -> None:
        with open_receipts(str(lean)) as lines:
            summarize_lines(lines, path=str(lean), engine=EngineFigures()).to_dict(10)

    def twenty() -> None:
        for _ in range(20):
            summarize()

    alone = [_timed(twenty) / 20 for _ in range(max(reps, 7))]
    rows.append(Row("stats, lean 593-record run (process)", statistics.median(process), "s"))
    rows.append(Row("stats, lean run: the summary alone", statistics.median(alone) * 1000, "ms"))


def mutation_rows(rows: list[Row]) -> None:
    """The mutation score of each module mutmut has results for (``nox -s mutants``)."""
    script = ROOT / "scripts" / "mutants_score.py"
    done = subprocess.run([sys.executable, str(script), "--json"], capture_output=True,
                          text=True, check=False)  # fmt: skip
    found: dict[str, dict[str, int]] = json.loads(done.stdout or "{}")
    for module, counts in found.items():
        killed, survived = counts.get("killed", 0), counts.get("survived", 0)
        checked = killed + survived + counts.get("suspicious", 0)
        if checked:
            score = 100 * killed / checked
            rows.append(Row(f"mutants killed: {module}", score, "%", ">= 90", score >= 90,
                            f"{killed}/{checked} (mutants/, from nox -s mutants)"))  # fmt: skip


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


WATCH_REMOVALS = 1_000_000
WATCH_PER_BATCH = 8


def make_watch_recording(path: str, removals: int, per_batch: int = WATCH_PER_BATCH) -> int:
    """A recording as ``watch --record`` writes it: batches of one ``BlockStored`` of
    ``per_batch`` new hashes and ``per_batch`` ``BlockRemoved`` events of one hash each (vLLM's
    shape), removing what was stored four batches earlier. Returns the removal events.
    """
    import msgspec

    from kvreceipts.engine.recording import FINISH, MESSAGE, Recorder

    start = 1_750_000_000.0
    header = {"run_id": "bench", "start_s": start, "source": "watch", "endpoint": "bench",
              "topic": "", "replay_endpoint": None, "regret_window_s": 60.0}  # fmt: skip
    recorder = Recorder(path, header)
    encode = msgspec.msgpack.Encoder().encode
    batches = removals // per_batch + 4
    for b in range(batches):
        stored = {"type": "BlockStored", "block_hashes": list(range(b * per_batch,
                  (b + 1) * per_batch)), "parent_block_hash": None, "token_ids": [],
                  "block_size": 16, "lora_id": None, "medium": "GPU"}  # fmt: skip
        gone = range((b - 4) * per_batch, (b - 3) * per_batch) if b >= 4 else range(0)
        events = [stored, *({"type": "BlockRemoved", "block_hashes": [h], "medium": "GPU"}
                            for h in gone)]  # fmt: skip
        ts = start + b / 1000
        recorder.entry(MESSAGE, ts + 0.0002, [b"", b.to_bytes(8, "big"), encode([ts, events, 0])])
    recorder.entry(FINISH, start + batches / 1000 + 1, [])
    recorder.close()
    return (batches - 4) * per_batch


def bench_watch_from(reps: int, rows: list[Row], tmp: str, removals: int) -> None:
    """``watch --from`` a recording, receipts to a file, as a whole process."""
    recording = str(Path(tmp) / "watch.kvrec")
    events = make_watch_recording(recording, removals)
    out = Path(tmp) / "watch.jsonl"

    def run() -> None:
        subprocess.run([*_kvreceipts(), "watch", "--from", recording, "-o", str(out), "-f",
                        "table", "-q"], check=True, stdout=subprocess.DEVNULL)  # fmt: skip

    times, cpu = [], []
    for _ in range(max(1, reps)):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        times.append(_timed(run, lambda: out.unlink(missing_ok=True)))
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    lines = sum(1 for _ in out.open("rb"))
    assert lines == events + 3, f"{lines} lines for {events} removals (+ open, tally, close)"
    rate = events / statistics.median(times)
    # A busy machine stretches the wall time; the process's own CPU time says what it costs.
    rows.append(Row(f"watch --from, {events:,} removal events, receipts to a file (process)",
                    rate, "ev/s", ">= 100,000", rate >= 100_000,
                    f"median of {len(times)}: {statistics.median(times):.2f} s wall, "
                    f"{statistics.median(cpu):.2f} s CPU ({events / statistics.median(cpu):,.0f}"
                    " ev/s of CPU time); load average "
                    f"{os.getloadavg()[0]:.1f}"))  # fmt: skip


def bench_watch_live(
    rows: list[Row], tmp: str, seconds: float, rate: int, *, replay: bool = True
) -> None:
    """A live publisher at ``rate`` batches/s of 8 events for ``seconds``: every batch is
    processed or declared lost (engine_loss), none vanishes.
    """
    import orjson

    sys.path.insert(0, str(ROOT / "tests"))
    publisher: Any = importlib.import_module("watch_publisher")  # the tests' engine stand-in
    stored, removed = publisher.stored, publisher.removed

    out = Path(tmp) / "live.jsonl"
    out.unlink(missing_ok=True)
    with publisher.Publisher() as pub:
        proc = subprocess.Popen(
            [*_kvreceipts(), "watch", pub.endpoint, "-o", str(out), "-f", "table", "-q",
             "--idle-timeout", "3",
             *(["--replay-endpoint", str(pub.replay_endpoint)] if replay else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        pub.wait_subscribed()
        total = int(seconds * rate)
        begin = time.perf_counter()
        for n in range(total):
            ahead = begin + n / rate - time.perf_counter()
            if ahead > 0.001:
                time.sleep(ahead)
            new = [stored([4 * n + k]) for k in range(4)]
            pub.batch([*new, *(removed([4 * (n - 1) + k]) for k in range(4) if n)])
        sent_s = time.perf_counter() - begin
        _, stderr = proc.communicate(timeout=600)
    seen: set[int] = set()
    declared: set[int] = set()
    for line in out.open("rb"):
        record = orjson.loads(line)
        if record["kind"] == "engine_removal":
            seen.add(record["engine_seq"])
        elif record["kind"] == "engine_loss":
            declared.update(range(record["first_engine_seq"], record["last_engine_seq"] + 1))
    seen.add(0)  # the first batch removes nothing
    vanished = total - len(seen | declared)
    rows.append(Row(f"watch live{'' if replay else ' (no replay socket)'}: {rate:,} batches/s"
                    f" x 8 events for {seconds:g} s, lost",
                    len(declared), "batch", "0 or declared", vanished == 0,
                    f"{total:,} sent in {sent_s:.1f} s; {len(declared):,} declared lost, "
                    f"{vanished:,} unaccounted; exit {proc.returncode}"
                    + (f": {stderr.decode().strip().splitlines()[-1]}" if proc.returncode
                       else "")))  # fmt: skip


def bench_watch_vllm(rows: list[Row], tmp: str, seconds: float, rate: int) -> None:
    """The live watch against vLLM 0.34.0's own ``ZmqEventPublisher`` (its ``kv_events.py``
    from the wheel, see tests/engine_wheels.py) at ``rate`` batches/s of 8 events (4 stores,
    4 removals) for ``seconds``, replay socket on: every batch is processed or declared
    lost; the events/s the watch processed.
    """
    import orjson

    sys.path.insert(0, str(ROOT / "tests"))
    wheels: Any = importlib.import_module("engine_wheels")
    name = f"watch live, vLLM 0.34.0's publisher: {rate:,} batches/s x 8 events for {seconds:g} s"
    try:
        vllm = wheels.load("vllm", "0.34.0")
    except wheels.WheelUnavailableError as exc:
        rows.append(Row(name, 0, "batch", "0 or declared", False, f"not run: {exc}"))
        return
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    out = Path(tmp) / "vllm-live.jsonl"
    out.unlink(missing_ok=True)
    idle = 3.0
    proc = subprocess.Popen(
        [*_kvreceipts(), "watch", f"tcp://127.0.0.1:{ports[0]}", "--replay-endpoint",
         f"tcp://127.0.0.1:{ports[1]}", "-o", str(out), "-f", "table", "-q",
         "--idle-timeout", str(idle), "--allow-loss"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    pub = vllm.ZmqEventPublisher(data_parallel_rank=0, endpoint=f"tcp://*:{ports[0]}",
                                 replay_endpoint=f"tcp://*:{ports[1]}")  # fmt: skip
    monitor = pub._pub.get_monitor_socket(importlib.import_module("zmq").EVENT_HANDSHAKE_SUCCEEDED)
    monitor.poll(30_000)
    pub._pub.disable_monitor()
    monitor.close(0)
    time.sleep(0.5)  # the subscription follows the handshake
    stored, removed, batch = vllm.BlockStored, vllm.BlockRemoved, vllm.KVEventBatch
    total = int(seconds * rate)
    begin = time.perf_counter()
    wall0 = time.time()
    for n in range(total):
        ahead = begin + n / rate - time.perf_counter()
        if ahead > 0.001:
            time.sleep(ahead)
        events = [stored(block_hashes=[4 * n + k], parent_block_hash=None, token_ids=[1] * 16,
                         block_size=16, lora_id=None, medium="GPU", lora_name=None)
                  for k in range(4)]  # fmt: skip
        if n:
            events += [removed(block_hashes=[4 * (n - 1) + k], medium="GPU") for k in range(4)]
        pub.publish(batch(ts=wall0 + n / rate, events=events, data_parallel_rank=0))
    sent_s = time.perf_counter() - begin
    _, stderr = proc.communicate(timeout=900)
    end = time.time()
    pub.shutdown()
    processed = lost = 0
    for line in out.open("rb"):
        if b'"kind":"engine_tally"' in line:
            tally = orjson.loads(line)
            processed, lost = tally["batches"], tally["lost_batches"]
    busy_s = max(end - wall0 - idle, 1e-9)
    vanished = total - processed - lost
    rows.append(Row(name + ", lost", lost, "batch", "0 or declared", vanished == 0,
                    f"{total:,} sent in {sent_s:.1f} s ({total / sent_s:,.0f}/s); "
                    f"{processed:,} processed, {processed * 8 / busy_s:,.0f} events/s over "
                    f"{busy_s:.1f} s; {lost:,} declared lost, {vanished:,} unaccounted; exit "
                    f"{proc.returncode}; load average {os.getloadavg()[0]:.1f}"
                    + (f": {stderr.decode().strip().splitlines()[-1]}" if proc.returncode
                       else "")))  # fmt: skip


NEEDS = {"receipts": ("libcachesim", "numpy"), "watch": ("zmq", "msgspec")}
"""What each group of rows imports beyond kvreceipts' own dependencies (pyzmq is ``zmq``)."""
GROUP_HINT = ("they come with the 'test' dependency group: pip install --group test -e . "
              "(pip 25.1 or newer), or run the bench as .venv-ci/bin/nox -s bench")  # fmt: skip


def missing_modules(groups: Sequence[str]) -> list[str]:
    """The modules the chosen groups need that this environment lacks (distribution names)."""
    from importlib.util import find_spec

    names = {"zmq": "pyzmq"}
    wanted = dict.fromkeys(m for g in groups for m in NEEDS.get(g, ()))
    return [names.get(m, m) for m in wanted if find_spec(m) is None]


def render(rows: list[Row]) -> str:
    """The results as a plain-text table."""
    width = max(len(r.name) for r in rows)
    lines = [f"{'measure':<{width}}  {'median':>12}  {'unit':<5}  {'goal':<11}  note"]
    for r in rows:
        value = f"{r.value:,.3f}" if r.value < 100 else f"{r.value:,.0f}"
        verdict = "" if r.ok is None else ("✅ " if r.ok else "❌ ")
        lines.append(f"{r.name:<{width}}  {value:>12}  {r.unit:<5}  {verdict + r.goal:<11}  "
                     f"{r.note}")  # fmt: skip
    return "\n".join(lines)


def _compile_bytecode() -> None:
    """Compile kvreceipts' bytecode before any process is timed. An install writes it, but
    with ``PYTHONDONTWRITEBYTECODE`` set (as on some CI machines) an editable checkout would
    otherwise compile every module in every timed process: start-up measured 0.21 s that way
    against 0.13 s with bytecode. A process still reads bytecode that exists.
    """
    import compileall

    import kvreceipts

    if not compileall.compile_dir(Path(kvreceipts.__file__).parent, quiet=2):
        print("warning: could not compile kvreceipts' bytecode; start-up rows include "
              "compiling", file=sys.stderr)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print the table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, smaller runs")
    parser.add_argument("--reps", type=int, default=0, help="repetitions per measure")
    parser.add_argument("--arena-requests", type=int, default=0)
    groups_all = ["receipts", "proofs", "startup", "sweep", "answers", "watch"]
    parser.add_argument("--only", choices=groups_all, help="run one group of measures")
    parser.add_argument("--watch", action="store_true",
                        help="also the watch rows: --from over 1,000,000 removal events, and a "
                        "live publisher for 30 s (--quick: 100,000 events, 5 s)")  # fmt: skip
    args = parser.parse_args(argv)
    groups = [args.only] if args.only else ["receipts", "startup", "sweep"]
    missing = missing_modules([*groups, *(["watch"] if args.watch else [])])
    if missing:
        print(f"error: scripts/bench.py needs {', '.join(missing)}, not installed here; "
              f"{GROUP_HINT}", file=sys.stderr)  # fmt: skip
        return 2
    if args.only == "watch":
        watch_rows = _watch_rows(args)
        print(json.dumps([dataclasses.asdict(r) for r in watch_rows], indent=2) if args.json
              else render(watch_rows))  # fmt: skip
        return 0
    if not CONVERSATION.exists():
        print(f"error: {CONVERSATION} not found (the benchmarks read the real traces)",
              file=sys.stderr)  # fmt: skip
        return 2
    _compile_bytecode()
    reps = args.reps or (3 if args.quick else 7)
    arena = args.arena_requests or (100_000 if args.quick else 1_000_000)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "receipts"):
            bench_paged(reps, rows, tmp)
            bench_receipt_files(reps, rows, tmp)
        if args.only in (None, "proofs"):
            bench_proofs(reps, rows, tmp, million=200_000 if args.quick else 1_000_000)
            bench_proof_tools(reps, rows, tmp)
        if args.only in (None, "startup"):
            bench_process_replay(reps, rows, tmp)
        if args.only is None:
            bench_startup(reps, rows)
            bench_stats(reps, rows, tmp)
            bench_memory(rows, tmp)
            bench_arena(arena, rows, tmp)
        if args.only in (None, "sweep"):
            bench_sweep(reps, rows, grid_reps=max(1, reps // 3))
        if args.only in (None, "sweep", "answers"):
            bench_answers(reps, rows)
    if args.watch:
        rows += _watch_rows(args)
    mutation_rows(rows)
    if args.json:
        print(json.dumps({"reps": reps, "python": sys.version.split()[0], "cpu_count":
                          os.cpu_count(), "rows": [dataclasses.asdict(r) for r in rows]},
                         indent=2))  # fmt: skip
    else:
        print(
            f"kvreceipts benchmarks: median of {reps} runs after a warm-up "
            f"({SHORT_PAIR_TURNS * reps} for the receipts-off replays), Python "
            f"{sys.version.split()[0]}, {os.cpu_count()} CPUs"
        )
        print(render(rows))
    return 0


def _watch_rows(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        removals = 100_000 if args.quick else WATCH_REMOVALS
        bench_watch_from(args.reps or (1 if args.quick else 3), rows, tmp, removals)
        bench_watch_live(rows, tmp, 5.0 if args.quick else 30.0, 20_000)
        bench_watch_vllm(rows, tmp, 5.0 if args.quick else 30.0, 20_000)
    return rows


if __name__ == "__main__":
    sys.exit(main())
