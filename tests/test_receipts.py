"""Receipt records survive JSON, and the hash chain seals them the way the spec says."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvreceipts import CachingConfig, KVCacheManager, KVCacheStatistics, PerformanceReport, features
from kvreceipts.clock import SimClock
from kvreceipts.errors import InputError

if TYPE_CHECKING or features.enabled("receipts"):
    from kvreceipts.chain import Sealer, canonical, read_hmac_key
    from kvreceipts.receipts import (
        KINDS,
        SCHEMA_ID,
        ZERO_DIGEST,
        EvictionReason,
        KvEvictionBatchReceipt,
        KvEvictionReport,
        KvPoolSnapshotReceipt,
        LossReceipt,
        Receipt,
        receipt_from_dict,
    )
    from kvreceipts.sinks import ChannelSink

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.needs("receipts")

COMMON: dict[str, Any] = {
    "run_id": "run-1",
    "timestamp": "2025-01-01T00:00:01.500000Z",
    "sim_time_ms": 1500.25,
}


def stats(sessions: int, used: int) -> KVCacheStatistics:
    return KVCacheStatistics.compute(
        sessions=sessions,
        used_bytes=used,
        total_bytes=65536,
        hits=3,
        misses=5,
        tokens=40 * sessions,
        fragmentation=0.5,
        evictions=2,
    )


def samples() -> list[Receipt]:
    """One record of every kind, and the optional parts both present and absent."""
    before, after = stats(2, 16384), stats(1, 8192)
    report = PerformanceReport(12.5, 0.75, CachingConfig(enable_receipts=True), 8)
    return [
        KvEvictionReport(
            **COMMON,
            seq=0,
            session_id="a",
            block_offset=8192,
            block_size_bytes=8192,
            before=before,
            after=after,
            reason=EvictionReason.LRU,
            policy="lru",
            trigger_session_id="b",
        ),
        KvEvictionReport(
            **COMMON,
            seq=1,
            session_id="req-7",
            block_offset=0,
            block_size_bytes=131072,
            before=before,
            after=after,
            reason="ttl",
            policy="s3fifo",
            performance=report,
            block_hash=2**62 + 3,
        ),
        KvEvictionBatchReceipt(
            **COMMON,
            seq=2,
            count=2,
            total_bytes_freed=16384,
            pool_used_before=65536,
            pool_used_after=57344,
            fragmentation_before=0.0,
            fragmentation_after=0.5,
            duration_ms=0.125,
            first_seq=0,
            last_seq=1,
            required_bytes=16384,
            satisfied=False,
        ),
        *(
            KvPoolSnapshotReceipt(
                **COMMON,
                seq=seq,
                pool_used=8192,
                pool_total=65536,
                utilization=0.125,
                fragmentation=0.0,
                active_sessions=1,
                total_sessions_created=3,
                total_evictions=2,
                cache_hits=3,
                cache_misses=5,
                as_of_seq=as_of,
            )
            for seq, as_of in ((3, None), (4, 1))
        ),
        LossReceipt(
            **COMMON,
            seq=7,
            prev_digest="ab" * 32,
            sink="channel",
            first_seq=5,
            last_seq=7,
            count=3,
            last_lost_digest="cd" * 32,
        ),
    ]


SAMPLE_IDS = ["eviction", "eviction-full", "batch", "snapshot", "snapshot-as-of", "loss"]


def test_the_samples_are_named() -> None:
    assert len(samples()) == len(SAMPLE_IDS)


@pytest.mark.parametrize("index", range(len(SAMPLE_IDS)), ids=SAMPLE_IDS)
@pytest.mark.parametrize(
    ("dumps", "loads"),
    [(orjson.dumps, orjson.loads), (json.dumps, json.loads)],
    ids=["orjson", "json"],
)
def test_every_kind_round_trips_through_json(index: int, dumps: Any, loads: Any) -> None:
    record = samples()[index]
    for _ in ("unsealed", "sealed"):
        back = receipt_from_dict(loads(dumps(record.to_dict())))
        assert type(back) is type(record)
        assert back == record
        assert type(record).from_dict(record.to_dict()) == record
        Sealer().seal(record)


def test_records_carry_the_common_fields() -> None:
    for record in samples():
        body = record.to_dict()
        assert body["schema"] == SCHEMA_ID
        assert body["kind"] == record.kind
        assert KINDS[body["kind"]] is type(record)
        assert {"run_id", "seq", "timestamp", "sim_time_ms", "prev_digest"} <= body.keys()
        assert "digest" not in body  # only once sealed


def test_optional_eviction_keys_are_absent_not_null() -> None:
    plain, full = samples()[:2]
    assert "performance" not in plain.to_dict()
    assert "block_hash" not in plain.to_dict()
    assert plain.to_dict()["trigger_session_id"] == "b"
    body = full.to_dict()
    assert body["performance"]["current_config"]["enable_receipts"] is True
    assert body["block_hash"] == 2**62 + 3
    assert body["trigger_session_id"] is None
    assert body["reason"] == "ttl"


_FLOATS = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False)
_INTS = st.integers(min_value=0, max_value=2**53)
_STATS = st.builds(
    KVCacheStatistics,
    _INTS,
    _FLOATS,
    _FLOATS,
    _FLOATS,
    _INTS,
    _INTS,
    _FLOATS,
    _FLOATS,
    _FLOATS,
    _INTS,
    _INTS,
    _INTS,
)


@given(
    before=_STATS,
    after=_STATS,
    session=st.text(max_size=20),
    sim_time_ms=_FLOATS,
    block_hash=st.none() | st.integers(-(2**63), 2**63 - 1),
)
def test_any_eviction_round_trips(
    before: KVCacheStatistics,
    after: KVCacheStatistics,
    session: str,
    sim_time_ms: float,
    block_hash: int | None,
) -> None:
    record = KvEvictionReport(
        run_id="r",
        seq=0,
        timestamp="t",
        sim_time_ms=sim_time_ms,
        session_id=session,
        block_offset=0,
        block_size_bytes=64,
        before=before,
        after=after,
        reason="manual",
        policy="lru",
        block_hash=block_hash,
    )
    line = Sealer().seal(record)
    assert receipt_from_dict(orjson.loads(line)) == record


def test_sealer_chains_sha256_digests_of_canonical_json() -> None:
    sealer = Sealer()
    records = samples()[:4]
    previous = ZERO_DIGEST
    for record in records:
        sealer.seal(record)
        body = record.to_dict()
        del body["digest"]
        payload = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        assert record.prev_digest == body["prev_digest"] == previous
        assert record.digest == hashlib.sha256(payload).hexdigest()
        previous = record.digest
    assert records[0].prev_digest == "0" * 64
    assert sealer.last_digest == records[-1].digest


def test_canonical_json_is_sorted_compact_utf8() -> None:
    body = {"b": 1, "a": {"d": [1, 2], "c": "café 🙂"}}
    assert canonical(body) == '{"a":{"c":"café 🙂","d":[1,2]},"b":1}'.encode()


def test_the_sealed_line_is_the_record_on_one_line() -> None:
    record = samples()[1]
    line = Sealer().seal(record)

    assert line is record.line
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert orjson.loads(line) == record.to_dict()
    assert line.endswith(b',"digest":"%b"}\n' % record.digest.encode())
    # The line minus its digest is exactly the hashed payload.
    unsigned = line[: line.rindex(b',"digest"')] + b"}"
    assert hashlib.sha256(unsigned).hexdigest() == record.digest


def test_any_edit_changes_the_digest() -> None:
    record = samples()[0]
    assert isinstance(record, KvEvictionReport)
    Sealer().seal(record)
    edited = dataclasses.replace(record, block_offset=record.block_offset + 64, digest="")
    Sealer().seal(edited)
    assert edited.digest != record.digest


def test_hmac_digests_need_the_key() -> None:
    key = b"sekrit"
    plain, keyed = Sealer(), Sealer(key)
    for record, twin in zip(samples()[:3], samples()[:3], strict=True):
        plain.seal(record)
        keyed.seal(twin)
        assert twin.digest != record.digest
        body = twin.to_dict()
        del body["digest"]
        payload = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        expected = hmac.new(key, payload, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(twin.digest, expected)
        assert twin.digest != hmac.new(b"other", payload, hashlib.sha256).hexdigest()


def test_a_detached_seal_leaves_the_chain_alone() -> None:
    sealer = Sealer()
    first, loss = samples()[0], samples()[-1]
    sealer.seal(first)
    head = sealer.last_digest

    sealer.seal_detached(loss)

    assert sealer.last_digest == head
    assert loss.prev_digest == "ab" * 32  # kept as given
    assert orjson.loads(loss.line)["digest"] == loss.digest


def test_manager_receipts_are_sealed_with_its_key() -> None:
    sink = ChannelSink(100)
    config = CachingConfig(kv_cache_size_mb=8192 / 2**20, enable_receipts=True)
    manager = KVCacheManager(config, sink=sink, clock=SimClock(), hmac_key=b"k", run_id="run-x")
    for session in "abc":
        manager.get_or_create_cache(session, 16)

    records = sink.drain()

    assert [r.run_id for r in records] == ["run-x", "run-x"]
    for record in records:
        body = orjson.loads(record.line)
        assert body == record.to_dict()
        digest = body.pop("digest")
        assert digest == hmac.new(b"k", canonical(body), hashlib.sha256).hexdigest()


def test_read_hmac_key(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"secret\n")
    assert read_hmac_key(path) == b"secret"
    path.write_bytes(b"\n")
    with pytest.raises(InputError, match="empty"):
        read_hmac_key(path)
    with pytest.raises(InputError, match="cannot read HMAC key file") as caught:
        read_hmac_key(tmp_path / "missing")
    assert str(tmp_path / "missing") in str(caught.value)
