"""The lean eviction receipt is written from a bytes template; verify re-derives the canonical
form with orjson, independently. These tests hold the two (and the fast shape test against the
worded one) to the same answer on random records.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvreceipts.chain import canonical, chain_digest
from kvreceipts.clock import SimClock
from kvreceipts.config import CachingConfig
from kvreceipts.shape import check_record, shape_test

pytestmark = pytest.mark.needs("receipts")

_u63 = st.integers(0, 2**63 - 1)
_text = st.text(min_size=0, max_size=12)  # quotes, backslashes, %, controls, any code point


class _Keep:
    """A sink of one's own that keeps sealed records as they come."""

    def __init__(self) -> None:
        self.records: list[Any] = []

    def on_eviction(self, record: Any) -> None:
        self.records.append(record)


@given(
    run_id=_text.filter(bool), session=_text, trigger=st.none() | _text, reason=_text,
    counters=st.tuples(_u63, _u63, _u63, st.integers(1, 2**62), st.integers(2**40, 2**62)),
    size=st.integers(1, 2**40), offset=_u63,
    block_hash=st.none() | st.integers(-(2**63), 2**64 - 1), tuning=st.booleans(),
    key=st.none() | st.binary(min_size=1, max_size=16), now=st.floats(0, 1e12),
)  # fmt: skip
def test_the_template_writes_exactly_the_canonical_json(  # noqa: PLR0917 - hypothesis arguments
    run_id: str, session: str, trigger: str | None, reason: str, counters: tuple[int, ...],
    size: int, offset: int, block_hash: int | None, tuning: bool, key: bytes | None, now: float,
) -> None:  # fmt: skip
    from kvreceipts.emit import ReceiptEmitter
    from kvreceipts.stats import ServiceMeter

    hits, misses, evictions, sessions, used = counters
    meter = ServiceMeter()
    meter.record(0.0, 3.25)
    keep = _Keep()
    emitter = ReceiptEmitter(keep, config=CachingConfig(), clock=SimClock(), meter=meter,
                             tuning=tuning, run_id=run_id, hmac_key=key)  # fmt: skip
    emitter.lean_eviction(now, session, offset, size, sessions, used, hits, misses, evictions,
                          reason, trigger, block_hash)  # fmt: skip
    (record,) = keep.records
    expected: dict[str, Any] = {
        "after": {"cache_hits": hits, "cache_misses": misses, "evictions": evictions + 1,
                  "total_sessions": sessions - 1, "used_bytes": used - size},
        "alg": "hmac-sha256" if key else "sha256",
        "before": {"total_sessions": sessions, "used_bytes": used},
        "block_offset": offset, "block_size_bytes": size, "kind": "eviction", "reason": reason,
        "run_id": run_id, "seq": 0, "session_id": session,
        "timestamp": SimClock().timestamp(now), "trigger_session_id": trigger,
    }  # fmt: skip
    if block_hash is not None:
        expected["block_hash"] = block_hash
    if key:
        expected["key_id"] = emitter.sealer.key_id
    if tuning:
        expected["performance"] = {"average_latency_ms": round(meter.average_latency_ms, 3),
                                   "average_requests_per_second":
                                       round(meter.requests_per_second, 3)}  # fmt: skip
    payload = canonical(expected)
    assert record.line == payload[:-1] + b',"digest":"%b"}\n' % record.digest.encode()
    assert record.digest == chain_digest("0" * 64, payload, key)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**65), 2**65) | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=2),
    max_leaves=4,
)  # fmt: skip
_SAMPLE = {
    "after": {"cache_hits": 1, "cache_misses": 2, "evictions": 3, "total_sessions": 4,
              "used_bytes": 5},
    "alg": "sha256", "before": {"total_sessions": 5, "used_bytes": 7}, "block_hash": 9,
    "block_offset": 0, "block_size_bytes": 2, "kind": "eviction",
    "performance": {"average_latency_ms": 1.5, "average_requests_per_second": 2},
    "reason": "lru", "run_id": "r", "seq": 1, "session_id": "s",
    "timestamp": "2025-01-01T00:00:00.000000Z", "trigger_session_id": None, "digest": "a" * 64,
}  # fmt: skip


@given(path=st.lists(st.sampled_from([*_SAMPLE, "used_bytes", "cache_hits", "x"]), min_size=1,
                     max_size=2), value=_json, drop=st.booleans())  # fmt: skip
def test_the_fast_shape_test_agrees_with_the_worded_check(
    path: list[str], value: Any, drop: bool
) -> None:
    record = orjson.loads(orjson.dumps(_SAMPLE))
    target = record
    for name in path[:-1]:
        target = target.get(name) if isinstance(target.get(name), dict) else target
    if drop:
        target.pop(path[-1], None)
    else:
        target[path[-1]] = value
    fits = shape_test("eviction", "lean")
    assert fits is not None
    assert fits(record) == (check_record(record, "lean") is None)
