"""Key files as ``keygen`` writes them (one key string and a newline), read for a command:
any problem is an :class:`~kvreceipts.errors.InputError` (exit 2) naming the file, and a
signer key's text is never echoed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvreceipts.errors import InputError, read_small
from kvreceipts.proofs.errors import FormatError

if TYPE_CHECKING:
    from pathlib import Path

    from kvreceipts.proofs.note import Signer, Verifier

__all__ = ["read_signer", "read_verifier"]

_LIMIT = 64 << 10  # a key string is about 100 bytes


def _read(path: str | Path, what: str) -> str:
    text: str = read_small(path, what, _LIMIT, text=True)
    return text


def read_verifier(path: str | Path) -> Verifier:
    """The verifier key in ``path`` (a ``.pub`` file); a signer key is refused by name."""
    from kvreceipts.proofs.note import parse_verifier

    try:
        return parse_verifier(_read(path, "verifier key file"))
    except FormatError as exc:
        raise InputError(str(exc), path=str(path)) from None


def read_signer(path: str | Path) -> Signer:
    """The signer key in ``path`` (a ``.key`` file); a verifier key is refused by name."""
    from kvreceipts.proofs.note import parse_signer

    try:
        return parse_signer(_read(path, "signer key file"))
    except FormatError as exc:
        raise InputError(str(exc), path=str(path)) from None
