"""The request event every workload source yields."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["Request"]


class Request(NamedTuple):
    """One request arriving at the KV cache."""

    request_id: str
    """Unique per request; receipts name it as ``trigger_session_id`` in paged mode."""
    session_id: str
    """The conversation it belongs to (the arena caches per session); traces without
    sessions use the request id."""
    arrival_ms: float
    input_tokens: int
    output_tokens: int
    context_length: int
    """Tokens the session's arena entry reserves (its context window)."""
    block_hashes: Sequence[int] | None = None
    """Prefix-block hashes of the input, one per ``block_tokens`` tokens (paged mode)."""
    source_line: int = 0
    """Line of the trace file it came from (0 for synthetic workloads)."""
