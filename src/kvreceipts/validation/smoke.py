"""The import check of one feature set, as ``cargo check --features …`` is upstream's.

``python -m kvreceipts.validation.smoke --expect receipts`` checks that this process runs with
exactly those features, that every module compiles, that the modules of the features that are on
import while the gated ones refuse with :class:`~kvreceipts.FeatureDisabledError`, and that a
manager evicts with receipts flowing (or not) as the features say. Exit status 1 on any problem.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

__all__ = ["check", "main"]

_RECEIPTS_MODULES = ("kvreceipts.receipts", "kvreceipts.emit", "kvreceipts.sinks")
_CONTEXT = 16
"""Tokens per session: 8 KiB entries on the bitnet sizing."""
_CAPACITY_MB = 16 / 1024
"""Room for two such entries, so the third evicts one."""


def _module_names(package_dir: Path) -> list[str]:
    names: list[str] = []
    for path in sorted(package_dir.rglob("*.py")):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__main__":
            continue  # importing it would run the command line
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _check_eviction(receipts: bool, tuning: bool) -> list[str]:
    from kvreceipts import CachingConfig, FeatureDisabledError, KVCacheManager

    manager = KVCacheManager(CachingConfig(kv_cache_size_mb=_CAPACITY_MB))
    problems = [
        f"could not create session {session!r} in a {_CAPACITY_MB} MiB arena"
        for session in ("a", "b", "c")
        if manager.get_or_create_cache(session, _CONTEXT) is None
    ]
    if manager.evictions < 1:
        problems.append(f"three sessions in room for two evicted {manager.evictions} entries")
    leaked = [name for name in _RECEIPTS_MODULES if name in sys.modules]
    if leaked:
        problems.append(f"an eviction without a sink imported the receipts code: {leaked}")
    if not receipts:
        try:
            KVCacheManager.with_receipt_sink(CachingConfig(enable_receipts=True), None)  # type: ignore[arg-type]
        except FeatureDisabledError:
            pass
        else:
            problems.append("with_receipt_sink worked with the receipts feature off")
        return problems

    from kvreceipts.receipts import KvEvictionReport
    from kvreceipts.sinks import ChannelSink

    sink = ChannelSink(8)
    config = CachingConfig(kv_cache_size_mb=_CAPACITY_MB, enable_receipts=True)
    manager = KVCacheManager.with_receipt_sink(config, sink)
    for session in ("a", "b", "c"):
        manager.get_or_create_cache(session, _CONTEXT)
    receipt = sink.try_recv()
    if not isinstance(receipt, KvEvictionReport):
        problems.append(f"an eviction with receipts on sent {receipt!r}, not an eviction receipt")
    elif ("performance" in receipt.to_dict()) is not tuning:
        state = "on" if tuning else "off"
        problems.append(f"with tuning {state} the receipt's performance key is wrong")
    return problems


def _check_modules(receipts: bool) -> tuple[list[str], int]:
    from kvreceipts import FeatureDisabledError

    package_dir = Path(__file__).resolve().parent.parent
    problems: list[str] = []
    for path in sorted(package_dir.rglob("*.py")):
        try:
            compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
        except SyntaxError as exc:
            problems.append(f"{path}:{exc.lineno}: {exc.msg}")
    gated = 0
    for name in _module_names(package_dir):
        try:
            importlib.import_module(name)
        except FeatureDisabledError as exc:
            if receipts:
                problems.append(f"import {name}: {exc}")
            gated += 1
        except Exception as exc:  # noqa: BLE001 - any import failure is what we report
            problems.append(f"import {name}: {type(exc).__name__}: {exc}")
    return problems, gated


def check(expect: str | None) -> tuple[list[str], int]:
    """Every problem found in this process, given the feature set it should have, and how many
    modules refused to import because their feature is off.
    """
    from kvreceipts import features

    active = features.active_features()
    problems: list[str] = []
    if expect is not None and active != features.parse_features(expect):
        problems.append(f"features are {features.describe()!r}, expected {expect or 'none'!r}")
    receipts, tuning = features.enabled("receipts"), features.enabled("tuning")
    problems += _check_eviction(receipts, tuning)
    module_problems, gated = _check_modules(receipts)
    return problems + module_problems, gated


def main(argv: list[str] | None = None) -> int:
    """Run the check; print what is wrong on stderr."""
    parser = argparse.ArgumentParser(prog="python -m kvreceipts.validation.smoke")
    parser.add_argument("--expect", metavar="FEATURES", default=None,
                        help="the features this process must run with ('' for none)")  # fmt: skip
    args = parser.parse_args(argv)
    from kvreceipts import features

    problems, gated = check(args.expect)
    for problem in problems:
        sys.stderr.write(f"smoke: {problem}\n")
    if problems:
        return 1
    sys.stdout.write(f"smoke: ok (features: {features.describe()}; {gated} gated modules)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
