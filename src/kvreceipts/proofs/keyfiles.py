"""Key files as ``keygen`` writes them (one key string and a newline), read for a command:
any problem is an :class:`~kvreceipts.errors.InputError` (exit 2) naming the file, and a
signer key's text is never echoed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvreceipts.errors import InputError, open_file
from kvreceipts.proofs.errors import FormatError

if TYPE_CHECKING:
    from pathlib import Path

    from kvreceipts.proofs.note import Signer, Verifier

__all__ = ["read_signer", "read_verifier"]

_LIMIT = 64 << 10  # a key string is about 100 bytes


def _read(path: str | Path, what: str) -> str:
    with open_file(str(path), what) as handle:
        try:
            data = handle.read(_LIMIT + 1)
        except OSError as exc:
            raise InputError(f"cannot read the {what}: {exc.strerror}", path=str(path)) from None
    if len(data) > _LIMIT:
        raise InputError(f"larger than {_LIMIT >> 10} KiB: not a {what}", path=str(path))
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise InputError(f"not UTF-8 text, so not a {what}", path=str(path)) from None


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
