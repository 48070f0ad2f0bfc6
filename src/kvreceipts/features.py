"""Compile-time features, Python style: ``receipts`` and ``tuning``.

Upstream gates code behind Cargo features. Here the set is read once per process from
``KVRECEIPTS_FEATURES`` (comma-separated; unset means every feature, empty means none) and can be
overridden once, before use, by the CLI's ``--features``. With ``receipts`` off the receipts
modules are never imported; with ``tuning`` off receipts carry no ``performance`` key.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import TYPE_CHECKING

from kvreceipts.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "ALL_FEATURES",
    "ENV_VAR",
    "FeatureDisabledError",
    "active_features",
    "describe",
    "enabled",
    "overridden",
    "parse_features",
    "require",
    "set_features",
]

ENV_VAR = "KVRECEIPTS_FEATURES"
ALL_FEATURES = ("receipts", "tuning")

_active: frozenset[str] | None = None


class FeatureDisabledError(UsageError):
    """Something was asked for that needs a feature this process runs without."""


def parse_features(spec: str | None) -> frozenset[str]:
    """Parse a comma-separated feature list; ``None`` means every feature."""
    if spec is None:
        return frozenset(ALL_FEATURES)
    names = {part.strip() for part in spec.split(",") if part.strip()}
    unknown = sorted(names.difference(ALL_FEATURES))
    if unknown:
        raise UsageError(
            f"unknown feature {unknown[0]!r} in {ENV_VAR} or --features "
            f"(choose from: {', '.join(ALL_FEATURES)})"
        )
    return frozenset(names)


def active_features() -> frozenset[str]:
    """The features of this process, resolved from the environment on first use."""
    global _active  # noqa: PLW0603 - resolved once per process, by design
    if _active is None:
        _active = parse_features(os.environ.get(ENV_VAR))
    return _active


def set_features(spec: str | None) -> frozenset[str]:
    """Override the feature set (the CLI's ``--features``); ``None`` re-reads the environment."""
    global _active  # noqa: PLW0603
    _active = parse_features(spec) if spec is not None else None
    return active_features()


@contextmanager
def overridden(spec: str | None) -> Iterator[frozenset[str]]:
    """Run with the features in ``spec`` (``None``: unchanged), restoring them afterwards."""
    global _active  # noqa: PLW0603
    saved = _active
    try:
        yield set_features(spec) if spec is not None else active_features()
    finally:
        _active = saved


def enabled(name: str) -> bool:
    """Whether feature ``name`` is on in this process."""
    return name in active_features()


def describe() -> str:
    """The active features as the user would write them, for messages."""
    return ",".join(sorted(active_features())) or "none"


def require(name: str, what: str) -> None:
    """Raise a clear error naming the feature when ``what`` needs a feature that is off."""
    if not enabled(name):
        raise FeatureDisabledError(
            f"{what} needs the {name!r} feature, which is off in this process "
            f"(features: {describe()}; set {ENV_VAR} or --features to include {name})"
        )
