"""Memory tiers below the first (GPU) one: exclusive caches of blocks, each run by the policy.

A block evicted from tier k moves to tier k+1 (from the last tier it is gone); a block hit in
a lower tier leaves it for the first tier, whose victim is demoted in turn, and so on down. A
block is in at most one tier. The first tier is the paged cache itself (it pins, slots and
writes receipts); :class:`LowerTiers` holds the rest and does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from kvreceipts.policies import make_policy

if TYPE_CHECKING:
    from collections.abc import Hashable, Sequence

    from kvreceipts.policies import EvictionPolicy

__all__ = ["TIER_SYNTAX", "LowerTiers", "Tier", "parse_tier"]

TIER_SYNTAX = "NAME=SIZE[,bw=RATE] (e.g. dram=512GiB,bw=50GB/s)"


def parse_tier(text: str) -> tuple[str, tuple[int, ...], float]:
    """A ``--tier`` value: its name, its size in bytes (two sizes for a range ``a..b``) and
    its bandwidth in bytes per second (0 when not given).
    """
    from kvreceipts.errors import UsageError
    from kvreceipts.units import parse_rate, parse_size

    name, _, rest = text.partition("=")
    name = name.strip()
    size_text, *options = rest.split(",") if rest else [""]
    if not name or not size_text.strip():
        raise UsageError(f"--tier {text}: a tier needs a name and a size: {TIER_SYNTAX}")
    bandwidth = 0.0
    for option in options:
        key, _, value = option.partition("=")
        if key.strip() != "bw" or not value.strip():
            raise UsageError(f"--tier {text}: unknown setting {option.strip()!r} "
                             "(the one setting is bw=RATE, e.g. bw=50GB/s)")  # fmt: skip
        bandwidth = parse_rate(value, f"--tier {name}: bw")
    where = f"--tier {name}"
    low, dots, high = size_text.partition("..")
    sizes = (parse_size(low, where), parse_size(high, where)) if dots else (parse_size(low, where),)
    return name, sizes, bandwidth


@dataclass(frozen=True, slots=True)
class Tier:
    """One memory tier: its name, its size in blocks and the bandwidth a block is reloaded
    from it at (bytes per second; 0: not given).
    """

    name: str
    capacity_blocks: int
    bandwidth: float = 0.0


class LowerTiers:
    """The tiers after the first, fastest first (index 1 is the second tier)."""

    def __init__(self, tiers: Sequence[Tier], policy: str) -> None:
        self.tiers = tuple(tiers)
        self._policies: list[EvictionPolicy] = [
            make_policy(policy, t.capacity_blocks) for t in tiers
        ]
        self._where: dict[Hashable, int] = {}  # block -> index in self._policies

    def take(self, block: Hashable) -> int:
        """If ``block`` is in a lower tier, remove it from there and return that tier's number
        (1 for the second tier); else 0.
        """
        index = self._where.pop(block, None)
        if index is None:
            return 0
        self._policies[index].remove(block)
        return index + 1

    def demote(self, block: Hashable) -> tuple[list[tuple[Hashable, int]], Hashable | None]:
        """Put a block just evicted from the first tier into the second; each full tier's
        victim moves one tier down. Returns the moves, as (block, the tier number it entered),
        and the block that left the last tier (gone), if any.
        """
        moves: list[tuple[Hashable, int]] = []
        moving: Hashable | None = block
        for index, policy in enumerate(self._policies):
            assert moving is not None
            incoming = moving
            moving = None
            if len(policy) >= policy.capacity:
                moving = policy.victim()
                del self._where[moving]
            if policy.on_miss is not None:
                policy.on_miss(incoming)
            policy.insert(incoming)
            self._where[incoming] = index
            moves.append((incoming, index + 1))
            if moving is None:
                return moves, None
        return moves, moving

    def __len__(self) -> int:
        return len(self._where)
