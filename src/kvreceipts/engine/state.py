"""What a watched engine holds, as its stream tells: per engine and, inside it, per tier.

A **tier** is (DP rank, medium, KV-cache group, locality, ownership). A hash means something
only within its tier: a hybrid model (full + sliding-window attention) publishes one hash
once per group, two offloading tiers can hold the same hash, and a removal from one leaves
the others alone. A restart starts a new incarnation with no state; the old tiers' counts
stay for the tally (past :data:`MAX_OLD_TIERS` old tiers per engine a retired tier's counts
join an older one of the same key, so a stream that restarts at every batch keeps no more).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kvreceipts.bounded import CappedCounter
from kvreceipts.engine.receipts import tier_fragments

if TYPE_CHECKING:
    from collections.abc import Callable

    from kvreceipts.engine.wire import Hash

__all__ = ["GPU_MEDIA", "MAX_OLD_TIERS", "MAX_UNKNOWN", "EngineState", "Facts", "Tier",
           "TierKey", "block_tokens", "cache_salt", "medium_name", "normal_medium"]  # fmt: skip

MAX_OLD_TIERS = 1024
"""Tiers of earlier incarnations kept apart per engine (each is a row of the tally)."""
MAX_UNKNOWN = 64
"""Unknown event types and fields counted by name per engine (and reported once each)."""
_MEDIA_KEPT = 4096
"""Media names whose upper case is remembered (the core lets an engine name 16)."""

GPU_MEDIA = frozenset({"GPU", None})
"""What ``AllBlocksCleared`` clears: vLLM sends it when it resets the GPU prefix cache (older
engines name no medium); offloaded copies (CPU, STORAGE, CPU_PINNED, ...) stay."""

TierKey = tuple[int | None, str | None, int | None, str | None, str | None]
"""(dp_rank, medium, group_idx, locality, ownership)."""

Facts = tuple[bytes, bytes, bytes, bytes]
"""A store's facts as removal receipts write them, JSON made once per store event: the
``store`` object, ``tokens``, ``bytes_freed``, ``stored_ts``."""

Resident = tuple[float, "Hash | None", Facts]
"""(engine time stored, parent hash, the store's facts)."""

_MEDIA: dict[str | None, str | None] = {None: None}


def normal_medium(medium: str | None) -> str | None:
    """Media in upper case (some connectors send ``"cpu"``)."""
    name = _MEDIA.get(medium)
    if name is None and medium is not None:
        name = medium.upper()
        if len(_MEDIA) < _MEDIA_KEPT:
            _MEDIA[medium] = name
    return name


def medium_name(medium: str | None) -> str:
    """A medium for people and metric labels (``unknown`` when the engine named none)."""
    return medium if medium is not None else "unknown"


@dataclass(slots=True)
class Tier:
    """What one tier of one engine holds and what it did."""

    key: TierKey
    incarnation: int = 0
    resident: dict[Hash, Resident] = field(default_factory=dict)
    removed: OrderedDict[Hash, tuple[float, int]] = field(default_factory=OrderedDict)
    """hash -> (engine time removed, removal receipt seq), inside the regret window."""
    stores: int = 0
    hits: int = 0
    removals: int = 0
    regret: int = 0
    spec_kind: str | None = None
    held_at_end: int | None = None
    """Blocks it held when its incarnation ended (a restart forgets them)."""
    folded: int = 0
    """Later incarnations' tiers of the same key whose counts joined this one (past
    MAX_OLD_TIERS)."""
    fragments: tuple[bytes, bytes, bytes] = (b"", b"", b"")

    def __post_init__(self) -> None:
        rank, medium, group, locality, ownership = self.key
        self.fragments = tier_fragments(rank, group, locality, medium, ownership)

    def row(self) -> dict[str, Any]:
        """The tier's line in the ``engine_tally`` receipt."""
        rank, medium, group, locality, ownership = self.key
        row = {"incarnation": self.incarnation, "dp_rank": rank, "medium": medium,
               "group_idx": group, "locality": locality,
               "ownership": ownership, "kv_cache_spec_kind": self.spec_kind,
               "stores": self.stores, "hits": self.hits, "removals": self.removals,
               "regret": self.regret, "resident": len(self.resident) if self.held_at_end is None
               else self.held_at_end}  # fmt: skip
        if self.folded:  # later incarnations' counts joined this row (MAX_OLD_TIERS)
            row["folded"] = self.folded
        return row

    def fold(self, other: Tier) -> None:
        """Add the counts of ``other`` (a later incarnation's retired tier of the same key)."""
        self.stores += other.stores
        self.hits += other.hits
        self.removals += other.removals
        self.regret += other.regret
        self.held_at_end = (self.held_at_end or 0) + (other.held_at_end or 0)
        self.folded += 1 + other.folded


@dataclass(slots=True)
class EngineState:
    """What one engine (one topic) holds, as far as its stream has told us, and its counts."""

    topic: str
    next_seq: int | None = None
    last_seq: int | None = None
    last_payload: bytes | None = None
    """The last batch processed, as sent: a replay answer holding the same seq with other
    bytes comes from another process."""
    incarnation: int = 0
    unproven: bool = False
    """The connection dropped since the last batch: continuity must be proven."""
    tiers: dict[TierKey, Tier] = field(default_factory=dict)
    events: Counter[str] = field(default_factory=Counter)
    unknown: CappedCounter = field(default_factory=lambda: CappedCounter(MAX_UNKNOWN))
    """Unknown event types (``type:NAME``) and fields, counted (the first MAX_UNKNOWN names
    by name)."""
    batches: int = 0
    recovered_batches: int = 0
    gaps: int = 0
    lost_batches: int = 0
    restarts: int = 0
    clears: int = 0
    undecodable: int = 0
    last_engine_ts: float | None = None
    local_drops: list[tuple[int, int]] = field(default_factory=list)
    """Seq ranges our own queue dropped, not yet declared lost."""
    topic_json: bytes = b""
    old_tiers: list[Tier] = field(default_factory=list)
    """Tiers of earlier incarnations (their counts stay in the tally)."""
    places: set[TierKey] = field(default_factory=set)
    """Every tier key a batch named, as sent (at most the core's MAX_TIERS)."""
    media: set[str | None] = field(default_factory=set)
    """Every medium named so far, as sent (at most the core's MAX_MEDIA)."""
    kept: int = 0
    """Blocks resident or in a regret window over the tiers, as of the end of the last batch."""

    def tier(self, key: TierKey) -> Tier:
        """The tier ``key`` (new state when first seen: a group or rank may appear
        mid-stream).
        """
        tier = self.tiers.get(key)
        if tier is None:
            tier = self.tiers[key] = Tier(key, self.incarnation)
        return tier

    @property
    def held(self) -> int:
        """Blocks resident on every tier."""
        return sum(len(t.resident) for t in list(self.tiers.values()))

    def _by_medium(self, count: Callable[[Tier], int], *, old: bool) -> dict[str, int]:
        out: dict[str, int] = {}
        tiers = list(self.tiers.values()) + (self.old_tiers if old else [])
        for tier in tiers:
            name = medium_name(tier.key[1])
            n = count(tier)
            if n:
                out[name] = out.get(name, 0) + n
        return out

    @property
    def resident_by_medium(self) -> dict[str, int]:
        """Blocks resident per medium (``unknown`` when the engine named none)."""
        return self._by_medium(lambda t: len(t.resident), old=False)

    @property
    def removals(self) -> dict[str, int]:
        """Hashes removed per medium."""
        return self._by_medium(lambda t: t.removals, old=True)

    @property
    def stores(self) -> dict[str, int]:
        """New hashes stored per medium."""
        return self._by_medium(lambda t: t.stores, old=True)

    @property
    def hits(self) -> dict[str, int]:
        """Hashes reported reused per medium."""
        return self._by_medium(lambda t: t.hits, old=True)

    @property
    def regret(self) -> dict[str, int]:
        """Removed hashes stored again within the window, per medium."""
        return self._by_medium(lambda t: t.regret, old=True)

    @property
    def hit_rate(self) -> float | None:
        """Reused / (reused + newly stored) blocks, over every tier and incarnation."""
        tiers = list(self.tiers.values()) + self.old_tiers
        hits = sum(t.hits for t in tiers)
        total = hits + sum(t.stores for t in tiers)
        return hits / total if total else None

    def forget(self) -> int:
        """Drop all resident state (a new incarnation); returns how many blocks were held."""
        held = self.held
        old = self.old_tiers
        for tier in self.tiers.values():
            tier.held_at_end = len(tier.resident)
            tier.resident.clear()
            tier.removed.clear()
            into = None
            if len(old) >= MAX_OLD_TIERS:
                into = next((t for t in reversed(old) if t.key == tier.key), None)
            if into is None:  # (a key no old tier has: at most MAX_TIERS of them past the cap)
                old.append(tier)
            else:
                into.fold(tier)
        self.tiers = {}
        return held


def block_tokens(blocks: int, size: int | None, token_ids: list[int] | None) -> list[int] | None:
    """Tokens per block when the last is partial (None: every block holds ``size``)."""
    if size is None or token_ids is None or not token_ids or len(token_ids) >= blocks * size:
        return None
    total = len(token_ids)
    return [max(0, min(size, total - index * size)) for index in range(blocks)]


def cache_salt(extra_keys: list[Any] | None, lora_name: str | None) -> str | None:
    """VLLM's cache salt from ``extra_keys``: per block, the LoRA name (when ``lora_name`` is
    set), ``(mm_identifier, offset)`` pairs, then the salt string; the first block's.
    """
    if not extra_keys or not isinstance(extra_keys[0], (list, tuple)):
        return None
    items = list(extra_keys[0])
    if lora_name is not None and items and items[0] == lora_name:
        items = items[1:]
    strings = [item for item in items if isinstance(item, str)]
    return strings[-1] if strings else None
