"""kvreceipts: auditable, verifiable KV-cache eviction receipts for LLM serving.

The core (manager, statistics, config) is always importable. Receipt types and sinks need the
``receipts`` feature; asking for them with it off raises :class:`FeatureDisabledError`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from kvreceipts.config import CachingConfig, SimulationConfig
from kvreceipts.errors import InputError, KvReceiptsError, UsageError
from kvreceipts.features import FeatureDisabledError
from kvreceipts.manager import CacheEntry, KVCacheManager
from kvreceipts.paged import PagedKVCacheManager
from kvreceipts.stats import KVCacheStatistics, PerformanceReport, ServiceMeter

if TYPE_CHECKING:
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

# Names that live in the receipts code: imported on first use, and only with the feature on.
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
    module = _RECEIPTS_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kvreceipts' has no attribute {name!r}")
    from kvreceipts import features

    features.require("receipts", f"kvreceipts.{name}")
    return getattr(importlib.import_module(module), name)
