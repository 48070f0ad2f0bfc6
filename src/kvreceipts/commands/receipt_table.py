"""The receipts table that ``simulate`` prints and ``show`` prints from a file.

Rows are made from a record's JSON (a parsed receipt line), so a run in progress and a file
read later print the same table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from kvreceipts.units import human_bytes

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rich.table import Table

__all__ = ["ENGINE_KINDS", "engine_table", "receipt_dict", "receipt_row", "receipt_table"]

ENGINE_KINDS = ("engine_removal", "engine_restore", "engine_clear", "engine_restart",
                "engine_loss")  # fmt: skip
MORE = "--limit N shows more; --format jsonl prints all"
ENGINE_LABELS = {
    "engine_removal": "removal",
    "engine_restore": "restore",
    "engine_clear": "clear",
    "engine_restart": "restart",
    "engine_loss": "batch loss",
    "loss": "sink loss",
}
"""How the engine table names each kind: a batch the watch never processed (``engine_loss``)
and receipts a sink dropped (``loss``) are both losses, and must not read alike."""


def receipt_dict(record: Any) -> dict[str, Any]:
    """A sealed record's JSON, as its line says it."""
    line = getattr(record, "line", None)
    if line:
        parsed: dict[str, Any] = orjson.loads(line)
        return parsed
    return dict(record.to_dict())


def _get(record: dict[str, Any], *path: str) -> Any:
    value: Any = record
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _bytes(value: Any) -> str:
    return human_bytes(value) if isinstance(value, int | float) else "-"


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "-"


def receipt_row(record: dict[str, Any], paged: bool) -> list[str]:
    """One row: a receipt's seq, reason, session, trigger, and where, size, used, entries."""
    kind = record.get("kind")
    seq = str(record.get("seq", "-"))
    if kind == "eviction":
        where = str(record.get("block_hash", "-")) if paged else _bytes(record.get("block_offset"))
        row = [
            seq, str(record.get("reason", "-")), str(record.get("session_id", "-")),
            str(record.get("trigger_session_id") or "-"), where,
            _bytes(record.get("block_size_bytes")), _bytes(_get(record, "after", "used_bytes")),
            _count(_get(record, "after", "total_sessions")),
        ]  # fmt: skip
    elif kind == "eviction_batch":
        row = [seq, "round", f"{record.get('count', '-')} evicted", "", "",
               _bytes(record.get("total_bytes_freed")), _bytes(record.get("pool_used_after")),
               ""]  # fmt: skip
    elif kind == "snapshot":
        as_of = record.get("as_of_seq")
        row = [seq, "snapshot", f"as of seq {'-' if as_of is None else as_of}", "", "", "",
               _bytes(record.get("pool_used")), _count(record.get("active_sessions"))]  # fmt: skip
    else:
        row = [seq, str(kind), "", "", "", "", "", ""]
    return row[: 7 if paged else 8]


def _caption(table: Table, shown: int, total: int) -> None:
    more = total - shown
    if more > 0:
        table.caption = f"… {more:,} more ({MORE})"
    elif not total:
        table.caption = "no receipts: nothing was evicted"


def receipt_table(
    rows: Sequence[dict[str, Any]],
    total: int,
    *,
    paged: bool,
    title: str = "KV eviction receipts",
) -> Table:
    """The table of ``rows`` (the first ``total`` receipts); the caption says what is left."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("seq", justify="right", no_wrap=True)
    table.add_column("reason", no_wrap=True)
    table.add_column("session", overflow="fold", min_width=8)
    table.add_column("trigger", overflow="fold", min_width=8)
    # Paged entries are blocks: their count sits at capacity, so the column would say nothing.
    columns = ("block hash", "size", "used") if paged else ("offset", "size", "used", "entries")
    for name in columns:
        table.add_column(name, justify="right", no_wrap=True)
    for record in rows:
        table.add_row(*receipt_row(record, paged))
    _caption(table, len(rows), total)
    return table


def _ms(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    return f"{value / 1000:,.2f} s" if value >= 1000 else f"{value:,.1f} ms"


def engine_row(record: dict[str, Any]) -> list[str]:
    """A watched engine's receipt: seq, kind, medium, block hash, engine seq, and its figure."""
    kind = str(record.get("kind"))
    figure = {
        "engine_removal": lambda: f"resident {_ms(record.get('residency_ms'))}",
        "engine_restore": lambda: (
            f"{_ms(record.get('gap_ms'))} after seq {record.get('removal_seq', '-')}"
        ),
        "engine_clear": lambda: f"{_count(record.get('count'))} blocks cleared",
        "engine_restart": lambda: f"{_count(record.get('resident_dropped'))} blocks dropped",
        "engine_loss": lambda: (
            f"{_count(record.get('batches'))} batches lost ({record.get('cause', '-')})"
        ),
        "loss": lambda: (
            f"{_count(record.get('count'))} receipts dropped (seq "
            f"{record.get('first_seq', '-')}..{record.get('last_seq', '-')})"
        ),
    }.get(kind, lambda: "")()
    engine_seq = record.get("engine_seq", record.get("first_engine_seq", "-"))
    block = record.get("block_hash")
    return [str(record.get("seq", "-")), ENGINE_LABELS.get(kind, kind),
            str(record.get("medium") or "-"), "-" if block is None else str(block),
            str(engine_seq), figure]  # fmt: skip


def engine_table(rows: Sequence[dict[str, Any]], total: int) -> Table:
    """The table of a watched engine's receipts."""
    from rich import box
    from rich.table import Table

    table = Table(title="engine receipts (kvreceipts watch)", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)  # fmt: skip
    table.add_column("seq", justify="right", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("medium", no_wrap=True)
    table.add_column("block hash", overflow="fold", min_width=16)
    table.add_column("engine seq", justify="right", no_wrap=True)
    table.add_column("", overflow="fold", min_width=16)
    for record in rows:
        table.add_row(*engine_row(record))
    _caption(table, len(rows), total)
    if not total:
        table.caption = "no engine receipts"
    return table
