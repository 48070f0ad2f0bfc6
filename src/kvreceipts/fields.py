"""One field of a receipt kind, as plain data: what :mod:`kvreceipts.schema` and the engine
kinds (:mod:`kvreceipts.engine.kinds`) are written in. A leaf: it imports nothing of kvreceipts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Field", "field"]


@dataclass(frozen=True, slots=True)
class Field:
    """One field: JSON type(s), whether it may be absent, and a lower bound for numbers."""

    types: tuple[str, ...]
    doc: str
    optional: bool = False
    minimum: float | None = None
    pattern: str | None = None
    fields: dict[str, Field] | None = None
    """For ``object`` fields: the nested fields (all required, no others allowed)."""
    values: Field | None = None
    """For ``object`` fields that map names to values (``counts``): the type of every value."""
    enum: tuple[str, ...] | None = None
    """The only values a string field may take."""


def field(kind: str, doc: str, **extra: Any) -> Field:
    """A field of the JSON type(s) ``kind`` (``"integer|string"``: either)."""
    return Field(tuple(kind.split("|")), doc, **extra)
