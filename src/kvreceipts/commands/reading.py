"""Opening a receipts file (or standard input) for the reading commands."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING

from kvreceipts.errors import open_input

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["open_receipts"]


@contextmanager
def open_receipts(path: str) -> Iterator[IO[bytes]]:
    """The file's bytes, line by line; ``-`` is standard input."""
    if path == "-":
        yield sys.stdin.buffer
        return
    with open_input(path, "receipts file") as handle:
        yield handle
