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
    tier = {
        "dp_rank": f("integer|null", "The batch's data_parallel_rank (null: not sent).", **count),
        "group_idx": f(
            "integer|null", "The KV-cache group (hybrid models; null: not sent).", **count
        ),
    }
    place = {
        "locality": f("string|null", "LOCAL or REMOTE, as the engine said (null: unspecified)."),
        "ownership": f("string|null", "The offloading tier that stored it (null: none)."),
    }
    store = {
        "cache_salt": f(
            "string|null", "The tenant's cache salt (SGLang cache_salt, vLLM extra_keys)."
        ),
        "kv_cache_spec_kind": f(
            "string|null", "The group's cache spec (full, sliding_window, ...)."
        ),
        "kv_cache_spec_sliding_window": f("integer|null", "Its sliding window, in tokens."),
        "lora_name": f("string|null", "The LoRA adapter of the request that stored it."),
        "session_id": f("string|null", "The session that stored it (attribution only)."),
    }
    return {
        "engine_removal": {
            **engine,
            **tier,
            **place,
            "medium": f("string|null", "GPU, CPU, STORAGE, CPU_PINNED, ... (upper case; null: "
                        "the engine sent none)."),
            "block_hash": f("integer|string", "The hash: an integer, or hex of a bytes hash."),
            "parent_block_hash": f("integer|string|null", "Its parent, when the store was seen."),
            "stored_ts": f("number|null", "Engine time of the store (null: before the watch)."),
            "residency_ms": f("number|null", "engine_ts - stored_ts, in milliseconds."),
            "tokens": f("integer|null", "Tokens the block held (null: store not seen).", **count),
            "bytes_freed": f("integer|null", "tokens x --bytes-per-token (null: not known).",
                             **count),
            "store": f("object|null", "What its BlockStored said (null: not seen).",
                       fields=store),
        },
        "engine_clear": {
            **engine,
            "dp_rank": tier["dp_rank"],
            "count": f("integer", "GPU blocks held when the engine cleared its prefix cache.",
                       **count),
            "kept": f("integer", "Blocks on other media (CPU, STORAGE, ...), which stay.",
                      **count),
        },
        "engine_restore": {
            **engine,
            **tier,
            "medium": f("string|null", "The medium it was removed from and stored on again."),
            "block_hash": f("integer|string", "The block stored again."),
            "removal_seq": f("integer", "Seq of the engine_removal receipt it undoes.", **count),
            "removed_ts": f("number", "Engine time of that removal."),
            "gap_ms": f("number", "engine_ts - removed_ts, in milliseconds."),
        },
        "engine_reuse": {
            **engine,
            **tier,
            **place,
            "medium": f("string|null", "The medium the blocks were found on."),
            "blocks": f("integer", "Resident blocks the engine reported reused (hits).",
                        minimum=1),
            "block_hashes": f("array", "Their hashes, in the event's order."),
            "session_id": f("string|null", "The session that reused them."),
            "lora_name": store["lora_name"],
            "cache_salt": store["cache_salt"],
        },
        "engine_restart": {
            **engine,
            "previous_seq": f("integer", "Last engine seq before the restart (-1: none).",
                              minimum=-1),
            "resident_dropped": f("integer", "Blocks the old process held.", **count),
            "evidence": f("string", "seq_back (seq went back), replay (the replay buffer is "
                          "another process's) or reconnect (the connection dropped and "
                          "continuity could not be proven)."),
            "incarnation": f("integer", "The engine process this watch now follows (the "
                             "first is 0, so at least 1 here).", minimum=1),
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
        "engine_tally": {
            "topic": f("string", "The engine's ZMQ topic."),
            "incarnations": f("integer", "Engine processes seen (restarts + 1).", minimum=1),
            "batches": f("integer", "Batches processed (replayed ones included).", **count),
            "recovered_batches": f("integer", "Of them, given back by the replay socket.",
                                   **count),
            "lost_batches": f("integer", "Batches declared lost (engine_loss).", **count),
            "tiers": f("array", "Per (dp_rank, medium, group_idx, locality, ownership): "
                       "stores, hits, removals, regret, resident blocks, spec kind."),
            "unknown": f("object", "Unknown event types (type:NAME) and fields, counted."),
            "hit_rate": f("number|null", "hits / (hits + stores) over every tier (null: "
                          "no store seen). Hits are reuse reports: vLLM sends them only with "
                          "kv_cache_report_mode=full.", minimum=0),
        },
    }  # fmt: skip


ENGINE_KINDS = engine_kinds()
"""What :mod:`kvreceipts.schema` registers: each engine kind's own fields."""
