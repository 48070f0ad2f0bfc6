r"""Checkpoints (C2SP ``tlog-checkpoint``): the signed statement of a log's size and root.

The body is ``<origin>\n<size>\n<base64 root>\n`` and then any extension lines, each
ending in a newline; the origin names the log (non-empty; C2SP asks for no spaces and no
``+``, and Go's checksum database has spaces), the size is decimal without leading zeros,
the root is 32 bytes (a SHA-256 Merkle tree, RFC 9162). The body is the text of a signed
note (:mod:`.note`).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kvreceipts.proofs import note
from kvreceipts.proofs.errors import FormatError, ProofError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["Checkpoint", "format_checkpoint", "open_checkpoint", "parse_checkpoint",
           "sign_checkpoint"]  # fmt: skip

_ROOT_SIZE = 32


@dataclass(frozen=True)
class Checkpoint:
    """A log's origin, tree size and root hash, with any extension lines (without their
    newlines).
    """

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()


def _check_origin(origin: str) -> None:
    # C2SP: the origin MUST be non-empty and SHOULD hold no spaces and no '+' (Go's checksum
    # database's is "go.sum database tree"), so only the MUST is enforced.
    if not origin or "\n" in origin:
        raise FormatError(f"checkpoint origin {origin!r}: an origin is one non-empty line")


def format_checkpoint(checkpoint: Checkpoint) -> str:
    """The checkpoint's body: the text a signed note signs."""
    _check_origin(checkpoint.origin)
    if checkpoint.size < 0:
        raise FormatError(f"checkpoint size {checkpoint.size}: a size is not negative")
    if len(checkpoint.root) != _ROOT_SIZE:
        raise FormatError(f"checkpoint root: {_ROOT_SIZE} bytes, not {len(checkpoint.root)}")
    for line in checkpoint.extensions:
        if not line or "\n" in line:
            raise FormatError("a checkpoint extension line is non-empty and holds no newline")
    root = base64.b64encode(checkpoint.root).decode("ascii")
    lines = [checkpoint.origin, str(checkpoint.size), root, *checkpoint.extensions]
    return "".join(f"{line}\n" for line in lines)


def parse_checkpoint(body: str) -> Checkpoint:
    """The checkpoint a body states; :class:`FormatError` says which line is wrong."""
    if not body.endswith("\n"):
        raise FormatError("checkpoint: the body does not end in a newline")
    lines = body[:-1].split("\n")
    if len(lines) < 3:
        raise FormatError(f"checkpoint: {len(lines)} line(s), where origin, size and root "
                          "hash are needed")  # fmt: skip
    origin, size_text, root_text, *extensions = lines
    _check_origin(origin)
    if (
        not size_text.isascii()
        or not size_text.isdigit()
        or (size_text.startswith("0") and size_text != "0")
    ):
        raise FormatError(f"checkpoint line 2: the tree size {size_text!r} is not a decimal "
                          "number without leading zeros")  # fmt: skip
    size = int(size_text)
    if size >= 1 << 64:
        raise FormatError(f"checkpoint line 2: the tree size {size} does not fit in 64 bits")
    try:
        root = base64.b64decode(root_text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise FormatError("checkpoint line 3: the root hash is not base64") from None
    if len(root) != _ROOT_SIZE or base64.b64encode(root).decode() != root_text:
        raise FormatError(f"checkpoint line 3: the root hash is not {_ROOT_SIZE} bytes in "
                          "standard base64")  # fmt: skip
    if any(not line for line in extensions):
        raise FormatError("checkpoint: an empty extension line")
    return Checkpoint(origin, size, root, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signer: note.Signer) -> str:
    """The checkpoint as a signed note."""
    return note.sign(format_checkpoint(checkpoint), signer)


def open_checkpoint(
    signed: str | bytes, verifiers: Iterable[note.Verifier]
) -> tuple[Checkpoint, note.OpenedNote]:
    """Open a signed checkpoint (:func:`note.open_note`) and parse its body. A body that is
    not a checkpoint, under a valid signature, is a :class:`ProofError` too.
    """
    opened = note.open_note(signed, verifiers)
    try:
        return parse_checkpoint(opened.text), opened
    except FormatError as exc:
        raise ProofError(f"the signed note is not a checkpoint: {exc}") from None
