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
from kvreceipts.shape import check_record
from kvreceipts.stats import ServiceMeter

if TYPE_CHECKING or features.enabled("receipts"):
    from kvreceipts.chain import Sealer, canonical, chain_digest, key_id, read_hmac_key
    from kvreceipts.emit import ReceiptEmitter
    from kvreceipts.receipts import (
        KINDS,
        SCHEMA_ID,
        ZERO_DIGEST,
        CheckpointRecord,
        EvictionReason,
        KvDemotionReceipt,
        KvEvictionBatchReceipt,
        KvEvictionReport,
        KvPoolSnapshotReceipt,
        LossReceipt,
        Receipt,
        RunClose,
        RunOpen,
        SealedRecord,
        as_receipt,
        receipt_from_dict,
    )
    from kvreceipts.sinks import ChannelSink

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.needs("receipts")

COMMON: dict[str, Any] = {
    "run_id": "run-1",
    "timestamp": "2025-01-01T00:00:01.500000Z",
}
SIM: dict[str, Any] = {"sim_time_ms": 1500.25}


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
            **SIM,
            seq=1,
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
            **SIM,
            seq=2,
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
            **SIM,
            seq=3,
            count=2,
            total_bytes_freed=16384,
            pool_used_before=65536,
            pool_used_after_evictions=49152,
            allocated_bytes=8192,
            pool_used_after=57344,
            fragmentation_before=0.0,
            fragmentation_after=0.5,
            duration_ms=0.125,
            first_seq=1,
            last_seq=2,
            required_bytes=16384,
            satisfied=False,
        ),
        *(
            KvPoolSnapshotReceipt(
                **COMMON,
                **SIM,
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
            for seq, as_of in ((4, None), (5, 1))
        ),
        LossReceipt(
            **COMMON,
            seq=7,
            prev_digest="ab" * 32,
            sink="channel",
            first_seq=6,
            last_seq=7,
            count=2,
            last_lost_digest="cd" * 32,
            lost_counts={"eviction": 2},
            lost_tree=["ef" * 32],
        ),
        RunOpen(
            **COMMON,
            **SIM,
            seq=0,
            source="library",
            layout="lean",
            config=CachingConfig(enable_receipts=True).to_dict(),
            workload={"kind": "synthetic", "seed": 7},
            allocator="arena",
            policy="lru",
            total_bytes=65536,
            tuning=False,
        ),
        RunClose(
            **COMMON,
            **SIM,
            seq=8,
            records=8,
            counts={"eviction": 2, "eviction_batch": 1, "open": 1, "snapshot": 2},
            bytes_freed=139264,
            final_stats=after.to_dict(),
            head="ef" * 32,
            tree_size=8,
            root="ab" * 32,
        ),
        CheckpointRecord(**COMMON, seq=4, tree_size=4, root="cd" * 32),
        KvDemotionReceipt(
            **COMMON,
            **SIM,
            seq=9,
            block_hash=2**40 + 1,
            from_tier="hbm",
            to_tier="dram",
            bytes=67108864,
            trigger_session_id="req-3",
        ),
    ]


SAMPLE_IDS = [
    "eviction", "eviction-full", "batch", "snapshot", "snapshot-as-of", "loss", "open", "close",
    "checkpoint",
    "demotion",
]  # fmt: skip


def seal(sealer: Sealer, record: Receipt) -> bytes:
    """Seal ``record`` as the manager does (a loss record beside the chain); its line."""
    record.alg, record.key_id = sealer.alg, sealer.key_id
    if isinstance(record, LossReceipt):
        record.digest, record.line = sealer.seal_beside(record.prev_digest, record.to_dict())
    else:
        record.prev_digest = sealer.last_digest
        record.digest, record.line = sealer.seal_dict(record.to_dict())
    return record.line


def unsigned(line: bytes) -> bytes:
    """A sealed line without its digest: exactly the canonical JSON that was hashed."""
    return line[: line.rindex(b',"digest"')] + b"}"


def test_the_samples_are_named() -> None:
    assert len(samples()) == len(SAMPLE_IDS)
    assert {type(r).kind for r in samples()} == {k for k in KINDS if not k.startswith("engine_")}


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
        seal(Sealer(), record)


def test_records_carry_the_common_fields() -> None:
    for record in samples():
        body = record.to_dict()
        assert body["kind"] == record.kind
        assert KINDS[body["kind"]] is type(record)
        assert {"run_id", "seq", "timestamp", "alg"} <= body.keys()
        assert body["alg"] == "sha256"
        assert "key_id" not in body  # only with HMAC
        assert "digest" not in body  # only once sealed
        # The chain link is implicit; only a loss record, beside the chain, names it.
        assert ("prev_digest" in body) == (record.kind == "loss")
        # The frame and upstream's eviction payload name the schema; the rest do not.
        assert body.get("schema", SCHEMA_ID) == SCHEMA_ID
        assert ("schema" in body) == (record.kind in ("open", "close", "eviction"))
        assert ("sim_time_ms" in body) == (record.kind not in ("loss", "checkpoint"))
        assert check_record(body | {"digest": "0" * 64}, "upstream") is None


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
        seq=1,
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
    line = seal(Sealer(), record)
    assert receipt_from_dict(orjson.loads(line)) == record


def _collect() -> Any:
    """A sink that keeps what it is handed (the fast path hands a ``BaseSink`` sealed lines)."""
    from kvreceipts.sinks import BaseSink

    class Collect(BaseSink):
        def __init__(self) -> None:
            super().__init__()
            self.records: list[Any] = []

        def deliver(self, record: Any) -> None:
            self.records.append(record)

    return Collect()


_IDS = st.text(max_size=12)
_COUNTER = st.integers(min_value=0, max_value=2**53)


@given(
    evictions=st.lists(
        st.fixed_dictionaries(
            {
                "session_id": _IDS,
                "block_offset": _COUNTER,
                "block_size_bytes": st.integers(min_value=1, max_value=2**40),
                "sessions": st.integers(min_value=1, max_value=2**40),
                "used_bytes": st.integers(min_value=2**40, max_value=2**53),
                "hits": _COUNTER,
                "misses": _COUNTER,
                "evictions": _COUNTER,
                "reason": st.sampled_from(["lru", "ttl", "manual", 'q"u%o\\te', "ünï"]),
                "trigger_session_id": st.none() | _IDS,
                "block_hash": st.none() | st.integers(-(2**63), 2**63 - 1),
                "now_ms": _FLOATS,
            }
        ),
        min_size=1,
        max_size=5,
    ),
    key=st.none() | st.binary(min_size=1, max_size=8),
    tuning=st.booleans(),
    run_id=st.text(max_size=12),
)
def test_the_lean_template_writes_canonical_json(
    evictions: list[dict[str, Any]], key: bytes | None, tuning: bool, run_id: str
) -> None:
    """The fast path's bytes template gives exactly :func:`canonical` of the record, for any
    values (quotes, ``%``, non-ASCII, huge numbers), and the chain links each line.
    """
    sink = _collect()
    clock = SimClock()
    meter = ServiceMeter()
    meter.record(0.0, 2.5)
    emitter = ReceiptEmitter(
        sink,
        config=CachingConfig(enable_receipts=True),
        clock=clock,
        meter=meter,
        tuning=tuning,
        run_id=run_id or None,
        hmac_key=key,
    )
    previous = ZERO_DIGEST
    for seq, fields in enumerate(evictions):
        assert emitter.eviction(**fields) == seq
        record = sink.records[-1]
        assert isinstance(record, SealedRecord)
        body = orjson.loads(record.line)
        digest = body.pop("digest")
        assert unsigned(record.line) == canonical(body)
        assert record.line == canonical(body)[:-1] + b',"digest":"%b"}\n' % digest.encode()
        assert digest == record.digest == chain_digest(previous, canonical(body), key)
        assert record.prev_digest == previous
        assert check_record(body | {"digest": digest}) is None
        assert body["alg"] == ("sha256" if key is None else "hmac-sha256")
        assert body.get("key_id") == (None if key is None else key_id(key))
        assert body["run_id"] == emitter.run_id
        assert body["seq"] == seq
        assert ("performance" in body) == tuning
        assert ("block_hash" in body) == (fields["block_hash"] is not None)
        assert body["before"] == {
            "total_sessions": fields["sessions"], "used_bytes": fields["used_bytes"]
        }  # fmt: skip
        size = fields["block_size_bytes"]
        assert body["after"] == {
            "cache_hits": fields["hits"], "cache_misses": fields["misses"],
            "evictions": fields["evictions"] + 1, "total_sessions": fields["sessions"] - 1,
            "used_bytes": fields["used_bytes"] - size,
        }  # fmt: skip
        for name in ("session_id", "block_offset", "block_size_bytes", "reason",
                     "trigger_session_id"):  # fmt: skip
            assert body[name] == fields[name]
        previous = digest
    assert emitter.sealer.last_digest == previous


def test_a_lean_record_reads_back_as_upstreams_report() -> None:
    sink = _collect()
    meter = ServiceMeter()
    meter.record(0.0, 4.0)
    emitter = ReceiptEmitter(
        sink, config=CachingConfig(enable_receipts=True), clock=SimClock(), meter=meter,
        tuning=True, run_id="run-l",
    )  # fmt: skip
    emitter.eviction(
        now_ms=12.5, session_id="s", block_offset=64, block_size_bytes=128, sessions=3,
        used_bytes=1024, hits=6, misses=2, evictions=4, reason="lfu", trigger_session_id="t",
        block_hash=9,
    )  # fmt: skip

    report = as_receipt(sink.records[0])

    assert isinstance(report, KvEvictionReport)
    assert (report.run_id, report.seq, report.session_id, report.reason) == ("run-l", 0, "s", "lfu")
    assert (report.block_offset, report.block_size_bytes, report.block_hash) == (64, 128, 9)
    assert report.trigger_session_id == "t"
    assert report.policy == ""  # the run's policy is in its open record
    assert (report.before.total_sessions, report.before.used_bytes) == (3, 1024)
    assert (report.after.total_sessions, report.after.used_bytes) == (2, 896)
    assert (report.before.evictions, report.after.evictions) == (4, 5)
    assert report.before.cache_hits == report.after.cache_hits == 6
    assert report.after.hit_rate == 0.75
    assert report.performance is not None
    assert report.performance.current_config is None
    assert report.performance.average_latency_ms == 4.0
    assert report.digest == sink.records[0].digest
    assert report.line is sink.records[0].line


def test_a_sink_of_ones_own_gets_upstreams_report() -> None:
    """A sink that only has ``on_eviction`` (upstream's protocol) is handed report objects."""

    class MySink:
        def __init__(self) -> None:
            self.reports: list[Any] = []

        def on_eviction(self, report: Any) -> None:
            self.reports.append(report)

    sink = MySink()
    config = CachingConfig(kv_cache_size_mb=8192 / 2**20, enable_receipts=True)
    manager = KVCacheManager(config, sink=sink, clock=SimClock())
    for session in "abc":
        manager.get_or_create_cache(session, 16)
    manager.shutdown()

    assert [type(r) for r in sink.reports] == [KvEvictionReport, KvEvictionReport]
    assert [(r.seq, r.session_id, r.trigger_session_id) for r in sink.reports] == [
        (1, "a", "b"), (2, "b", "c")
    ]  # fmt: skip
    assert all(r.line.endswith(b"\n") and r.digest for r in sink.reports)


def test_sealer_chains_sha256_digests_of_canonical_json() -> None:
    sealer = Sealer()
    records = samples()[:5]
    previous = ZERO_DIGEST
    for record in records:
        seal(sealer, record)
        body = record.to_dict()
        del body["digest"]
        assert "prev_digest" not in body
        payload = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        assert payload == canonical(body)
        assert record.prev_digest == previous
        assert record.digest == hashlib.sha256(previous.encode() + payload).hexdigest()
        assert record.digest == chain_digest(previous, payload)
        previous = record.digest
    assert records[0].prev_digest == "0" * 64
    assert sealer.last_digest == records[-1].digest


def test_canonical_json_is_sorted_compact_utf8() -> None:
    body = {"b": 1, "a": {"d": [1, 2], "c": "café 🙂"}}
    assert canonical(body) == '{"a":{"c":"café 🙂","d":[1,2]},"b":1}'.encode()


def test_the_sealed_line_is_the_record_on_one_line() -> None:
    record = samples()[1]
    line = seal(Sealer(), record)

    assert line is record.line
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert orjson.loads(line) == record.to_dict()
    assert line.endswith(b',"digest":"%b"}\n' % record.digest.encode())
    # The line minus its digest is exactly the hashed payload, after the previous digest.
    assert hashlib.sha256(ZERO_DIGEST.encode() + unsigned(line)).hexdigest() == record.digest


def test_any_edit_changes_the_digest() -> None:
    record = samples()[0]
    assert isinstance(record, KvEvictionReport)
    seal(Sealer(), record)
    edited = dataclasses.replace(record, block_offset=record.block_offset + 64, digest="")
    seal(Sealer(), edited)
    assert edited.digest != record.digest
    # The same record after another chain head gets another digest too.
    sealer = Sealer()
    seal(sealer, samples()[2])
    moved = samples()[0]
    seal(sealer, moved)
    assert moved.digest != record.digest


def test_hmac_digests_need_the_key() -> None:
    key = b"sekrit"
    plain, keyed = Sealer(), Sealer(key)
    for record, twin in zip(samples()[:3], samples()[:3], strict=True):
        seal(plain, record)
        previous = keyed.last_digest
        seal(keyed, twin)
        assert twin.digest != record.digest
        body = twin.to_dict()
        del body["digest"]
        assert body["alg"] == "hmac-sha256"
        assert body["key_id"] == key_id(key) != key_id(b"other")
        assert len(body["key_id"]) == 16
        assert "sekrit" not in orjson.dumps(body).decode()
        payload = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        expected = hmac.new(key, previous.encode() + payload, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(twin.digest, expected)
        assert twin.digest == chain_digest(previous, payload, key)
        other = hmac.new(b"other", previous.encode() + payload, hashlib.sha256).hexdigest()
        assert twin.digest != other


def test_a_detached_seal_leaves_the_chain_alone() -> None:
    sealer = Sealer()
    first, loss = samples()[0], samples()[5]
    assert isinstance(loss, LossReceipt)
    seal(sealer, first)
    head = sealer.last_digest

    seal(sealer, loss)

    assert sealer.last_digest == head
    assert loss.prev_digest == "ab" * 32  # kept as given
    body = orjson.loads(loss.line)
    assert body["digest"] == loss.digest
    assert body["prev_digest"] == "ab" * 32  # a loss record names its link
    assert loss.digest == chain_digest("ab" * 32, unsigned(loss.line))


def test_manager_receipts_are_sealed_with_its_key() -> None:
    sink = ChannelSink(100)
    config = CachingConfig(kv_cache_size_mb=8192 / 2**20, enable_receipts=True)
    manager = KVCacheManager(config, sink=sink, clock=SimClock(), hmac_key=b"k", run_id="run-x")
    for session in "abc":
        manager.get_or_create_cache(session, 16)
    manager.shutdown()

    records = sink.drain()

    assert [r.run_id for r in records] == ["run-x", "run-x"]
    assert [r.kind for r in sink.frames] == ["open", "close"]
    stream = [sink.frames[0], *records, sink.frames[1]]
    assert [r.seq for r in stream] == [0, 1, 2, 3]
    previous = ZERO_DIGEST
    for record in stream:
        body = orjson.loads(record.line)
        assert body["alg"] == "hmac-sha256"
        assert body["key_id"] == key_id(b"k")
        digest = body.pop("digest")
        assert record.line == canonical(body)[:-1] + b',"digest":"%b"}\n' % digest.encode()
        expected = hmac.new(b"k", previous.encode() + canonical(body), hashlib.sha256)
        assert digest == record.digest == expected.hexdigest()
        previous = digest
    assert isinstance(sink.frames[1], RunClose)
    assert sink.frames[1].head == records[-1].digest
    assert manager.last_digest == previous


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
