"""Prometheus metrics of a watch, read from the core's own counters at scrape time.

Nothing is counted twice: the collector walks the per-engine state when ``/metrics`` is
scraped, so the hot path pays nothing for metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from collections.abc import Iterator
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.metrics_core import Metric

    from kvreceipts.engine.core import WatchCore

__all__ = ["MetricsServer", "WatchCollector"]

_P = "kvreceipts_engine_"


class WatchCollector(Collector):
    """Turns the core's counters into metric families (labels: topic, medium, type)."""

    def __init__(self, core: WatchCore, dropped: Callable0 | None = None) -> None:
        self.core = core
        self.dropped = dropped

    def collect(self) -> Iterator[Metric]:
        """One family per figure, one sample per engine (and medium)."""
        engines = list(self.core.engines.values())
        events = CounterMetricFamily(f"{_P}events", "Events received, by type.",
                                     labels=["topic", "type"])  # fmt: skip
        removals = CounterMetricFamily(f"{_P}removals", "Block hashes removed, by medium.",
                                       labels=["topic", "medium"])  # fmt: skip
        stores = CounterMetricFamily(f"{_P}stores", "Block hashes stored, by medium.",
                                     labels=["topic", "medium"])  # fmt: skip
        hits = CounterMetricFamily(
            f"{_P}hits",
            "Resident blocks the engine reported reused (vLLM kv_cache_report_mode=full).",
            labels=["topic", "medium"],
        )
        regret = CounterMetricFamily(
            f"{_P}regret",
            "Blocks stored again within the regret window of their removal.",
            labels=["topic", "medium"],
        )
        resident = GaugeMetricFamily(f"{_P}resident_blocks", "Blocks held, as the stream tells.",
                                     labels=["topic", "medium"])  # fmt: skip
        batches = CounterMetricFamily(f"{_P}batches", "Batches processed (replayed included).",
                                      labels=["topic"])  # fmt: skip
        gaps = CounterMetricFamily(f"{_P}gaps", "Seq gaps seen.", labels=["topic"])
        lost = CounterMetricFamily(f"{_P}lost_batches", "Batches declared lost.",
                                   labels=["topic"])  # fmt: skip
        recovered = CounterMetricFamily(f"{_P}recovered_batches",
                                        "Batches recovered from the replay socket.",
                                        labels=["topic"])  # fmt: skip
        restarts = CounterMetricFamily(f"{_P}restarts", "Engine restarts (seq back to 0).",
                                       labels=["topic"])  # fmt: skip
        last_seq = GaugeMetricFamily(f"{_P}last_seq", "Last engine seq processed.",
                                     labels=["topic"])  # fmt: skip
        for state in engines:
            topic = state.topic
            for name, n in list(state.events.items()):
                events.add_metric([topic, name], n)
            counted = [
                state.removals,
                state.stores,
                state.hits,
                state.regret,
                state.resident_by_medium,
            ]
            media = sorted({medium for counts in counted for medium in counts})
            # Every medium the engine used gets a sample in every family, zero included.
            by_medium: tuple[CounterMetricFamily | GaugeMetricFamily, ...] = (
                removals, stores, hits, regret, resident,
            )  # fmt: skip
            for family, counts in zip(by_medium, counted, strict=True):
                for medium in media:
                    family.add_metric([topic, medium], counts.get(medium, 0))
            batches.add_metric([topic], state.batches)
            gaps.add_metric([topic], state.gaps)
            lost.add_metric([topic], state.lost_batches)
            recovered.add_metric([topic], state.recovered_batches)
            restarts.add_metric([topic], state.restarts)
            if state.last_seq is not None:
                last_seq.add_metric([topic], state.last_seq)
        hit_rate = GaugeMetricFamily(f"{_P}hit_rate",
                                     "Reused / (reused + newly stored) blocks so far.",
                                     labels=["topic"])  # fmt: skip
        for state in engines:
            rate = state.hit_rate
            if rate is not None:
                hit_rate.add_metric([state.topic], rate)
        yield from (events, removals, stores, hits, hit_rate, regret, resident, batches, gaps,
                    lost, recovered, restarts, last_seq)  # fmt: skip
        if self.dropped is not None:
            yield CounterMetricFamily(f"{_P}queue_dropped",
                                      "Messages our bounded queue dropped.",
                                      value=self.dropped())  # fmt: skip


class MetricsServer:
    """``/metrics`` on ``host:port`` (port 0: any free port, see :attr:`port`)."""

    def __init__(self, core: WatchCore, host: str, port: int,
                 dropped: Callable0 | None = None) -> None:  # fmt: skip
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(WatchCollector(core, dropped))
        try:
            server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            from kvreceipts.errors import UsageError

            raise UsageError(
                f"--metrics-port: cannot serve on {host}:{port}: {exc.strerror}"
            ) from None
        self._server: WSGIServer = server
        self.port: int = server.server_port

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


if TYPE_CHECKING:
    from collections.abc import Callable

    Callable0 = Callable[[], int]
