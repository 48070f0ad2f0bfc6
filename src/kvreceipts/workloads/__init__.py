"""Workload sources: synthetic generators and trace readers, all streams of requests."""

from __future__ import annotations

from kvreceipts.workloads.request import Request
from kvreceipts.workloads.synthetic import SYNTHETIC_WORKLOADS, synthetic_workload
from kvreceipts.workloads.traces import TraceStats, detect_format, read_trace

__all__ = [
    "SYNTHETIC_WORKLOADS",
    "Request",
    "TraceStats",
    "detect_format",
    "read_trace",
    "synthetic_workload",
]
