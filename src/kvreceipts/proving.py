"""Proofs of receipts for third parties: which records of a receipts file to prove, under
which signed checkpoint, and the Merkle proofs (:mod:`kvreceipts.proofs`) that say so.

The run's newest signed checkpoint is read from the end of a plain file (a signed run's close
record is its last line); a compressed file, or a session's receipts, take a first streaming
pass. One streaming pass then hashes the run's leaves into the proof. Memory is O(log n) per
proof plus one chunk of leaf hashes, whatever the file's size.

Both passes keep per-line work to C calls: a canonical line is searched for its ``kind`` and
``run_id`` members (in canonical JSON a quote inside a string is always escaped, so
``"kind":"loss"`` cannot match inside a value), and only the few records whose fields a
proof needs (loss, checkpoint, close, the records asked for) are parsed. The second pass
hashes whole chunks of ``2**CHUNK_HEIGHT`` leaves level by level and hands each on as one aligned
subtree; the chunks a proof reaches into are handed on leaf by leaf.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from kvreceipts.errors import InputError, open_file
from kvreceipts.inputs import COMPRESSIONS
from kvreceipts.proofs.errors import FormatError
from kvreceipts.proofs.merkle import (
    LostLeafError,
    aligned_ranges,
    consistency_ranges,
    inclusion_ranges,
    range_hashes,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence
    from contextlib import AbstractContextManager

    from kvreceipts.proofs.merkle import Node

    Opener = Callable[[], AbstractContextManager[Iterable[bytes]]]

__all__ = [
    "CHUNK_HEIGHT", "Proved", "RunScan", "consistency", "consistency_bundle", "find_run",
    "inclusion_bundle", "inclusions", "is_compressed", "newest_checkpoint", "scan",
]  # fmt: skip

CHUNK_HEIGHT = 14
"""Leaves hashed as one subtree at a time: 16,384 (512 KiB of leaf hashes)."""
_CHUNK = 1 << CHUNK_HEIGHT
_MAX_RUNS = 64
_sha256 = hashlib.sha256
_TREE = (b'"kind":"checkpoint"', b'"kind":"close"')
_LOSS = b'"kind":"loss"'
_EVICTION = b'"kind":"eviction"'
_RUN = b'"run_id":'
_HEX = frozenset("0123456789abcdef")
_BLOCK = 1 << 16
MAX_LINE = 1 << 20
"""A longer line is no receipt (as the receipts reader bounds lines)."""


@dataclass(slots=True)
class Proved:
    """A record asked for: its exact line (no newline) and its leaf index."""

    seq: int
    line: bytes


@dataclass(slots=True)
class RunScan:
    """What the first pass found of the run to prove."""

    run_id: str
    tree_size: int = 0
    """Size of the newest signed checkpoint's tree (0: none yet)."""
    checkpoint: str = ""
    """That checkpoint's signed note."""
    targets: list[Proved] = field(default_factory=list)
    lost: list[tuple[int, int]] = field(default_factory=list)
    """Seq ranges declared lost by loss records."""
    named: bool = False
    """The run was named (``--run``): other runs' lines are passed over, not an error."""


def _run_of(line: bytes) -> bytes | None:
    """The JSON string of a canonical line's ``run_id`` (quotes included)."""
    at = line.find(_RUN)
    if at < 0:
        return None
    start = at + len(_RUN)
    end = line.find(b'"', start + 1)
    while end > 0 and line[end - 1] == 0x5C:  # an escaped quote: the id goes on
        end = line.find(b'"', end + 1)
    return line[start : end + 1] if end > 0 else None


def _parse(line: bytes, number: int, path: str) -> dict[str, Any]:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        record = None
    if type(record) is not dict:
        raise InputError(f"line {number}: not a kvreceipts receipt (run `kvreceipts verify` "
                         "on it first)", path=path)  # fmt: skip
    return record


def _loss_range(line: bytes, number: int, path: str) -> tuple[int, int, list[bytes]]:
    """A loss record's range and subtree hashes, typed (the file may be anyone's)."""
    record = _parse(line, number, path)
    first, last, tree = record.get("first_seq"), record.get("last_seq"), record.get("lost_tree")
    if type(first) is int and type(last) is int and 0 <= first <= last and type(tree) is list:
        hashes = [bytes.fromhex(h) for h in tree
                  if type(h) is str and len(h) == 64 and _HEX.issuperset(h)]  # fmt: skip
        if len(hashes) == len(tree) == len(aligned_ranges(first, last)):
            return first, last, hashes
    raise InputError(f"line {number}: a loss record whose range or lost_tree is malformed (run "
                     "`kvreceipts verify` on the file)", path=path)  # fmt: skip


def scan(  # noqa: PLR0912 - one pass; each branch is one kind of line
    lines: Iterable[bytes],
    path: str,
    *,
    run: str | None = None,
    session: str | None = None,
) -> RunScan:
    """Pass one: the run (``run``, or the file's only one), its newest signed checkpoint,
    and (with ``session``) that session's eviction receipts.
    """
    named = orjson.dumps(run) if run is not None else None
    wanted = b'"session_id":' + orjson.dumps(session) if session is not None else None
    scans: dict[bytes, RunScan] = {}
    member, found = b"", RunScan("")  # the last run seen: most lines are of it
    for number, raw in enumerate(lines, 1):
        line = raw[:-1] if raw[-1:] == b"\n" else raw
        if not member or member not in line:
            run_json = _run_of(line)
            if run_json is None:
                raise InputError(f"line {number}: not a kvreceipts receipt (run `kvreceipts "
                                 "verify` on it first)", path=path)  # fmt: skip
            if named is not None and run_json != named:
                continue
            if run_json not in scans:
                if len(scans) >= _MAX_RUNS:
                    raise InputError(f"the file holds more than {_MAX_RUNS} runs; name one "
                                     "with --run", path=path)  # fmt: skip
                scans[run_json] = RunScan(str(orjson.loads(run_json)))
            member, found = _RUN + run_json, scans[run_json]
        if _LOSS in line:
            found.lost.append(_loss_range(line, number, path)[:2])
        elif _TREE[0] in line or _TREE[1] in line:
            record = _parse(line, number, path)
            note, size = record.get("checkpoint"), record.get("tree_size")
            if type(note) is str and type(size) is int:
                found.tree_size, found.checkpoint = size, note
        elif wanted is not None and wanted in line and _EVICTION in line:
            record = _parse(line, number, path)
            if record.get("session_id") == session and type(record.get("seq")) is int:
                found.targets.append(Proved(record["seq"], line))
    if named is not None and named not in scans:
        raise InputError(f"no run {str(run)[:40]} in the file", path=path)
    if len(scans) != 1:
        names = ", ".join(s.run_id[:20] for s in list(scans.values())[:5]) or "none"
        raise InputError(f"the file holds {len(scans)} runs ({names}); name one with --run",
                         path=path)  # fmt: skip
    chosen = next(iter(scans.values()))
    chosen.named = run is not None
    return _signed(chosen, path)


def _signed(found: RunScan, path: str) -> RunScan:
    if not found.checkpoint:
        raise InputError(f"run {found.run_id[:40]} has no signed checkpoint to prove "
                         "against (write the run with --sign-key)", path=path)  # fmt: skip
    return found


def newest_checkpoint(handle: BinaryIO, path: str, run: str | None) -> RunScan | None:
    """The newest signed checkpoint (of ``run``, or of the last record's run) of a plain
    file, read from its end backwards: a signed run's close record is its last line, so this
    reads a few KiB where :func:`scan` reads the whole file. ``None``: found none.
    """
    named = orjson.dumps(run) if run is not None else None
    pos, carry = handle.seek(0, 2), b""
    while pos > 0:
        step = min(_BLOCK, pos)
        pos -= step
        handle.seek(pos)
        pieces = (handle.read(step) + carry).split(b"\n")
        carry = pieces.pop(0) if pos else b""
        for line in reversed([carry, *pieces] if not pos else pieces):
            if (_TREE[0] in line or _TREE[1] in line) and b'"checkpoint":"' in line:
                record = _parse(line, 0, path)
                run_json = orjson.dumps(record.get("run_id"))
                note, size = record.get("checkpoint"), record.get("tree_size")
                if (named is None or run_json == named) and type(note) is str and \
                        type(size) is int:  # fmt: skip
                    return RunScan(str(record["run_id"]), size, note, named=run is not None)
        if len(carry) > MAX_LINE:
            return None
    return None


def is_compressed(head: bytes) -> bool:
    """Whether a file's first bytes are a gzip, zstd or xz magic (it cannot be read backwards)."""
    return any(head.startswith(magic) for magic in COMPRESSIONS.values())


def _chunk_root(hashes: list[bytes]) -> bytes:
    """The root of a complete subtree (a power of two of leaf hashes), level by level."""
    while len(hashes) > 1:
        pairs = iter(hashes)
        hashes = [
            _sha256(b"\x01" + left + right).digest()
            for left, right in zip(pairs, pairs, strict=False)
        ]
    return hashes[0]


def _nodes(
    lines: Iterable[bytes],
    path: str,
    found: RunScan,
    *,
    fine: set[int],
    chunk: int,
    capture: dict[int, bytes],
) -> Iterator[Node]:
    """Pass two: the run's first ``found.tree_size`` leaves as a node stream. Each aligned
    chunk of ``chunk`` leaves becomes one subtree node, but those in ``fine`` (chunk numbers
    a proof reaches into) and any after a loss until the next chunk boundary; a loss
    record's range arrives as its subtrees. The lines of the leaves named in ``capture``
    are kept there; another run's line is an error unless the run was named.
    """
    size, member = found.tree_size, _RUN + orjson.dumps(found.run_id)
    height = chunk.bit_length() - 1
    pending: list[bytes] = []
    base = 0  # the leaf index of pending[0], or of the next leaf
    for number, raw in enumerate(lines, 1):
        pos = base + len(pending)
        if pos >= size:
            break
        line = raw[:-1] if raw[-1:] == b"\n" else raw
        if member not in line:
            if not found.named:
                raise InputError(f"line {number}: the file holds another run than "
                                 f"{found.run_id[:40]}; name one with --run",
                                 path=path)  # fmt: skip
            continue
        if _LOSS in line:  # the chunk being collected is cut: its leaves go one by one
            yield from ((base + i, 0, h) for i, h in enumerate(pending))
            pending = []
            first, last, hashes = _loss_range(line, number, path)
            found.lost.append((first, last))
            for (start, tall), digest in zip(aligned_ranges(first, last), hashes, strict=True):
                yield start, tall, digest
            base = last + 1
            continue
        if pos in capture:
            capture[pos] = line
        leaf = _sha256(b"\x00" + line).digest()
        if pending or (not pos % chunk and pos // chunk not in fine and pos + chunk <= size):
            pending.append(leaf)
            if len(pending) == chunk:
                yield base, height, _chunk_root(pending)
                base, pending = base + chunk, []
        else:
            yield pos, 0, leaf
            base = pos + 1
    yield from ((base + i, 0, h) for i, h in enumerate(pending))


def _hashed(
    open_lines: Opener,
    path: str,
    found: RunScan,
    ranges: Sequence[tuple[int, int]],
    *,
    fine_leaves: Iterable[int],
    leaves: Sequence[int] = (),
) -> tuple[list[bytes], dict[int, bytes]]:
    """The roots of ``ranges`` over the run's tree in one pass, and the lines of ``leaves``.
    If a range falls inside a chunk hashed whole, once more leaf by leaf (correct whatever
    the ranges); a leaf inside a lost range is an error.
    """
    size = found.tree_size
    fine = {leaf // _CHUNK for leaf in fine_leaves} | {(size - 1) // _CHUNK}
    for chunk in (_CHUNK, 1):
        capture = dict.fromkeys(leaves, b"")
        found.lost.clear()
        try:
            with open_lines() as lines:
                nodes = _nodes(lines, path, found, fine=fine, chunk=chunk, capture=capture)
                return range_hashes(nodes, ranges, size, leaves=leaves), capture
        except LostLeafError as exc:
            lost = [leaf for leaf in leaves for a, b in found.lost if a <= leaf <= b]
            if lost:
                raise InputError(f"seq {lost[0]} of run {found.run_id[:40]} was lost (a loss "
                                 "record stands for it): it cannot be proven",
                                 path=path) from None  # fmt: skip
            if chunk == 1:
                raise InputError(f"run {found.run_id[:40]}: the proof needs records that were "
                                 f"lost ({exc})", path=path) from None  # fmt: skip
        except FormatError as exc:  # the run's records do not cover its tree
            raise InputError(f"run {found.run_id[:40]}: {exc} (run `kvreceipts verify` on "
                             "the file)", path=path) from None  # fmt: skip
    raise AssertionError  # the leaf-by-leaf pass returns or raises


def inclusions(
    open_lines: Opener, path: str, found: RunScan, seqs: Sequence[int]
) -> tuple[list[list[bytes]], dict[int, bytes]]:
    """The RFC 9162 audit path of each seq under ``found``'s checkpoint, in one pass, and the
    line of each.
    """
    size = found.tree_size
    for seq in seqs:
        if seq >= size:
            raise InputError(f"seq {seq} is not in run {found.run_id[:40]}'s newest signed "
                             f"checkpoint (tree size {size:,})", path=path)  # fmt: skip
    # Proofs of many leaves share their large ranges: hash each distinct range once.
    per_seq = [inclusion_ranges(seq, size) for seq in seqs]
    distinct = sorted({r for ranges in per_seq for r in ranges})
    roots, lines = _hashed(open_lines, path, found, distinct, fine_leaves=seqs, leaves=seqs)
    hashes = dict(zip(distinct, roots, strict=True))
    return [[hashes[r] for r in ranges] for ranges in per_seq], lines


def consistency(open_lines: Opener, path: str, found: RunScan, old_size: int) -> list[bytes]:
    """PROOF(old_size, D[n]) for the newest signed checkpoint's tree of n leaves."""
    size = found.tree_size
    if not 0 < old_size <= size:
        raise InputError(f"--from-size {old_size}: the newest signed checkpoint of run "
                         f"{found.run_id[:40]} has {size:,} leaves; give a size from 1 to "
                         f"{size:,}", path=path)  # fmt: skip
    ranges = consistency_ranges(old_size, size)
    fine = (old_size - 1, old_size)
    return _hashed(open_lines, path, found, ranges, fine_leaves=fine)[0]


def find_run(path: str, open_lines: Opener, *, run: str | None, session: str | None) -> RunScan:
    """The run to prove and its newest signed checkpoint: read from the end of a plain file
    (a signed run's close record is its last line), else found by :func:`scan`, which also
    collects ``session``'s receipts.
    """
    if session is None:
        with open_file(path, "receipts file") as handle:
            if not is_compressed(handle.peek(8)):
                found = newest_checkpoint(handle, path, run)
                if found is not None:
                    return found
    with open_lines() as lines:
        return scan(lines, path, run=run, session=session)


def inclusion_bundle(
    open_lines: Opener,
    path: str,
    found: RunScan,
    *,
    seq: int | None = None,
    session: str | None = None,
) -> tuple[dict[str, Any], str]:
    """A ``kvreceipts.proof/1`` bundle of the record ``seq``, or of every eviction receipt of
    ``session`` (found by :func:`scan`), and what it proves in words.
    """
    from kvreceipts.proofs import bundle as bundles

    seqs = [seq] if seq is not None else [t.seq for t in found.targets]
    if not seqs:
        raise InputError(f"no eviction receipt of session {str(session)[:60]} in run "
                         f"{found.run_id[:40]}", path=path)  # fmt: skip
    paths, lines = inclusions(open_lines, path, found, seqs)
    if seq is not None:
        if not lines[seq]:
            raise InputError(f"seq {seq} is not in run {found.run_id[:40]}", path=path)
        document = bundles.proof_bundle(
            run_id=found.run_id, record=lines[seq].decode(), leaf_index=seq,
            tree_size=found.tree_size, inclusion=paths[0], checkpoint=found.checkpoint,
        )  # fmt: skip
        return document, f"seq {seq}"
    document = bundles.session_bundle(
        run_id=found.run_id, tree_size=found.tree_size, checkpoint=found.checkpoint,
        proofs=[(lines[s].decode(), s, p) for s, p in zip(seqs, paths, strict=True)],
        session_id=session,
    )  # fmt: skip
    return document, f"{len(seqs):,} receipt(s) of session {session}"


def consistency_bundle(
    open_lines: Opener, path: str, found: RunScan, old_size: int
) -> tuple[dict[str, Any], str]:
    """A ``kvreceipts.consistency/1`` bundle from the tree of ``old_size`` to the newest
    signed checkpoint's, and what it proves in words.
    """
    from kvreceipts.proofs import bundle as bundles

    document = bundles.consistency_bundle(
        run_id=found.run_id, old_size=old_size, new_size=found.tree_size,
        consistency=consistency(open_lines, path, found, old_size),
        checkpoint=found.checkpoint,
    )  # fmt: skip
    return document, f"tree size {old_size:,} → {found.tree_size:,}"
