"""Shared fixtures and markers.

``@pytest.mark.needs("receipts", ...)`` skips a test when this process runs without those
features (``KVRECEIPTS_FEATURES``). ``@pytest.mark.traces`` tests read the real traces in
``../shared/traces`` (or ``$KVRECEIPTS_TRACES``); they skip when the folder is absent, unless
``KVRECEIPTS_REQUIRE_TRACES=1`` (set by ``./ci-local.sh``) makes that a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from kvreceipts import features

ROOT = Path(__file__).resolve().parent.parent


def _find_traces() -> Path:
    """``$KVRECEIPTS_TRACES``, else ``shared/traces`` beside the checkout (CI) or beside any
    folder above it (a worktree such as ``/work/wt-x`` next to ``/work/shared``).
    """
    if os.environ.get("KVRECEIPTS_TRACES"):
        return Path(os.environ["KVRECEIPTS_TRACES"])
    candidates = [folder / "shared" / "traces" for folder in ROOT.parents]
    return next((c for c in candidates if c.is_dir()), candidates[0])


TRACES = _find_traces()

# "ci" for the sessions that run the whole suite, "quick" for the ones that repeat it under
# other features or dependency versions.
settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "quick", max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)
# `nox -s fuzz`: the generated-input tests at length (KVRECEIPTS_FUZZ_EXAMPLES per test).
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("KVRECEIPTS_FUZZ_EXAMPLES", "2000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers(name="needs"):
        missing = [name for name in marker.args if not features.enabled(name)]
        if missing:
            pytest.skip(f"needs feature(s) {', '.join(missing)} (active: {features.describe()})")
    if item.get_closest_marker("traces") and not TRACES.is_dir():
        if os.environ.get("KVRECEIPTS_REQUIRE_TRACES") == "1":
            pytest.fail(f"the real traces are required but {TRACES} does not exist")
        pytest.skip(f"real traces not found at {TRACES}")


@pytest.fixture
def traces_dir() -> Path:
    """The folder holding the real public traces."""
    return TRACES
