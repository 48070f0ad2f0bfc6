"""Opening the files a user names, whatever their compression: one call for plain, gzip, zstd,
xz and bzip2 files and for standard input (``-``).

>>> with open_input("trace.jsonl.zst", "trace file") as stream:  # doctest: +SKIP
...     for line in stream:  # decompressed bytes, streamed
...         ...

The compression is told by the first bytes (magic numbers), not by the name, so a
``trace.jsonl`` that is really gzip is read too. Decompression streams: memory does not grow
with the file. Errors (missing file, a directory, corrupt or truncated compressed data) raise
:class:`~kvreceipts.errors.InputError`, which names the file.
"""

from __future__ import annotations

import io
import os
import sys
from typing import IO, TYPE_CHECKING, Any

from kvreceipts.errors import InputError, open_file

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["COMPRESSIONS", "InputStream", "open_input"]

COMPRESSIONS: dict[str, bytes] = {
    "gzip": b"\x1f\x8b",
    "zstd": b"\x28\xb5\x2f\xfd",
    "xz": b"\xfd7zXZ\x00",
    "bzip2": b"BZh",
}
"""Each compression read transparently, by its magic number."""

_STDIN: InputStream | None = None


class _Guarded(io.RawIOBase):
    """A decompressing stream whose errors become an :class:`InputError` naming the file."""

    def __init__(self, inner: Any, path: str, compression: str) -> None:
        super().__init__()
        self._inner = inner
        self._path = path
        self._compression = compression

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Buffer) -> int:
        try:
            return int(self._inner.readinto(buffer))
        except EOFError:
            raise InputError(
                f"the {self._compression} data ends early (a truncated file?)", path=self._path
            ) from None
        except Exception as exc:  # gzip: OSError; xz: LZMAError; zstd: ZstdError
            if isinstance(exc, InputError):
                raise
            raise InputError(f"corrupt {self._compression} data: {exc}", path=self._path) from None

    def close(self) -> None:
        if not self.closed:
            self._inner.close()
        super().close()


class InputStream(io.BufferedReader):
    """The decompressed bytes of an input, buffered; iterate it for lines.

    ``compression`` says what was undone (``None`` for a plain file), ``size`` is the file's
    size on disk (``None`` for a pipe or standard input), and :meth:`bytes_read` how much of it
    has been consumed so far: together they drive a progress bar, compressed or not.
    """

    def __init__(
        self, source: IO[bytes], path: str, compression: str | None, *, owned: bool
    ) -> None:
        raw: Any = source
        if compression is not None:
            try:
                raw = _Guarded(_decompressor(compression, source), path, compression)
            except BaseException:
                if owned:
                    source.close()
                raise
        super().__init__(raw, buffer_size=1 << 16)
        self.path = path
        self.compression = compression
        self.size = _regular_size(source)
        self._source = source
        self._owned = owned
        self.stdin: object = None
        """The ``sys.stdin.buffer`` this stream reads, if it reads standard input."""

    def bytes_read(self) -> int | None:
        """Bytes of the file (compressed, if it is) consumed so far; ``None`` if unknown."""
        try:
            return self._source.tell()
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        """Close the stream and the file (standard input stays open, and reusable)."""
        if not self._owned:
            return
        try:
            super().close()
        finally:
            self._source.close()


def _regular_size(source: IO[bytes]) -> int | None:
    try:
        status = os.fstat(source.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        return None
    import stat

    return status.st_size if stat.S_ISREG(status.st_mode) else None


def _decompressor(compression: str, source: IO[bytes]) -> Any:
    if compression == "gzip":
        import gzip

        return gzip.GzipFile(fileobj=source, mode="rb")
    if compression == "xz":
        import lzma

        return lzma.LZMAFile(source)
    if compression == "bzip2":
        import bz2

        return bz2.BZ2File(source)
    return _ZstdReader(source)


_ZSTD_SLICE = 256
"""Compressed bytes fed to zstd at a time. Its decompressor has no output limit and a block of
4 bytes can stand for 128 KiB, so small inputs are what bound its output (8 MiB at most)."""


class _ZstdReader:
    """zstd frames one after another, streamed; unlike ``stream_reader`` it notices a file cut
    off mid-frame (``EOFError``) instead of ending quietly. Memory is bounded: compressed data
    goes in :data:`_ZSTD_SLICE` bytes at a time, so a bomb streams like anything else.
    """

    def __init__(self, source: IO[bytes]) -> None:
        import zstandard

        self._new = zstandard.ZstdDecompressor().decompressobj
        self._source = source
        self._inner = self._new()
        self._input = memoryview(b"")
        self._pending = b""
        self._offset = 0
        self._started = False

    def readinto(self, buffer: Buffer) -> int:
        view = memoryview(buffer).cast("B")
        while self._offset >= len(self._pending):
            if not self._input:
                chunk = self._source.read(1 << 16)
                if not chunk:
                    if self._started and not self._inner.eof:
                        raise EOFError("zstd frame cut off")
                    return 0
                self._input = memoryview(chunk)
            if self._inner.eof:  # the next frame
                self._inner = self._new()
            self._started = True
            piece, self._input = self._input[:_ZSTD_SLICE], self._input[_ZSTD_SLICE:]
            self._pending, self._offset = self._inner.decompress(piece), 0
            if self._inner.eof and self._inner.unused_data:  # the next frame starts here
                self._input = memoryview(self._inner.unused_data + bytes(self._input))
        count = min(len(view), len(self._pending) - self._offset)
        view[:count] = self._pending[self._offset : self._offset + count]
        self._offset += count
        return count

    def close(self) -> None:
        self._pending = b""
        self._input = memoryview(b"")


def _compression(head: bytes) -> str | None:
    return next((name for name, magic in COMPRESSIONS.items() if head.startswith(magic)), None)


def open_input(path: str | os.PathLike[str], what: str = "input file") -> InputStream:
    """Open ``path`` for reading, decompressing it if its first bytes say it is compressed.

    ``-`` is standard input (compressed or not); opening it again returns the same stream,
    with nothing lost to a look at its first line, and closing it leaves stdin open. ``what``
    names the file in errors ("trace file", "receipts file").

    Raises:
        InputError: the file is missing, a directory or unreadable.
    """
    global _STDIN  # noqa: PLW0603 - one standard input per process
    name = os.fspath(path)
    if name == "-":
        stdin: Any = sys.stdin.buffer
        if _STDIN is None or _STDIN.closed or _STDIN.stdin is not stdin:
            reader = stdin if hasattr(stdin, "peek") else io.BufferedReader(stdin)
            head = reader.peek(8)[:8]
            _STDIN = InputStream(reader, "<stdin>", _compression(head), owned=False)
            _STDIN.stdin = stdin
        return _STDIN
    source = open_file(name, what)  # closed by InputStream
    try:
        head = source.peek(8)[:8]
    except OSError as exc:
        source.close()
        raise InputError(f"cannot read the {what}: {exc.strerror}", path=name) from None
    return InputStream(source, name, _compression(head), owned=True)
