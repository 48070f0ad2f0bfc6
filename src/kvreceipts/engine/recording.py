"""Raw frames kept on disk so that ``watch --from FILE`` gives the same receipts offline.

The file is ``MAGIC``, a length-prefixed JSON header (run id, start time, endpoint, topic,
replay socket), then entries: a type byte, the receive time (big-endian double, Unix
seconds), a frame count (uint16) and each frame as a uint32 length and its bytes. Types:
``M`` a subscriber message, ``P`` a replay reply, ``E`` the end of one replay request,
``D`` batches our queue dropped (topic, first seq, last seq), ``C`` the subscriber's
connection to the engine dropped (pyzmq's socket monitor), ``Z`` the end of the watch.
Everything the receipts depend on is in the file; nothing is read from the clock on replay.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from kvreceipts.errors import InputError, open_file

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "DISCONNECT",
    "DROP",
    "END",
    "FINISH",
    "MAGIC",
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
            size = self._read_exact(_LEN.size)
            header = orjson.loads(self._read_exact(_LEN.unpack(size)[0]))
        except (EOFError, orjson.JSONDecodeError):
            header = None
        if not isinstance(header, dict) or not isinstance(header.get("run_id"), str):
            self._file.close()
            raise InputError("the recording's header is damaged", path=path)
        self.header: dict[str, Any] = header
        self.torn = False
        """Whether the file ended in the middle of an entry (a watch that was killed)."""

    def _read_exact(self, size: int) -> bytes:
        data = self._file.read(size)
        if len(data) != size:
            raise EOFError
        return data

    def entries(self) -> Iterator[Entry]:
        """Every whole entry; a torn last entry sets :attr:`torn` and ends the iteration."""
        read = self._file.read
        head_size = _HEAD.size
        unpack_head = _HEAD.unpack
        frame = self._frame
        while True:
            head = read(head_size)
            if not head:
                return
            try:
                if len(head) != head_size:
                    raise EOFError  # noqa: TRY301 - one way out for every torn part
                kind, at_s, count = unpack_head(head)
                frames = [frame() for _ in range(count)]
            except EOFError:
                self.torn = True
                return
            yield Entry(kind, at_s, frames)

    def _frame(self) -> bytes:
        size = _LEN.unpack(self._read_exact(_LEN.size))[0]
        return self._read_exact(size)

    def close(self) -> None:
        """Close the file."""
        self._file.close()
