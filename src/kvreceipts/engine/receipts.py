"""Receipt kinds of a watched engine: removals, clears, restores, restarts and lost batches.

They share the common fields and the hash chain of every receipt; ``timestamp`` is when the
batch was received (so a recording replays to the same bytes) and ``engine_ts`` the engine's
own time for the batch. Hashes are integers, or lowercase hex for engines that send bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from kvreceipts.receipts import KINDS, Receipt
from kvreceipts.schema import SCHEMA_ID

__all__ = [
    "ENGINE_KINDS",
    "EngineClearReceipt",
    "EngineLossReceipt",
    "EngineRemovalReceipt",
    "EngineRestartReceipt",
    "EngineRestoreReceipt",
]


@dataclass(slots=True, kw_only=True)
class EngineRemovalReceipt(Receipt):
    """One block hash the engine removed from a medium (``BlockRemoved`` carries no reason)."""

    kind: ClassVar[str] = "engine_removal"
    body_fields = (
        "topic", "engine_seq", "engine_ts", "medium", "block_hash", "parent_block_hash",
        "stored_ts", "residency_ms",
    )  # fmt: skip
    topic: str
    engine_seq: int
    engine_ts: float
    medium: str | None
    block_hash: int | str
    parent_block_hash: int | str | None
    stored_ts: float | None
    """Engine time of the store this watch saw (null: stored before the watch began)."""
    residency_ms: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (spelled out: the watch writes one per removed block)."""
        body = {
            "schema": SCHEMA_ID, "kind": "engine_removal", "run_id": self.run_id,
            "seq": self.seq, "timestamp": self.timestamp, "sim_time_ms": self.sim_time_ms,
            "prev_digest": self.prev_digest, "topic": self.topic,
            "engine_seq": self.engine_seq, "engine_ts": self.engine_ts, "medium": self.medium,
            "block_hash": self.block_hash, "parent_block_hash": self.parent_block_hash,
            "stored_ts": self.stored_ts, "residency_ms": self.residency_ms,
        }  # fmt: skip
        if self.digest:
            body["digest"] = self.digest
        return body


@dataclass(slots=True, kw_only=True)
class EngineClearReceipt(Receipt):
    """``AllBlocksCleared``: the engine reset its prefix cache; ``count`` blocks went."""

    kind: ClassVar[str] = "engine_clear"
    body_fields = ("topic", "engine_seq", "engine_ts", "count")
    topic: str
    engine_seq: int
    engine_ts: float
    count: int


@dataclass(slots=True, kw_only=True)
class EngineRestoreReceipt(Receipt):
    """A removed block stored again on the same medium within the regret window: the removal
    (receipt ``removal_seq``) cost a recomputation or a reload.
    """

    kind: ClassVar[str] = "engine_restore"
    body_fields = (
        "topic", "engine_seq", "engine_ts", "medium", "block_hash", "removal_seq",
        "removed_ts", "gap_ms",
    )  # fmt: skip
    topic: str
    engine_seq: int
    engine_ts: float
    medium: str | None
    block_hash: int | str
    removal_seq: int
    removed_ts: float
    gap_ms: float


@dataclass(slots=True, kw_only=True)
class EngineRestartReceipt(Receipt):
    """The engine's seq went back (to 0): a new process; what it held is forgotten."""

    kind: ClassVar[str] = "engine_restart"
    body_fields = ("topic", "engine_seq", "engine_ts", "previous_seq", "resident_dropped")
    topic: str
    engine_seq: int
    engine_ts: float
    previous_seq: int
    resident_dropped: int


@dataclass(slots=True, kw_only=True)
class EngineLossReceipt(Receipt):
    """Engine batches ``first_engine_seq..last_engine_seq`` that this watch never processed.

    ``cause``: ``not_received`` (the publisher or the network dropped them), ``queue_full``
    (the watch's own bounded queue dropped them) or ``undecodable`` (the payload was not a
    batch). ``replay_attempted`` says whether the replay socket was asked for them.
    """

    kind: ClassVar[str] = "engine_loss"
    body_fields = (
        "topic", "first_engine_seq", "last_engine_seq", "batches", "cause", "replay_attempted",
    )  # fmt: skip
    topic: str
    first_engine_seq: int
    last_engine_seq: int
    batches: int
    cause: str
    replay_attempted: bool


ENGINE_KINDS: dict[str, type[Receipt]] = {
    cls.kind: cls
    for cls in (
        EngineRemovalReceipt,
        EngineClearReceipt,
        EngineRestoreReceipt,
        EngineRestartReceipt,
        EngineLossReceipt,
    )
}
KINDS.update(ENGINE_KINDS)  # receipt_from_dict builds them too
