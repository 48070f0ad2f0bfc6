"""Opening a receipts file (or standard input) for the reading commands.

Plain, gzip and zstd streams are told apart by their first bytes, not by the file name, and
decompressed as they stream. Lines come out whole (newline included) and bounded in length, so
memory stays bounded whatever the input: a line longer than :data:`MAX_LINE` comes out as its
first ``MAX_LINE + 1`` bytes and ends the stream (``stopped_at``), before the rest of it is
read. A torn last compressed frame (a writer killed mid-write) ends the stream with its partial
line, without a newline, as a torn plain file does; anything else after the last whole frame
(another format's frame, a zstd skippable frame, garbage) ends it too and is described in
``hidden_bytes``, for the reader to report. A file that opens but cannot be read (EIO) is an
:class:`~kvreceipts.errors.InputError`: ``PATH: cannot read: …``.
"""

from __future__ import annotations

import sys
import zlib
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

from kvreceipts.errors import InputError, open_file
from kvreceipts.inputs import COMPRESSIONS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["MAX_LINE", "ReceiptLines", "open_receipts"]

CHUNK = 1 << 16
MAX_LINE = 1 << 20
"""Longest line kept whole (receipts are a few KiB). A longer one comes out as its first
``MAX_LINE + 1`` bytes and a newline, so it is longer than any real line and not JSON, and
reading stops there."""
_ZSTD_SLICE = 256
"""Compressed bytes fed to zstd at a time: a zstd block of 4 bytes can stand for 128 KiB, and
the decompressor has no output limit, so small inputs are what bound its output."""
_GZIP, _ZSTD, _XZ = (COMPRESSIONS[name] for name in ("gzip", "zstd", "xz"))
_GZIP_HIDING = 0x04 | 0x10
"""FEXTRA and FCOMMENT (RFC 1952): header fields that could hold any bytes, and no writer of
receipts sets (FNAME, which ``gzip FILE`` writes, is read past by zlib)."""


class ReceiptLines:
    """The lines of a receipts stream, decompressed if need be.

    After iteration, ``compression`` is ``"gzip"``, ``"zstd"`` or ``None``,
    ``truncated_tail`` says whether the stream ended inside a compressed frame (its partial
    data, if any, was the last line yielded, without a newline), ``stopped_at`` is the number
    of an overlong line that ended the stream and ``hidden_bytes`` what follows the last whole
    frame, if that is no frame of the file's format.
    """

    def __init__(self, stream: IO[bytes], path: str) -> None:
        self.stream = stream
        self.path = path
        self.compression: str | None = None
        self.truncated_tail = False
        self.stopped_at: int | None = None
        self.hidden_bytes: str | None = None
        read1 = getattr(stream, "read1", None)
        self._read: Callable[[int], bytes] = read1 if callable(read1) else stream.read

    def __iter__(self) -> Iterator[bytes]:
        return self._guarded()

    def _guarded(self) -> Iterator[bytes]:
        """The lines, with a failing read (EIO on ``/proc/self/mem``) as one InputError."""
        try:
            yield from self._iter()
        except OSError as exc:
            why = exc.strerror or str(exc)
            raise InputError(f"cannot read: {why}", path=self.path) from None

    def _iter(self) -> Iterator[bytes]:
        peek = getattr(self.stream, "peek", None)
        if callable(peek):  # look without consuming: a plain stream then reads at C speed
            head = peek(len(_XZ))
            if not any(head.startswith(m) or m.startswith(head) for m in (_GZIP, _ZSTD, _XZ)):
                return self._plain_lines()
        return self._lines(self._chunks())

    def _plain_lines(self) -> Iterator[bytes]:
        """A plain stream's lines through ``readline``, bounded as :meth:`_lines` bounds them."""
        readline = self.stream.readline
        number = 0
        while line := readline(MAX_LINE + 1):
            number += 1
            if len(line) > MAX_LINE and not line.endswith(b"\n"):
                self.stopped_at = number
                yield line + b"\n"  # longer than any real line, and not JSON
                return  # the rest of it is never read
            yield line

    def _chunks(self) -> Iterator[bytes]:
        """Decompressed data, in pieces of at most a few hundred KiB."""
        head = b""
        while len(head) < len(_XZ):
            more = self._read(CHUNK)
            if not more:
                break
            head += more
        if head.startswith(_GZIP):
            self.compression = "gzip"
            return self._gzip(head)
        if head.startswith(_ZSTD):
            self.compression = "zstd"
            return self._zstd(head)
        if head.startswith(_XZ):
            raise InputError("xz-compressed receipts are not supported (use .gz or .zst)",
                             path=self.path)  # fmt: skip
        return self._raw(head)

    def _raw(self, head: bytes) -> Iterator[bytes]:
        if head:
            yield head
        while chunk := self._read(CHUNK):
            yield chunk

    def _gzip(self, head: bytes) -> Iterator[bytes]:
        # max_length bounds the output of each call, so a decompression bomb streams like
        # anything else.
        def feed(member: Any, data: bytes) -> tuple[bytes, bytes]:
            out = member.decompress(data, CHUNK)
            return out, member.unused_data if member.eof else member.unconsumed_tail

        return self._frames("gzip", head, lambda: zlib.decompressobj(wbits=31), feed, zlib.error)

    def _zstd(self, head: bytes) -> Iterator[bytes]:
        try:
            import zstandard
        except ImportError:  # pragma: no cover - a runtime dependency
            raise InputError("reading zstd-compressed receipts needs the zstandard package",
                             path=self.path) from None  # fmt: skip

        def feed(frame: Any, data: bytes) -> tuple[bytes, memoryview]:
            view = memoryview(data)  # slices without copying the rest of the chunk
            out = frame.decompress(view[:_ZSTD_SLICE])  # zstd has no output limit
            rest = view[_ZSTD_SLICE:]
            return out, memoryview(frame.unused_data + bytes(rest)) if frame.eof else rest

        new = zstandard.ZstdDecompressor().decompressobj
        return self._frames("zstd", head, new, feed, zstandard.ZstdError)

    def _frames(
        self,
        kind: str,
        head: bytes,
        new: Callable[[], Any],
        feed: Callable[[Any, Any], tuple[bytes, Any]],
        error: type[Exception],
    ) -> Iterator[bytes]:
        """Decompressed data of one frame (gzip member, zstd frame) after another, as each
        flushed batch is a frame of its own: ``feed(frame, data)`` gives the output and the
        input left over, which after a frame's end starts the next.
        """
        frame, started, whole = new(), False, 0
        magic = _GZIP if kind == "gzip" else _ZSTD
        told = 4  # gzip: ID1 ID2 CM FLG; zstd: the magic number
        carry = b""  # the first bytes of a frame, too few to tell what it is yet
        for chunk in self._raw(head):
            data: Any = carry + chunk if carry else chunk
            carry = b""
            while data:
                if not started:
                    # A frame of the file's own format, or bytes hidden after the last one (a
                    # zstd skippable frame decodes to nothing, and would pass unseen; so do a
                    # gzip header's extra field and comment).
                    if len(data) < told:
                        carry = bytes(data)
                        break
                    if not self._frame_start(kind, whole, bytes(data[:told])):
                        return
                try:
                    out, data = feed(frame, data)
                except error as exc:
                    self._corrupt(kind, whole, str(exc))
                    return
                started = True
                if out:
                    yield out
                if frame.eof:
                    frame, started = new(), False
                    whole += 1
        if carry:
            if magic.startswith(carry[: len(magic)]):
                self.truncated_tail = True  # a frame torn after its first bytes
            else:
                self._hidden(kind, whole, f"it starts with {carry.hex()}")
        if started and not frame.eof:
            self.truncated_tail = True

    def _frame_start(self, kind: str, whole: int, first: bytes) -> bool:
        """Whether ``first``, a frame's first bytes, starts a frame that hides nothing."""
        if not first.startswith(_GZIP if kind == "gzip" else _ZSTD):
            self._hidden(kind, whole, f"it starts with {first.hex()}")
            return False
        if kind == "gzip" and first[3] & _GZIP_HIDING:
            self._hidden(kind, whole, "a gzip header with an extra field or a comment")
            return False
        return True

    def _corrupt(self, kind: str, whole: int, why: str) -> None:
        """Bad data after ``whole`` good frames: bytes hidden after them, or (none) not ours."""
        self._hidden(kind, whole, why)

    def _hidden(self, kind: str, whole: int, why: str) -> None:
        if not whole:
            raise InputError(f"not a valid {kind} stream ({why})", path=self.path)
        self.hidden_bytes = (f"after its {whole:,} whole {kind} frame(s) the file holds bytes "
                             f"that are no {kind} frame ({why}): hidden from every reader, "
                             "and not read")  # fmt: skip

    def _lines(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        partial: list[bytes] = []
        held = 0
        number = 0
        for chunk in chunks:
            start = 0
            while True:
                end = chunk.find(b"\n", start)
                if end < 0:
                    rest = chunk[start:]
                    if rest:
                        partial.append(rest)
                        held += len(rest)
                        if held > MAX_LINE:
                            self.stopped_at = number + 1
                            yield b"".join(partial)[: MAX_LINE + 1] + b"\n"
                            return  # the rest of it is never read
                    break
                number += 1
                piece = chunk[start : end + 1]
                if partial:
                    partial.append(piece)
                    piece, partial, held = b"".join(partial), [], 0
                if len(piece) > MAX_LINE + 1:
                    self.stopped_at = number
                    yield piece[: MAX_LINE + 1] + b"\n"
                    return
                yield piece
                start = end + 1
        if partial:
            yield b"".join(partial)


@contextmanager
def open_receipts(path: str) -> Iterator[ReceiptLines]:
    """The stream's lines (plain, gzip or zstd, told by magic bytes); ``-`` is standard input."""
    if path == "-":
        yield ReceiptLines(sys.stdin.buffer, path)
        return
    with open_file(path, "receipts file") as handle:
        yield ReceiptLines(handle, path)
