"""Proofs of receipts for third parties: which records of a receipts file to prove, under
which signed checkpoint, and the Merkle proofs (:mod:`kvreceipts.proofs`) that say so.

A receipts file is read twice, streaming: once to find the run, the records asked for and
the run's newest signed checkpoint, once to hash the run's leaves into the proof. Memory is
O(log n) per proof whatever the file's size; only each line's kind, run and seq are decoded,
but for the few records (loss, checkpoint, close) whose fields the proof needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import orjson

from kvreceipts.errors import InputError
from kvreceipts.proofs.merkle import (
    aligned_ranges,
    consistency_ranges,
    inclusion_ranges,
    range_hashes,
)
from kvreceipts.proofs.merkle import leaf_hash as _leaf_hash

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from kvreceipts.proofs.merkle import Node

__all__ = ["Proved", "RunScan", "consistency", "inclusions", "scan"]

_TREE_KINDS = frozenset(("checkpoint", "close"))


class _Head(msgspec.Struct):
    """What every line is decoded to (the other fields are skipped, in C)."""

    kind: str
    run_id: str
    seq: int


_head = msgspec.json.Decoder(_Head).decode


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
    records: int = 0


def _records(lines: Iterable[bytes], path: str) -> Iterator[tuple[int, bytes, _Head]]:
    for number, raw in enumerate(lines, 1):
        line = raw[:-1] if raw.endswith(b"\n") else raw
        try:
            head = _head(line)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise InputError(f"line {number}: not a kvreceipts receipt (run "
                             "`kvreceipts verify` on it first)", path=path) from None  # fmt: skip
        yield number, line, head


def _choose_run(run: str | None, seen: dict[str, int], path: str) -> str:
    if run is not None:
        if run not in seen:
            raise InputError(f"no run {run[:40]} in the file", path=path)
        return run
    if len(seen) != 1:
        names = ", ".join(list(seen)[:5]) or "none"
        raise InputError(f"the file holds {len(seen)} runs ({names}); name one with --run",
                         path=path)  # fmt: skip
    return next(iter(seen))


def scan(
    lines: Iterable[bytes],
    path: str,
    *,
    run: str | None = None,
    wanted: Callable[[_Head, bytes], bool] | None = None,
) -> RunScan:
    """Pass one: the run (``run``, or the file's only one), its newest signed checkpoint,
    and the records ``wanted`` picks (by their decoded head and line).
    """
    seen: dict[str, int] = {}
    scans: dict[str, RunScan] = {}
    for _number, line, head in _records(lines, path):
        run_id = head.run_id
        if run is not None and run_id != run:
            continue
        found = scans.get(run_id)
        if found is None:
            if len(scans) >= 64 and run is None:
                raise InputError("the file holds more than 64 runs; name one with --run",
                                 path=path)  # fmt: skip
            found = scans[run_id] = RunScan(run_id)
            seen[run_id] = 0
        found.records += 1
        kind = head.kind
        if kind in _TREE_KINDS:
            record = orjson.loads(line)
            note = record.get("checkpoint")
            if type(note) is str and type(record.get("tree_size")) is int:
                found.tree_size, found.checkpoint = record["tree_size"], note
        elif kind == "loss":
            record = orjson.loads(line)
            found.lost.append((record["first_seq"], record["last_seq"]))
            continue
        if wanted is not None and wanted(head, line):
            found.targets.append(Proved(head.seq, line))
    chosen = scans[_choose_run(run, seen, path)]
    if not chosen.checkpoint:
        raise InputError(f"run {chosen.run_id[:40]} has no signed checkpoint to prove "
                         "against (write the run with --sign-key)", path=path)  # fmt: skip
    return chosen


def _nodes(lines: Iterable[bytes], path: str, run_id: str, size: int) -> Iterator[Node]:
    """Pass two: the run's tree as a node stream (a loss record's range as its subtrees)."""
    for _number, line, head in _records(lines, path):
        if head.run_id != run_id:
            continue
        if head.kind == "loss":
            record = orjson.loads(line)
            ranges = aligned_ranges(record["first_seq"], record["last_seq"])
            for (start, height), digest in zip(ranges, record["lost_tree"], strict=True):
                yield start, height, bytes.fromhex(digest)
        elif head.seq < size:
            yield head.seq, 0, _leaf_hash(line)
        else:
            return


def inclusions(
    lines: Iterable[bytes], path: str, found: RunScan, targets: list[Proved]
) -> list[list[bytes]]:
    """The RFC 9162 audit path of each target under ``found``'s checkpoint, in one pass."""
    size = found.tree_size
    for target in targets:
        for first, last in found.lost:
            if first <= target.seq <= last:
                raise InputError(f"seq {target.seq} of run {found.run_id[:40]} was lost "
                                 "(a loss record stands for it): it cannot be proven",
                                 path=path)  # fmt: skip
        if target.seq >= size:
            raise InputError(f"seq {target.seq} comes after the newest signed checkpoint "
                             f"(tree size {size})", path=path)  # fmt: skip
    # Proofs of many leaves share their large ranges: hash each distinct range once.
    per_target = [inclusion_ranges(t.seq, size) for t in targets]
    distinct = sorted({r for ranges in per_target for r in ranges})
    hashes = dict(zip(distinct, range_hashes(
        _nodes(lines, path, found.run_id, size), distinct, size,
        leaves=[t.seq for t in targets],
    ), strict=True))  # fmt: skip
    return [[hashes[r] for r in ranges] for ranges in per_target]


def consistency(lines: Iterable[bytes], path: str, found: RunScan, old_size: int) -> list[bytes]:
    """PROOF(old_size, D[n]) for the newest signed checkpoint's tree of n leaves."""
    size = found.tree_size
    if not 0 < old_size <= size:
        raise InputError(f"--from-size {old_size}: the newest signed checkpoint of run "
                         f"{found.run_id[:40]} has {size:,} leaves; give a size from 1 to "
                         f"{size:,}", path=path)  # fmt: skip
    ranges = consistency_ranges(old_size, size)
    return range_hashes(_nodes(lines, path, found.run_id, size), ranges, size)


def record_json(line: bytes) -> dict[str, Any]:
    """A proved record's fields (for printing)."""
    value: dict[str, Any] = orjson.loads(line)
    return value
