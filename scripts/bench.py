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
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

# The measures live in the bench_*.py modules beside this script. ``python scripts/bench.py``
# puts this folder on sys.path; ``runpy.run_path`` (as a test runs it) does not.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import CONVERSATION, ROOT, SHORT_PAIR_TURNS, Row
from bench_proofs import bench_proof_tools, bench_proofs
from bench_receipts import bench_paged, bench_receipt_files
from bench_scale import bench_arena, bench_memory
from bench_startup import bench_process_replay, bench_startup, bench_stats
from bench_sweep import bench_answers, bench_sweep
from bench_watch import WATCH_REMOVALS, bench_watch_from, bench_watch_live, bench_watch_vllm


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
