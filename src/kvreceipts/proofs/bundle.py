"""Proof bundles: what ``kvreceipts prove`` writes and ``verify-proof`` checks, JSON.

An inclusion bundle proves records of a run to anyone holding the run's verifier key::

    {"format": "kvreceipts.proof/1", "run_id": "…", "record": "<the exact line, no newline>",
     "leaf_index": 5, "tree_size": 1000, "inclusion": ["<hex>", …], "checkpoint": "<note>"}

and, for several records under one checkpoint (``prove --session``), ``proofs`` replaces the
three per-record fields (``"session_id"`` may name the session)::

    {"format": "kvreceipts.proof/1", "run_id": "…", "session_id": "…", "tree_size": 1000,
     "proofs": [{"record": "…", "leaf_index": 5, "inclusion": […]}, …], "checkpoint": "…"}

A consistency bundle proves that the run's tree at ``old_size`` is a prefix of the tree its
newest checkpoint signs::

    {"format": "kvreceipts.consistency/1", "run_id": "…", "old_size": 600, "new_size": 1000,
     "consistency": ["<hex>", …], "checkpoint": "<note>"}

The record is opaque here: its leaf is its UTF-8 bytes (RFC 9162 leaf hash). The checkpoint
is a signed note whose body is a C2SP checkpoint with the origin ``kvreceipts/run/<run_id>``.
Parsing is strict (no unknown or missing keys, a bool is not a number, hashes are 64
lowercase hex digits) and raises :class:`FormatError` naming the field; checking raises
:class:`ProofError` saying what failed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kvreceipts.proofs import checkpoint as checkpoints
from kvreceipts.proofs import merkle
from kvreceipts.proofs.errors import FormatError, ProofError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from kvreceipts.proofs.note import Verifier

__all__ = [
    "CONSISTENCY_FORMAT",
    "PROOF_FORMAT",
    "ConsistencyBundle",
    "InclusionEntry",
    "ProofBundle",
    "Verified",
    "check_consistency_bundle",
    "check_proof_bundle",
    "consistency_bundle",
    "load_bundle",
    "origin_for",
    "parse_bundle",
    "proof_bundle",
    "session_bundle",
]

PROOF_FORMAT = "kvreceipts.proof/1"
CONSISTENCY_FORMAT = "kvreceipts.consistency/1"
_MAX_SIZE = (1 << 63) - 1  # Go's int64, as tlog counts
_HEX = frozenset("0123456789abcdef")


def origin_for(run_id: str) -> str:
    """The checkpoint origin of a run: ``kvreceipts/run/<run_id>``."""
    return f"kvreceipts/run/{run_id}"


@dataclass(frozen=True)
class InclusionEntry:
    """One record, its leaf index and its audit path (leaf to root)."""

    record: str
    leaf_index: int
    inclusion: tuple[bytes, ...]

    @property
    def leaf_hash(self) -> bytes:
        """The record's leaf hash: SHA-256(0x00 || its UTF-8 bytes)."""
        return merkle.leaf_hash(self.record.encode())


@dataclass(frozen=True)
class ProofBundle:
    """A parsed ``kvreceipts.proof/1`` bundle: one entry, or several (``multi``)."""

    run_id: str
    tree_size: int
    checkpoint: str
    proofs: tuple[InclusionEntry, ...]
    multi: bool = False
    session_id: str | None = None


@dataclass(frozen=True)
class ConsistencyBundle:
    """A parsed ``kvreceipts.consistency/1`` bundle."""

    run_id: str
    old_size: int
    new_size: int
    consistency: tuple[bytes, ...]
    checkpoint: str


@dataclass(frozen=True)
class Verified:
    """What a bundle check established: the checkpoint signed by ``signer`` (``name+id``)
    and, for a consistency bundle, the older one it extends.
    """

    checkpoint: checkpoints.Checkpoint
    signer: str
    old_checkpoint: checkpoints.Checkpoint | None = None


# --- Building ---


def _hexes(hashes: Iterable[bytes]) -> list[str]:
    return [h.hex() for h in hashes]


def proof_bundle(
    *,
    run_id: str,
    record: str,
    leaf_index: int,
    tree_size: int,
    inclusion: Sequence[bytes],
    checkpoint: str,
) -> dict[str, Any]:
    """An inclusion bundle for one record, as a JSON-ready dict (checked by parsing it)."""
    document = {"format": PROOF_FORMAT, "run_id": run_id, "record": record,
                "leaf_index": leaf_index, "tree_size": tree_size,
                "inclusion": _hexes(inclusion), "checkpoint": checkpoint}  # fmt: skip
    parse_bundle(document)
    return document


def session_bundle(
    *,
    run_id: str,
    tree_size: int,
    checkpoint: str,
    proofs: Iterable[tuple[str, int, Sequence[bytes]]],
    session_id: str | None = None,
) -> dict[str, Any]:
    """An inclusion bundle for several records ``(record, leaf_index, inclusion)`` under one
    checkpoint, as a JSON-ready dict.
    """
    document: dict[str, Any] = {"format": PROOF_FORMAT, "run_id": run_id}
    if session_id is not None:
        document["session_id"] = session_id
    document |= {"tree_size": tree_size,
                 "proofs": [{"record": record, "leaf_index": index, "inclusion": _hexes(path)}
                            for record, index, path in proofs],
                 "checkpoint": checkpoint}  # fmt: skip
    parse_bundle(document)
    return document


def consistency_bundle(
    *, run_id: str, old_size: int, new_size: int, consistency: Sequence[bytes], checkpoint: str
) -> dict[str, Any]:
    """A consistency bundle, as a JSON-ready dict."""
    document = {"format": CONSISTENCY_FORMAT, "run_id": run_id, "old_size": old_size,
                "new_size": new_size, "consistency": _hexes(consistency),
                "checkpoint": checkpoint}  # fmt: skip
    parse_bundle(document)
    return document


# --- Parsing ---


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "an object", type(None): "null"}.get(
                type(value), type(value).__name__)  # fmt: skip


def _at(where: str) -> str:
    """``"proofs[2]."`` (a prefix of field names) as ``"proofs[2]: "``."""
    return f"{where.removesuffix('.')}: " if where else ""


def _keys(document: dict[str, Any], where: str, required: set[str], optional: set[str]) -> None:
    missing = sorted(required - document.keys())
    if missing:
        raise FormatError(f"{_at(where)}missing field {missing[0]!r}")
    unknown = sorted(document.keys() - required - optional)
    if unknown:
        raise FormatError(f"{_at(where)}unknown field {unknown[0]!r}")


def _str(document: dict[str, Any], key: str, where: str) -> str:
    value = document[key]
    if not isinstance(value, str):
        raise FormatError(f"{where}{key}: expected a string, found {_type_name(value)}")
    return value


def _size(document: dict[str, Any], key: str, where: str) -> int:
    value = document[key]
    if type(value) is not int:
        raise FormatError(f"{where}{key}: expected an integer, found {_type_name(value)}")
    if not 0 <= value <= _MAX_SIZE:
        raise FormatError(f"{where}{key}: {value} is out of range (0 to 2**63 - 1)")
    return value


def _hashes(document: dict[str, Any], key: str, where: str) -> tuple[bytes, ...]:
    value = document[key]
    if not isinstance(value, list):
        raise FormatError(f"{where}{key}: expected an array of hex hashes, found "
                          f"{_type_name(value)}")  # fmt: skip
    if len(value) > 64:
        raise FormatError(f"{where}{key}: {len(value)} hashes; no proof needs more than 64")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or len(item) != 64 or not _HEX.issuperset(item):
            raise FormatError(f"{where}{key}[{i}]: expected 64 lowercase hex digits")
        out.append(bytes.fromhex(item))
    return tuple(out)


def _run_id(document: dict[str, Any]) -> str:
    run_id = _str(document, "run_id", "")
    if not run_id or not run_id.isprintable() or any(c.isspace() or c == "+" for c in run_id):
        raise FormatError("run_id: expected a run id (printable, no spaces, no '+')")
    return run_id


def _entry(document: Any, where: str) -> InclusionEntry:
    if not isinstance(document, dict):
        raise FormatError(f"{_at(where)}expected an object, found "
                          f"{_type_name(document)}")  # fmt: skip
    _keys(document, where, {"record", "leaf_index", "inclusion"}, set())
    return _entry_fields(document, where)


def _entry_fields(document: dict[str, Any], where: str) -> InclusionEntry:
    record = _str(document, "record", where)
    if "\n" in record or "\r" in record:
        raise FormatError(f"{where}record: a record is one line, without its newline")
    return InclusionEntry(record, _size(document, "leaf_index", where),
                          _hashes(document, "inclusion", where))  # fmt: skip


def parse_bundle(document: Any) -> ProofBundle | ConsistencyBundle:
    """The bundle a decoded JSON document holds; :class:`FormatError` names the bad field."""
    if not isinstance(document, dict):
        raise FormatError(f"not a proof bundle: expected a JSON object, found "
                          f"{_type_name(document)}")  # fmt: skip
    kind = document.get("format")
    if kind == CONSISTENCY_FORMAT:
        _keys(document, "", {"format", "run_id", "old_size", "new_size", "consistency",
                             "checkpoint"}, set())  # fmt: skip
        return ConsistencyBundle(_run_id(document), _size(document, "old_size", ""),
                                 _size(document, "new_size", ""),
                                 _hashes(document, "consistency", ""),
                                 _str(document, "checkpoint", ""))  # fmt: skip
    if kind != PROOF_FORMAT:
        raise FormatError(f"not a proof bundle: format is {kind!r}, not {PROOF_FORMAT!r} or "
                          f"{CONSISTENCY_FORMAT!r}")  # fmt: skip
    common = {"format", "run_id", "tree_size", "checkpoint"}
    if "proofs" in document:
        _keys(document, "", common | {"proofs"}, {"session_id"})
        proofs = document["proofs"]
        if not isinstance(proofs, list) or not proofs:
            raise FormatError("proofs: expected a non-empty array of {record, leaf_index, "
                              "inclusion}")  # fmt: skip
        session_id = _str(document, "session_id", "") if "session_id" in document else None
        entries = tuple(_entry(p, f"proofs[{i}].") for i, p in enumerate(proofs))
        multi = True
    else:
        _keys(document, "", common | {"record", "leaf_index", "inclusion"}, set())
        entries, session_id, multi = (_entry_fields(document, ""),), None, False
    return ProofBundle(_run_id(document), _size(document, "tree_size", ""),
                       _str(document, "checkpoint", ""), entries, multi, session_id)  # fmt: skip


def _no_constants(name: str) -> Any:
    raise FormatError(f"not JSON: {name} is not a JSON number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise FormatError(f"field {key!r} appears twice")
        out[key] = value
    return out


def load_bundle(data: bytes) -> ProofBundle | ConsistencyBundle:
    """Decode and parse a bundle file's bytes (strict JSON: no NaN, no repeated keys)."""
    try:
        document = json.loads(data, parse_constant=_no_constants,
                              object_pairs_hook=_no_duplicates)  # fmt: skip
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"not JSON: {exc}") from None
    except RecursionError:
        raise FormatError("not a proof bundle: nested too deeply") from None
    return parse_bundle(document)


# --- Checking ---


def _open(signed: str, verifier: Verifier, run_id: str, what: str) -> checkpoints.Checkpoint:
    try:
        cp, _ = checkpoints.open_checkpoint(signed, [verifier])
    except ProofError as exc:
        raise ProofError(f"{what}: {exc}") from None
    if cp.origin != origin_for(run_id):
        raise ProofError(f"{what}: it is the checkpoint of {cp.origin!r}, not of this run "
                         f"({origin_for(run_id)!r})")  # fmt: skip
    return cp


def check_proof_bundle(bundle: ProofBundle, verifier: Verifier) -> Verified:
    """Check an inclusion bundle: the checkpoint's signature by ``verifier`` (name and key
    id), its origin and size, and each record's audit path to the signed root.
    """
    cp = _open(bundle.checkpoint, verifier, bundle.run_id, "checkpoint")
    if cp.size != bundle.tree_size:
        raise ProofError(f"checkpoint: it signs a tree of {cp.size} records, the bundle says "
                         f"tree_size {bundle.tree_size}")  # fmt: skip
    for i, entry in enumerate(bundle.proofs):
        where = f"proofs[{i}] (leaf {entry.leaf_index})" if bundle.multi else "inclusion"
        try:
            merkle.check_inclusion(entry.leaf_hash, entry.leaf_index, bundle.tree_size,
                                   entry.inclusion, cp.root)  # fmt: skip
        except ProofError as exc:
            raise ProofError(f"{where}: {exc}: the record, its leaf_index or the path was "
                             "changed, or it is not in this run") from None  # fmt: skip
    return Verified(cp, verifier.label)


def check_consistency_bundle(
    bundle: ConsistencyBundle, verifier: Verifier, old_note: str
) -> Verified:
    """Check a consistency bundle against ``old_note``, an older checkpoint of the same run
    signed by the same key: both signatures, origins and sizes, and the RFC 9162 proof
    from the old root to the new one.
    """
    cp = _open(bundle.checkpoint, verifier, bundle.run_id, "checkpoint")
    if cp.size != bundle.new_size:
        raise ProofError(f"checkpoint: it signs a tree of {cp.size} records, the bundle says "
                         f"new_size {bundle.new_size}")  # fmt: skip
    old = _open(old_note, verifier, bundle.run_id, "old checkpoint")
    if old.size != bundle.old_size:
        raise ProofError(f"old checkpoint: it signs a tree of {old.size} records, the bundle "
                         f"says old_size {bundle.old_size}")  # fmt: skip
    try:
        merkle.check_consistency(bundle.old_size, bundle.new_size, bundle.consistency,
                                 old.root, cp.root)  # fmt: skip
    except ProofError as exc:
        raise ProofError(f"consistency: {exc}: the run was rewritten after the old "
                         "checkpoint, or the proof was changed") from None  # fmt: skip
    return Verified(cp, verifier.label, old)
