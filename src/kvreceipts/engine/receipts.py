"""Receipt kinds of a watched engine: removals, clears, restores, restarts and lost batches.

They share the common fields and the hash chain of every receipt (schema ``/2``: ``alg``,
``key_id``, a run framed by ``open`` and ``close``). ``timestamp`` is when the batch was
received (so a recording replays to the same bytes) and ``engine_ts`` the engine's own time
for it. Hashes are integers, or lowercase hex for engines that send bytes. The fields are
declared once, in :mod:`kvreceipts.engine.kinds`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from kvreceipts.receipts import Receipt

__all__ = [
    "ENGINE_KINDS",
    "EngineClearReceipt",
    "EngineLossReceipt",
    "EngineRemovalReceipt",
    "EngineRestartReceipt",
    "EngineRestoreReceipt",
    "EngineReuseReceipt",
    "EngineTallyReceipt",
    "batch_fragment",
    "removal_template",
    "tier_fragments",
]


@dataclass(slots=True, kw_only=True)
class EngineRemovalReceipt(Receipt):
    """One block hash the engine removed from a medium (``BlockRemoved`` carries no reason).

    The watch writes these through :func:`removal_template`; the class reads them back.
    """

    kind: ClassVar[str] = "engine_removal"
    body_fields = (
        "topic", "engine_seq", "engine_ts", "dp_rank", "group_idx", "locality", "ownership",
        "medium", "block_hash", "parent_block_hash", "stored_ts", "residency_ms", "tokens",
        "bytes_freed", "store",
    )  # fmt: skip
    topic: str
    engine_seq: int
    engine_ts: float
    dp_rank: int | None
    group_idx: int | None
    locality: str | None
    ownership: str | None
    medium: str | None
    block_hash: int | str
    parent_block_hash: int | str | None
    stored_ts: float | None
    """Engine time of the store this watch saw (null: stored before the watch began)."""
    residency_ms: float | None
    tokens: int | None
    bytes_freed: int | None
    store: dict[str, Any] | None


def removal_template(run_id: str, alg: str, key_id: str | None) -> bytes:
    """The canonical JSON of an ``engine_removal`` record as a %-template, keys in sorted
    order. Its arguments: block_hash, bytes_freed, the run's
    ``"dp_rank":..,"engine_seq":..,"engine_ts":..,"group_idx":..,`` fragment (made once per
    run of removals, see :func:`batch_fragment`), the tier's
    ``"locality":..,"medium":..,"ownership":..,`` fragment, parent_block_hash,
    residency_ms, seq (int), store, stored_ts, timestamp, tokens, topic (each value already
    JSON).
    """
    run = orjson.dumps(run_id).replace(b"%", b"%%")
    kid = b'"key_id":"%b",' % key_id.encode() if key_id else b""
    return (
        b'{"alg":"' + alg.encode() + b'","block_hash":%b,"bytes_freed":%b,%b' + kid
        + b'"kind":"engine_removal",%b"parent_block_hash":%b,'
        b'"residency_ms":%b,"run_id":' + run + b',"seq":%d,"store":%b,"stored_ts":%b,'
        b'"timestamp":"%b","tokens":%b,"topic":%b}'
    )  # fmt: skip


def batch_fragment(rank_json: bytes, seq: int, engine_ts: bytes, group_json: bytes) -> bytes:
    """The ``"dp_rank":..,"engine_seq":..,"engine_ts":..,"group_idx":..,`` part of the
    removal lines of one run (its first and last pieces from :func:`tier_fragments`).
    """
    return b'%b"engine_seq":%d,"engine_ts":%b,%b' % (rank_json, seq, engine_ts, group_json)


def tier_fragments(
    dp_rank: int | None, group_idx: int | None, locality: str | None, medium: str | None,
    ownership: str | None,
) -> tuple[bytes, bytes, bytes]:  # fmt: skip
    """The three key-value fragments of a tier in a removal line (see
    :func:`removal_template`).
    """
    dumps = orjson.dumps
    return (
        b'"dp_rank":' + dumps(dp_rank) + b",",
        b'"group_idx":' + dumps(group_idx) + b",",
        b'"locality":' + dumps(locality) + b',"medium":' + dumps(medium) + b',"ownership":'
        + dumps(ownership) + b",",
    )  # fmt: skip


@dataclass(slots=True, kw_only=True)
class EngineClearReceipt(Receipt):
    """``AllBlocksCleared``: the engine reset its (GPU) prefix cache; ``count`` blocks went,
    ``kept`` on other media stayed.
    """

    kind: ClassVar[str] = "engine_clear"
    body_fields = ("topic", "engine_seq", "engine_ts", "dp_rank", "count", "kept")
    topic: str
    engine_seq: int
    engine_ts: float
    dp_rank: int | None
    count: int
    kept: int


@dataclass(slots=True, kw_only=True)
class EngineRestoreReceipt(Receipt):
    """A removed block stored again on the same tier within the regret window: the removal
    (receipt ``removal_seq``) cost a recomputation or a reload.
    """

    kind: ClassVar[str] = "engine_restore"
    body_fields = (
        "topic", "engine_seq", "engine_ts", "dp_rank", "group_idx", "medium", "block_hash",
        "removal_seq", "removed_ts", "gap_ms",
    )  # fmt: skip
    topic: str
    engine_seq: int
    engine_ts: float
    dp_rank: int | None
    group_idx: int | None
    medium: str | None
    block_hash: int | str
    removal_seq: int
    removed_ts: float
    gap_ms: float


@dataclass(slots=True, kw_only=True)
class EngineReuseReceipt(Receipt):
    """A ``BlockStored`` for blocks already resident on its tier: vLLM's reuse report
    (``kv_cache_report_mode="full"``), i.e. cache hits. Their residency clock keeps running.
    """

    kind: ClassVar[str] = "engine_reuse"
    body_fields = (
        "topic", "engine_seq", "engine_ts", "dp_rank", "group_idx", "locality", "ownership",
        "medium", "blocks", "block_hashes", "session_id", "lora_name", "cache_salt",
    )  # fmt: skip
    topic: str
    engine_seq: int
    engine_ts: float
    dp_rank: int | None
    group_idx: int | None
    locality: str | None
    ownership: str | None
    medium: str | None
    blocks: int
    block_hashes: list[int | str]
    session_id: str | None
    lora_name: str | None
    cache_salt: str | None


@dataclass(slots=True, kw_only=True)
class EngineTallyReceipt(Receipt):
    """At the end of a watch, per engine: what each tier stored, reused (hits), removed and
    still holds, and the unknown event types and fields seen.
    """

    kind: ClassVar[str] = "engine_tally"
    body_fields = (
        "topic", "incarnations", "batches", "recovered_batches", "lost_batches", "tiers",
        "unknown", "hit_rate",
    )  # fmt: skip
    topic: str
    incarnations: int
    batches: int
    recovered_batches: int
    lost_batches: int
    tiers: list[dict[str, Any]]
    unknown: dict[str, int]
    hit_rate: float | None


@dataclass(slots=True, kw_only=True)
class EngineRestartReceipt(Receipt):
    """A new engine process (its seq went back, its replay buffer is another process's, or
    the connection dropped and continuity could not be proven: ``evidence``); what the old
    one held is forgotten.
    """

    kind: ClassVar[str] = "engine_restart"
    body_fields = (
        "topic", "engine_seq", "engine_ts", "previous_seq", "resident_dropped", "evidence",
        "incarnation",
    )  # fmt: skip
    topic: str
    engine_seq: int
    engine_ts: float
    previous_seq: int
    resident_dropped: int
    evidence: str
    incarnation: int


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
        EngineReuseReceipt,
        EngineTallyReceipt,
    )
}
"""The engine kinds by name. Not added to :data:`kvreceipts.receipts.KINDS`: that table is
the simulator's (its tests hold it equal to the kinds a simulation writes), and nothing on the
watch's path rebuilds records from their lines."""
