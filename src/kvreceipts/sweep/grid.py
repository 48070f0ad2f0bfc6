"""A sweep's grid: which (trace, policy, capacity) points, split into tasks that run anywhere.

A :class:`Task` is small and picklable: it names its source (a trace path or URL, or a
synthetic workload) rather than carrying requests, so a worker process or a Dask worker reads
the trace itself, once per process (:func:`load_source` caches it).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kvreceipts.errors import UsageError
from kvreceipts.policies import POLICIES
from kvreceipts.sweep.sources import Source, load_source, trace_caveats

if TYPE_CHECKING:
    from collections.abc import Sequence

    from kvreceipts.sweep.methods import Counts
    from kvreceipts.sweep.profile import LruProfile
    from kvreceipts.sweep.targets import Answer
    from kvreceipts.tiers import Tier
    from kvreceipts.workloads import Request

__all__ = [
    "ROW_KEYS",
    "SweepSpec",
    "Task",
    "TraceFacts",
    "build_tasks",
    "log_capacities",
    "run_task",
    "source_facts",
]

ROW_KEYS = (
    "trace", "policy", "capacity_blocks", "capacity_mb", "capacity_bytes", "hits", "misses",
    "hit_ratio", "miss_ratio", "evictions", "rejected", "method", "sample_rate", "sampled_refs",
    "expected_error", "prefix_hit_tokens", "prompt_tokens", "token_hit_ratio",
)  # fmt: skip
"""The keys of a row, in order; a paged sweep leaves out ``capacity_mb`` (and
``capacity_bytes`` without a KV sizing), an arena one ``capacity_blocks`` and the tokens."""


@dataclass(frozen=True, slots=True)
class SweepSpec:
    """Everything a grid point needs besides its policy and capacity."""

    allocator: str  # "paged" or "arena"
    model: str = ""
    bytes_per_token: int = 0
    block_tokens: int = 512
    pin: bool = True
    tiers: tuple[Tier, ...] = ()
    """Memory tiers, fastest first (``--tier``); their sizes per point are in the tasks."""
    prefill_tokens_per_s: float = 0.0
    """Converts saved prompt tokens into prefill seconds saved (with tiers)."""


@dataclass(frozen=True, slots=True)
class Task:
    """A unit of work: one policy at some capacities of one source, by one method.

    ``simulate`` tasks hold one capacity (a replay each); ``exact`` and LRU ``shards`` tasks
    hold all of a source's capacities, computed in one pass.
    """

    index: int
    source: Source
    spec: SweepSpec
    policy: str
    method: str
    capacities: tuple[float, ...]
    sample_rate: float = 1.0
    targets: tuple[tuple[str, float], ...] = ()
    """(metric, target) pairs to answer: ``hit_ratio`` or ``token_hit_ratio``. An exact task
    answers them from its one pass; a ``simulate`` task with no capacities searches for them
    with full simulations, one target a task."""
    tier_sizes: tuple[tuple[int, ...], ...] = ()
    """With tiers: each point's tier sizes in blocks (they sum to its capacity)."""
    sample_max_blocks: int = 0
    """Fixed-size SHARDS: at most this many distinct sampled blocks (0: the rate alone)."""
    shards_adj: bool = False
    """SHARDS-adj's correction (the paper's) instead of dividing by the sample's weight."""

    @property
    def cost(self) -> float:
        """Roughly how long it takes, in replays (the longest are started first)."""
        if self.method == "simulate":
            return 10.0 * len(self.targets) or 1.0
        return 3.0 if self.method == "exact" else 0.5

    @property
    def points(self) -> int:
        """Grid points this task yields."""
        return len(self.capacities)


@dataclass(slots=True)
class TraceFacts:
    """What the rows were computed from."""

    name: str
    path: str
    format: str
    requests: int
    block_refs: int
    unique_blocks: int
    span_s: float
    """Simulated time from the first to the last arrival."""
    block_bytes: int
    bytes_per_token: int
    sizing: str
    unique_entry_bytes: int = 0
    """Arena: the bytes of one entry per distinct session (the working set)."""
    mean_entry_bytes: int = 0
    prompt_tokens: int = 0
    """Input tokens of all requests."""
    ceiling_prefix_tokens: int = 0
    """Prompt tokens a cache holding everything finds as a prefix: per request, the leading
    run of blocks seen before (the token hit ratio's ceiling)."""
    sized: bool = False
    """Whether the KV sizing was given (``--model``, ``--bytes-per-token``) rather than the
    upstream default: bytes are reported only then."""
    caveats: tuple[str, ...] = ()
    """What the trace cannot know (a watch recording: pinning, request boundaries…)."""

    @property
    def ceiling(self) -> float:
        """The highest block hit ratio any cache can reach: ``1 - distinct / lookups``."""
        return 1 - self.unique_blocks / self.block_refs if self.block_refs else 0.0

    @property
    def token_ceiling(self) -> float:
        """The highest token hit ratio any cache can reach."""
        return self.ceiling_prefix_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def block_size(self, blocks: int) -> int | None:
        """Bytes of ``blocks`` blocks, when a sizing was given."""
        return blocks * self.block_bytes if self.sized else None

    def to_dict(self) -> dict[str, Any]:
        """Plain values."""
        return {k: getattr(self, k) for k in self.__slots__}


def log_capacities(low: float, high: float, points: int, *, integral: bool) -> list[float]:
    """``points`` log-spaced capacities from ``low`` to ``high`` (distinct, ascending)."""
    if points <= 0:
        raise UsageError("--points must be at least 1")
    if points == 1 or high <= low:
        return [high]
    ratio = math.log(high / low) / (points - 1)
    values = [low * math.exp(ratio * i) for i in range(points)]
    if integral:
        return sorted({float(max(1, round(v))) for v in values})
    return sorted({round(v, 3) for v in values})


def source_facts(source: Source, spec: SweepSpec) -> TraceFacts:
    """Counts of the source that fix the capacity range and describe the rows."""
    from kvreceipts.sizing import resolve_sizing

    sizing = resolve_sizing(spec.model, spec.bytes_per_token)
    requests = load_source(source)
    refs = prompt = leading = 0
    unique: set[int] = set()
    entries: dict[str, int] = {}
    bt = spec.block_tokens
    for request in requests:
        hashes = request.block_hashes
        prompt += request.input_tokens
        if hashes is not None:
            refs += len(hashes)
            run = 0
            for block in hashes:
                if block not in unique:
                    break
                run += 1
            if run:
                last = max(0, request.input_tokens - bt * (len(hashes) - 1))
                leading += bt * run if run < len(hashes) else bt * (run - 1) + last
            unique.update(hashes)
        entries[request.session_id] = sizing.entry_bytes(request.context_length)
    span = (requests[-1].arrival_ms - requests[0].arrival_ms) / 1000 if requests else 0.0
    return TraceFacts(
        name=source.label,
        path=source.trace or f"workload:{source.workload}",
        format=source.trace_format if source.trace else "synthetic",
        requests=len(requests),
        block_refs=refs,
        unique_blocks=len(unique),
        span_s=round(span, 6),
        block_bytes=sizing.block_bytes(spec.block_tokens),
        bytes_per_token=sizing.bytes_per_token,
        sizing=sizing.name,
        unique_entry_bytes=sum(entries.values()),
        mean_entry_bytes=sum(entries.values()) // max(1, len(entries)),
        prompt_tokens=prompt,
        ceiling_prefix_tokens=leading,
        sized=bool(spec.model or spec.bytes_per_token),
        caveats=trace_caveats(source),
    )


def default_method(policy: str, spec: SweepSpec) -> str:
    """``exact`` for unpinned paged LRU (a stack algorithm), ``simulate`` otherwise."""
    if policy == "lru" and not spec.pin and spec.allocator == "paged":
        return "exact"
    return "simulate"


def check_method(method: str, policy: str, spec: SweepSpec) -> None:
    """Refuse a method that cannot compute this policy on this allocator."""
    if method == "simulate":
        return
    if spec.allocator != "paged":
        raise UsageError(f"--method {method} needs the paged allocator (block lookups)")
    if spec.pin:
        raise UsageError(
            f"--method {method} models block lookups without pinning: turn pinning off "
            "(--no-pin) or use --method simulate"
        )
    if method == "exact" and policy != "lru":
        raise UsageError(
            f"--method exact computes LRU only (a stack algorithm), not {policy}; "
            "use --method simulate or shards"
        )


def build_tasks(
    sources: Sequence[Source],
    capacities: Sequence[Sequence[float]],
    spec: SweepSpec,
    policies: Sequence[str],
    *,
    method: str | None,
    sample_rate: float,
    targets: Sequence[tuple[str, float]] = (),
    tier_sizes: Sequence[Sequence[tuple[int, ...]]] = (),
    sample_max_blocks: int = 0,
    shards_adj: bool = False,
) -> list[Task]:
    """The tasks of the grid, in row order: source, then policy, then capacity; then, for
    the policies not computed exactly, one search task per target.
    """
    for policy in policies:
        if policy not in POLICIES:
            raise UsageError(f"unknown policy {policy!r} (choose from: {', '.join(POLICIES)})")
    tasks: list[Task] = []
    searches: list[tuple[Source, str]] = []
    for number, (source, caps) in enumerate(zip(sources, capacities, strict=True)):
        sizes = tuple(tier_sizes[number]) if tier_sizes else ()
        for policy in policies:
            chosen = method or default_method(policy, spec)
            check_method(chosen, policy, spec)
            rate = sample_rate if chosen == "shards" else 1.0
            one_pass = chosen == "exact" or (chosen == "shards" and policy == "lru")
            if one_pass:
                groups = [(tuple(caps), sizes)]
            else:
                groups = [((c,), sizes[i : i + 1]) for i, c in enumerate(caps)]
            answered = tuple(targets) if chosen == "exact" else ()
            for number_in, (group, group_sizes) in enumerate(groups):
                last = number_in == len(groups) - 1
                tasks.append(Task(len(tasks), source, spec, policy, chosen, group, rate,
                                  answered if last else (), group_sizes,
                                  sample_max_blocks if chosen == "shards" else 0,
                                  shards_adj and chosen == "shards"))  # fmt: skip
            if targets and chosen != "exact":
                searches.append((source, policy))
    for source, policy in searches:
        for target in targets:
            tasks.append(Task(len(tasks), source, spec, policy, "simulate", (), 1.0, (target,)))
    return tasks


Result = list["Counts | Answer"]
"""A task's outcome: a :class:`Counts` per capacity, then an :class:`Answer` per target."""


def run_task(task: Task) -> Result:
    """Compute a task's points (in a worker process, a Dask worker, or here)."""
    requests = load_source(task.source)
    if task.method == "simulate":
        if not task.capacities:
            return [_search(requests, task, *task.targets[0])]
        sizes = task.tier_sizes[0] if task.tier_sizes else ()
        return [_simulate(requests, task, task.capacities[0], sizes)]
    capacities = [int(c) for c in task.capacities]
    if task.method == "exact":
        profile = _profile(task.source, task.spec.block_tokens)
        if task.tier_sizes:
            out: Result = [
                profile.counts(c, t) for c, t in zip(capacities, task.tier_sizes, strict=True)
            ]
        else:
            out = [profile.counts(c) for c in capacities]
        return out + [_exact_answer(profile, m, t) for m, t in task.targets]
    blocks = _blocks(task.source)
    if task.policy == "lru":
        return _shards_lru(blocks, task, capacities)
    return [_miniature(requests, blocks, task, c) for c in capacities]


def _shards_lru(blocks: list[int], task: Task, capacities: list[int]) -> Result:
    """SHARDS' LRU curve, each point with the split-half estimate of the curve's error."""
    import dataclasses

    from kvreceipts.sweep import methods, shards

    prepared = shards.prepare(blocks)
    settings: dict[str, Any] = {"max_blocks": task.sample_max_blocks,
                                "adjust": task.shards_adj, "prepared": prepared}  # fmt: skip
    distances = shards.shards(blocks, task.sample_rate, **settings)
    error = None
    if task.sample_rate < 1 or task.sample_max_blocks:
        error = round(shards.expected_error(blocks, task.sample_rate, capacities, **settings), 6)
    counts = methods.lru_counts(distances, capacities, len(blocks))
    return [dataclasses.replace(c, expected_error=error) for c in counts]


@functools.lru_cache(maxsize=2)
def _profile(source: Source, block_tokens: int) -> LruProfile:
    from kvreceipts.sweep.profile import lru_profile

    return lru_profile(load_source(source), block_tokens)


def _exact_answer(profile: LruProfile, metric: str, target: float) -> Answer:
    from kvreceipts.sweep.targets import Answer

    capacity = profile.smallest_capacity(target, tokens=metric == "token_hit_ratio")
    counts = profile.counts(capacity if capacity is not None else profile.distinct)
    return Answer(metric, target, capacity, counts, 0)


def _search(requests: Sequence[Request], task: Task, metric: str, target: float) -> Answer:
    """The smallest capacity reaching ``target`` by full simulations (see ``targets``)."""
    import bisect

    from kvreceipts.sweep.profile import needed
    from kvreceipts.sweep.targets import Answer, search

    tokens = metric == "token_hit_ratio"
    profile = _profile(task.source, task.spec.block_tokens)
    whole = profile.prompt_tokens if tokens else profile.lookups
    top = profile.ceiling_token_hits if tokens else profile.ceiling_hits
    need = needed(target, whole) if whole else 1
    if need > top:
        return Answer(metric, target, None, None, 0)
    seen: dict[int, Counts] = {}

    def hits_at(capacity: int) -> int:
        counts = seen[capacity] = _simulate(requests, task, capacity)
        got = counts.prefix_hit_tokens if tokens else counts.hits
        return got or 0

    reference = profile.cumulative(tokens=tokens)

    def model(hits: float) -> float:  # the capacity at which exact LRU gets these hits,
        at = bisect.bisect_left(reference, hits)  # between whole blocks where it jumps
        if at <= 0 or at >= len(reference):
            return float(min(max(at, 0), len(reference)))
        below, above = reference[at - 1], reference[at]
        return at - 1 + (hits - below) / (above - below) if above > below else float(at)

    # At the distinct blocks nothing is ever evicted: every policy reaches the ceiling.
    capacity, _, calls = search(hits_at, need, max(1, profile.distinct), top, model)
    counts = seen.get(capacity) or _simulate(requests, task, capacity)
    return Answer(metric, target, capacity, counts, calls)


@functools.lru_cache(maxsize=2)
def _blocks(source: Source) -> list[int]:
    return [h for request in load_source(source) for h in request.block_hashes or ()]


def _manager(task: Task, capacity: float, tier_sizes: tuple[int, ...] = ()) -> Any:
    from kvreceipts.clock import SIM_EPOCH, SimClock
    from kvreceipts.config import CachingConfig
    from kvreceipts.manager import KVCacheManager
    from kvreceipts.paged import PagedKVCacheManager
    from kvreceipts.sizing import resolve_sizing

    spec = task.spec
    sizing = resolve_sizing(spec.model, spec.bytes_per_token)
    if spec.allocator == "paged":
        from kvreceipts.tiers import Tier

        lower = [Tier(t.name, size, t.bandwidth)
                 for t, size in zip(spec.tiers[1:], tier_sizes[1:], strict=True)]  # fmt: skip
        return PagedKVCacheManager(
            CachingConfig(enable_receipts=False),
            capacity_blocks=tier_sizes[0] if tier_sizes else int(capacity),
            lower_tiers=lower,
            block_tokens=spec.block_tokens,
            sizing=sizing,
            policy=task.policy,
            clock=SimClock(SIM_EPOCH),
            pin_admitting=spec.pin,
        )
    caching = CachingConfig(enable_receipts=False, kv_cache_size_mb=capacity)
    return KVCacheManager(caching, policy=task.policy, sizing=sizing, clock=SimClock(SIM_EPOCH))


def _simulate(
    requests: Sequence[Request], task: Task, capacity: float, tier_sizes: tuple[int, ...] = ()
) -> Counts:
    """One replay, as ``kvreceipts simulate --no-receipts`` runs it."""
    from kvreceipts.simulation import run_simulation
    from kvreceipts.sweep.methods import Counts

    manager = _manager(task, capacity, tier_sizes)
    result = run_simulation(manager, requests)
    manager.shutdown()
    refs = manager.hits + manager.misses
    tokens = getattr(manager, "prefix_hit_tokens", None), getattr(manager, "prompt_tokens", None)
    per_tier = tuple(manager.tier_hits) if tier_sizes else ()
    return Counts(manager.hits, manager.misses, manager.evictions, result.rejected, refs, *tokens,
                  per_tier)  # fmt: skip


def _miniature(
    requests: Sequence[Request], blocks: Sequence[int], task: Task, capacity: int
) -> Counts:
    """SHARDS for a policy that is not a stack algorithm: replay the sampled requests in a
    cache scaled down by the rate, and apply its miss ratio to the whole trace.
    """
    from kvreceipts.simulation import run_simulation
    from kvreceipts.sweep.methods import Counts

    rate = task.sample_rate
    if task.sample_max_blocks:  # fixed size: the rate that keeps at most that many blocks
        rate = min(rate, task.sample_max_blocks / max(1, len(set(blocks))))
    sample = _sample(task.source, rate) if rate < 1 else list(requests)
    mini = max(1, round(capacity * rate))
    manager = _manager(task, mini)
    run_simulation(manager, sample)
    manager.shutdown()
    looked_up = manager.hits + manager.misses
    total = len(blocks)
    hits = round(manager.hits / looked_up * total) if looked_up else 0
    misses = total - hits
    return Counts(hits, misses, max(0, misses - capacity), 0, looked_up)


@functools.lru_cache(maxsize=4)
def _sample(source: Source, rate: float) -> list[Request]:
    from kvreceipts.sweep.methods import sample_requests, sampled

    return sample_requests(load_source(source), sampled(_blocks(source), rate))
