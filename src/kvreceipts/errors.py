"""Errors a user can act on. The CLI prints them as one ``error: …`` line, never a traceback."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from io import BufferedReader

__all__ = ["InputError", "KvReceiptsError", "UsageError", "open_file", "read_small"]


class KvReceiptsError(Exception):
    """Base class of every error kvreceipts raises on purpose."""

    exit_code = 2


class UsageError(KvReceiptsError):
    """A bad option, name or value given by the user. ``key`` names the config key at fault,
    so that the command line can name its option instead.
    """

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class InputError(KvReceiptsError):
    """A file the user gave is missing or malformed; the message names file, line and field."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        where = path if line is None else f"{path}:{line}"
        super().__init__(f"{where}: {message}" if where else message)
        self.path = path
        self.line = line


def open_file(path: str, what: str) -> BufferedReader:
    """Open a file the user named for reading, as is (:func:`kvreceipts.inputs.open_input`
    also decompresses); failures become an :class:`InputError` that names the file and what
    it should have been (``what``: "trace file", "receipts file").
    """
    try:
        return Path(path).open("rb")
    except FileNotFoundError:
        raise InputError(f"{what} not found", path=path) from None
    except IsADirectoryError:
        raise InputError(f"is a directory, not a {what}", path=path) from None
    except OSError as exc:
        raise InputError(f"cannot read the {what}: {exc.strerror}", path=path) from None
    except ValueError:  # a NUL character
        raise InputError(f"not a file name, so not a {what}", path=path) from None


def read_small(path: str | Path, what: str, limit: int, *, text: bool = False) -> Any:
    """A small file's bytes (its text, with ``text``), refused past ``limit`` bytes: a key, a
    note or a bundle, read whole. Failures are one :class:`InputError` naming the file.
    """
    with open_file(str(path), what) as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as exc:
            raise InputError(f"cannot read the {what}: {exc.strerror}", path=str(path)) from None
    if len(data) > limit:
        raise InputError(f"larger than {limit >> 10:,} KiB: not a {what}", path=str(path))
    if not text:
        return data
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise InputError(f"not UTF-8 text, so not a {what}", path=str(path)) from None
