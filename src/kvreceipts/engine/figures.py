"""Engine figures for ``kvreceipts stats``: removals per medium, residency, churn, regret.

Works without the ``watch`` extra: it reads receipt lines, nothing more. :meth:`EngineFigures.tap`
passes every line on unchanged and folds in the engine ones, so ``stats`` reads a file once.

Memory is bounded whatever the file says: a record is checked against its kind's shape before
any field is used (:func:`engine_problem`; ``stats`` counts the ones that do not fit as
unreadable), names (topics, media, causes, groups, tenants) are counted for the first 64 of
each and folded into ``(other)`` after, and residency and gap percentiles stream (exact for the
first 100,000 values, within 1% after; per medium for the first :data:`MEDIA_KEPT` media).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from kvreceipts.bounded import OTHER, CappedCounter, Quantiles, shorten
from kvreceipts.schema import SCHEMA_ID

if TYPE_CHECKING:
    from array import array
    from collections.abc import Iterable, Iterator

__all__ = ["MEDIA_KEPT", "NAMES_KEPT", "EngineFigures", "engine_problem", "percentile"]

NAMES_KEPT = 64
"""Topics, media, loss causes, groups or tenants counted by name; later ones go to the
``(other)`` bucket."""
MEDIA_KEPT = 16
"""Media whose residency percentiles are kept apart; later ones share the ``(other)`` ones."""
_KINDS = ("engine_removal", "engine_restore", "engine_clear", "engine_restart", "engine_loss",
          "engine_reuse", "engine_tally")  # fmt: skip


def engine_problem(record: dict[str, Any]) -> tuple[str, str] | None:
    """(field, what is wrong) if an engine receipt does not fit its kind's shape, else ``None``
    (also for a record that is no engine receipt). The field name is shortened for a message.
    An ``engine_tally``'s tiers are checked too: each an object whose ``stores`` and ``hits``
    are counts.
    """
    from kvreceipts.shape import record_problem

    if record.get("kind") not in _KINDS:
        return None
    problem = record_problem(record)
    if problem is None and record["kind"] == "engine_tally":
        problem = _tiers_problem(record["tiers"])
    if problem is None:
        return None
    return shorten(problem[0]), problem[1]


def _tiers_problem(tiers: list[Any]) -> tuple[str, str] | None:
    for index, row in enumerate(tiers):
        if type(row) is not dict:
            return f"tiers[{index}]", f"must be object, not {shorten(repr(row), 40)}"
        for name in ("stores", "hits"):
            value = row.get(name)
            if type(value) is not int or value < 0:
                return (f"tiers[{index}].{name}",
                        f"must be integer at least 0, not {shorten(repr(value), 40)}")  # fmt: skip
    return None


def _counter() -> CappedCounter:
    return CappedCounter(NAMES_KEPT)


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
    topics: CappedCounter = field(default_factory=_counter)
    removals: CappedCounter = field(default_factory=_counter)
    """Removed block hashes per medium (``unknown`` when the engine sent none)."""
    residency_ms: Quantiles = field(default_factory=Quantiles)
    unknown_residency: int = 0
    """Removals of blocks stored before the watch began (no residency known)."""
    restores: CappedCounter = field(default_factory=_counter)
    restore_gap_ms: Quantiles = field(default_factory=Quantiles)
    clears: int = 0
    cleared_blocks: int = 0
    restarts: int = 0
    lost_batches: int = 0
    loss_causes: CappedCounter = field(default_factory=_counter)
    first_engine_ts: float | None = None
    last_engine_ts: float | None = None
    removals_by_group: CappedCounter = field(default_factory=_counter)
    removals_by_tenant: CappedCounter = field(default_factory=_counter)
    reuse: CappedCounter = field(default_factory=_counter)
    """Blocks reported reused (hits), per medium."""
    reuse_by_group: CappedCounter = field(default_factory=_counter)
    reuse_by_tenant: CappedCounter = field(default_factory=_counter)
    residency_by_medium: dict[str, Quantiles] = field(default_factory=dict)
    """Residency per medium, for the first MEDIA_KEPT media (later ones under ``(other)``)."""
    stores: int = 0
    hits: int = 0
    """New stores and reuse hits over every engine, from the tallies."""
    tallies: int = 0
    malformed: int = 0
    """Engine receipts left out because a field does not fit their kind."""

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
            self.add(record)

    def add(self, record: dict[str, Any]) -> None:
        """Fold one parsed engine record in; one that does not fit its kind's shape is only
        counted (:attr:`malformed`): stats reports it as unreadable, verify says what is wrong.
        """
        if record.get("kind") not in _KINDS:
            return
        if engine_problem(record) is not None:
            self.malformed += 1
            return
        self.add_checked(record)

    def add_checked(self, record: dict[str, Any]) -> None:
        """Fold in an engine record that :func:`engine_problem` found no fault with."""
        # Every field has its kind's type: numbers are finite (JSON has no NaN).
        kind = record["kind"]
        if kind == "engine_removal":
            self._removal(record)
        elif kind == "engine_reuse":
            self._reuse(record)
        elif kind == "engine_tally":
            self._tally(record)
            return
        elif kind == "engine_restore":
            self.restores.add(record["medium"] or "unknown")
            self.restore_gap_ms.add(float(record["gap_ms"]))
        elif kind == "engine_clear":
            self.clears += 1
            self.cleared_blocks += record["count"]
        elif kind == "engine_restart":
            self.restarts += 1
        elif kind == "engine_loss":
            self.lost_batches += record["batches"]
            self.loss_causes.add(record["cause"], record["batches"])
        else:
            return
        self.records += 1
        self.topics.add(record["topic"])
        ts = record.get("engine_ts")
        if ts is not None:
            ts = float(ts)
            if self.first_engine_ts is None or ts < self.first_engine_ts:
                self.first_engine_ts = ts
            if self.last_engine_ts is None or ts > self.last_engine_ts:
                self.last_engine_ts = ts

    def _removal(self, record: dict[str, Any]) -> None:
        medium = record["medium"] or "unknown"
        self.removals.add(medium)
        store = record.get("store")
        self.removals_by_group.add(_group(record, store))
        self.removals_by_tenant.add(_tenant(store))
        residency = record["residency_ms"]
        if residency is None:
            self.unknown_residency += 1
            return
        self.residency_ms.add(float(residency))
        by_medium = self.residency_by_medium
        by = by_medium.get(medium)
        if by is None:
            name = medium if len(by_medium) < MEDIA_KEPT and len(medium) <= 64 else OTHER
            by = by_medium.get(name)
            if by is None:
                by = by_medium[name] = Quantiles()
        by.add(float(residency))

    def _tally(self, record: dict[str, Any]) -> None:
        self.records += 1
        self.tallies += 1
        for tier in record["tiers"]:
            self.stores += tier["stores"]
            self.hits += tier["hits"]

    def _reuse(self, record: dict[str, Any]) -> None:
        blocks = record["blocks"]
        self.reuse.add(record["medium"] or "unknown", blocks)
        self.reuse_by_group.add(_group(record, None), blocks)
        self.reuse_by_tenant.add(_tenant(record), blocks)

    def folded(self) -> dict[str, str]:
        """For each name count that folded names into ``(other)``, what it folded."""
        counters = (
            ("topics", self.topics),
            ("removals_by_medium", self.removals),
            ("restores_by_medium", self.restores),
            ("lost_by_cause", self.loss_causes),
            ("removals_by_group", self.removals_by_group),
            ("removals_by_tenant", self.removals_by_tenant),
            ("reuse_by_medium", self.reuse),
            ("reuse_by_group", self.reuse_by_group),
            ("reuse_by_tenant", self.reuse_by_tenant),
        )
        return {name: c.describe_other() for name, c in counters if c.other}  # fmt: skip

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
        """Plain values (the ``engine`` part of ``stats --format json``). Names past the first
        :data:`NAMES_KEPT` are counted under ``(other)``, and ``folded_names`` says how many;
        percentiles past the first 100,000 values carry ``relative_error``.
        """
        residency, gaps = self.residency_ms, self.restore_gap_ms
        removals = self.removals.total
        restores = self.restores.total
        span = self.span_s
        p50, p90, p99 = residency.percentiles(0.5, 0.9, 0.99)
        document: dict[str, Any] = {
            "records": self.records,
            "topics": self.topics.to_dict(),
            "removals": removals,
            "removals_by_medium": self.removals.to_dict(),
            "residency_ms": {
                "known": len(residency),
                "unknown": self.unknown_residency,
                "p50": p50,
                "p90": p90,
                "p99": p99,
                "max": residency.maximum if len(residency) else None,
            },
            "churn": {
                "engine_seconds": span,
                "removals_per_s": removals / span if span > 0 else None,
            },
            "regret": {
                "restores": restores,
                "restores_by_medium": self.restores.to_dict(),
                "fraction_of_removals": restores / removals if removals else None,
                "gap_ms_p50": gaps.percentile(0.5),
            },
            "removals_by_group": self.removals_by_group.to_dict(),
            "removals_by_tenant": self.removals_by_tenant.to_dict(),
            "residency_p50_ms_by_medium": {
                m: q.percentile(0.5) for m, q in sorted(self.residency_by_medium.items())
            },
            "reuse": {
                "blocks": self.reuse.total,
                "by_medium": self.reuse.to_dict(),
                "by_group": self.reuse_by_group.to_dict(),
                "by_tenant": self.reuse_by_tenant.to_dict(),
            },
            "hit_rate": self.hit_rate,
            "stores": self.stores if self.tallies else None,
            "clears": self.clears,
            "cleared_blocks": self.cleared_blocks,
            "restarts": self.restarts,
            "lost_batches": self.lost_batches,
            "lost_by_cause": self.loss_causes.to_dict(),
        }
        if not residency.exact:
            document["residency_ms"]["relative_error"] = 0.01
        if not gaps.exact:
            document["regret"]["gap_ms_relative_error"] = 0.01
        if self.malformed:
            document["malformed"] = self.malformed
        folded = self.folded()
        if folded:
            document["folded_names"] = folded
        return document


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
