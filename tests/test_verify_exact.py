"""``verify`` must say no to every file no run can produce (issue 23 §1, issue 26): each test
here is an attacker's file, edited as dicts and re-chained with the real Sealer, so that only
the check under test stands between it and ``ok``. Each invariant docs/receipts.md states for a
run ("Invariants of a run") has a test here that tries to break it.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kvreceipts.chain import canonical, chain_digest, key_id
from kvreceipts.errors import InputError
from kvreceipts.proofs.merkle import Frontier, leaf_hash
from kvreceipts.schema import KIND_NAMES, ZERO_DIGEST, json_schema
from kvreceipts.verify import VerifyOptions, VerifyReport, verify_lines
from receipt_files import BLOCK, KEY, OTHER_KEY, POOL, lean_run, parsed, seal, stamp

if TYPE_CHECKING:
    from collections.abc import Callable


def verify(lines: list[bytes], **options: Any) -> VerifyReport:
    return verify_lines(lines, options=VerifyOptions(**options))


def checks(report: VerifyReport) -> set[str]:
    return {v.check for v in report.violations}


def at(report: VerifyReport, line: int) -> set[str]:
    """The checks that failed at one line."""
    return {v.check for v in report.violations if v.line == line}


@pytest.fixture(params=["fast", "general"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on the fast path (eviction structs) and on the general path alone."""
    if request.param == "general":
        monkeypatch.setattr("kvreceipts.verify.runs.eviction_decoder", lambda layout: None)
    return str(request.param)


def test_the_files_built_here_verify() -> None:
    for records in (lean_run(), lean_run(6, batch=True, snapshot=True)):
        assert verify(seal(records)).ok, verify(seal(records)).violations[:3]
        report = verify(seal(records, KEY), key=KEY)
        assert report.ok
        assert report.authentication == "hmac"


# 1. The verdict says what was established ------------------------------------------------------


def test_a_wrong_key_is_never_reported_as_authenticated() -> None:
    lines = seal(lean_run(), KEY)
    report = verify(lines, key=OTHER_KEY)
    assert report.authentication == "failed"
    assert report.to_dict()["authentication"] == "failed"
    # Sealed with another key under the right key id (the id names a key, it proves nothing).
    forged, prev, tree = [], ZERO_DIGEST, Frontier()
    for record in lean_run():
        body = {**record, "alg": "hmac-sha256", "key_id": key_id(KEY)}
        if body["kind"] == "close":
            body |= {"head": prev, "tree_size": tree.size, "root": tree.root().hex()}
        payload = canonical(body)
        prev = chain_digest(prev, payload, OTHER_KEY)
        forged.append(payload[:-1] + b',"digest":"%b"}\n' % prev.encode())
        tree.append(leaf_hash(forged[-1][:-1]))
    report = verify(forged, key=KEY)
    assert checks(report) == {"digest"}
    assert report.authentication == "failed"


def test_a_line_not_checked_under_the_key_fails_authentication() -> None:
    lines = seal(lean_run(), KEY)
    lines.insert(3, b"   \n")
    report = verify(lines, key=KEY)
    assert report.authentication == "failed"


def test_a_matched_anchor_is_reported_with_its_run_and_seq() -> None:
    lines = seal(lean_run(4))
    close = parsed(lines)[-1]
    report = verify(lines, anchors={"": close["digest"]})
    assert report.ok
    assert [(a.run_id, a.seq, a.digest) for a in report.anchors_matched] == [
        ("run-1", close["seq"], close["digest"])
    ]
    assert report.to_dict()["anchors_matched"] == [
        {"run_id": "run-1", "seq": close["seq"], "digest": close["digest"]}
    ]
    assert verify(lines, anchors={"": "0" * 64}).anchors_matched == []


# 2. The close record against the run ------------------------------------------------------------


def _close_edit(edit: Callable[[dict[str, Any]], None], **run: Any) -> VerifyReport:
    records = lean_run(**{"evictions": 8, **run})
    edit(records[-1])
    lines = seal(records)
    return verify(lines)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda c: c.update(head="ab" * 32), id="head"),
        pytest.param(lambda c: c["final_stats"].update(evictions=5), id="evictions"),
        pytest.param(lambda c: c["final_stats"].update(cache_hits=0), id="hits-below-evictions"),
        pytest.param(lambda c: c["final_stats"].update(cache_misses=1), id="misses"),
        pytest.param(lambda c: c["final_stats"].update(used_bytes=3 * POOL), id="used-3x-pool"),
        pytest.param(lambda c: c["final_stats"].update(total_bytes=2 * POOL,
                                                       total_memory_mb=0.5), id="total"),
        pytest.param(lambda c: c["final_stats"].update(hit_rate=0.5), id="hit-rate"),
        pytest.param(lambda c: c["final_stats"].update(memory_utilization=0.1), id="util"),
        pytest.param(lambda c: c["final_stats"].update(used_memory_mb=9.0), id="used-mb"),
        pytest.param(lambda c: c["final_stats"].update(memory_pool_efficiency=2.0), id="eff"),
        pytest.param(lambda c: c.update(bytes_freed=c["bytes_freed"] + 1), id="bytes-freed"),
        pytest.param(lambda c: c["counts"].update(eviction=7), id="counts"),
        pytest.param(lambda c: c["counts"].update(snapshot=0), id="counts-zero-kind"),
    ],
)  # fmt: skip
def test_a_close_record_that_does_not_fit_its_run_fails(edit: Any) -> None:
    report = _close_edit(edit)
    assert not report.ok
    assert at(report, report.lines) & {"close"}, report.violations


@pytest.mark.parametrize("value", [True, 1.0, "1", None, -1])
def test_counts_are_integers_not_booleans(value: object) -> None:
    report = _close_edit(lambda c: c["counts"].update(open=value))
    assert "schema" in at(report, report.lines)


def test_with_losses_the_counts_add_up_kind_by_kind() -> None:
    records = lean_run(8, snapshot=True)
    lose = range(3, 6)  # three evictions
    assert verify(seal(records, lose=lose), allow_loss=True).ok
    # The total still matches, but one lost eviction is passed off as a snapshot.
    shifted = copy.deepcopy(records)
    shifted[-1]["counts"]["eviction"] -= 1
    shifted[-1]["counts"]["snapshot"] += 1
    report = verify(seal(shifted, lose=lose), allow_loss=True)
    assert at(report, report.lines) >= {"close"}
    # A loss record whose kinds do not add up to its count.
    report = verify(seal(records, lose=lose, edit_loss=lambda loss: loss.update(
        lost_counts={"eviction": 2})), allow_loss=True)  # fmt: skip
    assert "loss" in checks(report)
    # ... or that claims the evictions were snapshots.
    report = verify(seal(records, lose=lose, edit_loss=lambda loss: loss.update(
        lost_counts={"snapshot": 3})), allow_loss=True)  # fmt: skip
    assert "close" in checks(report)


def test_a_loss_record_needs_its_lost_counts() -> None:
    report = verify(seal(lean_run(8), lose=range(3, 6), edit_loss=lambda loss: loss.pop(
        "lost_counts")), allow_loss=True)  # fmt: skip
    assert "schema" in checks(report)


# 4. Records no run can produce ------------------------------------------------------------------


@pytest.mark.parametrize(
    "timestamp",
    ["yesterday", "2025-13-01T00:00:00Z", "2025-01-01 00:00:05Z", "2025-01-01T00:00:60Z",
     "2025-02-30T00:00:05Z", "2025-01-01T00:00:05+24:00", "2025-01-01T00:00:05", ""],
)  # fmt: skip
def test_a_timestamp_that_is_no_time_fails(path: str, timestamp: str) -> None:
    records = lean_run(8)
    records[4]["timestamp"] = timestamp
    report = verify(seal(records))
    assert at(report, 5) == {"time"}, (path, report.violations)


@pytest.mark.parametrize("kind_at", [4, 9], ids=["eviction", "close"])
def test_time_that_goes_backwards_fails(path: str, kind_at: int) -> None:
    records = lean_run(8)
    records[kind_at]["timestamp"] = stamp(1)  # before the record ahead of it
    report = verify(seal(records))
    assert at(report, kind_at + 1) == {"time"}, (path, report.violations)


def test_time_is_compared_with_the_offsets_applied(path: str) -> None:
    records = lean_run(8)
    # The same instant written with an offset: in order, though it sorts earlier as text.
    records[4]["timestamp"] = "2024-12-31T19:00:06.000000-05:00"
    assert verify(seal(records)).ok, path
    # Later as text, but an earlier instant: backwards.
    records[4]["timestamp"] = "2025-01-01T01:00:03.000000+01:00"
    report = verify(seal(records))
    assert at(report, 5) == {"time"}, path


@pytest.mark.parametrize(("edit", "check"), [(1, "gap"), (-1, "seq"), (0, "seq")])
def test_seq_that_skips_or_repeats_fails(path: str, edit: int, check: str) -> None:
    records = lean_run(8)
    records[4]["seq"] = records[3]["seq"] + 1 + edit if edit else records[3]["seq"]
    report = verify(seal(records))
    assert check in at(report, 5), (path, report.violations)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda rs: rs[3]["before"].update(used_bytes=POOL + BLOCK) or
                     rs[3]["after"].update(used_bytes=POOL), id="eviction-before"),
        pytest.param(lambda rs: rs[3].update(block_offset=POOL), id="eviction-offset"),
        pytest.param(lambda rs: rs[1].update(pool_used=POOL + 1), id="snapshot-used"),
        pytest.param(lambda rs: rs[1].update(pool_total=2 * POOL), id="snapshot-total"),
        pytest.param(lambda rs: rs[-2].update(pool_used_before=2 * POOL,
                                              pool_used_after_evictions=2 * POOL - 6 * BLOCK,
                                              pool_used_after=2 * POOL), id="batch-pool"),
    ],
)  # fmt: skip
def test_bytes_beyond_the_pool_fail(path: str, edit: Any) -> None:
    records = lean_run(6, batch=True, snapshot=True)
    edit(records)
    report = verify(seal(records))
    assert checks(report) & {"bytes", "batch"}, (path, report.violations)


@pytest.mark.parametrize(
    ("edit", "check"),
    [
        pytest.param(lambda rs: rs[4]["after"].update(evictions=5), "counter", id="evictions"),
        pytest.param(lambda rs: rs[4]["after"].update(total_sessions=59), "sessions",
                     id="sessions"),
        pytest.param(lambda rs: rs[4]["after"].update(cache_misses=1), "counter",
                     id="misses-backwards"),
        pytest.param(lambda rs: rs[4].update(block_hash=rs[3]["block_hash"]) or
                     rs[4]["after"].update(cache_misses=rs[3]["after"]["cache_misses"]) or
                     [r["after"].update(cache_misses=r["after"]["cache_misses"] - 1)
                      for r in rs[5:9]], "block", id="block-again-without-a-miss"),
    ],
)  # fmt: skip
def test_counters_that_no_cache_writes_fail(path: str, edit: Any, check: str) -> None:
    records = lean_run(8)
    edit(records)
    report = verify(seal(records))
    assert check in at(report, 5), (path, report.violations)


@pytest.mark.parametrize(
    ("where", "name"),
    [(3, "block_hash"), (3, "performance"), (3, "key_id"), (0, "workload_absent"),
     (9, "head")],
)  # fmt: skip
def test_null_where_the_schema_has_none_fails(path: str, where: int, name: str) -> None:
    records = lean_run(8)
    if name == "workload_absent":
        del records[where]["workload"]  # required, though it may be null
    else:
        records[where][name] = None
    report = verify(seal(records))
    assert "schema" in at(report, where + 1), (path, report.violations)


def test_an_unknown_layout_or_schema_fails() -> None:
    for field, value in (("layout", "sideways"), ("schema", "kvreceipts.eviction/3")):
        records = lean_run(4)
        records[0][field] = value
        assert "schema" in at(verify(seal(records)), 1)


def _batch(records: list[dict[str, Any]], seq: int, first: int, last: int) -> dict[str, Any]:
    template = next(r for r in lean_run(2, batch=True) if r["kind"] == "eviction_batch")
    freed = (last - first + 1) * BLOCK
    return {**template, "run_id": records[0]["run_id"], "seq": seq, "timestamp": stamp(40),
            "count": last - first + 1, "first_seq": first, "last_seq": last,
            "total_bytes_freed": freed, "pool_used_before": POOL,
            "pool_used_after_evictions": POOL - freed, "allocated_bytes": freed,
            "pool_used_after": POOL, "required_bytes": freed}  # fmt: skip


def _with_batches(*ranges: tuple[int, int], evictions: int = 8) -> list[dict[str, Any]]:
    """A run whose records after the open are evictions, with a batch inserted after each
    of ``ranges`` (first, last: positions of evictions by seq before renumbering)."""
    records = lean_run(evictions, snapshot=True)
    close = records.pop()
    for first, last in ranges:
        records.insert(last + 1, _batch(records, last + 1, first, last))
        for n, record in enumerate(records):
            record["seq"] = n
    close["seq"] = close["records"] = len(records)
    counts: dict[str, int] = {}
    for record in records:
        counts[record["kind"]] = counts.get(record["kind"], 0) + 1
    close["counts"] = counts
    for n, record in enumerate(records):
        record["timestamp"] = stamp(n)
    close["timestamp"] = stamp(len(records))
    return [*records, close]


def test_a_batch_of_its_own_round_verifies() -> None:
    records = _with_batches((2, 9))  # the snapshot is seq 1; evictions 2..9
    assert verify(seal(records)).ok, verify(seal(records)).violations


@pytest.mark.parametrize(
    ("ranges", "bad"),
    [
        pytest.param([(1, 9)], 11, id="covers-the-snapshot"),
        pytest.param([(0, 9)], 11, id="covers-the-open-record"),
        pytest.param([(2, 5), (2, 6)], 8, id="the-same-evictions-twice"),
        pytest.param([(2, 5), (5, 8)], 10, id="more-than-the-streak"),
    ],
)
def test_a_batch_that_covers_what_is_no_eviction_of_its_round_fails(
    ranges: list[tuple[int, int]], bad: int
) -> None:
    records = _with_batches(*ranges)
    report = verify(seal(records))
    assert "batch" in at(report, bad), report.violations


# Every record verify accepts passes the published JSON Schema --------------------------------

_SCHEMAS = {kind: jsonschema.Draft202012Validator(json_schema(kind),
                                                   format_checker=jsonschema.FormatChecker())
            for kind in KIND_NAMES}  # fmt: skip
_BASE = lean_run(6, batch=True, snapshot=True)

_values = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 2**64), st.floats(allow_nan=False),
    st.sampled_from([0, 1, -1, 1.0, 0.5, "", "lean", "upstream", "sha256", "hmac-sha256",
                     "0" * 16, "0" * 64, "kvreceipts.eviction/2", "2025-01-01T00:00:30Z",
                     "2025-01-01T00:00:30+01:00", "2025-01-01 00:00:30Z", {}, [], {"a": 1}]),
    st.text(max_size=4),
)  # fmt: skip


def _paths(value: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, item in value.items():
        out.append((*prefix, key))
        if isinstance(item, dict):
            out += _paths(item, (*prefix, key))
    return out


def _schema_ok(record: dict[str, Any]) -> bool:
    kind = record.get("kind")
    validator = _SCHEMAS.get(kind) if isinstance(kind, str) else None
    return validator is not None and validator.is_valid(record)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(index=st.integers(0, len(_BASE) - 1), pick=st.integers(0, 1000), value=_values,
       drop=st.booleans())  # fmt: skip
@example(index=3, pick=0, value=None, drop=False)
def test_what_verify_accepts_the_schema_accepts_and_the_converse(
    index: int, pick: int, value: Any, drop: bool
) -> None:
    records = copy.deepcopy(_BASE)
    target = records[index]
    paths = [p for p in _paths(target) if p[-1] not in ("alg", "key_id", "digest")]
    where = paths[pick % len(paths)]
    holder = target
    for key in where[:-1]:
        holder = holder[key]
    if drop:
        del holder[where[-1]]
    else:
        holder[where[-1]] = value
    if target.get("kind") == "close" and where != ("head",):
        target.pop("head", None)  # the sealer's own head, unless that is the edit
    try:
        lines = seal(records)
    except (TypeError, orjson.JSONEncodeError):
        return  # not even JSON
    record = orjson.loads(lines[index])
    try:
        line_ok = not at(verify(lines), index + 1)
    except InputError:  # the first line is not even a receipt: the file is refused
        line_ok = False
    if line_ok:
        assert _schema_ok(record), (where, value, record)
    if not _schema_ok(record):
        assert not line_ok, (where, value)


def test_every_genuine_record_passes_the_schema() -> None:
    for line in seal(_BASE, KEY):
        assert _schema_ok(orjson.loads(line))
