"""Receipt kinds of a watched engine: removals, clears, restores, restarts and lost batches.

They share the common fields and the hash chain of every receipt (schema ``/2``: ``alg``,
``key_id``, a run framed by ``open`` and ``close``). ``timestamp`` is when the batch was
received (so a recording replays to the same bytes) and ``engine_ts`` the engine's own time
for it. Hashes are integers, or lowercase hex for engines that send bytes. The fields are
declared once, in :mod:`kvreceipts.engine.kinds`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import orjson

from kvreceipts.receipts import Receipt

__all__ = [
    "ENGINE_KINDS",
    "EngineClearReceipt",
    "EngineLossReceipt",
    "EngineRemovalReceipt",
    "EngineRestartReceipt",
    "EngineRestoreReceipt",
    "removal_template",
]


@dataclass(slots=True, kw_only=True)
class EngineRemovalReceipt(Receipt):
    """One block hash the engine removed from a medium (``BlockRemoved`` carries no reason).

    The watch writes these through :func:`removal_template`; the class reads them back.
    """

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


def removal_template(run_id: str, alg: str, key_id: str | None) -> bytes:
    """The canonical JSON of an ``engine_removal`` record as a %-template, keys in sorted
    order: block_hash, engine_seq, engine_ts, medium, parent_block_hash, residency_ms, seq,
    stored_ts, timestamp, topic (each value already JSON, but the two seqs as integers).
    """
    run = orjson.dumps(run_id).replace(b"%", b"%%")
    kid = b'"key_id":"%b",' % key_id.encode() if key_id else b""
    return (
        b'{"alg":"' + alg.encode() + b'","block_hash":%b,"engine_seq":%d,"engine_ts":%b,' + kid
        + b'"kind":"engine_removal","medium":%b,"parent_block_hash":%b,"residency_ms":%b,'
        b'"run_id":' + run + b',"seq":%d,"stored_ts":%b,"timestamp":"%b","topic":%b}'
    )  # fmt: skip


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

    It follows the ``loss`` record (seq ``loss_seq``) that declares the receipts those
    batches would have given as lost, so that ``verify`` fails unless told to allow losses.
    ``cause``: ``not_received`` (the publisher or the network dropped them), ``queue_full``
    (the watch's own bounded queue dropped them) or ``undecodable`` (the payload was not a
    batch). ``replay_attempted`` says whether the replay socket was asked for them.
    """

    kind: ClassVar[str] = "engine_loss"
    body_fields = (
        "topic", "first_engine_seq", "last_engine_seq", "batches", "cause", "replay_attempted",
        "loss_seq",
    )  # fmt: skip
    topic: str
    first_engine_seq: int
    last_engine_seq: int
    batches: int
    cause: str
    replay_attempted: bool
    loss_seq: int


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
"""The engine kinds by name. Not added to :data:`kvreceipts.receipts.KINDS`: that table is
the simulator's (its tests hold it equal to the kinds a simulation writes), and nothing on the
watch's path rebuilds records from their lines."""
