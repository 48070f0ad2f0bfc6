"""``kvreceipts sweep``: exact LRU curves equal replays, SHARDS stays within its measured error,
the formats are stable, bad input is one line, and worker counts do not change the output.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from kvreceipts.cli import app
from kvreceipts.clock import SimClock
from kvreceipts.paged import PagedKVCacheManager
from kvreceipts.sweep import methods
from kvreceipts.sweep.grid import SweepSpec, build_tasks, run_task
from kvreceipts.sweep.methods import Counts
from kvreceipts.sweep.profile import lru_profile
from kvreceipts.sweep.sources import Source
from kvreceipts.workloads import Request

if TYPE_CHECKING:
    from collections.abc import Sequence

runner = CliRunner()
FIXTURES = Path(__file__).parent / "fixtures" / "sweep"
# A small paged grid on the built-in chat workload: quick, and every policy evicts.
SMALL = ("sweep", "--workload", "chat", "--allocator", "paged", "--requests", "300",
         "--capacity-blocks", "8,64,512", "--workers", "1")  # fmt: skip


def run(*args: str) -> Result:
    return runner.invoke(app, list(args), env={"COLUMNS": "100"})


def ordered_dict_lru(blocks: Sequence[int], capacity: int) -> int:
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


def replay_hits(requests: Sequence[Request], capacity: int, *, pin: bool) -> int:
    manager = PagedKVCacheManager(
        capacity_blocks=capacity, policy="lru", clock=SimClock(), pin_admitting=pin
    )
    for request in requests:
        manager.serve(request)
    return manager.hits


def as_requests(groups: Sequence[Sequence[int]]) -> list[Request]:
    return [
        Request(f"r{i}", f"r{i}", float(i), 512 * len(g), 1, 512 * len(g), list(g))
        for i, g in enumerate(groups)
    ]


@given(
    st.lists(
        st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=8),
        min_size=1,
        max_size=40,
    )
)
def test_exact_equals_lru_replays_at_every_capacity(groups: list[list[int]]) -> None:
    blocks = [b for g in groups for b in g]
    requests = as_requests(groups)
    capacities = list(range(1, len(set(blocks)) + 2))
    profile = lru_profile(requests, 512)
    for capacity in capacities:
        c = profile.counts(capacity)
        assert c.hits == ordered_dict_lru(blocks, capacity)
        assert c.hits == replay_hits(requests, capacity, pin=False)
        assert c.hits + c.misses == len(blocks)


def test_sampling_keeps_all_references_of_a_kept_block() -> None:
    blocks = list(range(100_000))
    kept = methods.sampled(blocks, 0.01)
    assert 900 < len(kept) < 1100  # the rate is honoured (binomial, n=100,000, p=0.01)
    assert methods.sampled(blocks, 1.0) == set(blocks)
    assert all(methods.block_hash(b) < 0.01 * methods.HASH_MODULUS for b in kept)


@given(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=50))
def test_vectorized_sampling_hash_equals_the_python_one(blocks: list[int]) -> None:
    assert methods._numpy_hashes(blocks) == [methods.block_hash(b) for b in blocks]


def _grid(
    trace: Path, policy: str, method: str, capacities: list[float], **kw: float
) -> list[methods.Counts]:
    source = Source(trace=str(trace), trace_format="mooncake")
    spec = SweepSpec("paged", pin=False)
    tasks = build_tasks([source], [capacities], spec, [policy], method=method,
                        sample_rate=kw.get("rate", 1.0))  # fmt: skip
    return [c for task in tasks for c in run_task(task) if isinstance(c, Counts)]


def log_points(unique: int, count: int) -> list[float]:
    return sorted({float(max(1, round(unique ** (i / (count - 1))))) for i in range(count)})


@pytest.mark.traces
def test_exact_equals_simulate_without_pinning_on_the_real_trace(traces_dir: Path) -> None:
    trace = traces_dir / "mooncake_synthetic_trace.jsonl"
    capacities = log_points(43_924, 16)
    exact = _grid(trace, "lru", "exact", capacities)
    replayed = _grid(trace, "lru", "simulate", capacities)
    assert [(c.hits, c.misses, c.evictions) for c in exact] == [
        (c.hits, c.misses, c.evictions) for c in replayed
    ]
    assert exact[0].hits < exact[-1].hits


# Mean absolute miss-ratio error of SHARDS against exact over 20 log-spaced capacities, as
# measured on these traces (docs/sweep.md: 0.0052, 0.0045, 0.0030, 0.0017); issue 24 asks for
# at most 0.01 at R = 0.01 on the conversation trace.
SHARDS_BOUNDS = {
    ("mooncake_synthetic_trace.jsonl", 0.05): 0.006,
    ("mooncake_conversation_trace.jsonl", 0.05): 0.004,
    ("mooncake_synthetic_trace.jsonl", 0.01): 0.008,
    ("mooncake_conversation_trace.jsonl", 0.01): 0.01,
}


@pytest.mark.traces
@pytest.mark.parametrize(("name", "rate"), list(SHARDS_BOUNDS))
def test_shards_error_on_the_real_traces(traces_dir: Path, name: str, rate: float) -> None:
    trace = traces_dir / name
    unique = {"mooncake_synthetic_trace.jsonl": 43_924,
              "mooncake_conversation_trace.jsonl": 182_790}[name]  # fmt: skip
    capacities = log_points(unique, 20)
    exact = _grid(trace, "lru", "exact", capacities)
    sampled = _grid(trace, "lru", "shards", capacities, rate=rate)
    total = exact[0].hits + exact[0].misses
    errors = [abs(a.misses - b.misses) / total for a, b in zip(exact, sampled, strict=True)]
    assert sum(errors) / len(errors) <= SHARDS_BOUNDS[(name, rate)]
    # the light sample at the rate, plus the heavy blocks' references (kept exactly)
    assert 0.5 * rate * total < sampled[0].sampled_refs
    expected = sampled[0].expected_error
    assert expected is not None
    assert 0 < expected < 3 * SHARDS_BOUNDS[(name, rate)]


def test_fixed_size_shards_keeps_at_most_s_blocks_and_stays_close() -> None:
    from kvreceipts.sweep import shards

    rng = __import__("random").Random(5)
    blocks = [rng.randrange(20_000) if rng.random() < 0.7 else rng.randrange(200)
              for _ in range(60_000)]  # fmt: skip
    unique = len(set(blocks))
    capacities = [int(c) for c in log_points(unique, 12)]
    profile = lru_profile(as_requests([[b] for b in blocks]), 512)
    exact = [profile.counts(c) for c in capacities]
    errors = []
    for size in (2000, 8000):
        estimate = methods.lru_counts(shards.shards(blocks, 1.0, max_blocks=size), capacities,
                                      len(blocks))  # fmt: skip
        error = sum(abs(a.hits - b.hits) for a, b in zip(exact, estimate, strict=True))
        errors.append(error / len(capacities) / len(blocks))
    assert errors[1] < errors[0] < 0.01  # measured 0.0065 and 0.0023
    kept: list[int] = []
    shards.shards(blocks, 1.0, max_blocks=500, sample_sizes=kept)
    assert max(kept) == 500  # never more distinct light blocks than S


def test_csv_json_jsonl_and_table_match_their_snapshots() -> None:
    for fmt, suffix in (("csv", "csv"), ("json", "json"), ("jsonl", "jsonl"), ("table", "txt")):
        result = run(*SMALL, "--format", fmt)
        assert result.exit_code == 0, result.stderr
        expected = (FIXTURES / f"small.{suffix}").read_text(encoding="utf-8")
        assert result.stdout == expected, fmt
        assert "with receipts: kvreceipts simulate" in result.stderr


def test_rows_agree_across_formats() -> None:
    rows = [json.loads(line) for line in run(*SMALL, "-f", "jsonl").stdout.splitlines()]
    document = json.loads(run(*SMALL, "-f", "json").stdout)
    assert document["rows"] == rows
    assert len(rows) == 4 * 3
    assert document["trace"]["requests"] == 300
    for row in rows:
        lookups = row["hits"] + row["misses"]
        assert lookups == document["trace"]["block_refs"] or row["rejected"]
        assert math.isclose(row["hit_ratio"] + row["miss_ratio"], 1.0, abs_tol=2e-6)


def test_more_workers_give_the_same_bytes() -> None:
    base = [*SMALL[:-2], "--policy", "lru,fifo,lfu,s3fifo", "--no-pin"]
    one = run(*base, "--workers", "1", "-f", "csv")
    two = run(*base, "--workers", "2", "-f", "csv")
    assert one.exit_code == two.exit_code == 0, one.stderr + two.stderr
    assert one.stdout == two.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--policy", "lru,mru"), "unknown policy 'mru'"),
        (("--capacity-blocks", ","), "--capacity-blocks lists no capacity"),
        (("--capacity-blocks", "10,0"), "capacities must be greater than 0"),
        (("--capacity-blocks", "-5"), "capacities must be greater than 0"),
        (("--capacity-mb", "64"), "not --capacity-blocks and --capacity-mb"),
        (("--capacity", "64GiB"), "not --capacity and --capacity-blocks"),
        (("--target-hit-rate", "0"), "--target-hit-rate: 0 must be in (0, 1]"),
        (("--target-hit-rate", "1.5"), "--target-hit-rate: 1.5 must be in (0, 1]"),
        (("--target-hit-rate", "x"), "--target-hit-rate: 'x' is not a number"),
        (("--target-token-hit-rate", "-0.1"), "--target-token-hit-rate: -0.1 must be in"),
        (("--points", "5"), "give capacities or --points, not both"),
        (("--sample-rate", "0"), "--sample-rate must be in (0, 1]"),
        (("--sample-rate", "1.5"), "--sample-rate must be in (0, 1]"),
        (("--method", "exact", "--policy", "fifo"), "--method exact computes LRU only"),
        (("--method", "exact", "--pin"), "without pinning"),
        (("--plot", "curves.pdf"), "must end in .png or .svg"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    result = run(*SMALL, *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


SIZED = ("sweep", "--workload", "chat", "--allocator", "paged", "--requests", "300",
         "--workers", "1", "--model", "llama-3-8b")  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--capacity", "64"), "--capacity: '64' has no unit (use one of B, KiB, MiB, GiB, TiB"),
        (("--capacity", "64GiB,12parsecs"), "--capacity: unknown unit 'parsecs' in '12parsecs'"),
        (("--capacity", "-1GiB"), "--capacity: '-1GiB' must be greater than 0"),
        (("--capacity", "1MiB"), "--capacity: 1.0 MiB holds no block of 64.0 MiB"),
        (("--capacity", "infGiB"), "--capacity: 'infGiB' is not a size"),
    ],
)
def test_bad_sizes_are_one_line_naming_the_units(args: tuple[str, ...], message: str) -> None:
    result = run(*SIZED, *args)
    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr == f"error: {message}\n" or result.stderr.startswith(f"error: {message}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_paged_size_needs_a_sizing() -> None:
    result = run(*SIZED[:-2], "--capacity", "64GiB")
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "error: --capacity 64GiB: a size needs the KV bytes per "
        "token to make blocks: give --model or --bytes-per-token"
    )


def test_sizes_become_whole_blocks_rounded_down_and_rows_carry_bytes() -> None:
    result = run(*SIZED, "--capacity", "1GiB,100MiB,1.5GB", "-f", "jsonl", "--policy", "lru")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    block = 512 * 32 * 8 * 128 * 2 * 2  # llama-3-8b: 64 MiB a block
    # 100 MiB -> 1 block, 1 GiB -> 16, 1.5 GB = 1,500,000,000 bytes -> 22 blocks
    assert [r["capacity_blocks"] for r in rows] == [1, 16, 22]
    assert [r["capacity_bytes"] for r in rows] == [block, 16 * block, 22 * block]
    assert "rounded down to whole blocks: 100.0 MiB -> 1, 1.4 GiB -> 22" in result.stderr
    table = run(*SIZED, "--capacity", "1GiB", "-f", "table", "--policy", "lru,fifo").stdout
    assert "1.0 GiB" in table  # the human size column
    csv_text = run(*SIZED, "--capacity", "1GiB", "-f", "csv", "--policy", "lru").stdout
    assert csv_text.splitlines()[0].split(",")[2:4] == ["capacity_blocks", "capacity_bytes"]


def test_arena_sizes_are_mib() -> None:
    result = run("sweep", "--workload", "chat", "--requests", "100", "--workers", "1",
                 "--capacity", "64MiB,1GiB", "--policy", "lru", "-f", "jsonl")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["capacity_mb"], r["capacity_bytes"]) for r in rows] == [
        (64.0, 64 * 2**20), (1024.0, 2**30)
    ]  # fmt: skip


@pytest.mark.parametrize("option", ["--plot", "--html"])
def test_an_unwritable_report_path_fails_before_the_sweep(tmp_path: Path, option: str) -> None:
    name = "r.svg" if option == "--plot" else "r.html"
    missing = run(*SMALL, option, str(tmp_path / "nonexistent" / name))
    assert missing.exit_code == 2
    assert missing.stderr == (f"error: {option}: {tmp_path / 'nonexistent' / name}: directory "
                              f"{tmp_path / 'nonexistent'} does not exist\n")  # fmt: skip
    assert "grid points" not in missing.stderr  # nothing ran
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores the mode
            pytest.skip("running as root: every directory is writable")
        refused = run(*SMALL, option, str(locked / name))
        assert refused.exit_code == 2
        assert refused.stderr.startswith(f"error: {option}: ")
        assert "cannot write there" in refused.stderr
        assert len(refused.stderr.splitlines()) == 1
    finally:
        locked.chmod(0o700)


def test_a_piped_table_marks_the_best_without_colour() -> None:
    table = run(*SMALL, "-f", "table").stdout
    assert "\x1b[" not in table
    assert "0.3034*" in table  # s3fifo is best at 64 blocks
    assert "* best: the lowest" in " ".join(table.split())
    assert "green" not in table


def test_the_rerun_hint_says_which_point_and_why() -> None:
    hint = run(*SMALL, "-f", "csv").stderr.splitlines()[-1]
    assert hint.startswith("re-run the best hit ratio per byte among the points reaching half "
                           "the best hit ratio (44.78%): s3fifo at 64 blocks, 69.66%, with "
                           "receipts: kvreceipts simulate ")  # fmt: skip
    assert "--policy s3fifo --capacity-blocks 64 " in hint
    targeted = run(*SMALL, "-f", "csv", "--target-hit-rate", "0.99,0.5").stderr.splitlines()[-1]
    assert targeted.startswith("re-run the first target reached: hit ratio 50.00% with lru at ")


@pytest.mark.parametrize(
    ("args", "message"),
    [  # these reached the workers and came back as an OverflowError traceback
        (("--capacity-mb", "64,inf"), "--capacity-mb: capacities must be a finite number"),
        (("--capacity-mb", "nan"), "--capacity-mb: capacities must be a finite number"),
        (("--capacity-blocks", "99999999"), "--capacity-blocks: capacities must be at most"),
    ],
)
def test_a_capacity_that_no_cache_can_have_is_one_line(args: tuple[str, ...], message: str) -> None:
    result = run("sweep", "--workload", "chat", "--requests", "50", "--workers", "1", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {message}")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.traces
def test_a_mooncake_sweep_keeps_the_traces_block_size(traces_dir: Path) -> None:
    trace = str(traces_dir / "mooncake_synthetic_trace.jsonl")
    result = run("sweep", "--trace", trace, "--block-tokens", "256", "--points", "3")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: Mooncake traces hash 512-token blocks; --block-tokens must be 512 (got 256)\n"
    )


def _cli(*args: str, block: str = "") -> subprocess.CompletedProcess[str]:
    prelude = f"import sys; sys.modules[{block!r}] = None; " if block else "import sys; "
    code = prelude + "from kvreceipts.cli import main; sys.argv[0] = 'kvreceipts'; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          check=False, env={**os.environ, "COLUMNS": "100"})  # fmt: skip


def test_a_bad_sample_rate_on_a_junk_trace_is_no_traceback(tmp_path: Path) -> None:
    result = _cli("sweep", "--trace", str(tmp_path / "junk.jsonl"), "--sample-rate", "2")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: --sample-rate")


def test_a_missing_plot_extra_names_it(tmp_path: Path) -> None:
    # matplotlib made unimportable in a fresh interpreter, as when the extra is not installed.
    result = _cli(*SMALL, "--plot", str(tmp_path / "c.png"), block="matplotlib")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: plots need matplotlib: pip install 'kvreceipts[plot]'"
    assert not (tmp_path / "c.png").exists()


def test_plots_are_written_and_svg_is_deterministic(tmp_path: Path) -> None:
    png, svg1, svg2 = tmp_path / "c.png", tmp_path / "a.svg", tmp_path / "b.svg"
    assert run(*SMALL, "--plot", str(png), "-q").exit_code == 0
    assert png.read_bytes().startswith(b"\x89PNG\r\n")
    assert run(*SMALL, "--plot", str(svg1), "-q").exit_code == 0
    assert run(*SMALL, "--plot", str(svg2), "-q").exit_code == 0
    assert svg1.read_bytes() == svg2.read_bytes()
    text = svg1.read_text(encoding="utf-8")
    assert "miss ratio" in text
    assert "capacity (blocks)" in text  # no sizing given: no bytes
    assert "GiB" not in text
    for policy in ("lru", "fifo", "lfu", "s3fifo"):
        assert policy in text
    sized = tmp_path / "sized.svg"
    targeted = [*SMALL, "--model", "llama-3-8b", "--target-hit-rate", "0.5", "--plot", str(sized)]
    assert run(*targeted, "-q").exit_code == 0
    text = sized.read_text(encoding="utf-8")
    assert "capacity (GiB of KV, llama-3-8b)" in text  # the x axis
    assert "capacity (blocks of 512 tokens)" in text  # the second axis
    assert "ceiling: hit ratio 89.55%" in text  # the ceiling line's legend entry
    assert "lru 50%" in text  # a target marked on its curve


def test_sweep_writes_no_receipts_and_points_to_simulate(tmp_path: Path) -> None:
    result = runner.invoke(app, [*SMALL, "-f", "csv"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    line = next(x for x in result.stderr.splitlines() if "with receipts: " in x)
    command = line.split("with receipts: ", 1)[1].split()
    assert command[:2] == ["kvreceipts", "simulate"]
    assert command[-2:] == ["-o", "point.jsonl"]
    assert not list(tmp_path.iterdir())
    rerun = runner.invoke(app, [*command[1:-2], "--no-receipts", "-f", "json"])
    assert rerun.exit_code == 0, rerun.stderr
    stats = json.loads(rerun.stdout)["stats"]
    rows = list(csv_rows(result.stdout))
    policy = command[command.index("--policy") + 1]
    capacity = command[command.index("--capacity-blocks") + 1]
    row = next(r for r in rows if r["policy"] == policy and r["capacity_blocks"] == capacity)
    assert int(row["hits"]) == stats["cache_hits"]
    assert int(row["misses"]) == stats["cache_misses"]


def csv_rows(text: str) -> list[dict[str, str]]:
    import csv
    import io

    return list(csv.DictReader(io.StringIO(text)))


def test_simulate_takes_pin_and_no_pin_into_its_config_and_run_id() -> None:
    base = ["simulate", "--workload", "chat", "--allocator", "paged", "--requests", "300",
            "--capacity-blocks", "64", "--policy", "lfu", "--no-receipts",
            "-f", "json"]  # fmt: skip
    pinned = json.loads(run(*base, "--pin").stdout)
    unpinned = json.loads(run(*base, "--no-pin").stdout)
    assert pinned["config"]["simulation"]["pin_admitting"] is True
    assert unpinned["config"]["simulation"]["pin_admitting"] is False
    assert pinned["run_id"] != unpinned["run_id"]


def test_arena_sweep_rows_equal_simulate_runs() -> None:
    result = run("sweep", "--workload", "chat", "--requests", "400", "--capacity-mb", "64,256",
                 "--policy", "lru,s3fifo", "--workers", "1", "-f", "jsonl")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["policy"], r["capacity_mb"]) for r in rows] == [
        ("lru", 64.0), ("lru", 256.0), ("s3fifo", 64.0), ("s3fifo", 256.0)
    ]  # fmt: skip
    assert all("capacity_blocks" not in r for r in rows)
    for row in rows:
        simulated = run("simulate", "--workload", "chat", "--requests", "400", "--capacity-mb",
                        f"{row['capacity_mb']:g}", "--policy", row["policy"], "--no-receipts",
                        "-f", "json")  # fmt: skip
        stats = json.loads(simulated.stdout)["stats"]
        assert (row["hits"], row["misses"]) == (stats["cache_hits"], stats["cache_misses"])


def test_one_progress_bar_on_a_terminal_and_none_in_a_pipe() -> None:
    import pty

    kvreceipts = str(Path(sys.executable).parent / "kvreceipts")
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "100"}
    result = subprocess.run([kvreceipts, *SMALL, "-f", "csv"], stdout=subprocess.PIPE,
                            stderr=follower, env=env, check=False)  # fmt: skip
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other end is closed and drained
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert result.returncode == 0
    assert b"sweeping grid points" in seen
    assert b"sweeping grid points" not in result.stdout
    piped = subprocess.run([kvreceipts, *SMALL, "-f", "csv"], capture_output=True, check=False)
    assert b"sweeping grid points" not in piped.stderr
    assert piped.stdout == result.stdout


def _mooncake(path: Path, seed: int) -> Path:
    import random

    rng = random.Random(seed)
    lines = []
    for i in range(200):
        prefix = rng.randrange(5)  # five shared conversations, each a chain of blocks
        length = rng.randrange(1, 12)
        hashes = [prefix * 1000 + k for k in range(length)]
        lines.append(json.dumps({"timestamp": i * 10, "input_length": 512 * length,
                                 "output_length": 1, "hash_ids": hashes}))  # fmt: skip
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_several_traces_give_rows_tables_and_a_plot_each(tmp_path: Path) -> None:
    a, b = _mooncake(tmp_path / "a.jsonl", 1), _mooncake(tmp_path / "b.jsonl", 2)
    args = ["sweep", "--trace", str(a), "--trace", str(b), "--points", "4", "--no-pin",
            "--workers", "1"]  # fmt: skip
    document = json.loads(run(*args, "-f", "json").stdout)
    assert [t["name"] for t in document["traces"]] == ["a.jsonl", "b.jsonl"]
    assert document["trace"] == document["traces"][0]
    assert [r["trace"] for r in document["rows"]][:: len(document["rows"]) // 2] == [
        "a.jsonl", "b.jsonl"
    ]  # fmt: skip
    assert {r["method"] for r in document["rows"] if r["policy"] == "lru"} == {"exact"}
    table = run(*args, "-f", "table").stdout
    assert "miss ratio · a.jsonl" in table
    assert "miss ratio · b.jsonl" in table
    svg = tmp_path / "c.svg"
    assert run(*args, "-q", "--plot", str(svg)).exit_code == 0
    text = svg.read_text(encoding="utf-8")
    assert "a.jsonl" in text
    assert "b.jsonl" in text
    same = run("sweep", "--trace", str(a), "--trace", str(a), "--points", "2")
    assert same.exit_code == 2
    assert "same name" in same.stderr


def test_shards_at_rate_1_is_the_full_computation() -> None:
    base = [*SMALL, "--no-pin", "-f", "csv"]
    full = csv_rows(run(*base, "--method", "simulate").stdout)
    sampled = csv_rows(run(*base, "--method", "shards", "--sample-rate", "1").stdout)
    assert len(full) == len(sampled) == 12
    for a, b in zip(full, sampled, strict=True):
        assert (a["policy"], a["capacity_blocks"], a["hits"], a["misses"]) == (
            b["policy"], b["capacity_blocks"], b["hits"], b["misses"]
        )  # fmt: skip
        assert b["method"] == "shards"


def test_a_trace_at_an_fsspec_url_is_fetched_and_swept(tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    local = _mooncake(tmp_path / "t.jsonl", 3)
    url = f"memory://sweep-test/{tmp_path.name}/t.jsonl"  # fsspec's in-process filesystem
    with fsspec.open(url, "wb") as remote:
        remote.write(local.read_bytes())
    args = ["--points", "4", "--no-pin", "--workers", "1", "-f", "csv"]
    from_url = run("sweep", "--trace", url, *args)
    from_file = run("sweep", "--trace", str(local), *args)
    assert from_url.exit_code == 0, from_url.stderr
    assert from_url.stdout == from_file.stdout
    assert from_url.stdout.count("t.jsonl,") == 16


def test_sampled_rows_carry_their_expected_error() -> None:
    base = [*SMALL, "--no-pin", "--method", "shards", "--sample-rate", "0.5", "-f", "jsonl"]
    result = run(*base, "--sample-max-blocks", "100", "--policy", "lru,fifo")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    lru = [r for r in rows if r["policy"] == "lru"]
    assert all(r["expected_error"] is not None and r["expected_error"] >= 0 for r in lru)
    assert all(r["expected_error"] is None for r in rows if r["policy"] == "fifo")
    assert "at most 100 blocks" in result.stderr
    assert "shards, lru: expected error ±" in result.stderr
    exact = [json.loads(x) for x in run(*SMALL, "--no-pin", "-f", "jsonl").stdout.splitlines()]
    assert all(r["expected_error"] is None for r in exact)


def test_shards_reads_the_same_sample_with_or_without_numpy() -> None:
    from kvreceipts.sweep import shards

    rng = __import__("random").Random(3)
    blocks = [0 if rng.random() < 0.1 else rng.randrange(5_000) for _ in range(20_000)]
    vectorized = shards.prepare(blocks)
    counts = __import__("collections").Counter(blocks)
    plain = (blocks, [methods.block_hash(b) for b in blocks], [counts[b] for b in blocks])
    for rate in (0.05, 0.2):
        a = shards.shards(blocks, rate, prepared=vectorized)
        b = shards.shards(blocks, rate, prepared=plain)
        assert a == b
        assert a.references > 0.1 * len(blocks)  # block 0, heavy, is kept whole


def test_max_memory_bounds_the_trace_a_sweep_holds(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(f'{{"timestamp": {i}, "input_length": 1, "output_length": 1, '
                             f'"hash_ids": [{i}]}}\n' for i in range(2000)))  # fmt: skip
    base = ("sweep", "--trace", str(trace), "--policy", "lru", "--points", "2", "--workers", "1",
            "--format", "json")  # fmt: skip
    # 1 MB above what the process takes first: 1,250 one-block requests of 800 B fit, not 1,251.
    refused = run(*base, "--max-memory", "31MB")
    assert refused.exit_code == 2
    assert refused.stderr.startswith(f"error: {trace}:1251: the trace does not fit in "
                                     "--max-memory 31MB: a sweep holds every request")  # fmt: skip
    assert refused.stdout == ""
    assert run(*base, "--max-memory", "32MB").exit_code == 0
    small = run(*base, "--max-memory", "30MB")
    assert small.exit_code == 2
    assert "--max-memory: 30MB leaves nothing for the trace" in small.stderr
