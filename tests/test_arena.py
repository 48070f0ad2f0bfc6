"""The arena pool ("KV pool v2"): first-fit, split, merge, fragmentation, alignment."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvreceipts.arena import ALIGNMENT, ArenaPool, align_up
from kvreceipts.sizing import BITNET_BYTES_PER_TOKEN, Sizing


def full_pool(*sizes: int) -> tuple[ArenaPool, list[int]]:
    """A pool exactly filled by blocks of ``sizes``, in offset order."""
    pool = ArenaPool(sum(sizes))
    offsets = [pool.allocate(size) for size in sizes]
    assert None not in offsets
    return pool, [offset for offset in offsets if offset is not None]


def test_a_new_pool_is_one_free_region() -> None:
    pool = ArenaPool(1000)
    assert pool.free_regions() == [(0, 1000)]
    assert (pool.used_bytes, pool.free_bytes, pool.fragmentation()) == (0, 1000, 0.0)


def test_allocation_splits_the_region_it_uses() -> None:
    pool = ArenaPool(1000)
    assert pool.allocate(300) == 0
    assert pool.free_regions() == [(300, 700)]
    assert pool.allocate(700) == 300  # an exact fit consumes the region
    assert pool.free_regions() == []
    assert pool.used_bytes == 1000
    assert pool.allocate(1) is None


def test_allocation_is_first_fit_not_best_fit() -> None:
    pool, offsets = full_pool(200, 100, 50, 100, 550)
    pool.free(offsets[0], 200)
    pool.free(offsets[2], 50)
    assert pool.free_regions() == [(0, 200), (300, 50)]

    # (300, 50) would fit 40 bytes best; first-fit takes the lowest offset that fits.
    assert pool.allocate(40) == 0
    assert pool.free_regions() == [(40, 160), (300, 50)]
    assert pool.allocate(150) == 40
    assert pool.free_regions() == [(190, 10), (300, 50)]
    assert pool.allocate(45) == 300  # skips the 10-byte region that is too small
    assert pool.allocate(11) is None  # 10 + 5 bytes free, but no region holds 11


def test_free_merges_with_the_previous_region() -> None:
    pool, offsets = full_pool(100, 100, 100, 100)
    pool.free(offsets[0], 100)
    pool.free(offsets[1], 100)
    assert pool.free_regions() == [(0, 200)]


def test_free_merges_with_the_next_region() -> None:
    pool, offsets = full_pool(100, 100, 100, 100)
    pool.free(offsets[3], 100)
    pool.free(offsets[2], 100)
    assert pool.free_regions() == [(200, 200)]


def test_free_merges_with_both_neighbours() -> None:
    pool, offsets = full_pool(100, 100, 100, 100)
    pool.free(offsets[0], 100)
    pool.free(offsets[2], 100)
    assert pool.free_regions() == [(0, 100), (200, 100)]
    pool.free(offsets[1], 100)
    assert pool.free_regions() == [(0, 300)]
    pool.free(offsets[3], 100)
    assert pool.free_regions() == [(0, 400)]
    assert pool.used_bytes == 0


def test_free_between_allocated_blocks_adds_a_region() -> None:
    pool, offsets = full_pool(100, 100, 100)
    pool.free(offsets[1], 100)
    assert pool.free_regions() == [(100, 100)]
    assert pool.used_bytes == 200


@pytest.mark.parametrize(
    ("freed", "regions", "fragmentation"),
    [
        ((), 0, 0.0),  # full: no free region at all
        ((0,), 1, 0.0),
        ((0, 2), 2, 0.5),
        ((0, 2, 4), 3, 2 / 3),
        ((0, 2, 4, 6), 4, 0.75),
    ],
)
def test_fragmentation_is_regions_minus_one_over_regions(
    freed: tuple[int, ...], regions: int, fragmentation: float
) -> None:
    pool, offsets = full_pool(*[64] * 8)
    for index in freed:
        pool.free(offsets[index], 64)
    assert pool.num_free_regions() == regions
    assert pool.fragmentation() == pytest.approx(fragmentation)


def test_largest_free_region() -> None:
    pool, offsets = full_pool(100, 300, 100)
    assert pool.largest_free_region() == 0
    pool.free(offsets[0], 100)
    pool.free(offsets[1], 300)
    assert pool.largest_free_region() == 400


@pytest.mark.parametrize(("size", "aligned"), [(0, 0), (1, 64), (63, 64), (64, 64), (65, 128)])
def test_align_up(size: int, aligned: int) -> None:
    assert align_up(size) == aligned


def test_bitnet_entry_is_two_aligned_regions_of_context_x_64_x_4() -> None:
    sizing = Sizing(BITNET_BYTES_PER_TOKEN)
    assert sizing.region_bytes(16) == 16 * 64 * 4
    assert sizing.entry_bytes(16) == 2 * 16 * 64 * 4 == 8192
    assert sizing.entry_bytes(1) == 512


@given(
    context=st.integers(min_value=1, max_value=100_000),
    bytes_per_token=st.integers(min_value=1, max_value=300_000),
)
def test_entry_regions_are_aligned_up_to_64_bytes(context: int, bytes_per_token: int) -> None:
    sizing = Sizing(bytes_per_token, "custom")
    region = sizing.region_bytes(context)
    exact = -(-context * bytes_per_token // 2)  # half the entry's bytes, rounded up
    assert region % ALIGNMENT == 0
    assert exact <= region < exact + ALIGNMENT
    assert sizing.entry_bytes(context) == 2 * region


def test_an_odd_sizing_is_padded() -> None:
    sizing = Sizing(20, "20 bytes/token")  # 10 bytes per token per region
    assert sizing.region_bytes(3) == 64
    assert sizing.entry_bytes(3) == 128
    assert sizing.entry_bytes(7) == 2 * 128


@pytest.mark.parametrize(
    ("offset", "size"),
    [
        (0, 100),  # the very block that is free already
        (50, 100),  # overlaps the free region's tail
        (150, 100),  # overlaps the free region at 200
        (-64, 64),
        (900, 200),  # runs past the end
        (100, 0),
        (100, -5),
    ],
)
def test_bad_free_raises_and_changes_nothing(offset: int, size: int) -> None:
    pool, offsets = full_pool(100, 100, 100, 100, 100, 100, 100, 100, 100, 100)
    pool.free(offsets[0], 100)
    pool.free(offsets[2], 100)
    before = (pool.free_regions(), pool.used_bytes)
    with pytest.raises(ValueError, match=r"double free|outside the arena"):
        pool.free(offset, size)
    assert (pool.free_regions(), pool.used_bytes) == before


def test_double_free_raises() -> None:
    pool = ArenaPool(1000)
    offset = pool.allocate(100)
    assert offset is not None
    pool.free(offset, 100)
    with pytest.raises(ValueError, match="double free"):
        pool.free(offset, 100)
    assert pool.free_regions() == [(0, 1000)]


@pytest.mark.parametrize("size", [0, -1])
def test_allocate_needs_a_positive_size(size: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        ArenaPool(1000).allocate(size)


@pytest.mark.parametrize("size", [0, -1])
def test_an_arena_needs_a_positive_size(size: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        ArenaPool(size)


@given(st.lists(st.tuples(st.booleans(), st.integers(1, 64), st.integers(0, 63)), max_size=60))
def test_pool_matches_a_byte_map(steps: list[tuple[bool, int, int]]) -> None:
    """Random allocations and frees agree with a plain byte map, and first-fit picks the lowest
    offset of a free run long enough.
    """
    total = 256
    pool = ArenaPool(total)
    used = [False] * total
    blocks: list[tuple[int, int]] = []
    for allocate, size, pick in steps:
        if allocate or not blocks:
            runs = _free_runs(used)
            expected = next((start for start, length in runs if length >= size), None)
            assert pool.allocate(size) == expected
            if expected is not None:
                blocks.append((expected, size))
                used[expected : expected + size] = [True] * size
        else:
            offset, length = blocks.pop(pick % len(blocks))
            pool.free(offset, length)
            used[offset : offset + length] = [False] * length
        assert pool.free_regions() == _free_runs(used)  # sorted, merged, exact
        assert pool.used_bytes == sum(used)


def _free_runs(used: list[bool]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    start = None
    for index, taken in enumerate([*used, True]):
        if not taken and start is None:
            start = index
        elif taken and start is not None:
            runs.append((start, index - start))
            start = None
    return runs
