"""Raw frames kept on disk so that ``watch --from FILE`` gives the same receipts offline.

The file is ``MAGIC``, a length-prefixed JSON header (run id, start time, endpoint, topic,
replay socket), then entries: a type byte, the receive time (big-endian double, Unix
seconds), a frame count (uint16) and each frame as a uint32 length and its bytes. Types:
``M`` a subscriber message, ``P`` a replay reply, ``E`` the end of one replay request,
``D`` batches our queue dropped (topic, first seq, last seq), ``C`` the subscriber's
connection to the engine dropped (pyzmq's socket monitor), ``Z`` the end of the watch.
Everything the receipts depend on is in the file; nothing is read from the clock on replay.

A recording may come from anyone, so the reader checks what it is told before it believes it:
the header is at most :data:`MAX_HEADER` bytes and each of its fields has its type, an entry
has a known type byte, a finite time, at most :data:`MAX_FRAMES` frames of at most
:data:`MAX_FRAME` bytes each. Anything else is one :class:`~kvreceipts.errors.InputError`
naming the entry and its byte offset, before more than that limit is read.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from kvreceipts.bounded import shorten
from kvreceipts.errors import InputError, open_file

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "DISCONNECT",
    "DROP",
    "END",
    "FINISH",
    "MAGIC",
    "MAX_FRAME",
    "MAX_FRAMES",
    "MAX_HEADER",
    "MESSAGE",
    "REPLY",
    "Entry",
    "Recorder",
    "RecordingReader",
]

MAGIC = b"KVRWATCH\x01\n"
MESSAGE, REPLY, END, DROP, FINISH, DISCONNECT = b"M", b"P", b"E", b"D", b"Z", b"C"
_HEAD = struct.Struct(">cdH")
_LEN = struct.Struct(">I")
TYPES = (MESSAGE, REPLY, END, DROP, FINISH, DISCONNECT)
MAX_HEADER = 1 << 16
"""Longest header read (a real one is a few hundred bytes)."""
MAX_FRAME = 1 << 20
"""Longest frame read, 1 MiB: an engine batch of 100,000 64-bit block hashes fits."""
MAX_FRAMES = 16
"""Most frames in one entry (a message has 3, a replay reply 3 or 4)."""
MAX_EPOCH_S = 253_402_300_799.0
"""The last second RFC 3339 can write (9999-12-31T23:59:59Z)."""
MAX_ID = 256
"""Longest run id, topic or endpoint a header may name."""
_HEADER_TEXT = {"run_id": False, "source": True, "endpoint": True, "topic": True,
                "replay_endpoint": True}  # fmt: skip
"""The header's text fields, and whether each may be null (or absent)."""


@dataclass(slots=True)
class Entry:
    """One recorded entry."""

    type: bytes
    at_s: float
    frames: list[bytes]


class Recorder:
    """Appends entries to a recording (buffered; :meth:`close` flushes)."""

    def __init__(self, path: str | Path, header: dict[str, Any]) -> None:
        try:
            self._file: IO[bytes] = Path(path).open("wb", buffering=1 << 20)  # noqa: SIM115
        except OSError as exc:
            raise InputError(
                f"cannot write the recording: {exc.strerror}", path=str(path)
            ) from None
        head = orjson.dumps(header)
        self._file.write(MAGIC + _LEN.pack(len(head)) + head)

    def entry(self, kind: bytes, at_s: float, frames: list[bytes]) -> None:
        """Append one entry."""
        parts = [_HEAD.pack(kind, at_s, len(frames))]
        for frame in frames:
            parts.append(_LEN.pack(len(frame)))
            parts.append(frame)
        self._file.write(b"".join(parts))

    def close(self) -> None:
        """Flush and close."""
        self._file.close()


class RecordingReader:
    """Reads a recording: :attr:`header`, then :meth:`entries` in order."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = open_file(path, "watch recording")
        magic = self._file.read(len(MAGIC))
        if magic != MAGIC:
            self._file.close()
            raise InputError("not a kvreceipts watch recording (made by watch --record)",
                             path=path)  # fmt: skip
        try:
            self.header: dict[str, Any] = self._header()
        except BaseException:
            self._file.close()
            raise
        self.torn = False
        """Whether the file ended in the middle of an entry (a watch that was killed)."""
        self._offset = len(MAGIC) + _LEN.size + self._header_size

    def _header(self) -> dict[str, Any]:
        """The header, every field it must have of its type."""
        self._header_size = 0
        try:
            size = _LEN.unpack(self._read_exact(_LEN.size))[0]
            if size > MAX_HEADER:
                raise InputError(f"the recording's header declares {size:,} bytes (a header "
                                 f"is at most {MAX_HEADER:,})", path=self.path)  # fmt: skip
            self._header_size = size
            header = orjson.loads(self._read_exact(size))
        except (EOFError, orjson.JSONDecodeError):
            header = None
        if not isinstance(header, dict):
            raise InputError("the recording's header is damaged", path=self.path)
        for name, nullable in _HEADER_TEXT.items():
            value = header.get(name)
            if (value is None and nullable) or (type(value) is str and len(value) <= MAX_ID):
                continue
            wanted = f"a string of at most {MAX_ID} characters" + (" or null" if nullable else "")
            self._bad_header(name, wanted, value, name in header)
        start = header.get("start_s")
        if not _seconds(start, MAX_EPOCH_S):
            self._bad_header("start_s", "Unix seconds from 0 to 253,402,300,799", start,
                             "start_s" in header)  # fmt: skip
        window = header.get("regret_window_s")
        if window is not None and not _seconds(window, 1e9):
            self._bad_header("regret_window_s", "seconds from 0 to 1e9", window, True)
        return header

    def _bad_header(self, name: str, wanted: str, value: object, present: bool) -> None:
        found = _describe(value) if present else "nothing"
        raise InputError(f"header: {name}: expected {wanted}, found {found}", path=self.path)

    def _read_exact(self, size: int) -> bytes:
        data = self._file.read(size)
        if len(data) != size:
            raise EOFError
        return data

    def entries(self) -> Iterator[Entry]:
        """Every whole entry; a torn last entry sets :attr:`torn` and ends the iteration.

        Raises:
            InputError: an entry of an unknown type, a time that is not finite Unix seconds,
                too many frames or a frame too long (see the module's limits).
        """
        read = self._file.read
        head_size = _HEAD.size
        unpack_head = _HEAD.unpack
        frame = self._frame
        number = 0
        while True:
            head = read(head_size)
            if not head:
                return
            number += 1
            start = self._offset
            try:
                if len(head) != head_size:
                    raise EOFError  # noqa: TRY301 - one way out for every torn part
                kind, at_s, count = unpack_head(head)
                self._offset += head_size
                if kind not in TYPES or count > MAX_FRAMES or not 0 <= at_s <= MAX_EPOCH_S:
                    self._bad_entry(number, start, kind, at_s, count)
                frames = [frame(number, start, i) for i in range(1, count + 1)]
            except EOFError:
                self.torn = True
                return
            yield Entry(kind, at_s, frames)

    def _bad_entry(self, number: int, start: int, kind: bytes, at_s: float, count: int) -> None:
        where = f"entry {number:,} (byte {start:,})"
        if kind not in TYPES:
            known = ", ".join(t.decode() for t in TYPES)
            raise InputError(f"{where}: type {kind!r} is not one of {known}", path=self.path)
        if count > MAX_FRAMES:
            raise InputError(f"{where}: declares {count:,} frames (an entry has at most "
                             f"{MAX_FRAMES})", path=self.path)  # fmt: skip
        shown = repr(at_s) if not math.isfinite(at_s) else f"{at_s:g}"
        raise InputError(f"{where}: time {shown} is not Unix seconds from 0 to "
                         "253,402,300,799", path=self.path)  # fmt: skip

    def _frame(self, number: int, start: int, index: int) -> bytes:
        size = _LEN.unpack(self._read_exact(_LEN.size))[0]
        if size > MAX_FRAME:
            raise InputError(f"entry {number:,} (byte {start:,}): frame {index} declares "
                             f"{size:,} bytes (at most {MAX_FRAME:,})", path=self.path)  # fmt: skip
        data = self._read_exact(size)
        self._offset += _LEN.size + size
        return data

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def _seconds(value: object, high: float) -> bool:
    """Whether ``value`` is a number (not a boolean) from 0 to ``high``."""
    return type(value) in (int, float) and 0 <= value <= high  # type: ignore[operator]


def _describe(value: object) -> str:
    """A header value for a message: short, one line."""
    if isinstance(value, str):
        return f"a string of {len(value):,} characters" if len(value) > 40 else repr(value)
    kinds = {bool: "a boolean", dict: "an object", list: "an array", type(None): "null"}
    if type(value) in kinds:
        return kinds[type(value)]
    return shorten(repr(value), 40)
