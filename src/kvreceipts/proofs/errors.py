"""The two ways a proof input goes wrong: it does not check out, or it is not one at all.

The proof modules import nothing else from kvreceipts (but :mod:`.keyfiles`, which reads key
files for commands, raises kvreceipts' ``InputError``); commands turn :class:`FormatError`
into exit 2 (unusable input) and :class:`ProofError` into exit 1 (invalid).
"""

from __future__ import annotations

__all__ = ["FormatError", "ProofError"]


class ProofError(Exception):
    """A proof, note or signature that is well formed but does not check out."""


class FormatError(ValueError):
    """Text or data that is not in the expected format (a key string, a bundle, a node
    stream), so there is nothing to check.
    """
