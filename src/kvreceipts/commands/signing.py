"""Reading the Ed25519 key files of ``keygen`` for the commands that check signatures."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvreceipts.checkpoints import read_key_text
from kvreceipts.errors import InputError

if TYPE_CHECKING:
    from pathlib import Path

    from kvreceipts.proofs.note import Verifier

__all__ = ["read_verifier"]


def read_verifier(path: Path) -> Verifier:
    """The verifier key in ``path`` (a ``.pub`` file); a signer key there is an error."""
    from kvreceipts.proofs.errors import ProofError
    from kvreceipts.proofs.note import parse_verifier

    text = read_key_text(path, "verifier key")
    try:
        return parse_verifier(text)
    except (ProofError, ValueError) as exc:
        raise InputError(str(exc), path=str(path)) from None
