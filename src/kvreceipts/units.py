"""Sizes and rates with units: how they read to people (``1.5 KiB``) and how people type them
(``64GiB``, ``1.5 TiB``, ``50GB/s``). A leaf: every layer may use it (commands, sweep reports).

When parsing, a size is a number followed by one of
:data:`SIZE_UNITS` (binary ``KiB``…``TiB`` or decimal ``kB``…``TB``; ``B`` for bytes), a rate
is a size followed by ``/s``. A bare number is refused, since nobody can tell whether it meant
bytes, blocks or MiB.
"""

from __future__ import annotations

import math
import re

from kvreceipts.errors import UsageError

__all__ = [
    "RATE_UNITS_TEXT",
    "SIZE_UNITS",
    "SIZE_UNITS_TEXT",
    "human_bytes",
    "parse_rate",
    "parse_size",
]

SIZE_UNITS: dict[str, int] = {
    "B": 1,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
    "kB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
}
"""Every unit a size may carry, and its bytes (case matters only between the binary and the
decimal spelling of the same letter: ``KB`` and ``kb`` are read as ``kB``)."""

SIZE_UNITS_TEXT = ", ".join(SIZE_UNITS)
RATE_UNITS_TEXT = ", ".join(f"{unit}/s" for unit in SIZE_UNITS)

_BY_LOWER = {unit.lower(): unit for unit in SIZE_UNITS if unit.lower() != "b"} | {"b": "B"}
_NUMBER = re.compile(r"\s*([+-]?(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)\s*")


def human_bytes(count: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - loop always returns


def parse_size(text: str, where: str) -> int:
    """Bytes of a size such as ``64GiB`` (rounded down to a whole byte); ``where`` names the
    option in the one-line error.
    """
    match = _NUMBER.fullmatch(text)
    if match is None:
        raise UsageError(f"{where}: {text.strip()!r} is not a size (a number and a unit: "
                         f"{SIZE_UNITS_TEXT}; e.g. 64GiB)")  # fmt: skip
    number, unit = match.groups()
    if not unit:
        raise UsageError(f"{where}: {text.strip()!r} has no unit (use one of {SIZE_UNITS_TEXT}; "
                         "e.g. 64GiB)")  # fmt: skip
    canonical = unit if unit in SIZE_UNITS else _BY_LOWER.get(unit.lower())
    if canonical is None:
        raise UsageError(f"{where}: unknown unit {unit!r} in {text.strip()!r} "
                         f"(use one of {SIZE_UNITS_TEXT})")  # fmt: skip
    value = float(number.replace("_", ""))
    if not math.isfinite(value):
        raise UsageError(f"{where}: {text.strip()!r} is not a finite size")
    if value <= 0:
        raise UsageError(f"{where}: {text.strip()!r} must be greater than 0")
    size = value * SIZE_UNITS[canonical]
    if size >= 2**63:
        raise UsageError(f"{where}: {text.strip()!r} is larger than 8 EiB")
    return int(size)


def parse_rate(text: str, where: str) -> float:
    """Bytes per second of a rate such as ``50GB/s``."""
    stripped = text.strip()
    if not stripped.lower().endswith("/s"):
        raise UsageError(f"{where}: {stripped!r} is not a rate (a size per second: "
                         f"{RATE_UNITS_TEXT}; e.g. 50GB/s)")  # fmt: skip
    return float(parse_size(stripped[:-2], where))
