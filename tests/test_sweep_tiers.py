"""Memory tiers: exclusive tiers of LRU caches without pinning hit exactly as one LRU cache of
their summed size (the first k tiers together as an LRU of the first k sizes), which the exact
method uses and a replay through real tiers checks; bad tier options are one line.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from kvreceipts.cli import app
from kvreceipts.clock import SimClock
from kvreceipts.paged import PagedKVCacheManager
from kvreceipts.sweep.profile import lru_profile
from kvreceipts.tiers import Tier
from kvreceipts.workloads import Request

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

runner = CliRunner()
BASE = ("sweep", "--workload", "chat", "--allocator", "paged", "--requests", "300",
        "--workers", "1", "--model", "llama-3-8b", "--no-pin", "--policy", "lru")  # fmt: skip


def run(*args: str) -> Result:
    return runner.invoke(app, list(args), env={"COLUMNS": "200"})


def as_requests(groups: Sequence[Sequence[int]]) -> list[Request]:
    return [
        Request(f"r{i}", f"r{i}", float(i), 512 * len(g), 1, 512 * len(g), list(g))
        for i, g in enumerate(groups)
    ]


def tiered_replay(
    requests: Sequence[Request], sizes: Sequence[int], policy: str = "lru"
) -> PagedKVCacheManager:
    lower = [Tier(f"t{i}", size) for i, size in enumerate(sizes[1:], start=1)]
    manager = PagedKVCacheManager(capacity_blocks=sizes[0], policy=policy, clock=SimClock(),
                                  pin_admitting=False, lower_tiers=lower)  # fmt: skip
    for request in requests:
        manager.serve(request)
    return manager


@given(
    st.lists(
        st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=8, unique=True),
        min_size=1,
        max_size=40,
    ),
    st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=4),
)
def test_tiers_of_lru_hit_as_one_lru_of_their_summed_size(
    groups: list[list[int]], sizes: list[int]
) -> None:
    requests = as_requests(groups)
    manager = tiered_replay(requests, sizes)
    profile = lru_profile(requests, 512)
    counts = profile.counts(sum(sizes), sizes)
    per_tier = manager.tier_hits if len(sizes) > 1 else [manager.hits]  # one tier: no split
    assert list(counts.tier_hits) == per_tier
    assert (counts.hits, counts.misses) == (manager.hits, manager.misses)
    assert counts.evictions == manager.evictions  # only leaving the last tier
    assert counts.prefix_hit_tokens == manager.prefix_hit_tokens
    for k in range(1, len(sizes) + 1):  # the first k tiers: one LRU of their summed size
        assert sum(per_tier[:k]) == profile.hits(sum(sizes[:k]))


def test_other_policies_run_through_the_tiers() -> None:
    requests = as_requests([[i % 17, (i * 7) % 23 + 20] for i in range(300)])
    for policy in ("fifo", "lfu", "s3fifo"):
        manager = tiered_replay(requests, [4, 8, 16], policy)
        assert sum(manager.tier_hits) == manager.hits
        assert manager.hits + manager.misses == 600
        assert manager.demotions >= manager.evictions > 0


def test_a_tiered_sweep_reports_each_tier_in_every_format() -> None:
    args = [*BASE, "--tier", "hbm=1GiB", "--tier", "dram=2GiB,bw=50GB/s",
            "--tier", "disk=4GiB..16GiB,bw=5GB/s", "--points", "3"]  # fmt: skip
    exact = [json.loads(x) for x in run(*args, "-f", "jsonl").stdout.splitlines()]
    simulated = [
        json.loads(x) for x in run(*args, "-f", "jsonl", "--method", "simulate").stdout.splitlines()
    ]
    assert [r["capacity_blocks"] for r in exact] == [16 + 32 + 64, 16 + 32 + 128, 16 + 32 + 256]
    for a, b in zip(exact, simulated, strict=True):
        assert a["tiers"] == b["tiers"]
        assert (a["hits"], a["misses"], a["evictions"]) == (b["hits"], b["misses"], b["evictions"])
        assert [t["name"] for t in a["tiers"]] == ["hbm", "dram", "disk"]
        assert sum(t["hits"] for t in a["tiers"]) == a["hits"]
        dram = a["tiers"][1]
        assert dram["reload_bytes"] == dram["hits"] * 64 * 2**20
        assert dram["reload_s"] == round(dram["reload_bytes"] / 50e9, 6)
        assert a["prefill_saved_s"] == round(a["prefix_hit_tokens"] / 10_000, 6)
    header = run(*args, "-f", "csv").stdout.splitlines()[0].split(",")
    assert {"hbm_hits", "dram_reload_bytes", "disk_reload_s"} <= set(header)


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        (("hbm",), "--tier hbm: a tier needs a name and a size: NAME=SIZE[,bw=RATE]"),
        (("hbm=",), "--tier hbm=: a tier needs a name and a size"),
        (("hbm=80",), "--tier hbm: '80' has no unit"),
        (("hbm=80GiB", "dram=1TiB,bw=50GB"), "--tier dram: bw: '50GB' is not a rate"),
        (("hbm=80GiB", "dram=1TiB,speed=5"), "--tier dram=1TiB,speed=5: unknown setting 'speed=5'"),
        (("hbm=-1GiB",), "--tier hbm: '-1GiB' must be greater than 0"),
        (("hbm=1GiB..2GiB", "dram=1GiB..4GiB"), "--tier: only one tier's size may be a range"),
        (("a=1GiB", "a=2GiB"), "--tier: two tiers are named 'a'"),
    ],
)
def test_bad_tiers_are_one_line(tiers: tuple[str, ...], message: str) -> None:
    args = [x for t in tiers for x in ("--tier", t)]
    result = run(*BASE, *args)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith(f"error: {message}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_tiers_out_of_speed_order_are_allowed_and_stated() -> None:
    args = ["--tier", "hbm=1GiB", "--tier", "disk=2GiB,bw=5GB/s", "--tier", "dram=4GiB,bw=50GB/s"]
    result = run(*BASE, *args, "-f", "csv")
    assert result.exit_code == 0, result.stderr
    assert "dram (46.6 GiB/s) is faster than disk above it" in result.stderr


@pytest.mark.traces
def test_three_tiers_on_the_conversation_trace_equal_a_replay(traces_dir: Path) -> None:
    trace = str(traces_dir / "mooncake_conversation_trace.jsonl")
    args = ["sweep", "--trace", trace, "--model", "llama-3-8b", "--no-pin", "--policy", "lru",
            "--tier", "hbm=80GiB", "--tier", "dram=512GiB,bw=50GB/s",
            "--tier", "disk=4TiB,bw=5GB/s", "--workers", "1", "-f", "jsonl"]  # fmt: skip
    exact = json.loads(run(*args).stdout)
    simulated = json.loads(run(*args, "--method", "simulate").stdout)
    assert exact["tiers"] == simulated["tiers"]
    assert exact["hits"] == simulated["hits"]
    assert [t["capacity_blocks"] for t in exact["tiers"]] == [1280, 8192, 65536]


@pytest.mark.needs("receipts")
def test_simulate_with_tiers_seals_demotions_and_evicts_only_from_the_last(
    tmp_path: Path,
) -> None:
    sweep = run(*BASE, "--tier", "hbm=1GiB", "--tier", "dram=2GiB,bw=50GB/s",
                "--tier", "disk=4GiB", "-f", "jsonl")  # fmt: skip
    row = json.loads(sweep.stdout)
    hint = sweep.stderr.splitlines()[-1]
    command = hint.split("with receipts: ", 1)[1].split()
    assert command[:2] == ["kvreceipts", "simulate"]
    assert "--tier" in command
    out = tmp_path / "tiers.jsonl"
    command[-1] = str(out)
    simulated = run(*command[1:], "-q", "-f", "json")
    assert simulated.exit_code == 0, simulated.stderr
    stats = json.loads(simulated.stdout)["stats"]
    assert (stats["cache_hits"], stats["cache_misses"]) == (row["hits"], row["misses"])
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    kinds = [r["kind"] for r in records]
    assert kinds.count("eviction") == row["evictions"]  # only leaving the last tier
    demotions = [r for r in records if r["kind"] == "demotion"]
    moves = {(r["from_tier"], r["to_tier"]) for r in demotions}
    assert moves == {("hbm", "dram"), ("dram", "disk")}
    assert all(r["bytes"] == 64 * 2**20 for r in demotions)
    assert records[-1]["counts"]["demotion"] == len(demotions)
    verified = run("verify", str(out))
    assert verified.exit_code == 0, verified.stderr
    assert f"{len(demotions):,} demotion" in " ".join(verified.stdout.split())
    summary = json.loads(run("stats", str(out), "-f", "json").stdout)
    assert sum(summary["demotions"].values()) == len(demotions)
    assert set(summary["demotions"]) == {"hbm->dram", "dram->disk"}
    schema = json.loads(run("schema", "--kind", "demotion").stdout)
    assert {"from_tier", "to_tier", "bytes", "block_hash"} <= set(schema["properties"])


def test_simulate_tier_errors_are_one_line() -> None:
    base = ["simulate", "--workload", "chat", "--allocator", "paged", "--requests", "20",
            "--model", "llama-3-8b", "--no-receipts"]  # fmt: skip
    both = run(*base, "--tier", "hbm=1GiB", "--capacity-blocks", "8")
    assert both.exit_code == 2
    assert both.stderr.startswith("error: give --tier (the first tier is the cache's size)")
    unitless = run(*base, "--tier", "hbm=1")
    assert unitless.exit_code == 2
    assert unitless.stderr.startswith("error: --tier hbm: '1' has no unit")
    assert len(unitless.stderr.strip().splitlines()) == 1
