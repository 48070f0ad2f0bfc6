"""The hash chain that makes a receipt stream tamper-evident.

A sealed line is the record's canonical JSON without ``digest`` (keys sorted, no spaces, UTF-8,
as orjson writes it) with ``"digest":"…"`` appended as the last key. The digest is SHA-256 (or
HMAC-SHA-256 with a key) over the previous record's digest, as 64 ASCII hex digits, followed by
that canonical JSON: each record commits to everything before it, so the link needs no field of
its own in the line. A run's chain starts from 64 zeros.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from binascii import hexlify
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from kvreceipts.errors import InputError
from kvreceipts.ids import ZERO_DIGEST
from kvreceipts.proofs.merkle import Frontier

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "DIGEST_SUFFIX_LEN",
    "HMAC_KEY_ENV",
    "Sealer",
    "canonical",
    "chain_digest",
    "key_id",
    "read_hmac_key",
]

HMAC_KEY_ENV = "KVRECEIPTS_HMAC_KEY_FILE"
DIGEST_SUFFIX_LEN = len(b',"digest":"') + 64 + len(b'"}')
"""Bytes the sealer appends to a record's canonical JSON (its closing brace replaced)."""
_SORT = orjson.OPT_SORT_KEYS
_sha256 = hashlib.sha256


def canonical(record: dict[str, Any]) -> bytes:
    """Canonical JSON bytes of ``record`` (which must not hold ``digest``)."""
    return orjson.dumps(record, option=_SORT)


def key_id(key: bytes) -> str:
    """A short name for an HMAC key that reveals nothing about it: 16 hex digits of an HMAC
    of a fixed label, so two files name the same key the same way.
    """
    return hmac.new(key, b"kvreceipts key id", hashlib.sha256).hexdigest()[:16]


def chain_digest(prev_digest: str, payload: bytes, key: bytes | None = None) -> str:
    """The digest of a record whose canonical JSON is ``payload``, after ``prev_digest``."""
    if key is None:
        return hashlib.sha256(prev_digest.encode() + payload).hexdigest()
    return hmac.new(key, prev_digest.encode() + payload, hashlib.sha256).hexdigest()


def read_hmac_key(path: str | Path, *, warn: Callable[[str], object] | None = None) -> bytes:
    """Read an HMAC key file (its bytes, one trailing newline stripped). With ``warn``, a key
    file its group or others can read is reported through it, once (the key is still used).
    """
    try:
        with Path(path).open("rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            key = handle.read()
    except OSError as exc:
        raise InputError(f"cannot read HMAC key file: {exc.strerror}", path=str(path)) from None
    key = key.removesuffix(b"\n").removesuffix(b"\r")
    if not key:
        raise InputError("HMAC key file is empty", path=str(path))
    exposed = mode & (stat.S_IRGRP | stat.S_IROTH)
    if warn is not None and stat.S_ISREG(mode) and exposed:
        who = "its group and everyone" if exposed == stat.S_IRGRP | stat.S_IROTH else \
            "its group" if exposed == stat.S_IRGRP else "everyone"  # fmt: skip
        warn(f"{path}: the HMAC key file can be read by {who} (mode {stat.S_IMODE(mode):04o}); "
             f"anyone who can read it can forge receipts: chmod 600 {path}")  # fmt: skip
    return key


class Sealer:
    """Seals records of one run in order, remembers the chain head, and keeps the run's
    Merkle tree (RFC 9162) as its frontier: every sealed line is a leaf, its index the
    record's seq.

    ``alg`` and ``key_id`` are what every record must state (the digest covers them).
    """

    __slots__ = ("_mac", "_prev", "alg", "key_id", "last_digest", "last_leaf", "tree")

    def __init__(self, key: bytes | None = None) -> None:
        self.alg = "sha256" if key is None else "hmac-sha256"
        self.key_id = None if key is None else key_id(key)
        # HMAC's keyed state, made once and copied per record.
        self._mac = None if key is None else hmac.new(key, digestmod=hashlib.sha256)
        self.last_digest = ZERO_DIGEST
        self._prev = ZERO_DIGEST.encode()
        self.tree = Frontier()
        self.last_leaf = b""
        """Leaf hash of the last sealed line."""

    def stamp(self, body: dict[str, Any]) -> dict[str, Any]:
        """Add the fields that name how ``body`` is sealed."""
        body["alg"] = self.alg
        if self.key_id is not None:
            body["key_id"] = self.key_id
        return body

    def _digest(self, prev: bytes, payload: bytes) -> bytes:
        if self._mac is None:
            return hashlib.sha256(prev + payload).hexdigest().encode()
        mac = self._mac.copy()
        mac.update(prev)
        mac.update(payload)
        return mac.hexdigest().encode()

    def seal(self, payload: bytes) -> tuple[str, bytes]:
        """Link the record whose canonical JSON is ``payload`` to the chain: its digest and
        its line. The caller guarantees ``payload`` is canonical and stamped.
        """
        return self.seal_body(payload[:-1])

    def seal_body(self, body: bytes) -> tuple[str, bytes]:
        """:meth:`seal` for a canonical JSON given without its closing brace, as the lean
        template writes it: the line is then its body and the digest, with nothing cut off.
        """
        if self._mac is None:  # inline: this runs once per receipt
            digest = hexlify(_sha256(b"".join((self._prev, body, b"}"))).digest())
        else:
            digest = self._digest(self._prev, body + b"}")
        self._prev = digest
        self.last_digest = text = digest.decode()
        line = b"".join((body, b',"digest":"', digest, b'"}'))
        self.last_leaf = self.tree.append_data(line)  # the leaf is the line without "\n"
        return text, line + b"\n"

    def root(self) -> str:
        """The Merkle root of every line sealed so far, in hex."""
        return self.tree.root().hex()

    def seal_dict(self, body: dict[str, Any]) -> tuple[str, bytes]:
        """:meth:`seal` for a record given as a dict (stamped here)."""
        return self.seal(canonical(self.stamp(body)))

    def seal_beside(self, prev_digest: str, body: dict[str, Any]) -> tuple[str, bytes]:
        """Seal a record that stands beside the chain (a sink's ``loss`` record): it links
        to ``prev_digest`` and the chain does not move.
        """
        payload = canonical(self.stamp(body))
        digest = self._digest(prev_digest.encode(), payload)
        return digest.decode(), b'%b,"digest":"%b"}\n' % (payload[:-1], digest)
