"""The hash chain that makes a receipt stream tamper-evident.

``digest`` is SHA-256 (HMAC-SHA-256 with a key) over the canonical JSON of the record without
its ``digest``: keys sorted, no spaces, UTF-8, as orjson writes it. ``prev_digest`` links each
record to the one before; the first record of a run links to 64 zeros. The line written out is
the canonical JSON itself with ``digest`` appended as the last key, so writing a receipt costs
one encode.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from kvreceipts.errors import InputError
from kvreceipts.schema import ZERO_DIGEST

if TYPE_CHECKING:
    from kvreceipts.receipts import Receipt

__all__ = ["HMAC_KEY_ENV", "Sealer", "canonical", "compute_digest", "read_hmac_key"]

HMAC_KEY_ENV = "KVRECEIPTS_HMAC_KEY_FILE"
_SORT = orjson.OPT_SORT_KEYS


def canonical(record: dict[str, Any]) -> bytes:
    """Canonical JSON bytes of ``record`` (which must not hold ``digest``)."""
    return orjson.dumps(record, option=_SORT)


def compute_digest(payload: bytes, key: bytes | None = None) -> str:
    """Hex SHA-256 of ``payload``, or HMAC-SHA-256 when ``key`` is given."""
    if key is None:
        return hashlib.sha256(payload).hexdigest()
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def read_hmac_key(path: str | Path) -> bytes:
    """Read an HMAC key file (its bytes, one trailing newline stripped)."""
    try:
        key = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read HMAC key file: {exc.strerror}", path=str(path)) from None
    key = key.removesuffix(b"\n").removesuffix(b"\r")
    if not key:
        raise InputError("HMAC key file is empty", path=str(path))
    return key


class Sealer:
    """Seals records in order: sets ``prev_digest`` and ``digest`` and builds the line.

    Call :meth:`seal` in ``seq`` order (the manager does, under its lock).
    """

    __slots__ = ("_key", "last_digest")

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key
        self.last_digest = ZERO_DIGEST

    def seal(self, record: Receipt, body: dict[str, Any] | None = None) -> bytes:
        """Link ``record`` to the chain; returns (and stores in ``record.line``) its JSON line.

        ``body`` is the record's ``to_dict()`` when the caller has already built it.
        """
        record.prev_digest = self.last_digest
        if body is None:
            body = record.to_dict()
        body["prev_digest"] = self.last_digest
        line = self._sign(record, body)
        self.last_digest = record.digest
        return line

    def seal_detached(self, record: Receipt) -> bytes:
        """Seal a record that stands beside the chain (a sink's ``loss`` record): its
        ``prev_digest`` is already set and the chain does not move.
        """
        return self._sign(record, record.to_dict())

    def _sign(self, record: Receipt, body: dict[str, Any]) -> bytes:
        payload = orjson.dumps(body, option=_SORT)
        record.digest = compute_digest(payload, self._key)
        record.line = b'%b,"digest":"%b"}\n' % (payload[:-1], record.digest.encode())
        return record.line
