"""Cache statistics and the performance report (upstream ``KVCacheStatistics``,
``PerformanceReport``), plus the service meter that fills upstream's TODO rates.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from kvreceipts.config import CachingConfig

__all__ = ["KVCacheStatistics", "PerformanceReport", "ServiceMeter"]

_MB = 1024.0 * 1024.0


@dataclass(slots=True)
class KVCacheStatistics:
    """A point-in-time view of the cache. All zero by default, as upstream.

    ``used_bytes`` and ``total_bytes`` are exact integers added by kvreceipts: MB floats cannot
    prove byte conservation. In paged mode an entry (a "session" here) is one cached block.
    """

    total_sessions: int = 0
    total_memory_mb: float = 0.0
    used_memory_mb: float = 0.0
    memory_utilization: float = 0.0
    cache_hits: int = 0
    cache_misses: int = 0
    hit_rate: float = 0.0
    average_session_length: float = 0.0
    memory_pool_efficiency: float = 0.0
    evictions: int = 0
    used_bytes: int = 0
    total_bytes: int = 0

    @classmethod
    def compute(
        cls,
        *,
        sessions: int,
        used_bytes: int,
        total_bytes: int,
        hits: int,
        misses: int,
        tokens: int,
        fragmentation: float,
        evictions: int,
    ) -> Self:
        """Derive the float figures from exact counters, the way upstream defines them."""
        lookups = hits + misses
        return cls(
            sessions,
            total_bytes / _MB,
            used_bytes / _MB,
            used_bytes / total_bytes if total_bytes else 0.0,
            hits,
            misses,
            hits / lookups if lookups else 0.0,
            tokens / sessions if sessions else 0.0,
            1.0 - fragmentation,
            evictions,
            used_bytes,
            total_bytes,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (written out by hand: this runs twice per receipt)."""
        return {
            "total_sessions": self.total_sessions,
            "total_memory_mb": self.total_memory_mb,
            "used_memory_mb": self.used_memory_mb,
            "memory_utilization": self.memory_utilization,
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "hit_rate": self.hit_rate,
            "average_session_length": self.average_session_length,
            "memory_pool_efficiency": self.memory_pool_efficiency,
            "evictions": self.evictions,
            "used_bytes": self.used_bytes,
            "total_bytes": self.total_bytes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`; from a lean record's counters, the ratios it can derive
        (the pool size is the run's, so those that need it stay 0).
        """
        if "hit_rate" in data:
            return cls(**{f.name: data[f.name] for f in fields(cls)})
        lookups = data["cache_hits"] + data["cache_misses"]
        return cls(
            total_sessions=data["total_sessions"],
            used_memory_mb=data["used_bytes"] / _MB,
            cache_hits=data["cache_hits"],
            cache_misses=data["cache_misses"],
            hit_rate=data["cache_hits"] / lookups if lookups else 0.0,
            evictions=data["evictions"],
            used_bytes=data["used_bytes"],
        )

    def lean_dict(self) -> dict[str, int]:
        """The exact counters a lean receipt carries."""
        return {
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "evictions": self.evictions,
            "total_sessions": self.total_sessions,
            "used_bytes": self.used_bytes,
        }


@dataclass(slots=True)
class ServiceMeter:
    """Requests served and their latency, read off the manager's clock.

    Upstream leaves requests/s and latency at 0.0 (a TODO); this is what fills them. In live use
    the latency is the wall time a request spent in the manager; in a simulation it is the
    simulated service time the simulator reports.
    """

    served: int = 0
    latency_ms_total: float = 0.0
    first_ms: float | None = None
    last_ms: float = 0.0

    def record(self, start_ms: float, end_ms: float) -> None:
        """Count one request that started at ``start_ms`` and finished at ``end_ms``."""
        self.served += 1
        self.latency_ms_total += end_ms - start_ms
        if self.first_ms is None:
            self.first_ms = start_ms
        self.last_ms = max(self.last_ms, end_ms)

    @property
    def requests_per_second(self) -> float:
        """Requests served per second of the clock, from the first start to the last finish."""
        if self.first_ms is None:
            return 0.0
        span_s = (self.last_ms - self.first_ms) / 1000.0
        return self.served / span_s if span_s > 0 else 0.0

    @property
    def average_latency_ms(self) -> float:
        """Mean service latency in milliseconds."""
        return self.latency_ms_total / self.served if self.served else 0.0


@dataclass(slots=True)
class PerformanceReport:
    """Upstream ``PerformanceReport``; carried by receipts only with the ``tuning`` feature."""

    average_requests_per_second: float
    average_latency_ms: float
    current_config: CachingConfig | None
    """``None`` when read back from a lean receipt (its config is the open record's)."""
    sample_count: int

    @classmethod
    def from_stats(
        cls,
        stats: KVCacheStatistics,
        config: CachingConfig,
        meter: ServiceMeter | None = None,
    ) -> Self:
        """Build the report; rates come from ``meter`` (0.0 without one, as upstream)."""
        if meter is None:
            meter = ServiceMeter()
        return cls(
            meter.requests_per_second,
            meter.average_latency_ms,
            config,
            stats.cache_hits + stats.cache_misses,
        )

    def to_dict(self, config_dict: Any = None) -> dict[str, Any]:
        """JSON-ready values; pass ``config_dict`` to reuse an already converted config."""
        return {
            "average_requests_per_second": self.average_requests_per_second,
            "average_latency_ms": self.average_latency_ms,
            "current_config": config_dict or _config_dict(self.current_config),
            "sample_count": self.sample_count,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Inverse of :meth:`to_dict`."""
        from kvreceipts.config import CachingConfig

        config = data.get("current_config")
        return cls(
            data["average_requests_per_second"],
            data["average_latency_ms"],
            CachingConfig(**config) if config is not None else None,
            data.get("sample_count", 0),
        )


def _config_dict(config: CachingConfig | None) -> dict[str, Any] | None:
    return config.to_dict() if config is not None else None
