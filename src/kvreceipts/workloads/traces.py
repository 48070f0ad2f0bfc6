"""Streaming readers of real traces: Mooncake (JSON lines), Azure LLM 2023 (CSV), and a
watch recording (``kvrec``, :mod:`kvreceipts.workloads.engine_trace`).

Both read one line at a time, so memory does not grow with the trace. A malformed row raises
:class:`InputError` naming the file, line and field, unless bad rows are skipped; then they are
counted in :class:`TraceStats`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from kvreceipts.bounded import shorten
from kvreceipts.errors import InputError, UsageError
from kvreceipts.inputs import InputStream, open_input
from kvreceipts.numbers import MAX_TOKENS, MAX_TRACE_MS
from kvreceipts.workloads.request import Request

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["MOONCAKE_BLOCK_TOKENS", "TraceStats", "detect_format", "read_trace"]

MOONCAKE_BLOCK_TOKENS = 512
AZURE_HEADER = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


@dataclass(slots=True)
class TraceStats:
    """What a reader saw: rows read, rows skipped, and the first few skip reasons."""

    path: str
    format: str
    rows: int = 0
    skipped: int = 0
    first_errors: list[str] = field(default_factory=list)
    epoch_s: float | None = None
    """Absolute time of the first row, when the trace carries one (Azure)."""
    backwards: int = 0
    """Rows whose timestamp is earlier than the row before (served in file order)."""
    first_backwards: str | None = None
    """Where the first of them is, as ``path:line: …``."""
    bytes_read: int = 0
    """How much of the file has been read (for a progress bar)."""
    caveats: list[str] = field(default_factory=list)
    """What the trace cannot know, for the summary (a watch recording's limits)."""


BOM = b"\xef\xbb\xbf"
RECORDING_PREFIX = b"KVRWATCH"
"""How a watch recording begins (``engine.recording.MAGIC`` before its version byte): known
without importing the engine's decoder, which only a recording needs."""


def _open(path: str) -> InputStream:
    return open_input(path, "trace file")


def detect_format(path: str) -> str:
    """``mooncake`` or ``azure``, from the first non-empty line (standard input is peeked at,
    not consumed).
    """
    with _open(path) as handle:
        head = handle.peek(1 << 16)
        if head.startswith(RECORDING_PREFIX):
            return "kvrec"
        first = head.removeprefix(BOM).lstrip()
        if first.startswith(b"{"):
            return "mooncake"
        if first.split(b"\n", 1)[0].split(b",")[0].strip().upper() == b"TIMESTAMP":
            return "azure"
    raise InputError(
        "cannot tell the trace format from its first line "
        "(expected a Mooncake JSON object or the Azure CSV header); pass --trace-format",
        path=path,
        line=1,
    )


def _count(value: object, name: str) -> int:
    if type(value) is not int or value < 0:
        raise ValueError(f"field {name!r}: expected a non-negative integer, got {_shown(value)}")
    if value > MAX_TOKENS:
        raise ValueError(f"field {name!r}: {value} tokens, more than {MAX_TOKENS:,} in one row")
    return value


def _mooncake_row(data: Any, line: int) -> Request:
    if not isinstance(data, dict):
        raise TypeError("expected a JSON object")
    for name in ("timestamp", "input_length", "output_length", "hash_ids"):
        if name not in data:
            raise ValueError(f"field {name!r} is missing")
    timestamp = data["timestamp"]
    if type(timestamp) not in (int, float) or not 0 <= timestamp <= MAX_TRACE_MS:
        raise ValueError(
            f"field 'timestamp': expected milliseconds from 0 to {MAX_TRACE_MS:.0e}, "
            f"got {_shown(timestamp)}"
        )
    input_tokens = _count(data["input_length"], "input_length")
    output_tokens = _count(data["output_length"], "output_length")
    hashes = data["hash_ids"]
    if not isinstance(hashes, list) or any(type(h) is not int for h in hashes):
        raise ValueError("field 'hash_ids': expected a list of integers")
    expected = -(-input_tokens // MOONCAKE_BLOCK_TOKENS)
    if len(hashes) != expected:
        raise ValueError(
            f"field 'hash_ids': {len(hashes)} hashes for input_length {input_tokens} "
            f"(expected {expected}, one per {MOONCAKE_BLOCK_TOKENS}-token block)"
        )
    request_id = f"r{line}"
    return Request(
        request_id=request_id,
        # The last hash names the whole prefix (the ids form a prefix tree), so an arena
        # session is "this exact prompt": a repeat of it is a hit.
        session_id=f"p{hashes[-1]}" if hashes else request_id,
        arrival_ms=float(timestamp),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        context_length=max(1, input_tokens + output_tokens),
        block_hashes=hashes,
        source_line=line,
    )


def _azure_time(text: str) -> float:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            "field 'TIMESTAMP': expected a time like 2023-11-16 18:17:03.9799600, "
            f"got {_shown(text)}"
        ) from None
    # The trace's times are UTC; a time that names no zone must not be read as local time.
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _azure_row(text: str, line: int, epoch: float | None) -> tuple[Request, float]:
    cells = text.split(",")
    if len(cells) != len(AZURE_HEADER):
        raise ValueError(f"expected {len(AZURE_HEADER)} columns, got {len(cells)}")
    at = _azure_time(cells[0])
    values = []
    for name, cell in zip(AZURE_HEADER[1:], cells[1:], strict=True):
        try:
            values.append(_count(int(cell), name))
        except ValueError:
            raise ValueError(
                f"field {name!r}: expected a non-negative integer, got {_shown(cell.strip())}"
            ) from None
    input_tokens, output_tokens = values
    request_id = f"r{line}"
    return Request(
        request_id=request_id,
        session_id=request_id,
        arrival_ms=round((at - epoch) * 1000.0, 3) if epoch is not None else 0.0,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        context_length=max(1, input_tokens + output_tokens),
        source_line=line,
    ), at


def read_trace(
    path: str,
    fmt: str = "auto",
    *,
    skip_bad_lines: bool = False,
    stats: TraceStats | None = None,
    strict_time: bool = False,
) -> Iterator[Request]:
    """Stream the trace's requests. ``stats`` (if given) is filled in as rows are read.

    A row whose timestamp goes back in time is counted in ``stats.backwards`` and served in
    file order; with ``strict_time`` it is an error naming its line.
    """
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in ("mooncake", "azure", "kvrec"):
        raise UsageError(
            f"unknown trace format {fmt!r} (choose from: auto, mooncake, azure, kvrec)"
        )
    if stats is None:
        stats = TraceStats(path, fmt)
    stats.format = fmt
    if fmt == "kvrec":  # a watch recording: the engine's own block references
        from kvreceipts.workloads.engine_trace import recording_requests  # msgspec: on demand

        return recording_requests(path, stats)
    return _rows(path, fmt, skip_bad_lines, stats, strict_time)


def _rows(  # noqa: PLR0912 - one loop, its branches are the row kinds
    path: str, fmt: str, skip_bad_lines: bool, stats: TraceStats, strict_time: bool
) -> Iterator[Request]:
    epoch: float | None = None  # not 0.0: a trace may start at the Unix epoch
    last = float("-inf")
    with _open(path) as handle:
        path = handle.path  # "<stdin>" for "-"
        for line, raw in enumerate(_bounded_lines(handle), start=1):
            if line == 1:
                raw = raw.removeprefix(BOM)  # noqa: PLW2901 - a CSV saved by Excel
            if not raw.strip():
                continue
            if not line & 1023:
                stats.bytes_read = handle.bytes_read() or 0
            try:
                if raw is _OVERLONG:
                    raise ValueError(  # noqa: TRY301 - skipped like any other bad row
                        f"the row is longer than {MAX_ROW:,} bytes (the longest a trace row "
                        "can be: 10 million tokens' hash ids)"
                    )
                if fmt == "mooncake":
                    request = _mooncake_row(orjson.loads(raw), line)
                else:
                    text = raw.decode("utf-8")
                    if line == 1 and text.split(",")[0].strip().upper() == "TIMESTAMP":
                        continue
                    request, at = _azure_row(text, line, epoch)
                    if epoch is None:
                        epoch = at
                        stats.epoch_s = at
            except (ValueError, TypeError) as exc:  # JSON and UTF-8 decode errors are ValueErrors
                message = _describe(exc)
                if not skip_bad_lines:
                    raise InputError(message, path=path, line=line) from None
                stats.skipped += 1
                if len(stats.first_errors) < 5:
                    stats.first_errors.append(f"{path}:{line}: {message}")
                continue
            if request.arrival_ms < last:
                where = f"{path}:{line}"
                if strict_time:
                    raise InputError(
                        f"timestamp goes backwards: {request.arrival_ms:g} ms after "
                        f"{last:g} ms (--strict-time)", path=path, line=line,
                    )  # fmt: skip
                stats.backwards += 1
                if stats.first_backwards is None:
                    stats.first_backwards = f"{where}: {request.arrival_ms:g} ms after {last:g} ms"
            else:
                last = request.arrival_ms
            stats.rows += 1
            yield request
        stats.bytes_read = handle.bytes_read() or 0


MAX_ROW = 1 << 20
"""Longest trace row read, in bytes: a Mooncake row of :data:`MAX_TOKENS` tokens holds 19,532
hash ids, about 430 KB. A longer row is rejected once this many bytes of it are read, so a
100 MB line (compressed to a few hundred KB) costs no more memory than a short one."""
_OVERLONG = b"\x00 a row past MAX_ROW \x00"  # told by identity; not blank, not JSON


def _bounded_lines(handle: InputStream) -> Iterator[bytes]:
    """The stream's lines, each at most :data:`MAX_ROW` bytes. A longer one comes out as
    ``_OVERLONG`` as soon as its first ``MAX_ROW + 1`` bytes are read; only if the reader asks
    for the next line is the rest of it read, in pieces, never held whole.
    """
    readline = handle.readline
    limit = MAX_ROW + 1
    while raw := readline(limit):
        if len(raw) == limit and not raw.endswith(b"\n"):
            del raw
            yield _OVERLONG
            while (rest := readline(1 << 16)) and not rest.endswith(b"\n"):
                pass
            continue
        yield raw


def _shown(value: object) -> str:
    """A value for a message: its repr, cut to its head and length if long (a row may be 1 MiB)."""
    return shorten(repr(value), 60, 40)


def _describe(exc: Exception) -> str:
    if isinstance(exc, orjson.JSONDecodeError):
        return f"invalid JSON: {exc.msg}"
    if isinstance(exc, UnicodeDecodeError):
        return "not valid UTF-8 text"
    return str(exc)
