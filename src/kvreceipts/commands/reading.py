"""Opening a receipts file (or standard input) for the reading commands."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

from kvreceipts.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["open_receipts"]


@contextmanager
def open_receipts(path: str) -> Iterator[IO[bytes]]:
    """The file's bytes, line by line; ``-`` is standard input."""
    if path == "-":
        yield sys.stdin.buffer
        return
    try:
        handle = Path(path).open("rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise InputError("receipts file not found", path=path) from None
    except IsADirectoryError:
        raise InputError("is a directory, not a receipts file", path=path) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path=path) from None
    with handle:
        yield handle
