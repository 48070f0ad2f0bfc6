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


_ROUND = ("now", "trigger", "reason", "size")
"""What the evictions of one round share, with the meter's figures."""
_eviction = st.fixed_dictionaries({
    "session": _text, "trigger": st.none() | _text, "reason": _text,
    "counters": st.tuples(_u63, _u63, _u63, st.integers(1, 2**62), st.integers(2**40, 2**62)),
    "size": st.integers(1, 2**40), "offset": _u63,
    "block_hash": st.none() | st.integers(-(2**63), 2**64 - 1), "now": st.floats(0, 1e12),
    "new": st.sampled_from([*_ROUND, "served", None]),
})  # fmt: skip
"""One eviction. After the first, only ``new`` differs from the eviction before of what a
round shares (``served``: the meter counts a request first), as in a replay, where only
some of it changes from one request to the next."""


@given(
    run_id=_text.filter(bool), tuning=st.booleans(), key=st.none() | st.binary(min_size=1,
    max_size=16), evictions=st.lists(_eviction, min_size=1, max_size=6),
)  # fmt: skip
def test_the_template_writes_exactly_the_canonical_json(
    run_id: str, tuning: bool, key: bytes | None, evictions: list[dict[str, Any]]
) -> None:
    """A run of evictions, one after the other, each sealed as the canonical JSON of its own
    fields: what one round shares (time, trigger, reason, size, the meter's figures) is
    never carried into a round where it changed.
    """
    from kvreceipts.emit import ReceiptEmitter
    from kvreceipts.stats import ServiceMeter

    meter = ServiceMeter()
    keep = _Keep()
    emitter = ReceiptEmitter(keep, config=CachingConfig(), clock=SimClock(), meter=meter,
                             tuning=tuning, run_id=run_id, hmac_key=key)  # fmt: skip
    prev = "0" * 64
    for seq, e in enumerate(evictions):
        if seq:
            e.update({name: evictions[seq - 1][name] for name in _ROUND if name != e["new"]})
        if e["new"] == "served":
            meter.record(0.0, 3.25 * (seq + 1))
        hits, misses, count, sessions, used = e["counters"]
        size, now = e["size"], e["now"]
        emitter.lean_eviction(now, e["session"], e["offset"], size, sessions, used, hits, misses,
                              count, e["reason"], e["trigger"], e["block_hash"])  # fmt: skip
        record = keep.records[seq]
        expected: dict[str, Any] = {
            "after": {"cache_hits": hits, "cache_misses": misses, "evictions": count + 1,
                      "total_sessions": sessions - 1, "used_bytes": used - size},
            "alg": "hmac-sha256" if key else "sha256",
            "before": {"total_sessions": sessions, "used_bytes": used},
            "block_offset": e["offset"], "block_size_bytes": size, "kind": "eviction",
            "reason": e["reason"], "run_id": run_id, "seq": seq, "session_id": e["session"],
            "timestamp": SimClock().timestamp(now), "trigger_session_id": e["trigger"],
        }  # fmt: skip
        if e["block_hash"] is not None:
            expected["block_hash"] = e["block_hash"]
        if key:
            expected["key_id"] = emitter.sealer.key_id
        if tuning:
            expected["performance"] = {"average_latency_ms": round(meter.average_latency_ms, 3),
                                       "average_requests_per_second":
                                           round(meter.requests_per_second, 3)}  # fmt: skip
        payload = canonical(expected)
        assert record.line == payload[:-1] + b',"digest":"%b"}\n' % record.digest.encode()
        assert record.digest == chain_digest(prev, payload, key)
        assert record.prev_digest == prev
        assert (record.seq, record.timestamp) == (seq, expected["timestamp"])
        prev = record.digest


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
    # As the verifier does: the fast test of the kind the record states, if it names one.
    kind = record.get("kind")
    fits = shape_test(kind, "lean") if type(kind) is str else None
    assert (fits is not None and fits(record)) == (check_record(record, "lean") is None)
