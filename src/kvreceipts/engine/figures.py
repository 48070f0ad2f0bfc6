"""Engine figures for ``kvreceipts stats``: removals per medium, residency, churn, regret.

Works without the ``watch`` extra: it reads receipt lines, nothing more. :meth:`EngineFigures.tap`
passes every line on unchanged and folds in the engine ones, so ``stats`` reads a file once.

Memory is bounded whatever the file says: a record is checked against its kind's shape before
any field is used (:func:`engine_problem`; ``stats`` counts the ones that do not fit as
unreadable), names (topics, media, causes) are counted for the first 64 of each and folded
into ``(other)`` after, and residency and gap percentiles stream (exact for the first 100,000
values, within 1% after).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from kvreceipts.bounded import CappedCounter, Quantiles, shorten
from kvreceipts.schema import SCHEMA_ID

if TYPE_CHECKING:
    from array import array
    from collections.abc import Iterable, Iterator

__all__ = ["NAMES_KEPT", "EngineFigures", "engine_problem", "percentile"]

NAMES_KEPT = 64
"""Topics, media or loss causes counted by name; later ones go to the ``(other)`` bucket."""
_KINDS = ("engine_removal", "engine_restore", "engine_clear", "engine_restart", "engine_loss")


def engine_problem(record: dict[str, Any]) -> tuple[str, str] | None:
    """(field, what is wrong) if an engine receipt does not fit its kind's shape, else ``None``
    (also for a record that is no engine receipt). The field name is shortened for a message.
    """
    from kvreceipts.shape import record_problem

    if record.get("kind") not in _KINDS:
        return None
    problem = record_problem(record)
    if problem is None:
        return None
    return shorten(problem[0]), problem[1]


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
            self.removals.add(record["medium"] or "unknown")
            residency = record["residency_ms"]
            if residency is None:
                self.unknown_residency += 1
            else:
                self.residency_ms.add(float(residency))
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

    def folded(self) -> dict[str, str]:
        """For each name count that folded names into ``(other)``, what it folded."""
        counters = (
            ("topics", self.topics),
            ("removals_by_medium", self.removals),
            ("restores_by_medium", self.restores),
            ("lost_by_cause", self.loss_causes),
        )
        return {name: c.describe_other() for name, c in counters if c.other}  # fmt: skip

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
