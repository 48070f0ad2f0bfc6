"""Upstream's two tests from ``bitnet-server`` (``caching/kv_cache.rs``), kept by name.

``pyproject.toml`` collects them without a ``test_`` prefix; ``./ci-local.sh`` steps 8 and 9 run
them on their own, with receipts on and off.
"""

from __future__ import annotations

import pytest

from kvreceipts import CachingConfig, KVCacheManager


@pytest.mark.needs("receipts")
@pytest.mark.parametrize("layout", ["lean", "upstream"])
def emits_eviction_receipt_with_correct_payload(layout: str) -> None:
    from kvreceipts.receipts import KvEvictionReport
    from kvreceipts.sinks import ChannelSink

    sink = ChannelSink(4)
    manager = KVCacheManager.with_receipt_sink(
        CachingConfig(enable_receipts=True), sink, layout=layout
    )
    entry = manager.get_or_create_cache("session-1", 16)
    assert entry is not None

    assert manager.remove_cache_entry("session-1")

    report = sink.try_recv()
    assert isinstance(report, KvEvictionReport)
    assert report.session_id == entry.session_id == "session-1"
    assert report.block_offset == entry.block_offset
    assert report.block_size_bytes == entry.block_size_bytes
    assert report.before.total_sessions == report.after.total_sessions + 1
    assert report.before.used_bytes - report.after.used_bytes == entry.block_size_bytes
    assert sink.try_recv() is None  # exactly one receipt per eviction


@pytest.mark.needs("receipts")
@pytest.mark.parametrize("layout", ["lean", "upstream"])
def does_not_emit_receipt_when_disabled(layout: str) -> None:
    from kvreceipts.sinks import ChannelSink

    sink = ChannelSink(1)
    manager = KVCacheManager.with_receipt_sink(
        CachingConfig(enable_receipts=False), sink, layout=layout
    )
    assert manager.get_or_create_cache("session-1", 16) is not None

    assert manager.remove_cache_entry("session-1")

    assert manager.evictions == 1  # the eviction itself happened
    assert sink.try_recv() is None
    assert sink.counters.accepted == 0
    assert manager.receipts_emitted == 0
