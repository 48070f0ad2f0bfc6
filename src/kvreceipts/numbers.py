"""The one check of user-given numbers: finite, in range, and within 64 bits.

Every number that reaches kvreceipts from a command line or a config file passes through
:func:`check_number` before anything uses it, so that ``nan``, ``inf``, ``1e400`` or a
23-digit integer becomes one ``error: …`` line naming the option or key, never a traceback
from deep inside (``int(nan)``, orjson's "Integer exceeds 64-bit range").
"""

from __future__ import annotations

import math

from kvreceipts.errors import UsageError

__all__ = [
    "INT64_MAX",
    "MAX_BLOCKS",
    "MAX_MS_PER_TOKEN",
    "MAX_SYNTHETIC_REQUESTS",
    "MAX_TOKENS",
    "MAX_TRACE_MS",
    "check_number",
]

INT64_MAX = 2**63 - 1
"""The largest integer a receipt, a summary or a config file can carry (signed 64 bits)."""

MAX_BLOCKS = 2**22
"""The largest paged cache, in blocks (4,194,304; 23 times the distinct blocks of the Mooncake
conversation trace): the allocator keeps slot tables of that length, ~40 bytes a slot."""

MAX_MS_PER_TOKEN = 1000.0
"""The slowest simulated prefill or decode: a second a token."""

MAX_TOKENS = 10_000_000
"""The most tokens a trace row may ask for (input or output)."""

MAX_TRACE_MS = 10**12
"""The latest arrival in a trace, in ms from its start (~31 years). With the two bounds above
the simulated clock stays within the dates a receipt timestamp can name (before year 10000)."""

MAX_SYNTHETIC_REQUESTS = 10_000_000
"""The longest synthetic workload: its session table grows with the request count (one
session per 2 to 10 requests), so 10 million requests take ~100 MiB before the first one."""


def check_number(
    where: str,
    value: float,
    *,
    above: float | None = None,
    low: float | None = None,
    high: float | None = None,
    key: str | None = None,
) -> None:
    """Raise :class:`UsageError` unless ``value`` is finite, within 64 bits (integers), greater
    than ``above``, at least ``low`` and at most ``high``.

    ``where`` names the value in the message (``--capacity-mb``, ``[caching] kv_cache_size_mb``);
    ``key`` is the config key, so that the command line can name its option instead.
    """
    shown = _show(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{where} must be a finite number (got {shown})", key=key)
    if isinstance(value, int) and not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise UsageError(f"{where} must fit in 64 bits: at most {INT64_MAX} (got {value})", key=key)
    if above is not None and value <= above:
        raise UsageError(f"{where} must be greater than {_show(above)} (got {shown})", key=key)
    if low is not None and value < low:
        raise UsageError(f"{where} must be at least {_show(low)} (got {shown})", key=key)
    if high is not None and value > high:
        raise UsageError(f"{where} must be at most {_show(high)} (got {shown})", key=key)


def _show(value: float) -> str:
    """``1e-09``, ``0.5``, ``16777216``: integers in full, floats short."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)
