"""Many threads on one manager: every invariant holds and the receipt chain stays whole."""

from __future__ import annotations

import random
import threading
from typing import TYPE_CHECKING

from kvreceipts import CachingConfig, KVCacheManager, features
from kvreceipts.workloads import Request
from test_manager_stateful import check_arena_invariants, check_receipt_stream

if TYPE_CHECKING:
    from kvreceipts.receipts import Receipt
    from kvreceipts.sinks import ChannelSink

THREADS = 8
OPERATIONS = 1_000
SESSIONS = [f"s{i}" for i in range(12)]
CONTEXTS = [16, 100, 400, 900, 1_500, 2_100]


def worker(manager: KVCacheManager, seed: int, errors: list[BaseException]) -> None:
    rng = random.Random(seed)
    try:
        for n in range(OPERATIONS):
            session = rng.choice(SESSIONS)
            roll = rng.random()
            if roll < 0.45:
                entry = manager.get_or_create_cache(session, rng.choice(CONTEXTS))
                assert entry is None or entry.session_id == session
            elif roll < 0.6:
                manager.update_cache(session, rng.randint(1, 500))
            elif roll < 0.7:
                manager.remove_cache_entry(session)
            elif roll < 0.85:
                request = Request(f"{seed}-{n}", session, 0.0, rng.randint(1, 900), 10, 1_024)
                if manager.serve(request, hold=True).admitted:
                    manager.get_statistics()  # read while holding the entry pinned
                    manager.release(request)
            elif roll < 0.98:
                stats = manager.get_statistics()
                assert 0 <= stats.used_bytes <= stats.total_bytes
                assert stats.cache_hits + stats.cache_misses >= stats.total_sessions
            else:
                manager.sweep_ttl()
    except BaseException as exc:  # noqa: BLE001 - reported by the main thread
        errors.append(exc)


def observer(manager: KVCacheManager, stop: threading.Event, errors: list[BaseException]) -> None:
    """Checks the invariants while the workers run, each time between two operations."""
    try:
        while not stop.is_set():
            with manager._lock:
                check_arena_invariants(manager)
            stop.wait(0.001)
    except BaseException as exc:  # noqa: BLE001 - reported by the main thread
        errors.append(exc)


def test_threads_keep_every_invariant() -> None:
    sink: ChannelSink | None = None
    if features.enabled("receipts"):
        from kvreceipts.sinks import ChannelSink

        sink = ChannelSink(1_000_000)
    # A zero TTL makes every sweep evict whatever is idle, racing the other operations.
    config = CachingConfig(kv_cache_size_mb=1, model_cache_ttl=0, enable_receipts=True)
    manager = KVCacheManager(config, sink=sink, batch_receipts=True, snapshot_every=50)
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=worker, args=(manager, seed, errors)) for seed in range(THREADS)
    ]

    stop = threading.Event()
    watcher = threading.Thread(target=observer, args=(manager, stop, errors))

    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    stop.set()
    watcher.join(timeout=20)

    assert not any(t.is_alive() for t in [*threads, watcher]), "a thread is stuck: deadlock?"
    assert errors == []
    check_arena_invariants(manager)
    assert all(entry.pins == 0 for entry in manager.entries())
    assert manager.evictions > 0  # the workload really contended for space
    if sink is not None:
        received: list[Receipt] = sink.drain()
        assert sink.counters.dropped == 0
        check_receipt_stream(manager, received, sink.frames)
        manager.shutdown()
        check_receipt_stream(manager, received, sink.frames)
