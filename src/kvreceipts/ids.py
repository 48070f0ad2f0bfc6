"""The receipt format's identifiers: its schema ids and the chain's starting value.

A leaf, so the sealer and the receipt records need not import the whole schema.
"""

from __future__ import annotations

__all__ = ["SCHEMA_ID", "SCHEMA_ID_V1", "ZERO_DIGEST"]

SCHEMA_ID = "kvreceipts.eviction/2"
SCHEMA_ID_V1 = "kvreceipts.eviction/1"
"""The first format (no run framing, ``prev_digest`` in every line): ``verify`` refuses it,
``stats`` still summarizes it."""
ZERO_DIGEST = "0" * 64
"""The chain value before a run's first record."""
