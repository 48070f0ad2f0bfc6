"""Is this a receipts file at all? One cheap look at its first lines, shared by the readers.

A reader that gets a trace, a TOML file or a binary by mistake should say so in one line
rather than report thousands of unreadable lines.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["SCHEMA_PREFIX", "SNIFF_LINES", "not_a_receipt", "sniff_receipts"]

SNIFF_LINES = 8
"""Non-blank lines worth looking at: one receipt among them makes it a receipts file."""
SCHEMA_PREFIX = "kvreceipts.eviction/"
_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean",
               type(None): "null"}  # fmt: skip


def not_a_receipt(record: Any) -> str | None:
    """Why a parsed JSON value is not (even a damaged) receipt, or ``None`` if it claims to be
    one: an object whose ``schema`` is ours, or (``/2`` lean lines carry no ``schema``) one
    with ``kind``, ``run_id`` and ``seq``.
    """
    if not isinstance(record, dict):
        return f"a JSON {_JSON_TYPES.get(type(record), 'value')}, not an object"
    schema = record.get("schema")
    if isinstance(schema, str) and schema.startswith(SCHEMA_PREFIX):
        return None
    if schema is not None:
        return f"schema {str(schema)[:60]!r} is not a kvreceipts receipt schema"
    if "kind" in record and "run_id" in record and "seq" in record:
        return None
    return "a JSON object without the fields of a receipt (schema, or kind, run_id and seq)"


def sniff_receipts(first_lines: Sequence[bytes]) -> str | None:
    """Look at a stream's first lines (line 1 first, blank ones included; the first
    :data:`SNIFF_LINES` non-blank ones are read). ``None`` when one of them claims to be a
    receipt, or there is nothing to judge; otherwise ``"line N: why"`` for the first non-blank
    line, to go after "not a kvreceipts receipts file".
    """
    first: str | None = None
    looked = 0
    for number, raw in enumerate(first_lines, start=1):
        if not raw.strip():
            continue
        try:
            problem = not_a_receipt(orjson.loads(raw))
        except orjson.JSONDecodeError:
            problem = "binary data, not text" if _binary(raw) else "not JSON"
        if problem is None:
            return None
        first = first or f"line {number}: {problem}"
        looked += 1
        if looked >= SNIFF_LINES:
            break
    return first


def _binary(raw: bytes) -> bool:
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return True
    return any(c < " " and c not in "\t\r\n" for c in text[:256])
