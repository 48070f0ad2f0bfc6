"""``sweep`` answers in the user's terms: sizes with units, target hit ratios (exact for LRU,
searched by simulation for the rest), the trace's ceiling, and prefill tokens saved.

Every figure is checked against an independent computation written here: a plain
``OrderedDict`` LRU, and brute force over every capacity.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from kvreceipts.cli import app
from kvreceipts.errors import UsageError
from kvreceipts.sweep.grid import SweepSpec, Task, run_task
from kvreceipts.sweep.profile import lru_profile, needed
from kvreceipts.sweep.sources import Source
from kvreceipts.sweep.targets import Answer, search
from kvreceipts.units import parse_rate, parse_size
from kvreceipts.workloads import Request

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

runner = CliRunner()
SMALL = ("sweep", "--workload", "chat", "--allocator", "paged", "--requests", "300",
         "--capacity-blocks", "8,64,512", "--workers", "1")  # fmt: skip


def run(*args: str) -> Result:
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def lru_by_hand(
    requests: Sequence[Request], capacity: int, block_tokens: int = 512
) -> tuple[int, int, int, int]:
    """Hits, lookups, prefix-hit tokens and prompt tokens of an unpinned LRU cache of
    ``capacity`` blocks: blocks looked up in order, a request's leading run of hits counts
    ``block_tokens`` a block, its last block what is left of the input."""
    cache: OrderedDict[int, None] = OrderedDict()
    hits = lookups = saved = prompt = 0
    for request in requests:
        blocks = list(request.block_hashes or ())
        prompt += request.input_tokens
        leading, still = 0, True
        for block in blocks:
            lookups += 1
            if block in cache:
                cache.move_to_end(block)
                hits += 1
                leading += still
            else:
                still = False
                cache[block] = None
                if len(cache) > capacity:
                    cache.popitem(last=False)
        if leading == len(blocks) and blocks:
            saved += (
                block_tokens * (leading - 1) + request.input_tokens - block_tokens * (leading - 1)
            )
        else:
            saved += block_tokens * leading
    return hits, lookups, saved, prompt


def as_requests(groups: Sequence[Sequence[int]], block_tokens: int = 4) -> list[Request]:
    return [
        Request(f"r{i}", f"r{i}", float(i), block_tokens * len(g) - i % 3, 1, 64, list(g))
        for i, g in enumerate(groups)
    ]


GROUPS = st.lists(
    st.lists(st.integers(min_value=0, max_value=25), min_size=1, max_size=6, unique=True),
    min_size=1,
    max_size=30,
)


@given(GROUPS)
def test_the_one_pass_profile_equals_lru_by_hand_at_every_capacity(groups: list[list[int]]) -> None:
    requests = as_requests(groups)
    profile = lru_profile(requests, 4)
    for capacity in range(1, profile.distinct + 2):
        hits, lookups, saved, prompt = lru_by_hand(requests, capacity, 4)
        counts = profile.counts(capacity)
        assert (counts.hits, counts.hits + counts.misses) == (hits, lookups)
        assert (counts.prefix_hit_tokens, counts.prompt_tokens) == (saved, prompt)


@given(GROUPS, st.floats(min_value=0.01, max_value=1.0))
def test_an_exact_target_is_the_smallest_capacity_reaching_it(
    groups: list[list[int]], target: float
) -> None:
    requests = as_requests(groups)
    profile = lru_profile(requests, 4)
    for tokens in (False, True):
        found = profile.smallest_capacity(target, tokens=tokens)
        reaching = []
        for capacity in range(1, profile.distinct + 1):
            hits, lookups, saved, prompt = lru_by_hand(requests, capacity, 4)
            part, whole = (saved, prompt) if tokens else (hits, lookups)
            if part / whole >= target:
                reaching.append(capacity)
        assert found == (reaching[0] if reaching else None)


@settings(max_examples=60)
@given(
    st.lists(st.integers(min_value=0, max_value=400), min_size=2, max_size=60),
    st.integers(min_value=1, max_value=10_000),
)
def test_search_finds_the_smallest_capacity_of_any_monotone_curve(
    steps: list[int], need_raw: int
) -> None:
    curve = [0]
    for step in steps:
        curve.append(curve[-1] + step)
    top = curve[-1]
    if top == 0:
        return
    need = 1 + need_raw % top
    calls: list[int] = []

    def hits_at(capacity: int) -> int:
        calls.append(capacity)
        return curve[capacity]

    capacity, hits, count = search(hits_at, need, len(curve) - 1, top)
    assert capacity == next(c for c, h in enumerate(curve) if h >= need and c > 0)
    assert hits == curve[capacity]
    assert count == len(calls)


def test_needed_is_the_exact_threshold() -> None:
    assert needed(0.3, 10) == 3
    assert needed(0.30000000000000004, 10) == 4
    assert needed(1.0, 7) == 7
    assert needed(1 / 3, 3) == 1


def test_sizes_and_rates_parse_with_their_units() -> None:
    assert parse_size("64GiB", "x") == 64 * 2**30
    assert parse_size("1.5 TiB", "x") == 3 * 2**39
    assert parse_size("2kB", "x") == 2000
    assert parse_size("2KB", "x") == 2000  # read as kB
    assert parse_size("1_000MB", "x") == 10**9
    assert parse_rate("50GB/s", "x") == 50e9
    for bad, message in (
        ("64", "has no unit"),
        ("64 parsecs", "unknown unit 'parsecs'"),
        ("-1GiB", "must be greater than 0"),
        ("", "is not a size"),
        ("GiB", "is not a size"),
    ):
        with pytest.raises(UsageError, match=message):
            parse_size(bad, "--capacity")
    with pytest.raises(UsageError, match="is not a rate"):
        parse_rate("50GB", "bw")


def test_targets_and_the_ceiling_in_json_and_text() -> None:
    args = [*SMALL, "--target-hit-rate", "0.5,0.95", "--target-token-hit-rate", "0.6"]
    document = json.loads(run(*args, "-f", "json").stdout)
    ceiling = document["ceiling"]
    assert ceiling == document["trace"]["ceiling"]
    assert ceiling["hit_ratio"] == round(1 - 321 / 3072, 6)
    assert ceiling["capacity_blocks"] == 321
    assert ceiling["capacity_bytes"] is None  # no sizing given
    answers = document["targets"]
    assert [(a["policy"], a["target"], a["metric"]) for a in answers] == [
        (p, t, m)
        for m, t in (("hit_ratio", 0.5), ("hit_ratio", 0.95), ("token_hit_ratio", 0.6))
        for p in ("lru", "fifo", "lfu", "s3fifo")
    ]
    for answer in answers:
        if answer["target"] == 0.95:
            assert answer["reachable"] is False
            assert answer["capacity_blocks"] is None
            continue
        assert answer["reachable"] is True
        assert answer[answer["metric"]] >= answer["target"]
        assert answer["method"] == "search"  # pinned: every policy is simulated
        assert 1 <= answer["simulations"] <= 12
    text = run(*args, "-f", "csv").stderr
    assert (
        "target hit ratio 95.00%, lru: unreachable: the highest hit ratio this trace allows is "
        "89.55% (321 of 3,072 lookups are first touches)"
    ) in text
    assert "ceiling: hit ratio 89.55% (321 of 3,072 lookups are first touches)" in text


def test_a_searched_target_is_the_smallest_simulated_capacity() -> None:
    source = Source(workload="chat", requests=300)
    spec = SweepSpec("paged", pin=True)
    for policy in ("fifo", "lfu"):
        task = Task(0, source, spec, policy, "simulate", (), 1.0, (("hit_ratio", 0.6),))
        answer = run_task(task)[0]
        assert isinstance(answer, Answer)
        assert answer.capacity is not None
        hits = {}
        for capacity in range(max(1, answer.capacity - 3), answer.capacity + 1):
            point = Task(0, source, spec, policy, "simulate", (float(capacity),))
            counts = run_task(point)[0]
            assert not isinstance(counts, Answer)
            hits[capacity] = counts.hits / (counts.hits + counts.misses)
        assert hits[answer.capacity] >= 0.6
        assert all(hits[c] < 0.6 for c in hits if c < answer.capacity)


@pytest.mark.traces
def test_token_hit_ratio_on_the_conversation_trace_matches_an_ordered_dict(
    traces_dir: Path,
) -> None:
    trace = str(traces_dir / "mooncake_conversation_trace.jsonl")
    args = ["sweep", "--trace", trace, "--policy", "lru", "--no-pin", "--workers", "1",
            "--capacity-blocks", "20195", "-f", "jsonl"]  # fmt: skip
    exact = json.loads(run(*args).stdout)
    simulated = json.loads(run(*args, "--method", "simulate").stdout)
    from kvreceipts.workloads import read_trace

    hits, lookups, saved, prompt = lru_by_hand(list(read_trace(trace, "mooncake")), 20195)
    for row in (exact, simulated):
        assert (row["hits"], row["hits"] + row["misses"]) == (hits, lookups)
        assert (row["prefix_hit_tokens"], row["prompt_tokens"]) == (saved, prompt)
        assert row["token_hit_ratio"] == round(saved / prompt, 6)
    # A different figure from the block hit ratio: a hit after a miss in a prompt saves nothing.
    assert abs(exact["token_hit_ratio"] - exact["hit_ratio"]) > 0.001
