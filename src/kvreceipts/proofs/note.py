r"""Signed notes (C2SP ``signed-note``) with Ed25519 keys in the formats of Go's
``golang.org/x/mod/sumdb/note``, rule for rule.

- Verifier key: ``<name>+<8 hex key id>+<base64(0x01 || 32-byte public key)>``.
- Signer key: ``PRIVATE+KEY+<name>+<8 hex key id>+<base64(0x01 || 32-byte seed)>``.
- Key id: the first 4 bytes (big-endian) of ``SHA-256(name || "\n" || 0x01 || public key)``.
- A name is non-empty valid UTF-8 with no ``+`` and no Unicode white space.
- A note is its text (ending in ``\n``), a blank line, then one line per signature,
  ``— <name> <base64(4-byte key id || 64-byte signature of the text)>``.

:func:`open_note` applies Go's ``Open`` rules: valid UTF-8 without control characters other
than newline, a signature block after the last blank line, each line well formed, at most 100
signatures; a signature by a key not given (another name, or the same name with another id)
is unverified, not an error, but a note with no verified signature fails, and any signature
by a given key that does not verify fails.

Ed25519 comes from PyCA ``cryptography``, imported on first use.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kvreceipts.proofs.errors import FormatError, ProofError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "ALG_ED25519",
    "InvalidSignatureError",
    "MalformedNoteError",
    "NoteError",
    "OpenedNote",
    "Signature",
    "Signer",
    "UnverifiedNoteError",
    "Verifier",
    "generate",
    "is_valid_name",
    "key_id",
    "open",
    "open_note",
    "parse_signer",
    "parse_verifier",
    "sign",
]

ALG_ED25519 = 1
_SIGNER_PREFIX = "PRIVATE+KEY+"
_SIG_PREFIX = "— "  # an em dash and a space
_MAX_SIGNATURES = 100
# Go's unicode.IsSpace: these below U+0100, and the White_Space property above it.
_SPACES = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_HEX = frozenset("0123456789abcdefABCDEF")


class NoteError(ProofError):
    """A note that cannot be opened with the keys given."""


class MalformedNoteError(NoteError):
    """Not a signed note: Go's ``malformed note``."""


class UnverifiedNoteError(NoteError):
    """No signature on the note is by a key given (``note has no verifiable signatures``)."""


class InvalidSignatureError(NoteError):
    """A signature by a key given does not verify (``invalid signature for key …``)."""


def is_valid_name(name: str) -> bool:
    """Go's rule for key and signer names: non-empty, no ``+``, no white space."""
    return bool(name) and "+" not in name and not any(c in _SPACES for c in name)


def key_id(name: str, public_key: bytes) -> int:
    """The key id (a uint32) of an Ed25519 ``public_key`` (32 bytes) under ``name``."""
    digest = hashlib.sha256(b"%b\n%b%b" % (name.encode(), bytes([ALG_ED25519]), public_key))
    return int.from_bytes(digest.digest()[:4], "big")


def _b64decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class Verifier:
    """A public key that checks signatures: its name, key id and 32-byte Ed25519 key."""

    name: str
    key_id: int
    public_key: bytes

    @property
    def key_string(self) -> str:
        """The verifier key string, ``<name>+<id>+<base64>``."""
        return f"{self.name}+{self.key_id:08x}+{_b64(bytes([ALG_ED25519]) + self.public_key)}"

    @property
    def label(self) -> str:
        """``<name>+<id>``, as Go names a key in its errors."""
        return f"{self.name}+{self.key_id:08x}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's Ed25519 signature of ``message``."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class Signer:
    """A private key that signs notes: its name, key id and 32-byte Ed25519 seed (which
    its ``repr`` leaves out).
    """

    name: str
    key_id: int
    seed: bytes = field(repr=False)

    @property
    def key_string(self) -> str:
        """The signer key string, ``PRIVATE+KEY+<name>+<id>+<base64>``: a secret."""
        seed = _b64(bytes([ALG_ED25519]) + self.seed)
        return f"{_SIGNER_PREFIX}{self.name}+{self.key_id:08x}+{seed}"

    @property
    def verifier(self) -> Verifier:
        """The matching public key."""
        return Verifier(self.name, self.key_id, _public_key(self.seed))

    def sign_bytes(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)


def _public_key(seed: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def generate(name: str, *, seed: bytes | None = None) -> Signer:
    """A new Ed25519 key named ``name`` (from the OS's randomness, or from ``seed``, 32
    bytes, for tests); ``.verifier`` is its public half.
    """
    if not is_valid_name(name):
        raise FormatError(f"key name {name!r}: a name is non-empty, with no '+' and no spaces")
    if seed is None:
        seed = os.urandom(32)
    if len(seed) != 32:
        raise FormatError("an Ed25519 seed is 32 bytes")
    return Signer(name, key_id(name, _public_key(seed)), seed)


def _split_key(text: str) -> tuple[str, str, bytes | None]:
    """``name+hex+base64`` as (name, hex, decoded key or None); Go's ``chop`` twice."""
    name, _, rest = text.partition("+")
    hex_id, _, key64 = rest.partition("+")
    return name, hex_id, _b64decode(key64)


def _check_key(name: str, hex_id: str, key: bytes | None, what: str) -> tuple[int, bytes]:
    if len(hex_id) != 8 or not _HEX.issuperset(hex_id) or key is None or not key:
        prefix = _SIGNER_PREFIX if what == "signer" else ""
        raise FormatError(f"malformed {what} key string: expected {prefix}<name>+<8 hex "
                          "digits>+<base64 key>")  # fmt: skip
    if not is_valid_name(name):
        raise FormatError(f"malformed {what} key string: the key name {name!r} is empty or "
                          "holds '+' or a space")  # fmt: skip
    if key[0] != ALG_ED25519:
        raise FormatError(f"{what} key {name}: unknown key algorithm {key[0]} (1 is Ed25519)")
    if len(key) != 33:
        raise FormatError(f"{what} key {name}: an Ed25519 key is 32 bytes, not {len(key) - 1}")
    return int(hex_id, 16), key[1:]


def parse_verifier(text: str) -> Verifier:
    """A verifier key string (Go's ``NewVerifier``): surrounding white space is allowed; a
    signer key string is refused by name, without echoing it.
    """
    text = text.strip()
    if text.startswith(_SIGNER_PREFIX):
        raise FormatError("this is a signer (private) key, PRIVATE+KEY+…, where a verifier "
                          "(public) key is wanted: give the .pub file, and keep the .key "
                          "file secret")  # fmt: skip
    name, hex_id, key = _split_key(text)
    kid, public_key = _check_key(name, hex_id, key, "verifier")
    if kid != key_id(name, public_key):
        raise FormatError(f"verifier key {name}+{hex_id}: the key id does not match the key "
                          "(invalid verifier hash)")  # fmt: skip
    return Verifier(name, kid, public_key)


def parse_signer(text: str) -> Signer:
    """A signer key string (Go's ``NewSigner``); a verifier key string is refused by name."""
    text = text.strip()
    if not text.startswith(_SIGNER_PREFIX):
        name, hex_id, key = _split_key(text)
        if len(hex_id) == 8 and key:
            raise FormatError("this is a verifier (public) key, where a signer (private) key, "
                              "PRIVATE+KEY+…, is wanted: give the .key file")  # fmt: skip
        raise FormatError("malformed signer key string: expected PRIVATE+KEY+<name>+<8 hex "
                          "digits>+<base64 key>")  # fmt: skip
    name, hex_id, key = _split_key(text.removeprefix(_SIGNER_PREFIX))
    kid, seed = _check_key(name, hex_id, key, "signer")
    if kid != key_id(name, _public_key(seed)):
        raise FormatError(f"signer key {name}+{hex_id}: the key id does not match the key "
                          "(invalid signer hash)")  # fmt: skip
    return Signer(name, kid, seed)


@dataclass(frozen=True)
class Signature:
    """One signature line of a note: the key's name and id, and the base64 as written."""

    name: str
    key_id: int
    base64: str

    @property
    def label(self) -> str:
        """``<name>+<id>``."""
        return f"{self.name}+{self.key_id:08x}"


@dataclass(frozen=True)
class OpenedNote:
    """A note :func:`open_note` accepted: its text, the signatures it verified (at least
    one), and those by keys it was not given.
    """

    text: str
    signatures: tuple[Signature, ...]
    unverified: tuple[Signature, ...]

    @property
    def names(self) -> list[str]:
        """The names of the keys whose signatures verified."""
        return [s.name for s in self.signatures]


def _check_text(text: str, what: str) -> None:
    if any(c < " " and c != "\n" for c in text):
        raise MalformedNoteError(f"malformed note: the {what} holds a control character")


def sign(text: str, *signers: Signer) -> str:
    """The note of ``text`` (which must end in a newline) signed by each of ``signers``,
    byte for byte as Go's ``note.Sign`` writes it.
    """
    if not text.endswith("\n"):
        raise MalformedNoteError("malformed note: the text must end in a newline")
    _check_text(text, "text")
    message = text.encode()
    lines = []
    for signer in signers:
        if not is_valid_name(signer.name):
            raise FormatError(f"signer name {signer.name!r} is not a valid key name")
        raw = signer.key_id.to_bytes(4, "big") + signer.sign_bytes(message)
        lines.append(f"{_SIG_PREFIX}{signer.name} {_b64(raw)}\n")
    return text + "\n" + "".join(lines)


def _known(verifiers: Iterable[Verifier]) -> dict[tuple[str, int], Verifier]:
    known: dict[tuple[str, int], Verifier] = {}
    for v in verifiers:
        other = known.setdefault((v.name, v.key_id), v)
        if other != v:
            raise FormatError(f"ambiguous key {v.label}: two different keys with one name and id")
    return known


def _decoded(note: str | bytes) -> str:
    """The note as text, if it is valid UTF-8 (a str with lone surrogates is not)."""
    try:
        return (note.encode() if isinstance(note, str) else note).decode()
    except UnicodeError:
        raise MalformedNoteError("malformed note: not valid UTF-8") from None


def open_note(note: str | bytes, verifiers: Iterable[Verifier]) -> OpenedNote:
    """Open a signed note with the keys ``verifiers`` (Go's ``note.Open``): its text and the
    signatures that verified. Raises :class:`MalformedNoteError`,
    :class:`UnverifiedNoteError` (no signature by a key given; a key with the same name but
    another id is another key) or :class:`InvalidSignatureError`.
    """
    known = _known(verifiers)
    msg = _decoded(note)
    _check_text(msg, "note")
    split = msg.rfind("\n\n")
    if split < 0:
        raise MalformedNoteError("malformed note: no blank line before a signature block")
    text, block = msg[: split + 1], msg[split + 2 :]
    if not block.endswith("\n"):
        raise MalformedNoteError("malformed note: the signature block does not end in a newline")
    signatures: list[Signature] = []
    unverified: list[Signature] = []
    seen: set[tuple[str, int]] = set()
    seen_unverified: set[str] = set()
    message = text.encode()
    for number, line in enumerate(block[:-1].split("\n"), 1):
        if not line.startswith(_SIG_PREFIX):
            raise MalformedNoteError(f"malformed note: signature line {number} does not start "
                                     "with '— '")  # fmt: skip
        body = line[len(_SIG_PREFIX) :]
        name, _, b64 = body.partition(" ")
        raw = _b64decode(b64)
        if raw is None or not is_valid_name(name) or not b64 or len(raw) < 5:
            raise MalformedNoteError(f"malformed note: signature line {number} is not "
                                     "'— <name> <base64>'")  # fmt: skip
        if number > _MAX_SIGNATURES:
            raise MalformedNoteError(f"malformed note: more than {_MAX_SIGNATURES} signatures")
        sig = Signature(name, int.from_bytes(raw[:4], "big"), b64)
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            if body not in seen_unverified:
                seen_unverified.add(body)
                unverified.append(sig)
            continue
        if (sig.name, sig.key_id) in seen:
            continue
        seen.add((sig.name, sig.key_id))
        if not verifier.verify(message, raw[4:]):
            raise InvalidSignatureError(f"invalid signature for key {sig.label}: the note was "
                                        "changed after it was signed, or forged")  # fmt: skip
        signatures.append(sig)
    if not signatures:
        raise UnverifiedNoteError(_unverified_message(unverified, known))
    return OpenedNote(text, tuple(signatures), tuple(unverified))


open = open_note  # noqa: A001 - Go's name, note.Open


def _unverified_message(unverified: list[Signature], known: dict[tuple[str, int], Verifier]) -> str:
    signed = ", ".join(s.label for s in unverified) or "nobody"
    wanted = ", ".join(v.label for v in known.values()) or "no key"
    message = f"note has no verifiable signatures: it is signed by {signed}, not by {wanted}"
    names = {name for name, _ in known}
    if any(s.name in names for s in unverified):
        message += " (a key with the same name but another id is another key)"
    return message
