"""Rejected requests: each counted under its true reason, and their block references counted
as lookups (a block found cached is a hit, every other one a miss) by both allocators.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
import pytest
from typer.testing import CliRunner

from kvreceipts.cli import app
from kvreceipts.clock import SimClock
from kvreceipts.config import CachingConfig
from kvreceipts.manager import KVCacheManager
from kvreceipts.sizing import Sizing

if TYPE_CHECKING:
    from pathlib import Path

CONVERSATION = "mooncake_conversation_trace.jsonl"


def test_arena_rejections_say_too_large_or_no_contiguous_space() -> None:
    # 1 KiB arena, 64 bytes a token: 16 tokens fill it.
    manager = KVCacheManager(CachingConfig(kv_cache_size_mb=1 / 1024), sizing=Sizing(64),
                             clock=SimClock())  # fmt: skip
    assert manager.get_or_create_cache("big", 17) is None
    assert manager.rejected_by_reason == {"too_large": 1}
    assert (manager.hits, manager.misses) == (0, 1)


@pytest.mark.traces
def test_paged_rejections_at_100_blocks_are_the_requests_larger_than_the_cache(
    traces_dir: Path,
) -> None:
    trace = traces_dir / CONVERSATION
    rows = [orjson.loads(line) for line in trace.read_bytes().splitlines() if line.strip()]
    larger = sum(len(row["hash_ids"]) > 100 for row in rows)
    references = sum(len(row["hash_ids"]) for row in rows)
    result = CliRunner().invoke(app, ["simulate", "--trace", str(trace), "--capacity-blocks",
                                      "100", "--format", "json", "--no-receipts"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = orjson.loads(result.stdout)
    assert summary["requests"]["rejected_by_reason"] == {"too_large": larger}
    assert larger == 386
    stats = summary["stats"]
    assert stats["cache_hits"] + stats["cache_misses"] == references == 288_500
    table = CliRunner().invoke(app, ["simulate", "--trace", str(trace), "--capacity-blocks",
                                     "100", "--format", "table", "--no-receipts"])  # fmt: skip
    words = " ".join(table.stdout.replace("│", " ").split())
    assert "386 rejected: larger than the whole cache" in words
