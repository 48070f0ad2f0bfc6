"""``kvreceipts verify-proof``: check a proof bundle with the run's verifier key alone, no
receipts file: the checkpoint's signature, then the record's inclusion in the signed tree
(or the consistency of an older checkpoint with the newest).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kvreceipts.commands.options import ReportFormat, ReportFormatOption
from kvreceipts.commands.output import Output
from kvreceipts.errors import InputError, UsageError, read_small

if TYPE_CHECKING:
    from kvreceipts.proofs.bundle import ConsistencyBundle, ProofBundle, Verified
    from kvreceipts.proofs.note import Verifier

__all__ = ["verify_proof"]

EXAMPLES = """
[bold]Examples[/bold]

  kvreceipts keygen audit -o audit && kvreceipts simulate -q --sign-key audit.key -o signed.jsonl
  kvreceipts prove signed.jsonl --seq 5 -o receipt-5.proof.json
  kvreceipts verify-proof receipt-5.proof.json --vkey audit.pub
  kvreceipts prove signed.jsonl --session chat-35 -o session.proof.json
  kvreceipts verify-proof session.proof.json --vkey audit.pub -f json | jq '.proofs | length'
  kvreceipts verify-proof grew.consistency.json --vkey audit.pub --old-checkpoint old.note

Exit status: 0 valid, 1 invalid (the output says what failed), 2 unusable input (not a
bundle, a bad or private key, a missing file).
"""

_LIMITS = {"proof bundle": 256 << 20, "checkpoint note": 1 << 20}


class _InvalidError(Exception):
    """What failed, for exit 1."""


def _read(path: Path, what: str) -> bytes:
    data: bytes = read_small(path, what, _LIMITS[what])
    return data


def _text(path: Path, what: str) -> str:
    text: str = read_small(path, what, _LIMITS[what], text=True)
    return text


def _receipt(record: str, run_id: str, leaf_index: int, where: str) -> dict[str, Any]:
    """The proven record as a receipt: a JSON object of this run, at this seq."""
    import json

    try:
        receipt = json.loads(record)
    except ValueError:
        receipt = None
    if not isinstance(receipt, dict):
        raise _InvalidError(f"{where}: the record is in the signed tree but is not a receipt (not "
                       "a JSON object)")  # fmt: skip
    if receipt.get("run_id") != run_id:
        raise _InvalidError(f"{where}: the record is of run {receipt.get('run_id')!r}, the bundle "
                       f"of run {run_id!r}")  # fmt: skip
    seq = receipt.get("seq")
    if type(seq) is not int or seq != leaf_index:
        raise _InvalidError(f"{where}: the record's seq is {seq!r}, its leaf_index {leaf_index}: "
                       "a record's leaf is its seq")  # fmt: skip
    return receipt


def _check(
    bundle: ProofBundle | ConsistencyBundle, verifier: Verifier, old: Path | None
) -> tuple[Verified, list[dict[str, Any]]]:
    from kvreceipts.proofs import bundle as bundles
    from kvreceipts.proofs.errors import ProofError
    from kvreceipts.proofs.note import MalformedNoteError

    try:
        if isinstance(bundle, bundles.ConsistencyBundle):
            if old is None:
                raise UsageError("a consistency bundle is checked against an older checkpoint: "
                                 "give --old-checkpoint NOTEFILE")  # fmt: skip
            old_note = _text(old, "checkpoint note")
            try:
                from kvreceipts.proofs.note import open_note

                open_note(old_note, [])
            except MalformedNoteError as exc:
                raise InputError(f"not a signed note: {exc}", path=str(old)) from None
            except ProofError:
                pass  # well formed; whose signature it bears is checked next
            return bundles.check_consistency_bundle(bundle, verifier, old_note), []
        if old is not None:
            raise UsageError("--old-checkpoint is for consistency bundles; this is an inclusion "
                             "bundle")  # fmt: skip
        verified = bundles.check_proof_bundle(bundle, verifier)
    except ProofError as exc:
        raise _InvalidError(str(exc)) from None
    receipts = []
    for i, entry in enumerate(bundle.proofs):
        where = f"proofs[{i}]" if bundle.multi else "record"
        receipts.append(_receipt(entry.record, bundle.run_id, entry.leaf_index, where))
    return verified, receipts


def verify_proof(
    bundle_path: Annotated[
        Path,
        typer.Argument(
            metavar="BUNDLE",
            help="A proof bundle (from kvreceipts prove): kvreceipts.proof/1 or "
            "kvreceipts.consistency/1 JSON.",
            show_default=False,
            dir_okay=False,
        ),
    ],
    vkey: Annotated[
        Path,
        typer.Option(
            "--vkey",
            metavar="PUBFILE",
            help="The run's verifier key file (PREFIX.pub from kvreceipts keygen).",
            show_default=False,
            dir_okay=False,
        ),
    ],
    old_checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--old-checkpoint",
            metavar="NOTEFILE",
            help="Consistency bundles: the older signed checkpoint of the run (a note file).",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,
    fmt: ReportFormatOption = ReportFormat.table,
) -> None:
    """Check a proof bundle with the verifier key alone: signature, key name and id, origin,
    size, and inclusion (or consistency with an older checkpoint).

    Any RFC 9162 and C2SP signed-note implementation can check the same bundle; this one
    also checks that the proven record is of the bundle's run and that its seq is its leaf
    index, and prints it. Exit status: 0 valid, 1 invalid, 2 unusable input.
    """
    from kvreceipts.proofs.bundle import load_bundle
    from kvreceipts.proofs.errors import FormatError

    out = Output(json_mode=fmt is ReportFormat.json)
    from kvreceipts.proofs.keyfiles import read_verifier

    verifier = read_verifier(vkey)
    try:
        bundle = load_bundle(_read(bundle_path, "proof bundle"))
    except FormatError as exc:
        raise InputError(str(exc), path=str(bundle_path)) from None
    try:
        verified, receipts = _check(bundle, verifier, old_checkpoint)
    except _InvalidError as exc:
        _report_invalid(out, str(bundle_path), str(exc))
        raise typer.Exit(1) from None
    if out.json_mode:
        out.json(_document(str(bundle_path), bundle, verified, receipts))
    else:
        _print(out, str(bundle_path), bundle, verified, receipts)


def _report_invalid(out: Output, path: str, reason: str) -> None:
    if out.json_mode:
        out.json({"valid": False, "bundle": path, "reason": reason})
        out.warn(f"{path}: INVALID: {reason}")
        return
    out.write(f"✗ {_cell(path)}: INVALID: {_cell(reason)}\n".encode())
    out.flush()
    if not out.stdout_is_terminal:
        out.warn(f"{path}: INVALID: {reason}")  # stdout may be a pipe nobody reads


def _document(
    path: str,
    bundle: ProofBundle | ConsistencyBundle,
    verified: Verified,
    receipts: list[dict[str, Any]],
) -> dict[str, Any]:
    from kvreceipts.proofs.bundle import ConsistencyBundle

    cp = verified.checkpoint
    document: dict[str, Any] = {"valid": True, "bundle": path, "run_id": bundle.run_id,
                                "origin": cp.origin, "signer": verified.signer}  # fmt: skip
    if isinstance(bundle, ConsistencyBundle):
        assert verified.old_checkpoint is not None
        return document | {"format": "kvreceipts.consistency/1", "old_size": bundle.old_size,
                           "old_root": verified.old_checkpoint.root.hex(),
                           "new_size": bundle.new_size, "root": cp.root.hex()}  # fmt: skip
    document |= {"format": "kvreceipts.proof/1", "tree_size": cp.size, "root": cp.root.hex()}
    if not bundle.multi:
        return document | {"leaf_index": bundle.proofs[0].leaf_index, "record": receipts[0]}
    if bundle.session_id is not None:
        document["session_id"] = bundle.session_id
    pairs = zip(bundle.proofs, receipts, strict=True)
    document["proofs"] = [{"leaf_index": e.leaf_index, "record": r} for e, r in pairs]
    return document


def _cell(value: Any) -> str:
    """A field's value on one line, with no control character (a signed record can hold
    anything a JSON string can).
    """
    import json

    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"),
                                                              ensure_ascii=False)  # fmt: skip
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _columns(rows: list[list[str]], right: set[int]) -> list[str]:
    """Rows as aligned text columns, two spaces apart (plain text: no rich to import, so
    that the whole process stays fast).
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                      for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
            for row in rows]  # fmt: skip


def _print(
    out: Output,
    path: str,
    bundle: ProofBundle | ConsistencyBundle,
    verified: Verified,
    receipts: list[dict[str, Any]],
) -> None:
    from kvreceipts.proofs.bundle import ConsistencyBundle

    cp = verified.checkpoint
    name, run = _cell(path), _cell(bundle.run_id)
    signed = f"signed by {_cell(verified.signer)}"
    if isinstance(bundle, ConsistencyBundle):
        assert verified.old_checkpoint is not None
        verdict = (f"✓ {name}: run {run}'s tree of {bundle.old_size:,} records (root "
                   f"{verified.old_checkpoint.root.hex()}) is a prefix of its tree of "
                   f"{bundle.new_size:,} (root {cp.root.hex()}), both {signed}")  # fmt: skip
        lines = [verdict]
    elif bundle.multi:
        title = f"{len(receipts):,} proven receipts of run {run}"
        if bundle.session_id is not None:
            title += f", session {_cell(bundle.session_id)}"
        columns = ("seq", "kind", "session_id", "reason", "block_size_bytes", "timestamp")
        header = [c.removesuffix("_id").removesuffix("_bytes") for c in columns]
        rows = [header, *([_cell(r.get(c, "")) for c in columns] for r in receipts)]
        table = _columns(rows, right={0, 4})
        verdict = (f"✓ {name}: {len(receipts):,} records are in run {run}'s tree of "
                   f"{cp.size:,} records (root {cp.root.hex()}), {signed}")  # fmt: skip
        lines = [title, "", table[0], "─" * len(table[0]), *table[1:], "", verdict]
    else:
        index = bundle.proofs[0].leaf_index
        rows = [[_cell(key), _cell(value)] for key, value in receipts[0].items()]
        verdict = (f"✓ {name}: record {index:,} is in run {run}'s tree of {cp.size:,} "
                   f"records (root {cp.root.hex()}), {signed}")  # fmt: skip
        lines = [f"proven receipt: run {run}, seq {index:,}", "",
                 *(f"  {line}" for line in _columns(rows, right=set())), "", verdict]  # fmt: skip
    out.write("".join(f"{line}\n" for line in lines).encode())
    out.flush()
