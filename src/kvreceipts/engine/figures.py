"""Engine figures for ``kvreceipts stats``: removals per medium, residency, churn, regret.

Works without the ``watch`` extra: it reads receipt lines, nothing more. :meth:`EngineFigures.tap`
passes every line on unchanged and folds in the engine ones, so ``stats`` reads a file once.
"""

from __future__ import annotations

from array import array
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from kvreceipts.schema import SCHEMA_ID

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

__all__ = ["EngineFigures", "percentile"]

_MARK = b'"kind":"engine_'


def percentile(ordered: array[float] | list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of already sorted values (None when empty)."""
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * fraction // 1))
    return float(ordered[int(rank) - 1])


@dataclass(slots=True)
class EngineFigures:
    """What engine receipts say, in aggregate."""

    records: int = 0
    topics: Counter[str] = field(default_factory=Counter)
    removals: Counter[str] = field(default_factory=Counter)
    """Removed block hashes per medium (``unknown`` when the engine sent none)."""
    residency_ms: array[float] = field(default_factory=lambda: array("d"))
    unknown_residency: int = 0
    """Removals of blocks stored before the watch began (no residency known)."""
    restores: Counter[str] = field(default_factory=Counter)
    restore_gap_ms: array[float] = field(default_factory=lambda: array("d"))
    clears: int = 0
    cleared_blocks: int = 0
    restarts: int = 0
    lost_batches: int = 0
    loss_causes: Counter[str] = field(default_factory=Counter)
    first_engine_ts: float | None = None
    last_engine_ts: float | None = None
    removals_by_group: Counter[str] = field(default_factory=Counter)
    removals_by_tenant: Counter[str] = field(default_factory=Counter)
    reuse: Counter[str] = field(default_factory=Counter)
    """Blocks reported reused (hits), per medium."""
    reuse_by_group: Counter[str] = field(default_factory=Counter)
    reuse_by_tenant: Counter[str] = field(default_factory=Counter)
    residency_by_medium: dict[str, array[float]] = field(default_factory=dict)
    stores: int = 0
    hits: int = 0
    """New stores and reuse hits over every engine, from the tallies."""
    tallies: int = 0

    def tap(self, lines: Iterable[bytes]) -> Iterator[bytes]:
        """Yield ``lines`` unchanged, folding every engine receipt among them in."""
        for raw in lines:
            if _MARK in raw:
                self._line(raw)
            yield raw

    def _line(self, raw: bytes) -> None:
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return
        if isinstance(record, dict) and record.get("schema") in (None, SCHEMA_ID):
            # A damaged record: stats counts it as unreadable, verify says what is wrong.
            with suppress(KeyError, TypeError, ValueError):
                self.add(record)

    def add(self, record: dict[str, Any]) -> None:
        """Fold one parsed engine record in."""
        kind = record["kind"]
        if kind == "engine_removal":
            self._removal(record)
        elif kind == "engine_reuse":
            self._reuse(record)
        elif kind == "engine_tally":
            self._tally(record)
            return
        elif kind == "engine_restore":
            self.restores[record["medium"] or "unknown"] += 1
            self.restore_gap_ms.append(float(record["gap_ms"]))
        elif kind == "engine_clear":
            self.clears += 1
            self.cleared_blocks += int(record["count"])
        elif kind == "engine_restart":
            self.restarts += 1
        elif kind == "engine_loss":
            self.lost_batches += int(record["batches"])
            self.loss_causes[str(record["cause"])] += int(record["batches"])
        else:
            return
        self.records += 1
        self.topics[str(record["topic"])] += 1
        ts = record.get("engine_ts")
        if isinstance(ts, (int, float)):
            if self.first_engine_ts is None or ts < self.first_engine_ts:
                self.first_engine_ts = float(ts)
            if self.last_engine_ts is None or ts > self.last_engine_ts:
                self.last_engine_ts = float(ts)

    def _removal(self, record: dict[str, Any]) -> None:
        medium = record["medium"] or "unknown"
        self.removals[medium] += 1
        store = record.get("store")
        self.removals_by_group[_group(record, store)] += 1
        self.removals_by_tenant[_tenant(store)] += 1
        residency = record["residency_ms"]
        if residency is None:
            self.unknown_residency += 1
            return
        self.residency_ms.append(float(residency))
        by = self.residency_by_medium.get(medium)
        if by is None:
            by = self.residency_by_medium[medium] = array("d")
        by.append(float(residency))

    def _tally(self, record: dict[str, Any]) -> None:
        self.records += 1
        self.tallies += 1
        for tier in record["tiers"]:
            self.stores += int(tier["stores"])
            self.hits += int(tier["hits"])

    def _reuse(self, record: dict[str, Any]) -> None:
        blocks = int(record["blocks"])
        self.reuse[record["medium"] or "unknown"] += blocks
        self.reuse_by_group[_group(record, None)] += blocks
        self.reuse_by_tenant[_tenant(record)] += blocks

    @property
    def hit_rate(self) -> float | None:
        """Reused / (reused + newly stored) blocks, from the tallies (None: none, or no store).
        Only vLLM with ``kv_cache_report_mode="full"`` reports reuse; otherwise it is 0.
        """
        total = self.hits + self.stores
        return self.hits / total if self.tallies and total else None

    @property
    def span_s(self) -> float:
        """Engine seconds between the first and the last engine receipt."""
        if self.first_engine_ts is None or self.last_engine_ts is None:
            return 0.0
        return self.last_engine_ts - self.first_engine_ts

    def to_dict(self) -> dict[str, Any]:
        """Plain values (the ``engine`` part of ``stats --format json``)."""
        residency = array("d", sorted(self.residency_ms))
        gaps = array("d", sorted(self.restore_gap_ms))
        removals = sum(self.removals.values())
        restores = sum(self.restores.values())
        span = self.span_s
        return {
            "records": self.records,
            "topics": dict(self.topics),
            "removals": removals,
            "removals_by_medium": dict(self.removals),
            "residency_ms": {
                "known": len(residency),
                "unknown": self.unknown_residency,
                **{f"p{int(q * 100)}": percentile(residency, q) for q in (0.5, 0.9, 0.99)},
                "max": residency[-1] if residency else None,
            },
            "churn": {
                "engine_seconds": span,
                "removals_per_s": removals / span if span > 0 else None,
            },
            "regret": {
                "restores": restores,
                "restores_by_medium": dict(self.restores),
                "fraction_of_removals": restores / removals if removals else None,
                "gap_ms_p50": percentile(gaps, 0.5),
            },
            "removals_by_group": dict(self.removals_by_group),
            "removals_by_tenant": dict(self.removals_by_tenant),
            "residency_p50_ms_by_medium": {
                m: percentile(array("d", sorted(v)), 0.5)
                for m, v in sorted(self.residency_by_medium.items())
            },
            "reuse": {
                "blocks": sum(self.reuse.values()),
                "by_medium": dict(self.reuse),
                "by_group": dict(self.reuse_by_group),
                "by_tenant": dict(self.reuse_by_tenant),
            },
            "hit_rate": self.hit_rate,
            "stores": self.stores if self.tallies else None,
            "clears": self.clears,
            "cleared_blocks": self.cleared_blocks,
            "restarts": self.restarts,
            "lost_batches": self.lost_batches,
            "lost_by_cause": dict(self.loss_causes),
        }


def _group(record: dict[str, Any], store: dict[str, Any] | None) -> str:
    group = record.get("group_idx")
    kind = store.get("kv_cache_spec_kind") if isinstance(store, dict) else None
    name = "-" if group is None else str(group)
    return f"{name} ({kind})" if kind else name


def _tenant(facts: dict[str, Any] | None) -> str:
    """The cache salt, else the LoRA adapter, else ``-`` (none named)."""
    if not isinstance(facts, dict):
        return "-"
    return str(facts.get("cache_salt") or facts.get("lora_name") or "-")
