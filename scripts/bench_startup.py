"""The start-up rows of scripts/bench.py, whole processes: ``--version``, ``simulate`` on
a one-request trace and on the conversation trace beside a bare LRU script, and
``stats``.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

from bench_common import CONVERSATION, Row, _kvreceipts, _timed, paired


def bench_startup(reps: int, rows: list[Row]) -> None:
    """Item 4: `kvreceipts --version` as a whole process."""
    command = _kvreceipts()

    def run(args: list[str]) -> None:
        subprocess.run(args, check=True, capture_output=True)

    start = paired(lambda: run([*command, "--version"]),
                   lambda: run([sys.executable, "-c", "pass"]), max(reps, 9))  # fmt: skip
    rows.append(Row("kvreceipts --version (process)", start.a, "s", "<= 0.2", start.a <= 0.2))
    rows.append(Row("python -c pass (process)", start.b, "s"))


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
