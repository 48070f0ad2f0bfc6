"""A run's Merkle tree (RFC 9162), rebuilt from its lines, against what its records state.

Every record of a run is a leaf (its line without the newline, at index ``seq``); a loss
record stands for its range by the hashes of the range's maximal aligned subtrees. A
``checkpoint`` or ``close`` record states the tree's size and root over the records before
it, and with a signing key a signed note of them; with ``--vkey`` each note is opened with
the verifier key and must name the run, that size and that root.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kvreceipts.checkpoints import origin
from kvreceipts.proofs.errors import FormatError, ProofError
from kvreceipts.proofs.merkle import Frontier, aligned_ranges

if TYPE_CHECKING:
    from kvreceipts.proofs.note import Verifier

__all__ = ["RunTree"]

_HEX = frozenset("0123456789abcdef")


def _hex_hash(value: object) -> bytes | None:
    if type(value) is not str or len(value) != 64 or not _HEX.issuperset(value):
        return None
    return bytes.fromhex(value)


class RunTree:
    """The leaves of one run so far, as a frontier (O(log n) memory); the verifier appends
    each record's leaf hash to :attr:`frontier` on its hot path.
    """

    __slots__ = ("frontier",)

    def __init__(self) -> None:
        self.frontier = Frontier()

    def lost(self, first: int, last: int, lost_tree: object) -> str | None:
        """Add a loss record's range from its subtree hashes; what is wrong, if anything."""
        if first != self.frontier.size:
            return (f"the loss record's range starts at seq {first}, but the tree holds "
                    f"{self.frontier.size} leaves")  # fmt: skip
        ranges = aligned_ranges(first, last)
        hashes = [_hex_hash(h) for h in lost_tree] if type(lost_tree) is list else []
        if len(hashes) != len(ranges) or None in hashes:
            return (f"lost_tree must hold the {len(ranges)} hex hash(es) of the aligned "
                    f"subtrees over seq {first}..{last}")  # fmt: skip
        for (_start, height), digest in zip(ranges, hashes, strict=True):
            assert digest is not None
            self.frontier.append_subtree(height, digest)
        return None

    def check(self, record: dict[str, Any], run_id: str, verifier: Verifier | None) -> list[str]:
        """What is wrong with the tree a checkpoint or close record states (and, given a
        verifier key, with its signed note).
        """
        problems = []
        size, root = record["tree_size"], _hex_hash(record["root"])
        actual = self.frontier.size
        if size != actual:
            problems.append(f"tree_size {size:,} but the run has {actual:,} records before it")
        elif root != self.frontier.root():
            problems.append("root is not the Merkle root of the records before it (a record "
                            "was edited, dropped, inserted or moved)")  # fmt: skip
        note = record.get("checkpoint")
        if verifier is not None and note is not None:
            problems.extend(_note_problems(note, run_id, size, root, verifier))
        return problems


def _note_problems(
    note: str, run_id: str, size: int, root: bytes | None, verifier: Verifier
) -> list[str]:
    from kvreceipts.proofs.checkpoint import open_checkpoint

    try:
        checkpoint, _opened = open_checkpoint(note, [verifier])
    except (ProofError, FormatError) as exc:
        return [f"checkpoint: {exc}"]
    problems = []
    if checkpoint.origin != origin(run_id):
        problems.append(f"checkpoint: signed for origin {checkpoint.origin[:60]}, not this "
                        f"run's {origin(run_id)[:60]}")  # fmt: skip
    if checkpoint.size != size or checkpoint.root != root:
        problems.append("checkpoint: the signed size and root are not the ones the record "
                        "states")  # fmt: skip
    return problems
