"""``kvreceipts show``: a receipts file's receipts, as the table ``simulate`` prints."""

from __future__ import annotations

from enum import StrEnum
from itertools import chain
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer

from kvreceipts.commands.options import InputArgument, Kind
from kvreceipts.commands.output import Output
from kvreceipts.commands.reading import open_receipts
from kvreceipts.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from rich.console import RenderableType

__all__ = ["show"]

EXAMPLES = """
[bold]Examples[/bold]

  kvreceipts show run.jsonl                          [dim]# the first 20 receipts[/dim]
  kvreceipts show run.jsonl --session chat-35 --limit 50
  kvreceipts show removals.jsonl --kind engine_restore
  kvreceipts show run.jsonl.zst --kind eviction | wc -l   [dim]# JSON lines when piped[/dim]
"""

TABLE_ROWS = 20
"""Rows a table shows unless ``--limit`` says otherwise."""
_FRAMES = ("open", "close")
_ENGINE = "engine_"


class ShowFormat(StrEnum):
    """How ``show`` prints."""

    table = "table"
    jsonl = "jsonl"


def show(
    path: InputArgument = "-",
    kind: Annotated[
        Kind | None,
        typer.Option(
            help="Only records of this kind (open and close too).",
            show_default="every kind but open and close",
        ),
    ] = None,
    session: Annotated[
        str | None,
        typer.Option(
            help="Only the evictions of this session (its session_id).", show_default=False
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            help="Records shown at most.",
            min=0,
            show_default=f"{TABLE_ROWS} in a table, all as JSON lines",
        ),
    ] = None,
    fmt: Annotated[
        ShowFormat | None,
        typer.Option(
            "--format",
            "-f",
            help="table for people, jsonl (the lines as they are in the file) for machines.",
            show_default="table on a terminal, jsonl otherwise",
        ),
    ] = None,
) -> None:
    """List a receipts file's receipts as the table simulate prints, or as JSON lines.

    Reads plain, gzip or zstd files, or standard input (-). Every record but the runs' open
    and close records, unless --kind names one (or all); --session keeps one session's
    evictions.
    Exit status: 0 listed (also when nothing matched), 2 not a receipts file or unreadable.
    """
    out = Output()
    chosen = fmt or (ShowFormat.table if out.stdout_is_terminal else ShowFormat.jsonl)
    wanted = None if kind is None else kind.value
    shown = limit if limit is not None else (TABLE_ROWS if chosen is ShowFormat.table else None)
    kept: list[dict[str, Any]] = []
    engine_kept: list[dict[str, Any]] = []
    matched = engine_matched = 0
    paged: bool | None = None
    watched = False
    with open_receipts(path) as lines:
        for number, raw, record in _records(lines, path):
            found = record.get("kind")
            if found == "open":
                paged = record.get("allocator") == "paged" if paged is None else paged
                watched = record.get("source") == "watch"  # this run's loss records too
            if not _wanted(record, found, wanted, session):
                continue
            is_engine = isinstance(found, str) and (found.startswith(_ENGINE) or
                                                    (watched and found == "loss"))  # fmt: skip
            if chosen is ShowFormat.jsonl:
                line = raw if raw.endswith(b"\n") else raw + b"\n"
                if (shown is None or matched < shown) and not out.write(line):
                    return  # the reader has gone (| head)
                matched += 1
                continue
            if is_engine:
                engine_matched += 1
                if shown is None or len(engine_kept) < shown:
                    engine_kept.append(record)
            else:
                matched += 1
                if shown is None or len(kept) < shown:
                    kept.append(_checked(record, path, number))
    out.flush()
    if chosen is ShowFormat.table:
        out.show(*_tables(kept, matched, engine_kept, engine_matched, paged=bool(paged)))
    if not (matched or engine_matched):
        out.note(f"{path}: no records match" if wanted or session else f"{path}: no receipts")


def _wanted(record: dict[str, Any], found: Any, wanted: str | None, session: str | None) -> bool:
    """Receipts (no open or close record) by default; ``all``: every record; else one kind."""
    if wanted is None and found in _FRAMES:
        return False
    if wanted not in (None, "all") and found != wanted:
        return False
    return session is None or record.get("session_id") == session


def _records(lines: Any, path: str) -> Iterator[tuple[int, bytes, dict[str, Any]]]:
    """Every record with its line number and bytes; a line that is not one is an error."""
    from kvreceipts.sniff import SNIFF_LINES, not_a_receipt, sniff_receipts

    stream = iter(lines)
    head = [raw for _, raw in zip(range(SNIFF_LINES), stream, strict=False)]
    sniffed = head[:-1] if head and not head[-1].endswith(b"\n") else head
    problem = sniff_receipts(sniffed)
    if problem is not None:
        raise InputError(f"not a kvreceipts receipts file ({problem})", path=path)
    for number, raw in enumerate(chain(head, stream), start=1):
        if not raw.strip():
            continue
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            if not raw.endswith(b"\n"):  # a torn last line, as a killed writer leaves
                Output().warn(f"{path}: line {number:,} is a truncated tail; it is left out")
                return
            raise InputError("not valid JSON", path=path, line=number) from None
        why = not_a_receipt(record)
        if why is not None:
            raise InputError(why, path=path, line=number)
        yield number, raw, record


def _checked(record: dict[str, Any], path: str, number: int) -> dict[str, Any]:
    """A record the table can show: its seq is an integer, its kind a string."""
    for key, kind in (("seq", int), ("kind", str)):
        value = record.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise InputError(f"{key}: {orjson.dumps(value).decode()[:40]} is not "
                             f"{'an integer' if kind is int else 'a string'}", path=path,
                             line=number)  # fmt: skip
    return record


def _tables(
    kept: list[dict[str, Any]],
    matched: int,
    engine_kept: list[dict[str, Any]],
    engine_matched: int,
    *,
    paged: bool,
) -> list[RenderableType]:
    from kvreceipts.commands.receipt_table import engine_table, receipt_table

    tables: list[RenderableType] = []
    if matched or not engine_matched:
        tables.append(receipt_table(kept, matched, paged=paged))
    if engine_matched:
        tables.append(engine_table(engine_kept, engine_matched))
    return tables
