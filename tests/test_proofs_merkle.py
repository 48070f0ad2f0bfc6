"""RFC 9162 Merkle trees: the reference tree of Certificate Transparency / Trillian, then
streaming with lost ranges. (Go's own tlog checks our proofs in test_proofs_go.py.)
"""

from __future__ import annotations

import contextlib
import hashlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvreceipts.proofs.errors import FormatError, ProofError
from kvreceipts.proofs.merkle import (
    EMPTY_ROOT,
    Frontier,
    LostLeafError,
    Node,
    aligned_ranges,
    check_consistency,
    check_inclusion,
    consistency_proof,
    consistency_proof_of,
    inclusion_proof,
    inclusion_proof_of,
    leaf_hash,
    lost_nodes,
    node_hash,
    range_hashes,
    root_of,
    verify_consistency,
    verify_inclusion,
)

h = bytes.fromhex

# The reference tree of transparency-dev/merkle (formerly Trillian and
# certificate-transparency-go), testonly/constants.go: LeafInputs(), NodeHashes(), RootHashes().
LEAVES = [h(x) for x in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                          "606162636465666768696a6b6c6d6e6f")]  # fmt: skip
LEAF_HASHES = [h(x) for x in (
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
)]  # fmt: skip
LEVEL1 = [h(x) for x in (
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
)]  # fmt: skip
LEVEL2 = [h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
          h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4")]  # fmt: skip
ROOTS = [h(x) for x in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]  # fmt: skip

# transparency-dev/merkle testonly/reference_test.go, TestRefInclusionProof: (index, size, path).
INCLUSION = [
    (0, 1, []),
    (0, 2, [LEAF_HASHES[1]]),
    (1, 2, [LEAF_HASHES[0]]),
    (2, 3, [LEVEL1[0]]),
    (1, 5, [LEAF_HASHES[0], LEVEL1[1], LEAF_HASHES[4]]),
    (0, 8, [LEAF_HASHES[1], LEVEL1[1], LEVEL2[1]]),
    (5, 8, [LEAF_HASHES[4], LEVEL1[3], LEVEL2[0]]),
]
# The same file, TestRefConsistencyProof: (size1, size2, proof).
CONSISTENCY = [
    (1, 1, []),
    (1, 8, [LEAF_HASHES[1], LEVEL1[1], LEVEL2[1]]),
    (2, 5, [LEVEL1[1], LEAF_HASHES[4]]),
    (6, 8, [LEVEL1[2], LEVEL1[3], LEVEL2[0]]),
]


def test_leaf_and_node_hashes_are_the_reference_ones() -> None:
    assert [leaf_hash(x) for x in LEAVES] == LEAF_HASHES
    assert [node_hash(LEAF_HASHES[i], LEAF_HASHES[i + 1]) for i in (0, 2, 4, 6)] == LEVEL1
    assert node_hash(LEVEL1[0], LEVEL1[1]) == LEVEL2[0]
    assert EMPTY_ROOT == ROOTS[0] == hashlib.sha256(b"").digest()


def test_roots_of_every_prefix_are_the_reference_roots() -> None:
    frontier = Frontier()
    assert frontier.root() == ROOTS[0]
    for n in range(1, 9):
        frontier.append(LEAF_HASHES[n - 1])
        assert frontier.size == n
        assert frontier.root() == ROOTS[n], n
        assert root_of(LEAF_HASHES[:n]) == ROOTS[n]
        assert len(frontier.hashes) == n.bit_count()


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_inclusion_proofs_are_the_reference_ones(index: int, size: int, path: list[bytes]) -> None:
    assert inclusion_proof_of(LEAF_HASHES[:size], index) == path
    check_inclusion(LEAF_HASHES[index], index, size, path, ROOTS[size])


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY)
def test_consistency_proofs_are_the_reference_ones(old: int, new: int, path: list[bytes]) -> None:
    assert consistency_proof_of(LEAF_HASHES[:new], old) == path
    check_consistency(old, new, path, ROOTS[old], ROOTS[new])


def test_every_proof_of_the_reference_tree_verifies_and_no_other() -> None:
    for size in range(1, 9):
        for index in range(size):
            path = inclusion_proof_of(LEAF_HASHES[:size], index)
            assert verify_inclusion(LEAF_HASHES[index], index, size, path, ROOTS[size])
            for wrong in range(size):
                if wrong != index:
                    assert not verify_inclusion(LEAF_HASHES[index], wrong, size, path,
                                                ROOTS[size])  # fmt: skip
            assert not verify_inclusion(LEAF_HASHES[index], index, size, path, ROOTS[size - 1])
            assert not verify_inclusion(LEAF_HASHES[index], index, size, [*path, path[0]]
                                        if path else [ROOTS[1]], ROOTS[size])  # fmt: skip
            if path:
                assert not verify_inclusion(LEAF_HASHES[index], index, size, path[:-1],
                                            ROOTS[size])  # fmt: skip
        for old in range(1, size + 1):
            path = consistency_proof_of(LEAF_HASHES[:size], old)
            assert verify_consistency(old, size, path, ROOTS[old], ROOTS[size])
            if old < size:
                assert not verify_consistency(old, size, path, ROOTS[old - 1], ROOTS[size])
                assert not verify_consistency(old, size, path, ROOTS[old], ROOTS[size - 1])
                assert not verify_consistency(old, size, path[:-1], ROOTS[old], ROOTS[size])


def test_verification_says_what_failed() -> None:
    path = inclusion_proof_of(LEAF_HASHES, 5)
    with pytest.raises(ProofError, match="does not lead to the root"):
        check_inclusion(LEAF_HASHES[4], 5, 8, path, ROOTS[8])
    with pytest.raises(ProofError, match="fewer than"):
        check_inclusion(LEAF_HASHES[5], 5, 8, path[:2], ROOTS[8])
    with pytest.raises(ProofError, match="more than"):
        check_inclusion(LEAF_HASHES[5], 5, 8, [*path, ROOTS[1]], ROOTS[8])
    with pytest.raises(ProofError, match="not in a tree"):
        check_inclusion(LEAF_HASHES[5], 8, 8, path, ROOTS[8])
    with pytest.raises(ProofError, match="not 32 bytes"):
        check_inclusion(LEAF_HASHES[5], 5, 8, [path[0][:31], *path[1:]], ROOTS[8])
    with pytest.raises(ProofError, match="empty"):
        check_consistency(3, 8, [], ROOTS[3], ROOTS[8])
    with pytest.raises(ProofError, match="old root"):
        check_consistency(6, 8, CONSISTENCY[3][2], ROOTS[5], ROOTS[8])
    with pytest.raises(ProofError, match="new root"):
        check_consistency(6, 8, CONSISTENCY[3][2], ROOTS[6], ROOTS[7])
    with pytest.raises(ProofError, match="0 < old size"):
        check_consistency(0, 8, [], ROOTS[0], ROOTS[8])


def test_aligned_ranges_are_maximal_and_aligned() -> None:
    assert aligned_ranges(0, 0) == [(0, 0)]
    assert aligned_ranges(0, 7) == [(0, 3)]
    assert aligned_ranges(3, 12) == [(3, 0), (4, 2), (8, 2), (12, 0)]
    assert aligned_ranges(5, 6) == [(5, 0), (6, 0)]
    rng = random.Random(7)
    for _ in range(500):
        first = rng.randrange(0, 5000)
        last = first + rng.randrange(0, 3000)
        out = aligned_ranges(first, last)
        pos = first
        for start, height in out:
            assert start == pos
            assert start % (1 << height) == 0
            pos += 1 << height
            # Maximal: the next larger block is not aligned here, or goes past ``last``.
            grown = 1 << (height + 1)
            assert start % grown or start + grown > last + 1
        assert pos == last + 1
    with pytest.raises(ValueError, match="first <= last"):
        aligned_ranges(5, 4)


def _tree(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [leaf_hash(rng.randbytes(rng.randrange(0, 40))) for _ in range(n)]


def _with_losses(hashes: list[bytes], lost: list[tuple[int, int]]) -> list[Node]:
    """The node stream of ``hashes`` with the inclusive ranges ``lost`` as aligned subtrees."""
    nodes: list[Node] = []
    i = 0
    for first, last in sorted(lost):
        nodes += [(j, 0, hashes[j]) for j in range(i, first)]
        for start, height in aligned_ranges(first, last):
            nodes.append((start, height, root_of(hashes[start : start + (1 << height)])))
        i = last + 1
    nodes += [(j, 0, hashes[j]) for j in range(i, len(hashes))]
    return nodes


@given(st.integers(1, 300), st.data())
def test_append_subtree_matches_leaf_by_leaf(n: int, data: st.DataObject) -> None:
    hashes = _tree(n, n)
    first = data.draw(st.integers(0, n - 1))
    last = data.draw(st.integers(first, n - 1))
    frontier = Frontier()
    for _start, height, node in _with_losses(hashes, [(first, last)]):
        if height:
            frontier.append_subtree(height, node)
        else:
            frontier.append(node)
    assert frontier.size == n
    assert frontier.root() == root_of(hashes)
    copy = Frontier.from_hashes(frontier.size, frontier.hashes)
    assert copy.root() == frontier.root()


def test_append_subtree_must_be_aligned() -> None:
    frontier = Frontier()
    frontier.append(LEAF_HASHES[0])
    with pytest.raises(FormatError, match="multiple of its size"):
        frontier.append_subtree(1, LEVEL1[1])
    with pytest.raises(FormatError, match="32 bytes"):
        frontier.append_subtree(0, b"x")


@given(st.integers(1, 400), st.data())
def test_streamed_proofs_with_lost_ranges_equal_the_plain_ones(n: int, data: st.DataObject) -> None:
    hashes = _tree(n, n + 1)
    index = data.draw(st.integers(0, n - 1))
    old = data.draw(st.integers(1, n))
    # A lost range away from the leaf and from the leaves the proofs must see.
    lost: list[tuple[int, int]] = []
    if index + 8 < n:
        first = data.draw(st.integers(index + 1, n - 1))
        lost = [(first, data.draw(st.integers(first, n - 1)))]
    nodes = _with_losses(hashes, lost)
    plain = inclusion_proof_of(hashes, index)
    try:
        streamed = inclusion_proof(iter(nodes), index, n)
    except LostLeafError:
        pass  # the loss cut through a range the proof needs: checked below on its own
    else:
        assert streamed == plain
    check_inclusion(hashes[index], index, n, plain, root_of(hashes))
    consistency = consistency_proof_of(hashes, old)
    check_consistency(old, n, consistency, root_of(hashes[:old]), root_of(hashes))
    with contextlib.suppress(LostLeafError):
        assert consistency_proof(iter(nodes), old, n) == consistency


def test_a_lost_range_far_from_the_leaf_still_proves() -> None:
    hashes = _tree(1000, 3)
    nodes = _with_losses(hashes, [(512, 767), (800, 959)])  # aligned blocks and odd ones
    for index in (0, 17, 511, 999):
        assert inclusion_proof(iter(nodes), index, 1000) == inclusion_proof_of(hashes, index)
    assert consistency_proof(iter(nodes), 512, 1000) == consistency_proof_of(hashes, 512)


def test_a_lost_leaf_cannot_be_proved() -> None:
    hashes = _tree(100, 4)
    nodes = _with_losses(hashes, [(40, 47)])
    with pytest.raises(LostLeafError, match="leaf 42 was lost"):
        inclusion_proof(iter(nodes), 42, 100)
    # A single lost leaf arrives as a height-0 node: its hash is known, so it proves.
    nodes = _with_losses(hashes, [(42, 42)])
    assert inclusion_proof(iter(nodes), 42, 100) == inclusion_proof_of(hashes, 42)
    # A needed range strictly inside a lost subtree: leaf 41's sibling, leaves 40..41.
    nodes = _with_losses(hashes, [(40, 47)])
    with pytest.raises(LostLeafError, match="strictly inside"):
        consistency_proof(iter(nodes), 42, 100)


def test_a_bad_node_stream_is_refused() -> None:
    hashes = _tree(10, 5)
    nodes = list(enumerate(hashes))
    stream = [(i, 0, x) for i, x in nodes]
    with pytest.raises(FormatError, match="not contiguous"):
        inclusion_proof(iter(stream[:3] + stream[4:]), 1, 10)
    with pytest.raises(FormatError, match="short of"):
        inclusion_proof(iter(stream[:9]), 1, 10)
    with pytest.raises(FormatError, match="multiple of its size"):
        inclusion_proof(iter([*stream[:1], (1, 1, hashes[1])]), 0, 10)
    with pytest.raises(FormatError, match="past the tree"):
        inclusion_proof(iter([*stream[:8], (8, 3, hashes[1])]), 0, 10)
    # Nodes after the tree's size are not read: a proof for an older size from a longer run.
    longer = iter([*stream, (10, 0, hashes[0])])
    assert inclusion_proof(longer, 3, 10) == inclusion_proof_of(hashes, 3)
    assert next(longer) == (10, 0, hashes[0])
    with pytest.raises(ValueError, match="not in a tree"):
        inclusion_proof(iter(stream), 10, 10)


def test_range_hashes_serves_nested_ranges_in_one_pass() -> None:
    hashes = _tree(77, 6)
    ranges = [(0, 64), (64, 77), (64, 72), (0, 1), (76, 77), (32, 64)]
    got = range_hashes(iter([(i, 0, x) for i, x in enumerate(hashes)]), ranges, 77)
    assert got == [root_of(hashes[a:b]) for a, b in ranges]


def test_a_node_running_past_a_needed_range_is_refused() -> None:
    hashes = _tree(8, 8)
    stream = [
        (0, 1, root_of(hashes[:2])),
        (2, 1, root_of(hashes[2:4])),
        (4, 2, root_of(hashes[4:])),
    ]
    assert range_hashes(iter(stream), [(0, 4)], 8) == [root_of(hashes[:4])]
    with pytest.raises(LostLeafError, match=r"leaves 0\.\.2 end strictly inside .* 2\.\.3"):
        range_hashes(iter(stream), [(0, 3)], 8)
    with pytest.raises(LostLeafError, match=r"leaves 5\.\.5 lie strictly inside .* 4\.\.7"):
        range_hashes(iter(stream), [(5, 6)], 8)


def test_append_data_and_lost_nodes() -> None:
    frontier = Frontier()
    assert [frontier.append_data(x) for x in LEAVES] == LEAF_HASHES
    assert frontier.root() == ROOTS[8]
    hashes = _tree(40, 9)
    lost = lost_nodes(3, 30, [root_of(hashes[s : s + (1 << h)]) for s, h in aligned_ranges(3, 30)])
    assert lost == [n for n in _with_losses(hashes, [(3, 30)]) if 3 <= n[0] <= 30]
    stream = [
        *((i, 0, hashes[i]) for i in range(3)),
        *lost,
        *((i, 0, hashes[i]) for i in range(31, 40)),
    ]
    assert inclusion_proof(iter(stream), 35, 40) == inclusion_proof_of(hashes, 35)
    with pytest.raises(FormatError, match="aligned subtrees, not 1"):
        lost_nodes(3, 30, [hashes[0]])
