"""The arena memory pool ("KV pool v2"): one contiguous region, first-fit, split, merge."""

from __future__ import annotations

from bisect import bisect_left

__all__ = ["ALIGNMENT", "ArenaPool", "align_up"]

ALIGNMENT = 64


def align_up(size: int, alignment: int = ALIGNMENT) -> int:
    """Round ``size`` up to a multiple of ``alignment``."""
    return -(-size // alignment) * alignment


class ArenaPool:
    """Free regions kept sorted by offset; allocation is first-fit and splits what it uses;
    freeing merges with adjacent free regions, so no two free regions ever touch.
    """

    __slots__ = ("_offsets", "_sizes", "total_bytes", "used_bytes")

    def __init__(self, total_bytes: int) -> None:
        if total_bytes <= 0:
            raise ValueError("an arena needs a positive size")
        self.total_bytes = total_bytes
        self.used_bytes = 0
        self._offsets = [0]
        self._sizes = [total_bytes]

    @property
    def free_bytes(self) -> int:
        """Bytes not allocated."""
        return self.total_bytes - self.used_bytes

    def num_free_regions(self) -> int:
        """How many separate free regions there are."""
        return len(self._offsets)

    def fragmentation(self) -> float:
        """``(free_regions - 1) / free_regions``, or 0 with at most one free region."""
        regions = len(self._offsets)
        return (regions - 1) / regions if regions > 1 else 0.0

    def free_regions(self) -> list[tuple[int, int]]:
        """``(offset, size)`` of every free region, in offset order."""
        return list(zip(self._offsets, self._sizes, strict=True))

    def largest_free_region(self) -> int:
        """Size of the largest free region (0 when full)."""
        return max(self._sizes, default=0)

    def allocate(self, size: int) -> int | None:
        """First-fit: the offset of a new block of ``size`` bytes, or ``None`` if none fits."""
        if size <= 0:
            raise ValueError("allocation size must be positive")
        for index, region in enumerate(self._sizes):
            if region >= size:
                offset = self._offsets[index]
                if region == size:
                    del self._offsets[index]
                    del self._sizes[index]
                else:
                    self._offsets[index] = offset + size
                    self._sizes[index] = region - size
                self.used_bytes += size
                return offset
        return None

    def free(self, offset: int, size: int) -> None:
        """Return a block; merges with the free neighbours on either side."""
        end = offset + size
        if size <= 0 or offset < 0 or end > self.total_bytes:
            raise ValueError(f"block [{offset}, {end}) is outside the arena")
        offsets, sizes = self._offsets, self._sizes
        index = bisect_left(offsets, offset)
        merge_prev = index > 0 and offsets[index - 1] + sizes[index - 1] >= offset
        merge_next = index < len(offsets) and offsets[index] <= end
        if (merge_prev and offsets[index - 1] + sizes[index - 1] > offset) or (
            merge_next and offsets[index] < end
        ):
            raise ValueError(f"block [{offset}, {end}) overlaps free space: double free?")
        if merge_prev and merge_next:
            sizes[index - 1] += size + sizes[index]
            del offsets[index]
            del sizes[index]
        elif merge_prev:
            sizes[index - 1] += size
        elif merge_next:
            offsets[index] = offset
            sizes[index] += size
        else:
            offsets.insert(index, offset)
            sizes.insert(index, size)
        self.used_bytes -= size
