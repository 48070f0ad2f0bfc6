"""kvreceipts: auditable, verifiable KV-cache eviction receipts for LLM serving.

The core (manager, statistics, config) is always importable. Receipt types and sinks need the
``receipts`` feature; asking for them with it off raises :class:`FeatureDisabledError`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kvreceipts.config import CachingConfig, SimulationConfig
    from kvreceipts.errors import InputError, KvReceiptsError, UsageError
    from kvreceipts.features import FeatureDisabledError
    from kvreceipts.manager import CacheEntry, KVCacheManager
    from kvreceipts.paged import PagedKVCacheManager
    from kvreceipts.receipts import (
        EvictionReason,
        KvEvictionBatchReceipt,
        KvEvictionReport,
        KvPoolSnapshotReceipt,
        LossReceipt,
    )
    from kvreceipts.sinks import (
        KV_RECEIPTS_TARGET,
        ChannelSink,
        FanoutSink,
        HttpSink,
        JsonlSink,
        KvEventSink,
        TracingSink,
    )
    from kvreceipts.stats import KVCacheStatistics, PerformanceReport, ServiceMeter

__version__ = "0.1.0"

__all__ = [
    "KV_RECEIPTS_TARGET",
    "CacheEntry",
    "CachingConfig",
    "ChannelSink",
    "EvictionReason",
    "FanoutSink",
    "FeatureDisabledError",
    "HttpSink",
    "InputError",
    "JsonlSink",
    "KVCacheManager",
    "KVCacheStatistics",
    "KvEventSink",
    "KvEvictionBatchReceipt",
    "KvEvictionReport",
    "KvPoolSnapshotReceipt",
    "KvReceiptsError",
    "LossReceipt",
    "PagedKVCacheManager",
    "PerformanceReport",
    "ServiceMeter",
    "SimulationConfig",
    "TracingSink",
    "UsageError",
    "__version__",
]

# Every name is imported on first use, so that `kvreceipts --version` stays fast.
_CORE_EXPORTS = {
    "CachingConfig": "kvreceipts.config",
    "SimulationConfig": "kvreceipts.config",
    "InputError": "kvreceipts.errors",
    "KvReceiptsError": "kvreceipts.errors",
    "UsageError": "kvreceipts.errors",
    "FeatureDisabledError": "kvreceipts.features",
    "CacheEntry": "kvreceipts.manager",
    "KVCacheManager": "kvreceipts.manager",
    "PagedKVCacheManager": "kvreceipts.paged",
    "KVCacheStatistics": "kvreceipts.stats",
    "PerformanceReport": "kvreceipts.stats",
    "ServiceMeter": "kvreceipts.stats",
}
# Names that live in the receipts code: only with the receipts feature on.
_RECEIPTS_EXPORTS = {
    "EvictionReason": "kvreceipts.receipts",
    "KvEvictionBatchReceipt": "kvreceipts.receipts",
    "KvEvictionReport": "kvreceipts.receipts",
    "KvPoolSnapshotReceipt": "kvreceipts.receipts",
    "LossReceipt": "kvreceipts.receipts",
    "KV_RECEIPTS_TARGET": "kvreceipts.sinks",
    "ChannelSink": "kvreceipts.sinks",
    "FanoutSink": "kvreceipts.sinks",
    "HttpSink": "kvreceipts.sinks",
    "JsonlSink": "kvreceipts.sinks",
    "KvEventSink": "kvreceipts.sinks",
    "TracingSink": "kvreceipts.sinks",
}


def __getattr__(name: str) -> Any:
    module = _CORE_EXPORTS.get(name)
    if module is None:
        module = _RECEIPTS_EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module 'kvreceipts' has no attribute {name!r}")
        from kvreceipts import features

        features.require("receipts", f"kvreceipts.{name}")
    return getattr(importlib.import_module(module), name)
