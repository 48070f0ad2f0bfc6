"""The fields of a watched engine's receipt kinds, as plain data for :mod:`kvreceipts.schema`.

Kept apart from the receipt classes so that ``verify`` and ``schema`` know the kinds without
the ``watch`` extra. Written in :mod:`kvreceipts.fields` (a leaf), so imports run one way:
schema imports this module, which imports nothing of schema.
"""

from __future__ import annotations

from typing import Any

from kvreceipts.fields import Field
from kvreceipts.fields import field as f

__all__ = ["ENGINE_KINDS", "engine_kinds"]


def engine_kinds() -> dict[str, dict[str, Field]]:
    """Each engine kind's own fields."""
    count: dict[str, Any] = {"minimum": 0}
    engine = {
        "topic": f("string", "The engine's ZMQ topic (empty by default)."),
        "engine_seq": f("integer", "The engine's batch seq.", **count),
        "engine_ts": f("number", "The engine's time for the batch, Unix seconds."),
    }
    return {
        "engine_removal": {
            **engine,
            "medium": f("string|null", "GPU, CPU, STORAGE, ... (null: the engine sent none)."),
            "block_hash": f("integer|string", "The hash: an integer, or hex of a bytes hash."),
            "parent_block_hash": f("integer|string|null", "Its parent, when the store was seen."),
            "stored_ts": f("number|null", "Engine time of the store (null: before the watch)."),
            "residency_ms": f("number|null", "engine_ts - stored_ts, in milliseconds."),
        },
        "engine_clear": {
            **engine,
            "count": f("integer", "Blocks held when the engine cleared its cache.", **count),
        },
        "engine_restore": {
            **engine,
            "medium": f("string|null", "The medium it was removed from and stored on again."),
            "block_hash": f("integer|string", "The block stored again."),
            "removal_seq": f("integer", "Seq of the engine_removal receipt it undoes.", **count),
            "removed_ts": f("number", "Engine time of that removal."),
            "gap_ms": f("number", "engine_ts - removed_ts, in milliseconds."),
        },
        "engine_restart": {
            **engine,
            "previous_seq": f("integer", "Last engine seq before the restart (-1: none).",
                              minimum=-1),
            "resident_dropped": f("integer", "Blocks the old process held.", **count),
        },
        "engine_loss": {
            "topic": f("string", "The engine's ZMQ topic."),
            "first_engine_seq": f("integer", "First engine seq never processed.", **count),
            "last_engine_seq": f("integer", "Last engine seq never processed.", **count),
            "batches": f("integer", "How many batches.", minimum=1),
            "cause": f("string", "not_received | queue_full | undecodable."),
            "replay_attempted": f("boolean", "Whether the replay socket was asked for them."),
            "loss_seq": f("integer", "Seq of the loss record that declares them.", **count),
        },
    }  # fmt: skip


ENGINE_KINDS = engine_kinds()
"""What :mod:`kvreceipts.schema` registers: each engine kind's own fields."""
