"""``kvreceipts sweep``'s options read into values: policies, capacities (counts and sizes
with units), targets, memory tiers and output paths. Each bad value is one ``error:`` line,
raised before any work.
"""

from __future__ import annotations

import itertools
import os
from typing import TYPE_CHECKING

from kvreceipts.config import check_capacity_mb
from kvreceipts.errors import UsageError
from kvreceipts.numbers import MAX_BLOCKS, check_number
from kvreceipts.policies import POLICIES

if TYPE_CHECKING:
    from pathlib import Path

    from kvreceipts.sweep.grid import SweepSpec
    from kvreceipts.tiers import Tier

__all__ = [
    "DEFAULT_POINTS",
    "check_outputs",
    "check_sizing",
    "check_writable",
    "parse_capacities",
    "parse_policies",
    "parse_sizes",
    "parse_targets",
    "size_capacities",
    "tier_grid",
]

DEFAULT_POINTS = 20


def parse_policies(text: str | None) -> list[str]:
    """``--policy``: the named policies in order, or all of them."""
    if text is None:
        return list(POLICIES)
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if not names:
        raise UsageError("--policy lists no policy")
    for name in names:
        if name not in POLICIES:
            choices = ", ".join(POLICIES)
            raise UsageError(f"--policy: unknown policy {name!r} (choose from: {choices})")
    return list(dict.fromkeys(names))


def parse_capacities(text: str, option: str, *, integral: bool) -> list[float]:
    """``--capacity-blocks`` or ``--capacity-mb``: distinct capacities, ascending."""
    values: list[float] = []
    for raw in text.split(","):
        item = raw.strip().replace("_", "")
        if not item:
            continue
        try:
            value = float(int(item)) if integral else float(item)
        except ValueError:
            kind = "a whole number of blocks" if integral else "a number of MiB"
            raise UsageError(f"{option}: {item!r} is not {kind}") from None
        if integral:
            check_number(f"{option}: capacities", value, above=0, high=MAX_BLOCKS)
        else:
            check_capacity_mb(f"{option}: capacities", value)
        values.append(value)
    if not values:
        raise UsageError(f"{option} lists no capacity")
    return sorted(set(values))


def check_outputs(plot: Path | None, html_file: Path | None) -> None:
    """``--plot`` and ``--html``: a known format, a writable place, and matplotlib."""
    if plot is not None and plot.suffix.lower() not in (".png", ".svg"):
        raise UsageError(f"--plot: {plot} must end in .png or .svg")
    for option, path in (("--plot", plot), ("--html", html_file)):
        if path is not None:
            check_writable(path, option)
    if plot is not None or html_file is not None:
        from kvreceipts.sweep.report import check_plot_available

        check_plot_available()


def check_sizing(model: str | None, bytes_per_token: int) -> None:
    """``--model`` names a preset and is not given with ``--bytes-per-token``."""
    if bytes_per_token and model:
        raise UsageError("give either --model or --bytes-per-token, not both")
    if model:
        from kvreceipts.sizing import MODEL_PRESETS

        if model.lower() not in MODEL_PRESETS:
            raise UsageError(f"--model: unknown model {model!r} "
                             f"(choose from: {', '.join(MODEL_PRESETS)})")  # fmt: skip


def check_writable(path: Path, option: str) -> None:
    """Refuse, before any work, an output file that cannot be written: its directory is
    missing or not writable, or it is a directory itself.
    """
    parent = path.parent
    if path.is_dir():
        raise UsageError(f"{option}: {path} is a directory, not a file")
    if not parent.is_dir():
        raise UsageError(f"{option}: {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"{option}: {path}: cannot write there (permission denied)")


def tier_grid(  # noqa: PLR0912 - one check per tier setting, each one line
    texts: list[str], spec: SweepSpec, points: int | None, notes: list[str]
) -> tuple[list[Tier], list[tuple[int, ...]]]:
    """The tiers, and each grid point's tier sizes in blocks (one tier may be a range)."""
    from kvreceipts.commands.output import human_bytes
    from kvreceipts.sizing import resolve_sizing
    from kvreceipts.sweep.grid import log_capacities
    from kvreceipts.tiers import Tier, parse_tier

    if spec.allocator != "paged":
        raise UsageError("--tier needs the paged allocator (blocks move between tiers)")
    if not (spec.model or spec.bytes_per_token):
        raise UsageError("--tier: sizes need the KV bytes per token to make blocks: give "
                         "--model or --bytes-per-token")  # fmt: skip
    block = resolve_sizing(spec.model, spec.bytes_per_token).block_bytes(spec.block_tokens)
    tiers: list[Tier] = []
    ranges: list[tuple[int, int, int]] = []  # (tier index, low blocks, high blocks)
    for text in texts:
        name, low_high, bandwidth = parse_tier(text)
        where = f"--tier {name}"
        blocks = []
        for size in low_high:
            count = size // block
            if count <= 0:
                raise UsageError(f"{where}: {human_bytes(size)} holds no block of "
                                 f"{human_bytes(block)}")  # fmt: skip
            check_number(f"{where}: size", count, above=0, high=MAX_BLOCKS)
            blocks.append(count)
        if len(blocks) == 2:
            if blocks[1] <= blocks[0]:
                raise UsageError(f"{where}: the range must grow ({blocks[0]:,} to "
                                 f"{blocks[1]:,} blocks)")  # fmt: skip
            ranges.append((len(tiers), blocks[0], blocks[1]))
        if name in {t.name for t in tiers}:
            raise UsageError(f"--tier: two tiers are named {name!r}")
        tiers.append(Tier(name, blocks[0], bandwidth))
    if len(ranges) > 1:
        raise UsageError("--tier: only one tier's size may be a range")
    if points is not None and not ranges:
        raise UsageError("--points with --tier needs one tier's size to be a range (a..b)")
    grid: list[tuple[int, ...]] = [tuple(t.capacity_blocks for t in tiers)]
    if ranges:
        index, low, high = ranges[0]
        values = log_capacities(low, high, points or DEFAULT_POINTS, integral=True)
        grid = [tuple(int(v) if i == index else t.capacity_blocks for i, t in enumerate(tiers))
                for v in values]  # fmt: skip
    rated = [t for t in tiers[1:] if t.bandwidth]
    for upper, lower in itertools.pairwise(rated):
        if lower.bandwidth > upper.bandwidth:
            notes.append(f"--tier: {lower.name} ({human_bytes(lower.bandwidth)}/s) is faster "
                         f"than {upper.name} above it ({human_bytes(upper.bandwidth)}/s): tiers "
                         "are taken in the order given")  # fmt: skip
    notes.append("tiers (blocks of " + human_bytes(block) + ", rounded down): " + ", ".join(
        f"{t.name} {t.capacity_blocks:,}" + (f" at {human_bytes(t.bandwidth)}/s" if t.bandwidth
                                             else "") for t in tiers))  # fmt: skip
    return tiers, grid


def parse_sizes(text: str) -> list[int]:
    """``--capacity``: distinct sizes in bytes, ascending."""
    from kvreceipts.units import parse_size

    values = [parse_size(raw, "--capacity") for raw in text.split(",") if raw.strip()]
    if not values:
        raise UsageError("--capacity lists no capacity")
    return sorted(set(values))


def size_capacities(sizes: list[int], text: str, spec: SweepSpec, notes: list[str]) -> list[float]:
    """Sizes as the allocator's capacities: whole blocks (rounded down), or MiB."""
    from kvreceipts.commands.output import human_bytes
    from kvreceipts.config import MIB
    from kvreceipts.sizing import resolve_sizing

    if spec.allocator == "arena":
        values = [size / MIB for size in sizes]
        for value in values:
            check_capacity_mb("--capacity", value)
        return values
    if not (spec.model or spec.bytes_per_token):
        raise UsageError(f"--capacity {text.strip()}: a size needs the KV bytes per token to "
                         "make blocks: give --model or --bytes-per-token (or use "
                         "--capacity-blocks)")  # fmt: skip
    block = resolve_sizing(spec.model, spec.bytes_per_token).block_bytes(spec.block_tokens)
    blocks: list[float] = []
    rounded = []
    for size in sizes:
        count = size // block
        if count <= 0:
            raise UsageError(f"--capacity: {human_bytes(size)} holds no block of "
                             f"{human_bytes(block)} ({block:,} bytes)")  # fmt: skip
        check_number("--capacity: capacities", count, above=0, high=MAX_BLOCKS)
        if count * block != size:
            rounded.append(f"{human_bytes(size)} -> {count:,}")
        blocks.append(float(count))
    note = f"--capacity: blocks of {human_bytes(block)} ({block:,} bytes)"
    if rounded:
        note += "; rounded down to whole blocks: " + ", ".join(rounded)
    notes.append(note)
    return sorted(set(blocks))


def parse_targets(text: str | None, option: str, metric: str) -> list[tuple[str, float]]:
    """``--target-hit-rate`` or ``--target-token-hit-rate``: (metric, target) pairs."""
    if text is None:
        return []
    values: list[tuple[str, float]] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        try:
            value = float(item.removesuffix("%")) / (100 if item.endswith("%") else 1)
        except ValueError:
            raise UsageError(f"{option}: {item!r} is not a number in (0, 1]") from None
        if not 0 < value <= 1:
            raise UsageError(f"{option}: {item} must be in (0, 1] (a ratio: 0.3 for 30%)")
        values.append((metric, value))
    if not values:
        raise UsageError(f"{option} lists no target")
    return list(dict.fromkeys(values))
