"""Receipt files built in the tests, sealed with the real :class:`~kvreceipts.chain.Sealer`.

``lean_run`` gives the records of a small, consistent lean run as dicts (open, evictions,
optional batch and snapshot, close); an attacker edits them and ``seal`` re-chains them the way
anyone without an HMAC key (or with the key) can, declaring the ranges it was told to lose with
``loss`` records. No emitter is involved, so these run without the ``receipts`` feature.

The ``hostile_*`` generators write the inputs of issue 26's table (each line bounded by the
reader's limit) for the memory tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from kvreceipts.chain import Sealer
from kvreceipts.config import CachingConfig
from kvreceipts.proofs.merkle import RangeCover
from kvreceipts.schema import SCHEMA_ID
from kvreceipts.stats import KVCacheStatistics

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from pathlib import Path

KEY = b"a key that signs receipts"
OTHER_KEY = b"someone else's key"
BLOCK = 4096
POOL = 64 * BLOCK


def stamp(second: int, fraction: str = "000000", zone: str = "Z") -> str:
    """An RFC 3339 time ``second`` seconds into 2025."""
    minutes, seconds = divmod(second, 60)
    hours, minutes = divmod(minutes, 60)
    return f"2025-01-01T{hours:02d}:{minutes:02d}:{seconds:02d}.{fraction}{zone}"


def lean_run(
    evictions: int = 10, *, run_id: str = "run-1", batch: bool = False, snapshot: bool = False
) -> list[dict[str, Any]]:
    """A consistent lean run: ``evictions`` evictions (one round, closed by an
    ``eviction_batch`` with ``batch``), a ``snapshot`` before them if asked, and its close.
    """
    sessions, used = POOL // BLOCK, POOL
    records: list[dict[str, Any]] = [{
        "kind": "open", "run_id": run_id, "seq": 0, "timestamp": stamp(0), "schema": SCHEMA_ID,
        "source": "library", "layout": "lean", "config": CachingConfig().to_dict(),
        "workload": None, "allocator": "arena", "policy": "lru", "total_bytes": POOL,
        "tuning": False, "sim_time_ms": 0.0,
    }]  # fmt: skip
    hits, misses = 3, 5
    if snapshot:
        records.append({
            "kind": "snapshot", "run_id": run_id, "seq": 1, "timestamp": stamp(1),
            "sim_time_ms": 1000.0, "pool_used": used, "pool_total": POOL, "utilization": 1.0,
            "fragmentation": 0.0, "active_sessions": 1, "total_sessions_created": sessions,
            "total_evictions": 0, "cache_hits": hits, "cache_misses": misses, "as_of_seq": None,
        })  # fmt: skip
    first = len(records)
    for n in range(evictions):
        misses += 1
        records.append({
            "kind": "eviction", "run_id": run_id, "seq": first + n, "timestamp": stamp(2 + n),
            "session_id": f"s{n}", "block_offset": BLOCK * n, "block_size_bytes": BLOCK,
            "reason": "lru", "trigger_session_id": "t1", "block_hash": 1000 + n,
            "before": {"total_sessions": sessions, "used_bytes": used},
            "after": {"cache_hits": hits, "cache_misses": misses, "evictions": n + 1,
                      "total_sessions": sessions - 1, "used_bytes": used - BLOCK},
        })  # fmt: skip
        sessions, used = sessions - 1, used - BLOCK
    if batch and evictions:
        freed = evictions * BLOCK
        records.append({
            "kind": "eviction_batch", "run_id": run_id, "seq": len(records),
            "timestamp": stamp(2 + evictions), "sim_time_ms": 1000.0 * (2 + evictions),
            "count": evictions, "total_bytes_freed": freed, "pool_used_before": POOL,
            "fragmentation_before": 0.0, "fragmentation_after": 0.0, "duration_ms": 0.0,
            "first_seq": first, "last_seq": first + evictions - 1, "required_bytes": freed,
            "satisfied": True, "pool_used_after_evictions": POOL - freed,
            "allocated_bytes": freed, "pool_used_after": POOL,
        })  # fmt: skip
        used = POOL
    seq = len(records)
    counts: dict[str, int] = {}
    for record in records:
        counts[record["kind"]] = counts.get(record["kind"], 0) + 1
    final = KVCacheStatistics.compute(
        sessions=sessions, used_bytes=used, total_bytes=POOL, hits=hits, misses=misses,
        tokens=16 * sessions, fragmentation=0.0, evictions=evictions,
    )  # fmt: skip
    records.append({
        "kind": "close", "run_id": run_id, "seq": seq, "timestamp": stamp(3 + evictions),
        "schema": SCHEMA_ID, "sim_time_ms": 1000.0 * (3 + evictions), "records": seq,
        "counts": dict(sorted(counts.items())), "bytes_freed": evictions * BLOCK,
        "final_stats": final.to_dict(),
    })  # fmt: skip
    return records


def seal(
    records: Iterable[dict[str, Any]],
    key: bytes | None = None,
    *,
    lose: Iterable[int] = (),
    edit_loss: Callable[[dict[str, Any]], None] | None = None,
) -> list[bytes]:
    """Seal ``records`` in order with a fresh :class:`Sealer` per run, as an attacker re-chains
    them (``digest``, ``alg`` and ``key_id`` are recomputed; a close without ``head`` gets the
    chain head). The records at the positions in ``lose`` are sealed but not written: each
    contiguous stretch of them is declared by a ``loss`` record (sink ``channel``), which
    ``edit_loss`` may change before it is sealed.
    """
    lost = set(lose)
    sealers: dict[str, Sealer] = {}
    out: list[bytes] = []
    pending: list[tuple[dict[str, Any], str, str]] = []  # (record, prev, digest) of a stretch
    leaves: list[bytes] = []  # the stretch's Merkle leaf hashes

    def declare() -> None:
        if not pending:
            return
        first, prev, _ = pending[0]
        last, _, last_digest = pending[-1]
        lost_counts: dict[str, int] = {}
        for record, _, _ in pending:
            lost_counts[record["kind"]] = lost_counts.get(record["kind"], 0) + 1
        cover = RangeCover(first["seq"])
        for leaf in leaves:
            cover.append(leaf)
        loss = {
            "kind": "loss", "run_id": last["run_id"], "seq": last["seq"],
            "timestamp": last["timestamp"], "sink": "channel", "first_seq": first["seq"],
            "last_seq": last["seq"], "count": len(pending), "prev_digest": prev,
            "last_lost_digest": last_digest, "lost_counts": dict(sorted(lost_counts.items())),
            "lost_tree": [h.hex() for h in cover.hashes()],
        }  # fmt: skip
        if edit_loss is not None:
            edit_loss(loss)
        sealer = sealers[last["run_id"]]
        out.append(sealer.seal_beside(loss["prev_digest"], loss)[1])
        pending.clear()
        leaves.clear()

    for index, given in enumerate(records):
        # The sealer states alg and key_id (a key_id of null, an attacker's, is kept).
        record = {k: v for k, v in given.items()
                  if k not in ("digest", "alg") and (k != "key_id" or v is None)}  # fmt: skip
        sealer = sealers.setdefault(str(record.get("run_id")), Sealer(key))
        if record.get("kind") == "close" and "head" not in record:
            record["head"] = sealer.last_digest
        if record.get("kind") in ("checkpoint", "close"):
            record.setdefault("tree_size", sealer.tree.size)
            record.setdefault("root", sealer.root())
        prev = sealer.last_digest
        digest, line = sealer.seal_dict(record)
        if index in lost:
            pending.append((record, prev, digest))
            leaves.append(sealer.last_leaf)
            continue
        declare()
        out.append(line)
    declare()
    return out


def parsed(lines: Iterable[bytes]) -> list[dict[str, Any]]:
    """The records of sealed lines."""
    return [orjson.loads(line) for line in lines]


# -- issue 26's hostile inputs (verify rows) ----------------------------------------------------

HUGE = 1_000_000
"""Characters of a hostile identifier: each line stays under the reader's 1 MiB limit."""


def _huge(n: int, width: int = HUGE) -> str:
    return f"{n:08x}" + "x" * (width - 8)


def hostile_violation_run_ids(count: int = 600) -> Iterator[bytes]:
    """One valid open record, then ``count`` evictions of runs never opened, each run id ~1 MB
    (every one a violation that names its run).
    """
    yield from seal(lean_run(0)[:1])
    template = lean_run(1)[1]
    for n in range(count):
        yield from seal([{**template, "run_id": _huge(n)}])


def hostile_kind_names(count: int = 1500) -> Iterator[bytes]:
    """One open run, then ``count`` records of distinct unknown kinds named with ~1 MB."""
    records = lean_run(0)[:1]
    records += [{**records[0], "kind": _huge(n), "seq": n + 1} for n in range(count)]
    yield from seal(records)


def hostile_closed_run_ids(count: int = 1500) -> Iterator[bytes]:
    """``count`` whole, valid runs, each with a ~1 MB run id."""
    for n in range(count):
        yield from seal(lean_run(0, run_id=_huge(n)))


def hostile_sink_names(count: int = 1000) -> Iterator[bytes]:
    """One run with ``count`` declared losses (of one eviction each), each from a sink named
    with ~1 MB.
    """
    records = lean_run(2 * count)
    sinks = iter(range(count))

    def rename(loss: dict[str, Any]) -> None:
        loss["sink"] = _huge(next(sinks))

    yield from seal(records, lose=range(1, 2 * count + 1, 2), edit_loss=rename)


def hostile_interleaved_blocks(runs: int = 64, blocks: int = 250_000) -> Iterator[bytes]:
    """``runs`` runs open at once, each evicting ``blocks`` distinct block hashes, their
    records interleaved (each run's chain intact).
    """
    sealers = [Sealer() for _ in range(runs)]
    opens = [lean_run(0, run_id=f"run-{r}")[0] for r in range(runs)]
    for sealer, record in zip(sealers, opens, strict=True):
        yield sealer.seal_dict(dict(record))[1]
    template = lean_run(1)[1]
    before, after = template["before"], template["after"]
    for n in range(blocks):
        for r, sealer in enumerate(sealers):
            record = {
                **template, "run_id": f"run-{r}", "seq": n + 1, "block_hash": n,
                "after": {**after, "cache_misses": after["cache_misses"] + n,
                          "evictions": n + 1},
                "before": before,
            }  # fmt: skip
            yield sealer.seal_dict(record)[1]


def hostile_field_names(count: int = 300) -> Iterator[bytes]:
    """One open run, then ``count`` evictions each with a distinct unknown field of ~1 MB name
    (the shape check's verdict cache and its message would keep the names).
    """
    records = lean_run(count)
    for n, record in enumerate(records[1:-1]):
        record[_huge(n)] = 1
    yield from seal(records)


def hostile_distinct_run_evictions(count: int = 300) -> Iterator[bytes]:
    """A valid open record, then ``count`` eviction-like lines of ~1 MB, each of its own run."""
    yield from hostile_violation_run_ids(count)


def write_lines(path: Path, lines: Iterable[bytes]) -> Path:
    """Stream ``lines`` into ``path``."""
    with path.open("wb") as out:
        for line in lines:
            out.write(line)
    return path
