"""Bounded stand-ins for the structures a reader keeps, so that memory does not grow with what
an untrusted file puts in it: neither with the number of names nor with their length.

>>> shorten("3f2a" * 262_144)
'3f2a3f2a3f2a…(1,048,576 chars)'
>>> counts = CappedCounter(cap=2)
>>> for name in ("GPU", "CPU", "GPU", "disk", "tape"):
...     counts.add(name)
>>> counts.to_dict()
{'GPU': 2, 'CPU': 1, '(other)': 2}
>>> counts.folded, counts.other
(2, 2)

- :func:`shorten`: an identifier as it may appear in a message (bounded, one line).
- :func:`compact_key`: an identifier as it may be kept when it is only compared (bounded,
  distinct identifiers stay distinct).
- :class:`CappedCounter`: counts per name for at most ``cap`` names; the others are folded into
  one ``(other)`` bucket that says how many names it folded.
- :class:`Quantiles`: percentiles of a stream of numbers, exact up to ``exact_limit`` values,
  then from a log-bucketed histogram (relative error below 1%), in bounded memory.

Nothing here does I/O or imports anything of kvreceipts: any layer may use it.
"""

from __future__ import annotations

import hashlib
import math
from array import array
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "FOLDED_TRACKED",
    "KEY_LIMIT",
    "OTHER",
    "SHOWN_LIMIT",
    "CappedCounter",
    "Quantiles",
    "compact_key",
    "shorten",
]

SHOWN_LIMIT = 64
"""Longest identifier shown whole in a message."""
KEY_LIMIT = 64
"""Longest identifier kept as itself by :func:`compact_key`; longer ones are kept as a digest."""
OTHER = "(other)"
"""The bucket of :class:`CappedCounter` that holds the names past its cap."""
FOLDED_TRACKED = 65_536
"""Distinct folded names told apart (by a 64-bit hash each, ~5 MB at most); past this many,
:attr:`CappedCounter.folded` is a lower bound (:attr:`CappedCounter.folded_exact` is False)."""

_UNPRINTABLE = {code: f"\\x{code:02x}" for code in range(32)} | {0x7F: "\\x7f"}


def shorten(text: str, limit: int = SHOWN_LIMIT, keep: int = 12) -> str:
    r"""``text`` as it may appear in a one-line message: whole if at most ``limit`` characters,
    else its first ``keep`` and its length (``3f2a3f2a3f2a…(1,048,576 chars)``). Control
    characters are escaped (``\x0a``), so a message stays one line.
    """
    if len(text) > limit:
        text = f"{text[:keep].translate(_UNPRINTABLE)}…({len(text):,} chars)"
    elif not text.isprintable():
        text = text.translate(_UNPRINTABLE)
    return text


def compact_key(text: str, limit: int = KEY_LIMIT) -> str:
    """``text`` itself if it has at most ``limit`` characters, else ``#`` and its SHA-256 in hex
    (65 characters): a bounded key that tells identifiers apart as well as the text itself
    does. The digest form is longer than ``limit``, so it never equals a kept text.
    """
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return "#" + digest + "#" * max(0, limit - 64)


def _label(name: str, limit: int) -> str:
    """A long name as a counter shows it: shortened, with a digest tag to keep it distinct."""
    if len(name) <= limit:
        return name if name.isprintable() else name.translate(_UNPRINTABLE)
    tag = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{name[:12].translate(_UNPRINTABLE)}…({len(name):,} chars, #{tag})"


class CappedCounter:
    """Counts per name, for at most ``cap`` distinct names; later names are folded into one
    :data:`OTHER` bucket, which counts their occurrences (:attr:`other`) and how many distinct
    names it folded (:attr:`folded`, exact up to :data:`FOLDED_TRACKED` names). A name longer
    than ``name_limit`` is counted under a shortened label with a digest tag, so each kept
    name costs at most ~100 characters.

    The first ``cap`` names win; a name once counted is always counted by name.
    """

    __slots__ = ("_folded_hashes", "cap", "counts", "folded", "name_limit", "other")

    def __init__(self, cap: int = 64, *, name_limit: int = SHOWN_LIMIT) -> None:
        self.cap = cap
        self.name_limit = name_limit
        self.counts: dict[str, int] = {}
        self.other = 0
        """Occurrences of the folded names."""
        self.folded = 0
        """Distinct names folded into :data:`OTHER`; once more than FOLDED_TRACKED were,
        it stays at FOLDED_TRACKED and :attr:`folded_exact` is False."""
        self._folded_hashes: set[int] | None = set()

    def add(self, name: str, n: int = 1) -> None:
        """Count ``name`` ``n`` times."""
        counts = self.counts
        if name in counts:  # the common case: one dict look-up
            counts[name] += n
            return
        label = _label(name, self.name_limit) if len(name) > self.name_limit else name
        if label in counts:
            counts[label] += n
        elif len(counts) < self.cap:
            counts[label] = n
        else:
            self.other += n
            self._fold(label)

    def _fold(self, label: str) -> None:
        seen = self._folded_hashes
        if seen is None:  # past FOLDED_TRACKED: names are no longer told apart
            return
        key = hash(label)
        if key not in seen:
            if len(seen) >= FOLDED_TRACKED:  # a name past the ones told apart: more than folded
                self._folded_hashes = None
                return
            seen.add(key)
            self.folded += 1

    @property
    def folded_exact(self) -> bool:
        """Whether :attr:`folded` is exact (fewer than FOLDED_TRACKED names were folded)."""
        return self._folded_hashes is not None

    @property
    def total(self) -> int:
        """Every occurrence counted, folded ones included."""
        return sum(self.counts.values()) + self.other

    def get(self, name: str, default: int = 0) -> int:
        """The count of ``name`` (``default`` if it was never counted by name)."""
        return self.counts.get(name, default)

    def most_common(self, n: int | None = None) -> list[tuple[str, int]]:
        """Named counts, highest first (the first ``n``, if given), then :data:`OTHER` if
        anything was folded.
        """
        ordered = sorted(self.counts.items(), key=lambda item: -item[1])[:n]
        return ordered + ([(OTHER, self.other)] if self.other else [])

    def to_dict(self) -> dict[str, int]:
        """Named counts in first-seen order, then :data:`OTHER` if anything was folded."""
        return {**self.counts, OTHER: self.other} if self.other else dict(self.counts)

    def describe_other(self) -> str:
        """What the :data:`OTHER` bucket holds, for a person (empty if nothing was folded)."""
        if not self.other:
            return ""
        names = f"{self.folded:,}" if self.folded_exact else f"more than {self.folded:,}"
        return f"{OTHER}: {names} more names past the first {self.cap:,}"

    def __len__(self) -> int:
        return len(self.counts)

    def __contains__(self, name: object) -> bool:
        return name in self.counts

    def __iter__(self) -> Iterator[str]:
        return iter(self.counts)

    def __bool__(self) -> bool:
        return bool(self.counts) or bool(self.other)


_BUCKETS_PER_DOUBLING = 70
"""Histogram buckets per factor of two: each spans a factor 2^(1/70), under 1% apart."""


class Quantiles:
    """Nearest-rank percentiles of a stream of finite numbers, in bounded memory.

    The first ``exact_limit`` values are kept (8 bytes each), and percentiles are exact.
    Past that they move into a histogram with buckets a factor 2^(1/70) (~1%) wide, one per
    power of that factor that occurs (a few thousand at most over the range of a double), and
    a percentile is its bucket's geometric middle, clamped to the exact minimum and maximum;
    :attr:`exact` says which. Zero and negative values have buckets of their own kind.
    """

    __slots__ = ("_buckets", "_values", "count", "exact_limit", "maximum", "minimum")

    def __init__(self, exact_limit: int = 100_000) -> None:
        self.exact_limit = exact_limit
        self._values: array[float] | None = array("d")
        self._buckets: dict[int, int] = {}
        self.count = 0
        self.minimum = math.inf
        self.maximum = -math.inf

    def add(self, value: float) -> None:
        """Count one value (a finite float; the caller checks)."""
        self.count += 1
        self.minimum = min(self.minimum, value)
        self.maximum = max(self.maximum, value)
        values = self._values
        if values is not None:
            values.append(value)
            if len(values) > self.exact_limit:
                self._values = None
                for kept in values:
                    self._bucket(kept)
            return
        self._bucket(value)

    def _bucket(self, value: float) -> None:
        buckets = self._buckets
        key = _bucket_of(value)
        buckets[key] = buckets.get(key, 0) + 1

    @property
    def exact(self) -> bool:
        """Whether every value is kept (percentiles exact)."""
        return self._values is not None

    def percentile(self, fraction: float) -> float | None:
        """The nearest-rank percentile (``None`` when empty)."""
        if not self.count:
            return None
        rank = max(1, math.ceil(self.count * fraction))
        if self._values is not None:
            return sorted(self._values)[rank - 1]
        seen = 0
        for key in sorted(self._buckets):
            seen += self._buckets[key]
            if seen >= rank:
                return min(self.maximum, max(self.minimum, _middle_of(key)))
        return self.maximum  # pragma: no cover - the counts add up to count

    def percentiles(self, *fractions: float) -> list[float | None]:
        """Several percentiles, sorting the kept values once."""
        if self._values is not None and self.count:
            ordered = sorted(self._values)
            return [ordered[max(1, math.ceil(self.count * f)) - 1] for f in fractions]
        return [self.percentile(f) for f in fractions]

    def __len__(self) -> int:
        return self.count


# Bucket keys: 0 for zero; k + OFFSET for positive values in [b^k, b^(k+1)); -(k + OFFSET)
# for negative ones. A double's exponent runs from -1074 to 1024, so |k| < 2100 * 70.
_OFFSET = 1 << 20
_LOG_BASE = math.log(2) / _BUCKETS_PER_DOUBLING


def _bucket_of(value: float) -> int:
    if value == 0:
        return 0
    index = math.floor(math.log(abs(value)) / _LOG_BASE) + _OFFSET
    return index if value > 0 else -index


def _middle_of(key: int) -> float:
    if key == 0:
        return 0.0
    index = abs(key) - _OFFSET
    try:
        middle = math.exp((index + 0.5) * _LOG_BASE)
    except OverflowError:  # the top bucket of the doubles: clamped to the maximum anyway
        middle = math.inf
    return middle if key > 0 else -middle
