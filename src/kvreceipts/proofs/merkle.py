"""Merkle trees exactly as RFC 9162 §2.1 defines them (the tree of RFC 6962, Certificate
Transparency and Go's checksum database).

- Leaf hash ``SHA-256(0x00 || data)``, interior node ``SHA-256(0x01 || left || right)``, the
  tree of ``n`` leaves split at the largest power of two below ``n``; the empty tree's root is
  ``SHA-256("")``.
- :class:`Frontier` keeps a growing tree in O(log n) memory: the roots of its maximal complete
  subtrees, one per set bit of its size.
- Proof generation streams: a tree arrives as *nodes* ``(start, height, hash)`` in order,
  covering leaves ``[0, n)`` contiguously; a leaf is a node of height 0, and a run of leaves
  whose data is gone (a sink dropped them) arrives as its aligned subtrees
  (:func:`aligned_ranges`). The ranges a proof needs are computed first, then each is hashed
  as the nodes stream by, so memory stays O(log n) whatever the tree's size.
- Verification is §2.1.3.2 (inclusion) and §2.1.4.2 (consistency), step by step.

Ranges are half-open ``(start, end)`` leaf intervals; sizes and indices are ints.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from kvreceipts.proofs.errors import FormatError, ProofError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Frontier",
    "LostLeafError",
    "Node",
    "RangeCover",
    "aligned_ranges",
    "check_consistency",
    "check_inclusion",
    "consistency_proof",
    "consistency_proof_of",
    "consistency_ranges",
    "inclusion_proof",
    "inclusion_proof_of",
    "inclusion_ranges",
    "leaf_hash",
    "leaf_nodes",
    "lost_nodes",
    "node_hash",
    "range_hashes",
    "root_from_inclusion",
    "root_of",
    "verify_consistency",
    "verify_inclusion",
]

Node = tuple[int, int, bytes]
"""``(start, height, hash)``: the complete subtree of ``2**height`` leaves from ``start``
(a multiple of ``2**height``); a leaf is ``(index, 0, leaf_hash)``.
"""

HASH_SIZE = 32
_sha256 = hashlib.sha256
_LEAF_PREFIX = _sha256(b"\x00")
EMPTY_ROOT = _sha256(b"").digest()
"""The root of the empty tree (RFC 9162 §2.1.1: the hash of an empty string)."""


class LostLeafError(FormatError):
    """A proof needs a leaf or a range that lies strictly inside a node given as a whole
    subtree (its leaves were lost): their hashes cannot be computed.
    """


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``: the hash of one leaf."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``: the hash of an interior node."""
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n >= 2``): where the RFC splits."""
    return 1 << ((n - 1).bit_length() - 1)


class Frontier:
    """A Merkle tree that grows at its right edge, in O(log n) memory: the hashes of its
    maximal complete subtrees, largest (leftmost) first, one per set bit of :attr:`size`.
    """

    __slots__ = ("_hashes", "size")

    def __init__(self) -> None:
        self.size = 0
        """The number of leaves appended (a subtree of height h counts 2**h)."""
        self._hashes: list[bytes] = []

    @classmethod
    def from_hashes(cls, size: int, hashes: Sequence[bytes]) -> Frontier:
        """Rebuild a frontier from its :attr:`size` and :attr:`hashes`."""
        if size < 0 or len(hashes) != size.bit_count():
            raise FormatError(f"a frontier of size {size} holds {size.bit_count()} hashes, "
                              f"not {len(hashes)}")  # fmt: skip
        if any(not isinstance(h, bytes) or len(h) != HASH_SIZE for h in hashes):
            raise FormatError("a frontier's hashes are 32 bytes each")
        frontier = cls()
        frontier.size = size
        frontier._hashes = list(hashes)
        return frontier

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The roots of the complete subtrees, largest first."""
        return tuple(self._hashes)

    def copy(self) -> Frontier:
        """An independent frontier in the same state."""
        return Frontier.from_hashes(self.size, self._hashes)

    def append(self, leaf_hash: bytes) -> None:
        """Add the next leaf, given its leaf hash. Amortized one node hash per call."""
        n = self.size
        self.size = n + 1
        hashes = self._hashes
        while n & 1:
            leaf_hash = _sha256(b"\x01" + hashes.pop() + leaf_hash).digest()
            n >>= 1
        hashes.append(leaf_hash)

    def append_data(self, data: bytes) -> bytes:
        """Add the next leaf, given its data; returns its leaf hash. :meth:`append` with
        :func:`leaf_hash` in one call, for the sealer's hot path.
        """
        hasher = _LEAF_PREFIX.copy()  # cheaper than hashing the prefix anew
        hasher.update(data)
        leaf = h = hasher.digest()
        n = self.size
        self.size = n + 1
        hashes = self._hashes
        while n & 1:
            h = _sha256(b"\x01" + hashes.pop() + h).digest()
            n >>= 1
        hashes.append(h)
        return leaf

    def append_subtree(self, height: int, subtree_hash: bytes) -> None:
        """Add the next ``2**height`` leaves at once, given the hash of their complete
        subtree; the subtree must be aligned: :attr:`size` a multiple of ``2**height``.
        """
        if height < 0 or self.size & ((1 << height) - 1):
            raise FormatError(f"a subtree of height {height} cannot follow {self.size} "
                              "leaves: it must start at a multiple of its size")  # fmt: skip
        if len(subtree_hash) != HASH_SIZE:
            raise FormatError(f"a subtree hash is {HASH_SIZE} bytes, not {len(subtree_hash)}")
        n = self.size >> height
        self.size += 1 << height
        hashes = self._hashes
        while n & 1:
            subtree_hash = _sha256(b"\x01" + hashes.pop() + subtree_hash).digest()
            n >>= 1
        hashes.append(subtree_hash)

    def root(self) -> bytes:
        """The tree's root hash (``SHA-256("")`` when empty)."""
        hashes = self._hashes
        if not hashes:
            return EMPTY_ROOT
        root = hashes[-1]
        for i in range(len(hashes) - 2, -1, -1):
            root = _sha256(b"\x01" + hashes[i] + root).digest()
        return root


def lost_nodes(first: int, last: int, subtree_hashes: Sequence[bytes]) -> list[Node]:
    """The nodes of lost leaves ``first..last`` (inclusive), from the hashes a loss record
    carries, one per range of :func:`aligned_ranges` in order.
    """
    ranges = aligned_ranges(first, last)
    if len(subtree_hashes) != len(ranges):
        raise FormatError(f"leaves {first}..{last} are {len(ranges)} aligned subtrees, not "
                          f"{len(subtree_hashes)}")  # fmt: skip
    for h in subtree_hashes:
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            raise FormatError(f"a subtree hash is {HASH_SIZE} bytes")
    return [(start, height, h) for (start, height), h in zip(ranges, subtree_hashes, strict=True)]


def root_of(leaf_hashes: Iterable[bytes]) -> bytes:
    """MTH: the root of the tree whose leaves have these leaf hashes, in order."""
    frontier = Frontier()
    for h in leaf_hashes:
        frontier.append(h)
    return frontier.root()


def aligned_ranges(first: int, last: int) -> list[tuple[int, int]]:
    """The maximal aligned complete subtrees covering leaves ``first..last`` (inclusive), in
    order, as ``(start, height)``: each starts at a multiple of its ``2**height`` leaves.
    What a loss record carries, so that the tree's root still binds what was lost.
    """
    if not 0 <= first <= last:
        raise ValueError(f"leaves {first}..{last}: need 0 <= first <= last")
    out: list[tuple[int, int]] = []
    start, end = first, last + 1
    while start < end:
        # The largest power of two dividing start (any, for 0), no larger than what is left.
        height = (end - start).bit_length() - 1
        if start:
            height = min(height, (start & -start).bit_length() - 1)
        out.append((start, height))
        start += 1 << height
    return out


class RangeCover:
    """The maximal aligned subtrees over leaves ``first, first + 1, …`` appended in order
    (what a loss record carries for the range it stands for), with O(log n) memory.
    """

    __slots__ = ("_nodes", "end")

    def __init__(self, first: int) -> None:
        self._nodes: list[tuple[int, int, bytes]] = []  # (start, height, hash)
        self.end = first

    def append(self, leaf: bytes) -> None:
        """Add the next leaf hash of the range."""
        nodes = self._nodes
        start, height, digest = self.end, 0, leaf
        self.end += 1
        # Merge with the left sibling while both are whole and this pair is aligned.
        while nodes:
            left_start, left_height, left = nodes[-1]
            if left_height != height or left_start % (1 << (height + 1)):
                break
            nodes.pop()
            start, height, digest = left_start, height + 1, node_hash(left, digest)
        nodes.append((start, height, digest))

    def hashes(self) -> list[bytes]:
        """The subtrees' hashes, in order (their ranges are :func:`aligned_ranges`)."""
        return [digest for _start, _height, digest in self._nodes]


# --- Which ranges a proof needs (RFC 9162 §2.1.3.1 and §2.1.4.1) ---


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose roots make PATH(index, D[size]), in proof order (leaf to root)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    out: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index - lo < k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
    out.reverse()
    return out


def consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose roots make PROOF(old_size, D[new_size]), in proof order.
    ``0 < old_size <= new_size``; equal sizes need no hashes.
    """
    if not 0 < old_size <= new_size:
        raise ValueError(f"a consistency proof from size {old_size} to {new_size}: need "
                         "0 < old size <= new size")  # fmt: skip
    out: list[tuple[int, int]] = []
    lo, hi, m, whole = 0, new_size, old_size, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    if not whole:
        out.append((lo, hi))
    out.reverse()
    return out


# --- Hashing ranges as nodes stream by ---


def leaf_nodes(leaf_hashes: Iterable[bytes]) -> Iterator[Node]:
    """Leaf hashes, in order, as the node stream the proof functions read."""
    for i, h in enumerate(leaf_hashes):
        yield i, 0, h


def _node_end(start: int, height: int, h: bytes, pos: int, size: int) -> int:
    """Where a node of the stream ends, once it is checked to come next, be aligned and fit."""
    if start != pos:
        raise FormatError(f"the nodes are not contiguous: a node starts at leaf {start}, "
                          f"where leaf {pos} was due")  # fmt: skip
    if height < 0 or start & ((1 << height) - 1):
        raise FormatError(f"node ({start}, {height}): a subtree of height {height} must "
                          "start at a multiple of its size")  # fmt: skip
    if not isinstance(h, bytes) or len(h) != HASH_SIZE:
        raise FormatError(f"node ({start}, {height}): its hash is not {HASH_SIZE} bytes")
    end = start + (1 << height)
    if end > size:
        raise FormatError(f"node ({start}, {height}) covers leaves {start}..{end - 1}, "
                          f"past the tree's size {size}")  # fmt: skip
    return end


_NEVER = 1 << 64
"""Past any leaf: where the next event is when there is none."""


class _Ranges:
    """The state of :func:`range_hashes`: the ranges not begun, the leaves not yet seen, and
    the frontiers of the ranges under way. Its methods are the slow path, taken only at a
    node where a range starts or ends or a wanted leaf lies.
    """

    __slots__ = ("active", "next_end", "next_event", "order", "ranges", "results", "wanted")

    def __init__(self, ranges: Sequence[tuple[int, int]], wanted: list[int]) -> None:
        self.ranges = ranges
        # Ranges by start, the outer of two with one start first; wanted leaves reversed.
        order = sorted(range(len(ranges)), key=lambda i: (ranges[i][0], -ranges[i][1]))
        self.order = order[::-1]
        self.wanted = wanted[::-1]
        self.results: list[bytes | None] = [None] * len(ranges)
        self.active: list[tuple[int, int, Frontier]] = []  # (end, range number, frontier)
        self.next_end = self.next_event = _NEVER
        self._next_event()

    def _next_event(self) -> None:
        starts = [self.ranges[self.order[-1]][0]] if self.order else []
        self.next_event = min([*starts, *self.wanted[-1:]], default=_NEVER)

    def begin(self, start: int, height: int, end: int) -> None:
        """The node ``[start, end)`` holds a wanted leaf or a range's first leaf."""
        wanted, ranges, order = self.wanted, self.ranges, self.order
        while wanted and wanted[-1] < end:
            if height:
                raise LostLeafError(
                    f"leaf {wanted[-1]} was lost: it lies inside the subtree of leaves "
                    f"{start}..{end - 1}, of which only the root hash is known"
                )
            wanted.pop()
        while order and ranges[order[-1]][0] < end:
            number = order.pop()
            r_start, r_end = ranges[number]
            if r_start != start or r_end < end:
                raise LostLeafError(
                    f"leaves {r_start}..{r_end - 1} lie strictly inside the subtree of leaves "
                    f"{start}..{end - 1}, of which only the root hash is known"
                )
            self.active.append((r_end, number, Frontier()))
            self.next_end = min(self.next_end, r_end)
        self._next_event()

    def straddle(self, start: int, end: int) -> LostLeafError:
        """The error for a node that runs past the end of a range under way."""
        r_end, number, _ = min(self.active)
        return LostLeafError(
            f"leaves {self.ranges[number][0]}..{r_end - 1} end strictly inside the subtree of "
            f"leaves {start}..{end - 1}, of which only the root hash is known"
        )

    def finish(self, end: int) -> None:
        """Ranges under way that end at ``end`` are complete."""
        still = []
        for entry in self.active:
            if entry[0] == end:
                self.results[entry[1]] = entry[2].root()
            else:
                still.append(entry)
        self.active = still
        self.next_end = min((entry[0] for entry in still), default=_NEVER)


def range_hashes(  # noqa: PLR0912 - the per-node fast path is inline, on purpose
    nodes: Iterable[Node],
    ranges: Sequence[tuple[int, int]],
    size: int,
    *,
    leaves: Iterable[int] = (),
) -> list[bytes]:
    """The root of each of ``ranges`` (in the order given) over the tree of ``size`` leaves
    that ``nodes`` covers from leaf 0, in one pass with memory O(log n) per range.

    Nodes after leaf ``size`` are not read. Each range must start at a multiple of the
    power of two at or above its length, as every range of an RFC 9162 proof does. Every
    index in ``leaves`` must arrive as a leaf (height 0). Raises :class:`LostLeafError` when
    a range or one of ``leaves`` lies strictly inside a node, :class:`FormatError` when the
    nodes do not cover ``[0, size)`` contiguously with aligned subtrees.
    """
    for r_start, r_end in ranges:
        if not 0 <= r_start < r_end <= size:
            raise ValueError(f"range [{r_start}, {r_end}) is not within a tree of size {size}")
    wanted = sorted(set(leaves))
    if wanted and not 0 <= wanted[0] <= wanted[-1] < size:
        raise ValueError(f"leaf indices must be in a tree of size {size}")
    if size == 0:
        return []
    state = _Ranges(ranges, wanted)
    pos = 0
    for start, height, h in nodes:
        # The fast path, once per leaf: a leaf that comes next, with a 32-byte hash.
        if height or start != pos or type(h) is not bytes or len(h) != HASH_SIZE:
            end = _node_end(start, height, h, pos, size)
        else:
            end = pos + 1
        if state.next_event < end:
            state.begin(start, height, end)
        if state.active:
            if end > state.next_end:
                raise state.straddle(start, end)
            if height:
                for _, _, frontier in state.active:
                    frontier.append_subtree(height, h)
            else:
                for _, _, frontier in state.active:
                    frontier.append(h)
            if end == state.next_end:
                state.finish(end)
        pos = end
        if pos == size:
            break
    if pos != size:
        raise FormatError(f"the nodes end after {pos} leaves, short of the tree's size {size}")
    return [h for h in state.results if h is not None]


def inclusion_proof(nodes: Iterable[Node], index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]) (RFC 9162 §2.1.3.1), the audit path from the leaf to the root,
    from a node stream (see :func:`range_hashes`). The leaf itself must arrive as a leaf;
    :class:`LostLeafError` says when it was lost.
    """
    return range_hashes(nodes, inclusion_ranges(index, size), size, leaves=(index,))


def consistency_proof(nodes: Iterable[Node], old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[new_size]) (RFC 9162 §2.1.4.1) from a node stream."""
    return range_hashes(nodes, consistency_ranges(old_size, new_size), new_size)


def inclusion_proof_of(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """:func:`inclusion_proof` for a tree given as the list of its leaf hashes."""
    return inclusion_proof(leaf_nodes(leaf_hashes), index, len(leaf_hashes))


def consistency_proof_of(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """:func:`consistency_proof` from ``old_size`` to the tree of these leaf hashes."""
    return consistency_proof(leaf_nodes(leaf_hashes), old_size, len(leaf_hashes))


# --- Verification (RFC 9162 §2.1.3.2 and §2.1.4.2) ---


def _check_hashes(path: Sequence[bytes], what: str) -> None:
    for i, p in enumerate(path):
        if not isinstance(p, bytes) or len(p) != HASH_SIZE:
            raise ProofError(f"{what} hash {i} is not {HASH_SIZE} bytes")


def root_from_inclusion(leaf_hash: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes:
    """The root that ``path`` leads to from the leaf (§2.1.3.2 steps 1 to 4, and step 5's
    ``sn == 0``); :class:`ProofError` when the path cannot be one of this leaf and size.
    """
    _check_hashes([leaf_hash, *path], "inclusion")
    # 1. leaf_index must be below tree_size.
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not in a tree of size {size}")
    # 2. fn = leaf_index, sn = tree_size - 1; 3. r = hash.
    fn, sn, r = index, size - 1, leaf_hash
    # 4. For each p in the inclusion path:
    for p in path:
        if sn == 0:
            raise ProofError(f"the inclusion proof has {len(path)} hashes: more than leaf "
                             f"{index} of a tree of size {size} needs")  # fmt: skip
        if fn & 1 or fn == sn:
            r = _sha256(b"\x01" + p + r).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    # 5. sn must be 0.
    if sn != 0:
        raise ProofError(f"the inclusion proof has {len(path)} hashes: fewer than leaf "
                         f"{index} of a tree of size {size} needs")  # fmt: skip
    return r


def check_inclusion(
    leaf_hash: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 §2.1.3.2: :class:`ProofError` (saying what failed) unless ``path`` proves
    the leaf with hash ``leaf_hash`` at ``index`` in the tree of ``size`` with ``root``.
    """
    if root_from_inclusion(leaf_hash, index, size, path) != root:
        raise ProofError(f"the inclusion proof of leaf {index} does not lead to the root of "
                         f"the tree of size {size}")  # fmt: skip


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> bool:
    """:func:`check_inclusion` as a yes or no."""
    try:
        check_inclusion(leaf_hash, index, size, path, root)
    except ProofError:
        return False
    return True


def check_consistency(  # noqa: PLR0912 - the RFC's steps, one branch each
    old_size: int, new_size: int, path: Sequence[bytes], old_root: bytes, new_root: bytes
) -> None:
    """RFC 9162 §2.1.4.2: :class:`ProofError` (saying what failed) unless ``path`` proves
    that the tree of ``old_size`` with ``old_root`` is a prefix of the tree of ``new_size``
    with ``new_root``. Equal sizes (as Go's tlog allows) need an empty path and equal roots.
    """
    _check_hashes([old_root, new_root, *path], "consistency")
    if not 0 < old_size <= new_size:
        raise ProofError(f"a consistency proof from size {old_size} to {new_size}: need "
                         "0 < old size <= new size")  # fmt: skip
    if old_size == new_size:
        if path:
            raise ProofError("a consistency proof between equal sizes holds no hashes")
        if old_root != new_root:
            raise ProofError(f"the two trees of size {new_size} have different roots")
        return
    # 1. An empty path fails.
    if not path:
        raise ProofError(f"the consistency proof from size {old_size} to {new_size} is empty")
    # 2. If first is an exact power of 2, prepend first_hash.
    if old_size & (old_size - 1) == 0:
        path = [old_root, *path]
    # 3. fn = first - 1, sn = second - 1.
    fn, sn = old_size - 1, new_size - 1
    # 4. While LSB(fn) is set, right-shift both.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5. fr = sr = the first value of the path.
    fr = sr = path[0]
    # 6. For each subsequent value c:
    for c in path[1:]:
        if sn == 0:
            raise ProofError(f"the consistency proof has {len(path)} hashes: more than sizes "
                             f"{old_size} and {new_size} need")  # fmt: skip
        if fn & 1 or fn == sn:
            fr = _sha256(b"\x01" + c + fr).digest()
            sr = _sha256(b"\x01" + c + sr).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _sha256(b"\x01" + sr + c).digest()
        fn >>= 1
        sn >>= 1
    # 7. fr must be first_hash, sr second_hash, and sn 0.
    if sn != 0:
        raise ProofError(f"the consistency proof has {len(path)} hashes: fewer than sizes "
                         f"{old_size} and {new_size} need")  # fmt: skip
    if fr != old_root:
        raise ProofError(f"the consistency proof does not lead to the old root (size "
                         f"{old_size})")  # fmt: skip
    if sr != new_root:
        raise ProofError(f"the consistency proof does not lead to the new root (size "
                         f"{new_size})")  # fmt: skip


def verify_consistency(
    old_size: int, new_size: int, path: Sequence[bytes], old_root: bytes, new_root: bytes
) -> bool:
    """:func:`check_consistency` as a yes or no."""
    try:
        check_consistency(old_size, new_size, path, old_root, new_root)
    except ProofError:
        return False
    return True
