"""Features (``receipts``, ``tuning``): parsing, and what a process without them does.

The process-wide checks run in subprocesses with their own ``KVRECEIPTS_FEATURES``, so they run
(and mean the same) in every session, whatever this process's features are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from kvreceipts.errors import UsageError
from kvreceipts.features import (
    ALL_FEATURES,
    ENV_VAR,
    FeatureDisabledError,
    parse_features,
    require,
)

RECEIPTS_MODULES = (
    "kvreceipts.receipts",
    "kvreceipts.sinks",
    "kvreceipts.emit",
    "kvreceipts.chain",
)


def run_python(features: str | None, code: str) -> Any:
    """Run ``code`` in a fresh interpreter with ``KVRECEIPTS_FEATURES`` set to ``features``
    (unset for ``None``); returns the JSON it prints last.
    """
    env = {key: value for key, value in os.environ.items() if key != ENV_VAR}
    if features is not None:
        env[ENV_VAR] = features
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


# A manager on a two-entry arena, asked for six sessions: four LRU evictions, one manual
# removal and one TTL sweep.
EVICTIONS = """
    from kvreceipts import CachingConfig, KVCacheManager
    from kvreceipts.clock import SimClock

    config = CachingConfig(
        kv_cache_size_mb=2 * 8192 / 2**20, model_cache_ttl=1, enable_receipts=True
    )
    clock = SimClock()
"""


def test_unset_means_every_feature() -> None:
    assert parse_features(None) == frozenset(ALL_FEATURES) == {"receipts", "tuning"}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", set()),
        (" , ", set()),
        ("receipts", {"receipts"}),
        ("tuning", {"tuning"}),
        (" receipts , tuning ", {"receipts", "tuning"}),
        ("receipts,receipts,", {"receipts"}),
    ],
)
def test_parse_features(spec: str, expected: set[str]) -> None:
    assert parse_features(spec) == expected


def test_an_unknown_feature_names_the_choices() -> None:
    with pytest.raises(UsageError, match="unknown feature 'reciepts'") as caught:
        parse_features("tuning,reciepts")
    assert "receipts, tuning" in str(caught.value)
    assert ENV_VAR in str(caught.value)


def test_require_names_the_missing_feature() -> None:
    with pytest.raises(FeatureDisabledError, match="'gpu' feature") as caught:
        require("gpu", "a GPU arena")
    assert "a GPU arena" in str(caught.value)
    assert isinstance(caught.value, UsageError)  # exit code 2 on the command line


def test_without_receipts_the_receipts_code_is_never_imported() -> None:
    out = run_python(
        "",
        EVICTIONS
        + """
    import json, sys
    import kvreceipts
    from kvreceipts import FeatureDisabledError

    manager = KVCacheManager(config, clock=clock)
    for session in "abcdef":
        manager.get_or_create_cache(session, 16)
    manager.remove_cache_entry("f")
    clock.advance_to(5_000)
    manager.sweep_ttl()
    loaded = sorted(name for name in sys.modules if name.startswith("kvreceipts"))
    errors = {}
    for name, attempt in {
        "attribute": lambda: kvreceipts.ChannelSink,
        "sink": lambda: KVCacheManager(config, sink=object()),
        "with_receipt_sink": lambda: KVCacheManager.with_receipt_sink(config, object()),
        "import": lambda: __import__("kvreceipts.sinks"),
    }.items():
        try:
            attempt()
        except FeatureDisabledError as exc:
            errors[name] = str(exc)
    after = sorted(name for name in sys.modules if name.startswith("kvreceipts"))
    print(json.dumps({
        "evictions": manager.evictions,
        "receipts": manager.receipts_enabled,
        "loaded": loaded,
        "after": after,
        "errors": errors,
    }))
    """,
    )

    assert out["evictions"] == 6
    assert out["receipts"] is False
    for module in RECEIPTS_MODULES:
        assert module not in out["loaded"]
        assert module not in out["after"]  # refused before anything was imported
    assert set(out["errors"]) == {"attribute", "sink", "with_receipt_sink", "import"}
    for message in out["errors"].values():
        assert "'receipts' feature" in message
    assert "kvreceipts.ChannelSink" in out["errors"]["attribute"]


# Emits receipts and reports, for each, whether "performance" is in its dict and its line.
PERFORMANCE = (
    EVICTIONS
    + """
    import json
    from kvreceipts import ChannelSink

    sink = ChannelSink(100)
    manager = KVCacheManager(config, sink=sink, clock=clock)
    for t, session in enumerate("abcd"):
        clock.advance_to(t * 100.0)
        manager.get_or_create_cache(session, 16)
    records = sink.drain()
    print(json.dumps([
        {
            "in_dict": "performance" in record.to_dict(),
            "in_line": "performance" in json.loads(record.line),
            "rps": json.loads(record.line).get("performance", {}).get(
                "average_requests_per_second"
            ),
        }
        for record in records
    ]))
    """
)


def test_receipts_without_tuning_carry_no_performance() -> None:
    out = run_python("receipts", PERFORMANCE)
    assert len(out) == 2
    assert all(not (r["in_dict"] or r["in_line"]) for r in out)


@pytest.mark.parametrize("spec", ["receipts,tuning", None])
def test_receipts_with_tuning_carry_performance(spec: str | None) -> None:
    out = run_python(spec, PERFORMANCE)
    assert len(out) == 2
    assert all(r["in_dict"] and r["in_line"] for r in out)
    assert all(r["rps"] > 0 for r in out)


def test_an_unknown_feature_in_the_environment_is_a_clear_error() -> None:
    out = run_python(
        "receipts,bogus",
        """
    import json
    import kvreceipts  # importing is fine; the features are read on first use
    from kvreceipts import UsageError, features
    try:
        features.active_features()
    except UsageError as exc:
        print(json.dumps(str(exc)))
    """,
    )
    assert "unknown feature 'bogus'" in out
    assert "receipts, tuning" in out
