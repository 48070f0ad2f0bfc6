"""Coverage-guided byte mutation of real files at every reader (atheris, i.e. libFuzzer).

    python tests/fuzz_atheris.py [--seconds N] [--artifacts DIR] [-- libFuzzer options]

An input's first byte picks the reader (tests/fuzz_targets.py: stats, verify, simulate and
sweep on a trace, watch --from, config), the rest is the file it reads. The seeds are real
files: the first lines of each trace in ../shared/traces/ (read there, copied only into a
temporary corpus, never into the repo), a ``simulate -o`` run, the recorded watch and its
receipts (tests/fixtures/watch/), a config file. libFuzzer mutates them, guided by the
coverage of kvreceipts' code, and each input must keep fuzz_targets' rules: an exit code the
docs name, no traceback, exit 2 as one error line, peak RSS under 150 MB. An input that breaks
one is written to ``--artifacts`` as ``crash-*`` and the run exits 1; keep a small one as
``tests/fixtures/fuzz/TARGET--what.ext`` (tests/test_fuzz_readers.py replays them).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import atheris

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

with atheris.instrument_imports(include=["kvreceipts"]):
    # The readers import their modules lazily: import them here, so they are instrumented.
    import kvreceipts.bounded
    import kvreceipts.commands.config
    import kvreceipts.commands.reading
    import kvreceipts.commands.stats
    import kvreceipts.commands.sweep
    import kvreceipts.commands.verify
    import kvreceipts.commands.watch
    import kvreceipts.config
    import kvreceipts.engine.core
    import kvreceipts.engine.figures
    import kvreceipts.engine.recording
    import kvreceipts.engine.session
    import kvreceipts.engine.wire
    import kvreceipts.inputs
    import kvreceipts.shape
    import kvreceipts.simulation
    import kvreceipts.sniff
    import kvreceipts.summarize
    import kvreceipts.sweep.grid
    import kvreceipts.verify
    import kvreceipts.verify.runs
    import kvreceipts.workloads.traces  # noqa: F401 - imported to be instrumented
    from fuzz_targets import RSS_BOUND_MB, TARGETS, peak_rss_mb, run_target

TRACES = next((p / "shared" / "traces" for p in HERE.parents if (p / "shared" / "traces").is_dir()),
              None)  # fmt: skip
SEED_LINES = 40
"""Lines of each real trace (and receipts file) taken as a seed."""
_SCRATCH = tempfile.mkdtemp(prefix="kvreceipts-fuzz-")


def _head(path: Path, lines: int = SEED_LINES) -> bytes:
    with path.open("rb") as handle:
        return b"".join(line for _, line in zip(range(lines), handle, strict=False))


def _simulated() -> bytes:
    from typer.testing import CliRunner

    from kvreceipts.cli import app

    out = Path(_SCRATCH) / "run.jsonl"
    result = CliRunner().invoke(app, ["simulate", "-q", "--requests", "200", "--capacity-mb",
                                      "64", "-o", str(out), "--format", "json"])  # fmt: skip
    if result.exit_code != 0:
        raise SystemExit(f"simulate failed: {result.stderr}")
    return _head(out, 60)


def seeds() -> dict[str, list[bytes]]:
    """Real files for each target, by target name."""
    fixtures = HERE / "fixtures" / "watch"
    receipts = [_simulated(), _head(fixtures / "engine.jsonl", 60)]
    traces = [_head(p) for p in sorted(TRACES.glob("*")) if p.suffix in (".jsonl", ".csv")] \
        if TRACES is not None else []  # fmt: skip
    config = (b"[caching]\nkv_cache_size_mb = 64\nenable_receipts = true\n"
              b'[simulation]\nrequests = 20\npolicy = "lru"\n')  # fmt: skip
    by_kind = {"stats": receipts, "verify": receipts, "simulate": traces, "sweep": traces,
               "watch": [(fixtures / "engine.kvrec").read_bytes()], "config": [config]}  # fmt: skip
    return {t.name: by_kind.get(t.name.split("-")[0], traces) for t in TARGETS}


def test_one_input(data: bytes) -> None:
    """libFuzzer's entry point: the first byte picks the target."""
    if not data:
        return
    target = TARGETS[data[0] % len(TARGETS)]
    run_target(target, data[1:], _SCRATCH)


def main() -> None:
    """Write the seed corpus and fuzz."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="how long to fuzz")
    parser.add_argument("--artifacts", default=None, help="where crash-* inputs go")
    parser.add_argument("--corpus", default=None, help="corpus folder (kept between runs)")
    args, libfuzzer = parser.parse_known_args()
    corpus = Path(args.corpus or tempfile.mkdtemp(prefix="kvreceipts-corpus-"))
    corpus.mkdir(parents=True, exist_ok=True)
    real = seeds()
    for index, target in enumerate(TARGETS):
        for number, seed in enumerate(real[target.name]):
            (corpus / f"seed-{target.name}-{number}").write_bytes(bytes([index]) + seed)
    artifacts = Path(args.artifacts or tempfile.mkdtemp(prefix="kvreceipts-crashes-"))
    artifacts.mkdir(parents=True, exist_ok=True)
    baseline = peak_rss_mb()
    print(
        f"fuzz: {len(TARGETS)} targets, corpus {corpus}, crashes to {artifacts}/, "
        f"RSS at start {baseline:.0f} MB (bound {RSS_BOUND_MB} MB)",
        file=sys.stderr,
    )
    argv = [sys.argv[0], str(corpus), f"-max_total_time={args.seconds}", "-max_len=65536",
            f"-artifact_prefix={artifacts}{os.sep}", "-timeout=30", "-rss_limit_mb=2048",
            "-print_final_stats=1", *[a for a in libfuzzer if a != "--"]]  # fmt: skip
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
