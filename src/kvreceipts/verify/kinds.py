"""The arithmetic of each kind, checked against the run it belongs to: an eviction's bytes and
counters, a batch's coverage and totals, a snapshot's pool, a loss record's range and kinds,
and the close record against everything the run held. Both of the verifier's paths call these
(a record read as attributes: a typed struct, or a parsed dict through ``_Fields``).

The invariants are stated in docs/receipts.md ("Invariants of a run"); each message here names
the one that failed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kvreceipts.verify.report import DeclaredLoss
from kvreceipts.verify.state import (
    MAX_ID,
    MAX_STREAK,
    MAX_TRACKED_BLOCKS,
    clip,
    instant,
    short_id,
)

if TYPE_CHECKING:
    from kvreceipts.verify.state import Checker, RunState

__all__ = [
    "MAX_TRACKED_BLOCKS_TOTAL",
    "check_batch",
    "check_close",
    "check_eviction",
    "check_loss",
    "check_snapshot",
    "stats_problems",
]

MAX_TRACKED_BLOCKS_TOTAL = 500_000
"""Evicted block hashes remembered for all open runs together (each run also at most
:data:`~kvreceipts.verify.state.MAX_TRACKED_BLOCKS`): past it, evictions are counted in
``untracked_evictions`` instead of checked for a repeat."""
MAX_KINDS = 64
"""Distinct kinds a run's loss records may name."""
_MB = 1024.0 * 1024.0
EVICTION_KINDS = ("eviction", "engine_removal")
"""The kinds ``final_stats.evictions`` counts (a simulated or library run's evictions, a
watch's engine removals)."""


def stats_problems(stats: Any, total_bytes: int, where: str) -> list[str]:
    """What is wrong with a full statistics block (upstream ``before``/``after``,
    ``final_stats``) against the run's pool: the pool size, bytes within it, and the figures
    upstream derives from the exact counters (computed the way the cache computes them).
    """
    problems = []
    used, total = stats.used_bytes, stats.total_bytes
    hits, misses = stats.cache_hits, stats.cache_misses
    if total != total_bytes:
        problems.append(f"{where}.total_bytes {total:,} is not the pool's {total_bytes:,} "
                        "(the open record's total_bytes)")  # fmt: skip
    if used > total:
        problems.append(f"{where}.used_bytes {used:,} exceeds its total_bytes {total:,}")
    derived = (
        ("total_memory_mb", total / _MB),
        ("used_memory_mb", used / _MB),
        ("memory_utilization", used / total if total else 0.0),
        ("hit_rate", hits / (hits + misses) if hits + misses else 0.0),
    )
    for name, expected in derived:
        value = getattr(stats, name)
        if value != expected:
            problems.append(f"{where}.{name} {clip(value)} is not {expected!r}, what the "
                            "counters give")  # fmt: skip
    if stats.memory_pool_efficiency > 1:
        problems.append(f"{where}.memory_pool_efficiency {clip(stats.memory_pool_efficiency)} "
                        "is above 1 (it is 1 - fragmentation)")  # fmt: skip
    return problems


def check_eviction(v: Checker, number: int, run: RunState, rec: Any) -> None:  # noqa: PLR0912
    """The arithmetic of one eviction, and its place among the run's evictions (this runs once
    per eviction: the common case takes no branch but the tests).
    """
    before, after, size, seq = rec.before, rec.after, rec.block_size_bytes, rec.seq
    used = before.used_bytes
    if after.used_bytes != used - size:
        v.fail(number, "bytes", f"after.used_bytes {after.used_bytes} != before.used_bytes "
               f"{used} - block_size_bytes {size}", seq, run)  # fmt: skip
    pool = run.total_bytes
    if used > pool or rec.block_offset + size > pool:
        v.fail(number, "bytes", f"bytes beyond the pool of {pool:,} (the open record's "
               f"total_bytes): before.used_bytes {used:,}, block {rec.block_offset:,}+{size:,}",
               seq, run)  # fmt: skip
    if after.total_sessions != before.total_sessions - 1:
        v.fail(number, "sessions", "total_sessions must drop by exactly one", seq, run)
    if run.layout == "upstream":
        _upstream(v, number, run, rec)
    evictions, hits, misses = after.evictions, after.cache_hits, after.cache_misses
    last = run.last_evictions
    if last is not None and evictions != last + 1:
        v.fail(number, "counter", f"after.evictions {evictions} does not follow the previous "
               f"eviction's {last}: an eviction receipt is missing or repeated", seq,
               run)  # fmt: skip
    if hits < run.last_hits or misses < run.last_misses:
        v.fail(number, "counter", "hit or miss counters went backwards", seq, run)
    run.last_evictions, run.last_hits, run.last_misses = evictions, hits, misses
    run.bytes_freed += size
    # The round this eviction belongs to: evictions with consecutive seqs since the barrier.
    streak = run.streak
    if seq != run.streak_next:
        del streak[:]
        run.streak_first, run.streak_bytes = seq, 0
    if seq - run.streak_first < MAX_STREAK:
        streak.append(run.streak_bytes)
    run.streak_bytes += size
    run.streak_next = seq + 1
    block_hash = rec.block_hash
    if block_hash is not None:
        evicted = run.evicted_at_misses
        seen = evicted.get(block_hash)
        if seen is None:
            if v.tracked_blocks < MAX_TRACKED_BLOCKS_TOTAL and len(evicted) < MAX_TRACKED_BLOCKS:
                evicted[block_hash] = misses
                v.tracked_blocks += 1
            else:
                v.report.untracked_evictions += 1
        else:
            if misses <= seen:
                v.fail(number, "block", f"block {block_hash} evicted again without a miss that "
                       "could have cached it in between", seq, run)  # fmt: skip
            evicted[block_hash] = misses


def _upstream(v: Checker, number: int, run: RunState, rec: Any) -> None:
    """An upstream eviction's full statistics, before and after."""
    before, after, seq = rec.before, rec.after, rec.seq
    if after.evictions != before.evictions + 1:
        v.fail(number, "counter", "evictions must rise by exactly one", seq, run)
    for where, stats in (("before", before), ("after", after)):
        for problem in stats_problems(stats, run.total_bytes, where):
            v.fail(number, "stats", problem, seq, run)


def barrier(run: RunState, seq: int, kind: str) -> None:
    """A record present that is no eviction ends the round: a batch covers only what follows."""
    run.barrier, run.barrier_kind = seq, kind
    del run.streak[:]
    run.streak_next = -1


def check_batch(v: Checker, number: int, record: dict[str, Any], run: RunState) -> None:
    """A batch covers the evictions of its round, just before it, and adds them up."""
    seq = record["seq"]
    first, last, freed = record["first_seq"], record["last_seq"], record["total_bytes_freed"]
    pool, used_before, used_after = run.total_bytes, record["pool_used_before"], \
        record["pool_used_after"]  # fmt: skip
    problems = []
    if record["count"] != last - first + 1 or last != seq - 1:
        problems.append(f"its range {first}..{last} and count {record['count']} do not end "
                        "just before it")  # fmt: skip
    elif first <= run.barrier:
        problems.append(f"its range {first}..{last} reaches back over seq {run.barrier}, "
                        f"a{'n' if run.barrier_kind[0] in 'aeiou' else ''} {run.barrier_kind} "
                        "record: a batch covers only the evictions of its round")  # fmt: skip
    if used_before - freed != record["pool_used_after_evictions"]:
        problems.append("pool_used_before - total_bytes_freed != pool_used_after_evictions")
    if record["pool_used_after_evictions"] + record["allocated_bytes"] != used_after:
        problems.append("pool_used_after_evictions + allocated_bytes != pool_used_after")
    if max(used_before, used_after) > pool:
        problems.append(f"pool bytes in use beyond the pool of {pool:,} (the open record's "
                        "total_bytes)")  # fmt: skip
    at = first - run.streak_first
    if not problems and last == run.streak_next - 1 and at >= 0:  # else a declared loss in it
        if at < len(run.streak):
            summed = run.streak_bytes - run.streak[at]
            if summed != freed:
                problems.append(f"its evictions freed {summed:,} bytes, not {freed:,}")
        else:
            v.report.unsummed_batches += 1
    for problem in problems:
        v.fail(number, "batch", problem, seq, run)
    barrier(run, seq, "eviction_batch")


def check_snapshot(v: Checker, number: int, record: dict[str, Any], run: RunState) -> None:
    """A snapshot's pool is the run's, its bytes within it, its counters never behind."""
    seq, pool = record["seq"], run.total_bytes
    if record["pool_total"] != pool or record["pool_used"] > pool:
        v.fail(number, "bytes", f"pool_used {record['pool_used']:,} of pool_total "
               f"{record['pool_total']:,}: the pool is {pool:,} (the open record's "
               "total_bytes)", seq, run)  # fmt: skip
    as_of = record["as_of_seq"]
    if as_of is not None and as_of >= seq:
        v.fail(number, "snapshot", f"as_of_seq {as_of} is not before the snapshot's seq {seq}",
               seq, run)  # fmt: skip
    if record["cache_hits"] < run.last_hits or record["cache_misses"] < run.last_misses:
        v.fail(number, "counter", "hit or miss counters went backwards", seq, run)
    run.last_hits = max(run.last_hits, record["cache_hits"])
    run.last_misses = max(run.last_misses, record["cache_misses"])
    barrier(run, seq, "snapshot")


def check_loss(v: Checker, number: int, record: dict[str, Any], run: RunState) -> None:
    """A loss record stands for a range of the chain that follows the record before the gap;
    its kinds add up to its count.
    """
    first, last, seq, count = record["first_seq"], record["last_seq"], record["seq"], \
        record["count"]  # fmt: skip
    lost_counts = record["lost_counts"]
    if seq != last or count != last - first + 1 or last < first:
        v.fail(number, "loss", f"seq {seq} and count {count} do not fit the lost range "
               f"{first}..{last}", seq, run)  # fmt: skip
        return
    if sum(lost_counts.values()) != count or "open" in lost_counts or "loss" in lost_counts:
        v.fail(number, "loss", f"lost_counts {clip(lost_counts)} do not add up to the "
               f"{count:,} records lost", seq, run)  # fmt: skip
        return
    new = lost_counts.keys() - run.lost_counts.keys()
    if any(len(kind) > MAX_ID for kind in new) or len(run.lost_counts) + len(new) > MAX_KINDS:
        v.fail(number, "loss", f"lost_counts names kinds no run writes: {clip(sorted(new))}",
               seq, run)  # fmt: skip
        return
    if first != run.next_seq or record["prev_digest"].encode() != run.prev:
        v.fail(number, "loss", f"the loss record for seq {first}..{last} does not follow the "
               "record before the gap", seq, run)  # fmt: skip
        return
    when = instant(record["timestamp"])
    if when is None or when < run.last_instant:
        v.fail(number, "time", f"the loss record's timestamp {clip(record['timestamp'])} is "
               "not a time at or after the record before the gap", seq, run)  # fmt: skip
    else:
        run.last_instant, run.last_timestamp = when, record["timestamp"]
    # A loss record stands beside the chain: the next record links past it.
    loss = DeclaredLoss(run.run_id, first, last, short_id(record["sink"]), number)
    v.report.add_loss(loss)
    if not v.options.allow_loss:
        v.fail(number, "loss", f"{loss.count:,} record(s) (seq {first}..{last}) were dropped "
               f"by sink {loss.sink} (--allow-loss accepts declared losses)", seq,
               run)  # fmt: skip
    problem = run.tree.lost(first, last, record["lost_tree"])
    if problem is not None:
        v.fail(number, "tree", problem, seq, run)
    run.prev = record["last_lost_digest"].encode()
    run.next_seq = last + 1
    run.lost += count
    for kind, n in lost_counts.items():
        run.lost_counts[kind] = run.lost_counts.get(kind, 0) + n
    run.last_evictions = None
    run.streak_next = -1  # a round with a gap in it cannot be summed


def check_close(
    v: Checker, number: int, record: dict[str, Any], run: RunState, head: bytes
) -> None:
    """The close record against the run: its seq and ``head`` (the chain head before it), the
    counts of every kind (present plus declared lost), the bytes freed and the final statistics.
    """
    seq, fail = record["seq"], v.fail
    if record["records"] != seq:
        fail(number, "close", f"records {record['records']} != its seq {seq}", seq, run)
    if record["head"].encode() != head:
        fail(number, "close", f"head {record['head']} is not the digest of the record before "
             f"it ({head.decode()})", seq, run)  # fmt: skip
    expected = dict(run.counts)
    for kind, n in run.lost_counts.items():
        expected[kind] = expected.get(kind, 0) + n
    counts = record["counts"]
    if counts != expected:
        wrong = sorted(k for k in counts.keys() | expected.keys()
                       if counts.get(k) != expected.get(k))  # fmt: skip
        fail(number, "close", f"counts {clip(counts)} differ from the run's records (present "
             f"plus declared lost) {clip(expected)}: {', '.join(map(clip, wrong[:4]))}", seq,
             run)  # fmt: skip
    lost_evictions = sum(run.lost_counts.get(kind, 0) for kind in EVICTION_KINDS)
    freed = record["bytes_freed"]
    if freed != run.bytes_freed if not lost_evictions else freed < run.bytes_freed + lost_evictions:
        fail(number, "close", f"bytes_freed {freed:,} differs from the run's evictions, "
             f"{run.bytes_freed:,}" + (f" and {lost_evictions:,} lost ones" if lost_evictions
                                       else ""), seq, run)  # fmt: skip
    stats = _Attributes(record["final_stats"])
    present = sum(run.counts.get(kind, 0) for kind in EVICTION_KINDS)
    if stats.evictions != present + lost_evictions:
        fail(number, "close", f"final_stats.evictions {stats.evictions:,} is not the run's "
             f"{present:,} eviction records plus {lost_evictions:,} declared lost", seq,
             run)  # fmt: skip
    if stats.cache_hits < run.last_hits or stats.cache_misses < run.last_misses:
        fail(number, "close", f"final_stats counts {stats.cache_hits:,} hits and "
             f"{stats.cache_misses:,} misses, fewer than the run's records already showed "
             f"({run.last_hits:,}, {run.last_misses:,})", seq, run)  # fmt: skip
    for problem in stats_problems(stats, run.total_bytes, "final_stats"):
        fail(number, "close", problem, seq, run)
    # verify/tree.py (the lead's) checks tree_size and root here.


class _Attributes:
    """A checked statistics dict read as attributes."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> Any:
        return self._values[name]
