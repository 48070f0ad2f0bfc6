"""Eviction policies: tiny classes that choose victims, in one registry keyed by name.

As in cachetools, a policy only tracks which keys are cached and picks the next victim; the loop
that evicts until enough space is free lives once, in the manager. Keys are session ids (arena)
or block hashes (paged); ``size`` is in the unit of the policy's ``capacity`` (bytes or blocks).
A key in ``pinned`` is in use and must not be chosen.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any, ClassVar

from kvreceipts.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Container, Hashable

__all__ = [
    "POLICIES",
    "EvictionPolicy",
    "FIFOPolicy",
    "LFUPolicy",
    "LRUPolicy",
    "S3FIFOPolicy",
    "make_policy",
]

_NOTHING_PINNED: frozenset[Hashable] = frozenset()


class EvictionPolicy:
    """The contract every policy keeps. Subclasses set ``name`` and override the four hooks."""

    name: ClassVar[str] = ""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity

    def __len__(self) -> int:
        raise NotImplementedError

    def __contains__(self, key: object) -> bool:
        raise NotImplementedError

    def insert(self, key: Hashable, size: int = 1) -> None:
        """``key`` was just cached."""
        raise NotImplementedError

    def access(self, key: Hashable) -> None:
        """``key`` was hit."""
        raise NotImplementedError

    def remove(self, key: Hashable) -> None:
        """``key`` left the cache for a reason of its own (manual removal, TTL)."""
        raise NotImplementedError

    def victim(self, pinned: Container[Hashable] = _NOTHING_PINNED) -> Hashable | None:
        """Choose the next key to evict, forget it and return it; ``None`` if all are pinned."""
        raise NotImplementedError

    on_miss: Callable[[Hashable], None] | None = None
    """Optional: told of a lookup that missed, before the evictions that make room for it."""

    index: OrderedDict[Hashable, Any] | None = None
    """Optional, for a policy whose next victim is the first unpinned key of an ordered dict
    (LRU, FIFO): that dict. A caller may keep a value of its own per key in it (a paged cache
    keeps the block's slot, and needs no second map): it adds a key with ``index[key] = value``
    instead of :meth:`insert`, and takes victims with ``pop_oldest`` and :meth:`pop_victim`,
    which hand the value back."""

    pop_oldest: Callable[[bool], tuple[Hashable, Any]] | None = None
    """With ``index``: its ``popitem``, called with ``False`` (the next victim and its value,
    the fast path). A caller that finds the key pinned gives it back with :meth:`unpop` and
    calls :meth:`pop_victim`."""

    def unpop(self, key: Hashable, value: object = None) -> None:
        """Put back a key (and its value) just taken with ``pop_oldest``, first in line again."""
        raise NotImplementedError

    def pop_victim(self, pinned: Container[Hashable]) -> tuple[Hashable, Any] | None:
        """With ``index``: :meth:`victim`, with the key's value."""
        raise NotImplementedError


class LRUPolicy(EvictionPolicy):
    """Least recently used: a hit moves the key to the back; victims come from the front."""

    name = "lru"

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self._order: OrderedDict[Hashable, Any] = OrderedDict()
        # A hit and an insert are the hottest calls of a replay: binding the C methods saves a
        # Python frame on each. setdefault(key[, size]) appends a new key (values are unused).
        self.access = self._order.move_to_end  # type: ignore[method-assign]
        self.insert = self._order.setdefault  # type: ignore[method-assign,assignment]
        self.index = self._order
        self.pop_oldest = self._order.popitem

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, key: object) -> bool:
        return key in self._order

    def insert(self, key: Hashable, size: int = 1) -> None:  # noqa: ARG002 - size-blind
        """Cache ``key`` as the most recently used."""
        self._order[key] = None

    def access(self, key: Hashable) -> None:
        """Make ``key`` the most recently used (replaced per instance by the C method)."""
        self._order.move_to_end(key)

    def remove(self, key: Hashable) -> None:
        """Forget ``key``."""
        del self._order[key]

    def unpop(self, key: Hashable, value: object = None) -> None:
        """Put ``key`` back at the front of the line."""
        self._order[key] = value
        self._order.move_to_end(key, last=False)

    def victim(self, pinned: Container[Hashable] = _NOTHING_PINNED) -> Hashable | None:
        """The least recently used key that is not pinned."""
        found = self.pop_victim(pinned)
        return None if found is None else found[0]

    def pop_victim(self, pinned: Container[Hashable]) -> tuple[Hashable, Any] | None:
        """The least recently used key that is not pinned, and its value."""
        order = self._order
        for key in order:  # pinned is asked before the key leaves: it may look the key up
            if key not in pinned:
                return key, order.pop(key)
        return None


class FIFOPolicy(LRUPolicy):
    """First in, first out: hits change nothing; victims are the oldest insertions."""

    name = "fifo"

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.access = _ignore  # type: ignore[method-assign]

    def access(self, key: Hashable) -> None:
        """Hits do not reorder a FIFO."""


def _ignore(key: Hashable) -> None:  # noqa: ARG001 - same signature as access
    return None


class LFUPolicy(EvictionPolicy):
    """Least frequently used; ties go to the key least recently used at that frequency.

    A new key starts at frequency 1 and each hit adds one. Keys live in one insertion-ordered
    bucket per frequency, so a hit and an eviction are both O(1).
    """

    name = "lfu"

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self._freq: dict[Hashable, int] = {}
        self._buckets: dict[int, OrderedDict[Hashable, None]] = {}
        self._min = 0

    def __len__(self) -> int:
        return len(self._freq)

    def __contains__(self, key: object) -> bool:
        return key in self._freq

    def _unlink(self, key: Hashable, freq: int) -> None:
        bucket = self._buckets[freq]
        del bucket[key]
        if not bucket:
            del self._buckets[freq]
            if self._min == freq:
                self._min = min(self._buckets, default=0)

    def _link(self, key: Hashable, freq: int) -> None:
        self._freq[key] = freq
        bucket = self._buckets.get(freq)
        if bucket is None:
            bucket = self._buckets[freq] = OrderedDict()
        bucket[key] = None
        if self._min == 0 or freq < self._min:
            self._min = freq

    def insert(self, key: Hashable, size: int = 1) -> None:  # noqa: ARG002 - size-blind
        """Cache ``key`` with frequency 1."""
        self._link(key, 1)

    def access(self, key: Hashable) -> None:
        """Raise ``key``'s frequency by one."""
        freq = self._freq[key]
        self._unlink(key, freq)
        self._link(key, freq + 1)

    def remove(self, key: Hashable) -> None:
        """Forget ``key``."""
        self._unlink(key, self._freq.pop(key))

    def victim(self, pinned: Container[Hashable] = _NOTHING_PINNED) -> Hashable | None:
        """The least frequently used unpinned key (least recent among equals)."""
        if not self._freq:
            return None
        for freq in (self._min, *sorted(f for f in self._buckets if f != self._min)):
            for key in self._buckets[freq]:
                if key not in pinned:
                    self.remove(key)
                    return key
        return None


class S3FIFOPolicy(EvictionPolicy):
    """S3-FIFO (Yang et al., SOSP 2023) as libCacheSim implements it (``S3FIFO.c``).

    A small probationary FIFO (10% of capacity), a main FIFO and a ghost FIFO of recently
    evicted keys (90% of capacity, keys only). A miss on a ghost key goes straight to main;
    leaving small, a key hit at least twice moves to main, others go to the ghost; leaving
    main, a key hit since its last pass is reinserted with its 2-bit counter decremented.
    Until the first eviction, inserts go to main once small is full.
    """

    name = "s3fifo"
    small_ratio = 0.1
    ghost_ratio = 0.9
    move_to_main_threshold = 2

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self._small_cap = int(capacity * self.small_ratio)
        self._main_cap = capacity - self._small_cap
        self._ghost_cap = int(capacity * self.ghost_ratio)
        self._small: OrderedDict[Hashable, int] = OrderedDict()  # key -> hit counter
        self._main: OrderedDict[Hashable, int] = OrderedDict()
        self._ghost: OrderedDict[Hashable, None] = OrderedDict()
        self._size: dict[Hashable, int] = {}
        self._small_bytes = 0
        self._main_bytes = 0
        self._from_ghost: Hashable | None = None
        self._evicted_once = False

    def __len__(self) -> int:
        return len(self._size)

    def __contains__(self, key: object) -> bool:
        return key in self._size

    def on_miss(self, key: Hashable) -> None:
        """A lookup missed: remember (and forget from the ghost) a returning key, before
        evictions make room for it, as libCacheSim's ``find`` does.
        """
        if key in self._ghost:
            del self._ghost[key]
            self._from_ghost = key

    def insert(self, key: Hashable, size: int = 1) -> None:
        """Cache ``key``: to main if it came back from the ghost, else to small."""
        self._size[key] = size
        if self._from_ghost == key or (
            not self._evicted_once and self._small_bytes >= self._small_cap
        ):
            self._main[key] = 0
            self._main_bytes += size
        else:
            self._small[key] = 0
            self._small_bytes += size
        self._from_ghost = None

    def access(self, key: Hashable) -> None:
        """Count a hit (the counter is capped when the key is reinserted into main)."""
        if key in self._small:
            self._small[key] += 1
        else:
            self._main[key] += 1

    def remove(self, key: Hashable) -> None:
        """Forget ``key`` (it does not enter the ghost)."""
        size = self._size.pop(key)
        if key in self._small:
            del self._small[key]
            self._small_bytes -= size
        else:
            del self._main[key]
            self._main_bytes -= size

    def _to_ghost(self, key: Hashable) -> None:
        if self._ghost_cap > 0 and key not in self._ghost:
            if len(self._ghost) >= self._ghost_cap:
                self._ghost.popitem(last=False)
            self._ghost[key] = None

    def _evict_small(self, pinned: Container[Hashable]) -> Hashable | None:
        small = self._small
        for _ in range(len(small)):
            key, hits = small.popitem(last=False)
            size = self._size[key]
            if key in pinned:
                small[key] = hits  # in use: goes round again
                continue
            self._small_bytes -= size
            if hits >= self.move_to_main_threshold:
                self._main[key] = 0
                self._main_bytes += size
                continue
            self._to_ghost(key)
            del self._size[key]
            return key
        return None

    def _evict_main(self, pinned: Container[Hashable]) -> Hashable | None:
        main = self._main
        # Each pass lowers every counter, so a few passes always find an unpinned victim.
        for _ in range(4 * len(main) + 1):
            if not main:
                break
            key, hits = main.popitem(last=False)
            if key in pinned:
                main[key] = hits
            elif hits >= 1:
                main[key] = min(hits, 3) - 1
            else:
                self._main_bytes -= self._size.pop(key)
                return key
        return None

    def victim(self, pinned: Container[Hashable] = _NOTHING_PINNED) -> Hashable | None:
        """LibCacheSim's order: evict from main when it is over its share or small is empty,
        else from small (which may promote keys to main and then fall back to main).
        """
        self._evicted_once = True
        if self._main_bytes <= self._main_cap and self._small:
            key = self._evict_small(pinned)
            if key is not None:
                return key
        key = self._evict_main(pinned)
        if key is None and self._small:
            # Main is over its share but all pinned: an unpinned key in small must still make
            # room (a key small promotes on the way is unpinned, so main then yields it).
            key = self._evict_small(pinned)
            if key is None:
                key = self._evict_main(pinned)
        return key


POLICIES: dict[str, type[EvictionPolicy]] = {
    cls.name: cls for cls in (LRUPolicy, FIFOPolicy, LFUPolicy, S3FIFOPolicy)
}


def make_policy(name: str, capacity: int) -> EvictionPolicy:
    """Build the policy registered as ``name``; an unknown name lists the choices."""
    try:
        cls = POLICIES[name]
    except KeyError:
        raise UsageError(f"unknown policy {name!r} (choose from: {', '.join(POLICIES)})") from None
    return cls(capacity)
