"""Receipt sinks. Part of the receipts code: imported only with the ``receipts`` feature."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kvreceipts import features

features.require("receipts", "kvreceipts.sinks")

from kvreceipts.sinks.base import (  # noqa: E402 - the feature check must come first
    KV_RECEIPTS_TARGET,
    BaseSink,
    KvEventSink,
    SinkCounters,
)
from kvreceipts.sinks.channel import ChannelSink  # noqa: E402
from kvreceipts.sinks.fanout import FanoutSink, fan_out  # noqa: E402
from kvreceipts.sinks.jsonl import JsonlSink  # noqa: E402
from kvreceipts.sinks.tracing import TracingSink  # noqa: E402

if TYPE_CHECKING:
    from kvreceipts.sinks.http import HttpSink


def __getattr__(name: str) -> Any:
    """``HttpSink`` is imported on first use: its HTTP client (urllib, email, ssl) costs a
    run that posts nothing a fifth of its start-up.
    """
    if name == "HttpSink":
        from kvreceipts.sinks.http import HttpSink

        return HttpSink
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "KV_RECEIPTS_TARGET",
    "BaseSink",
    "ChannelSink",
    "FanoutSink",
    "HttpSink",
    "JsonlSink",
    "KvEventSink",
    "SinkCounters",
    "TracingSink",
    "fan_out",
]
