"""Receipts that hold up to an attacker: each attack of issue #12, and a campaign of single
mutations, against SHA-256 and HMAC files, with and without anchors. Every test asserts the
exact verdict a user would see.
"""

from __future__ import annotations

import random
import tracemalloc
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvreceipts.chain import canonical, chain_digest, key_id
from kvreceipts.config import CachingConfig, SimulationConfig
from kvreceipts.errors import InputError
from kvreceipts.proofs.merkle import Frontier, RangeCover, aligned_ranges, leaf_hash
from kvreceipts.schema import ZERO_DIGEST
from kvreceipts.simulation import build_manager, plan_simulation, run_simulation
from kvreceipts.verify import VerifyOptions, VerifyReport, verify_lines

if TYPE_CHECKING:
    from pathlib import Path

KEY = b"receipts-you-can-prove"
OTHER_KEY = b"someone-else's-key"
pytestmark = pytest.mark.needs("receipts")


def run_lines(
    path: Path, *, key: bytes | None = None, seed: int = 0, **sim: Any
) -> tuple[list[bytes], str]:
    """A real simulated run written by JsonlSink: its lines and its published anchor."""
    from kvreceipts.sinks import JsonlSink

    plan = plan_simulation(
        CachingConfig(enable_receipts=True, kv_cache_size_mb=64),
        SimulationConfig(requests=300, seed=seed, batch_receipts=True, snapshot_every=50, **sim),
    )
    manager = build_manager(plan, sink=JsonlSink(path, append=False), hmac_key=key)
    run_simulation(manager, plan.requests(), prefill_ms_per_token=0.05)
    manager.shutdown()
    assert manager.last_digest is not None
    return path.read_bytes().splitlines(keepends=True), manager.last_digest


def verify(lines: list[bytes], **options: Any) -> VerifyReport:
    return verify_lines(lines, options=VerifyOptions(**options))


def checks(report: VerifyReport) -> set[str]:
    return {v.check for v in report.violations}


def reseal(records: list[dict[str, Any]], key: bytes | None) -> list[bytes]:
    """What an attacker with the key (or with none, for SHA-256) does after editing records:
    recompute every digest so the chain links again (the close record's head and the tree's
    roots included).
    """
    out, prev, tree = [], ZERO_DIGEST, Frontier()
    for record in records:
        body = {k: v for k, v in record.items() if k != "digest"}
        if body["kind"] == "close":
            body["head"] = prev
        if body["kind"] in ("checkpoint", "close"):  # SHA-256 roots are public too
            body["tree_size"], body["root"] = tree.size, tree.root().hex()
        payload = canonical(body)
        link = body["prev_digest"] if body["kind"] == "loss" else prev
        digest = chain_digest(link, payload, key)
        out.append(payload[:-1] + b',"digest":"%b"}\n' % digest.encode())
        if body["kind"] == "loss":
            ranges = aligned_ranges(body["first_seq"], body["last_seq"])
            for (_start, height), lost in zip(ranges, body.get("lost_tree", []), strict=False):
                tree.append_subtree(height, bytes.fromhex(lost))
        else:
            tree.append(leaf_hash(out[-1][:-1]))
        prev = body["last_lost_digest"] if body["kind"] == "loss" else digest
    return out


def parsed(lines: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in lines]


@pytest.fixture(params=[None, KEY], ids=["sha256", "hmac"])
def key(request: pytest.FixtureRequest) -> bytes | None:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def run(tmp_path: Path, key: bytes | None) -> tuple[list[bytes], str]:
    return run_lines(tmp_path / "run.jsonl", key=key)


def test_a_genuine_run_verifies_with_its_anchor(
    run: tuple[list[bytes], str], key: bytes | None
) -> None:
    lines, anchor = run
    report = verify(lines, key=key, anchors={"": anchor})
    assert report.ok, report.violations[:3]
    assert report.run_count == 1
    assert report.runs[0].complete
    assert report.last_digest == anchor
    assert report.authentication == ("hmac" if key else "none")
    assert report.kinds["open"] == report.kinds["close"] == 1


# 1. A forged loss record cannot move the anchor or hide records -------------------------------


def _line(record: dict[str, Any]) -> bytes:
    """The sealed line of a parsed record, without its newline."""
    body = canonical({k: v for k, v in record.items() if k != "digest"})
    return body[:-1] + b',"digest":"%s"}' % record["digest"].encode()


def _kinds(records: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for record in records:
        out[record["kind"]] = out.get(record["kind"], 0) + 1
    return dict(sorted(out.items()))


def _loss(record_before: dict[str, Any], lost: list[dict[str, Any]]) -> dict[str, Any]:
    cover = RangeCover(lost[0]["seq"])
    for record in lost:
        cover.append(leaf_hash(_line(record)))
    return {
        "kind": "loss", "run_id": lost[0]["run_id"], "seq": lost[-1]["seq"],
        "timestamp": lost[-1]["timestamp"], "alg": lost[0]["alg"], "sink": "http",
        "first_seq": lost[0]["seq"], "last_seq": lost[-1]["seq"], "count": len(lost),
        "lost_counts": _kinds(lost),
        "prev_digest": record_before["digest"], "last_lost_digest": lost[-1]["digest"],
        "lost_tree": [h.hex() for h in cover.hashes()],
        **({"key_id": lost[0]["key_id"]} if "key_id" in lost[0] else {}),
    }  # fmt: skip


def test_a_forged_loss_at_the_end_does_not_reach_the_anchor(run: tuple[list[bytes], str]) -> None:
    lines, anchor = run
    records = parsed(lines)
    kept, lost = records[:-50], records[-50:]  # the close record among them
    forged = reseal([*kept, _loss(kept[-1], lost)], None)
    report = verify(forged, anchors={"": anchor}, allow_loss=True)
    assert not report.ok
    assert {"incomplete", "anchor"} <= checks(report)


def test_a_forged_loss_in_the_middle_is_a_failure_and_is_named(tmp_path: Path) -> None:
    lines, anchor = run_lines(tmp_path / "r.jsonl")
    records = parsed(lines)
    forged = reseal([*records[:100], _loss(records[99], records[100:120]), *records[120:]], None)
    # The loss record links the chain across the gap, yet declared losses fail by default...
    report = verify(forged, anchors={"": anchor})
    assert checks(report) == {"loss"}
    assert report.lost_records == 20
    assert (report.losses[0].first_seq, report.losses[0].last_seq) == (100, 119)
    # ...and with --allow-loss the verdict still says which records are gone, and who dropped them.
    report = verify(forged, anchors={"": anchor}, allow_loss=True)
    assert report.ok
    assert report.losses[0].sink == "http"


def test_with_hmac_a_loss_record_cannot_be_forged_without_the_key(tmp_path: Path) -> None:
    lines, anchor = run_lines(tmp_path / "r.jsonl", key=KEY)
    records = parsed(lines)
    forged = reseal([*records[:100], _loss(records[99], records[100:120]), *records[120:]],
                    OTHER_KEY)  # fmt: skip
    report = verify(forged, key=KEY, anchors={"": anchor}, allow_loss=True)
    assert "digest" in checks(report)


# 2. No silent downgrade -------------------------------------------------------------------------


def _downgrade(lines: list[bytes]) -> list[bytes]:
    records = parsed(lines)
    records[10]["session_id"] = "forged"
    for record in records:
        record["alg"] = "sha256"
        record.pop("key_id", None)
    return reseal(records, None)


def test_an_hmac_file_rechained_with_sha256_says_it_is_unauthenticated(tmp_path: Path) -> None:
    lines, _ = run_lines(tmp_path / "r.jsonl", key=KEY)
    downgraded = _downgrade(lines)
    report = verify(downgraded)
    assert report.ok  # structurally sound: anyone can re-chain a plain SHA-256 file...
    assert report.authentication == "none"  # ...and the verdict says so
    assert checks(verify(downgraded, key=KEY)) == {"auth"}
    assert checks(verify(downgraded, require_hmac=True)) == {"auth"}


def test_an_hmac_file_without_the_key_is_not_authenticated(tmp_path: Path) -> None:
    lines, _ = run_lines(tmp_path / "r.jsonl", key=KEY)
    report = verify(lines)
    assert checks(report) == {"auth"}
    assert report.authentication == "none"
    assert verify(lines, no_auth=True).ok
    wrong = verify(lines, key=OTHER_KEY)
    assert checks(wrong) == {"auth"}
    assert wrong.authentication == "failed"


def test_every_record_names_its_algorithm_and_key(tmp_path: Path) -> None:
    lines, _ = run_lines(tmp_path / "r.jsonl", key=KEY)
    for record in parsed(lines):
        assert record["alg"] == "hmac-sha256"
        assert record["key_id"] == key_id(KEY)
        assert KEY.hex() not in orjson.dumps(record).decode()


# 3. Truncation and empty input ------------------------------------------------------------------


@pytest.mark.parametrize("cut", [1, 2, 50])
def test_a_cut_end_is_incomplete_without_an_anchor(
    run: tuple[list[bytes], str], key: bytes | None, cut: int
) -> None:
    lines, _ = run
    report = verify(lines[:-cut], key=key)
    assert checks(report) == {"incomplete"}
    assert report.incomplete_runs == 1
    assert verify(lines[:-cut], key=key, allow_incomplete=True).ok


def test_empty_input_is_no_records() -> None:
    report = verify([])
    assert not report.ok
    assert checks(report) == {"empty"}


# 4. Only the sealer's bytes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "edit"),
    [
        ("crlf", lambda ls: [ls[0][:-1] + b"\r\n", *ls[1:]]),
        ("blank", lambda ls: [*ls[:5], b"   \n", *ls[5:]]),
        ("garbage", lambda ls: [*ls, b"x" * 4096]),
        ("spaces", lambda ls: [ls[0].replace(b'":', b'": ', 1), *ls[1:]]),
        ("dup-key", lambda ls: [ls[3][:1] + b'"seq":3,' + ls[3][1:], *ls[4:]]),
    ],
)
def test_bytes_the_sealer_never_writes_are_violations(
    run: tuple[list[bytes], str], key: bytes | None, where: str, edit: Any
) -> None:
    lines, anchor = run
    report = verify(edit(list(lines)), key=key, anchors={"": anchor})
    assert not report.ok, where
    assert checks(report) & {"bytes", "canonical", "tail", "digest", "seq", "chain", "gap"}


# 5. Several runs in one file --------------------------------------------------------------------


def test_runs_are_anchored_one_by_one(tmp_path: Path, key: bytes | None) -> None:
    one, anchor_one = run_lines(tmp_path / "a.jsonl", key=key, seed=1)
    two, anchor_two = run_lines(tmp_path / "b.jsonl", key=key, seed=2)
    run_one, run_two = parsed(one)[0]["run_id"], parsed(two)[0]["run_id"]
    both = [*one, *two]
    assert verify(both, key=key, anchors={run_one: anchor_one, run_two: anchor_two}).ok
    # A foreign run spliced in, signed with the same key: a one-run anchor refuses the file,
    assert checks(verify(both, key=key, anchors={"": anchor_one})) == {"anchor"}
    # and per-run anchors name the run nobody vouched for.
    assert checks(verify(both, key=key, anchors={run_one: anchor_one})) == {"anchor"}
    # Run one cut short and run two appended: run one is incomplete.
    assert "incomplete" in checks(verify([*one[:-3], *two], key=key))
    # A named run that is missing is a violation.
    assert checks(verify(two, key=key, anchors={run_one: anchor_one, run_two: anchor_two})) == {
        "anchor"
    }


def test_the_same_run_twice_is_caught(run: tuple[list[bytes], str], key: bytes | None) -> None:
    lines, _ = run
    assert "frame" in checks(verify([*lines, *lines], key=key))


# 6. Hostile records never crash -----------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=8,
)  # fmt: skip


@pytest.fixture(scope="module")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    return run_lines(tmp_path_factory.mktemp("g") / "r.jsonl")[0][:40]


@given(index=st.integers(1, 39), field=st.text(max_size=12), value=_json, reseal_it=st.booleans())
def test_any_value_in_any_field_gives_violations_not_a_crash(
    genuine: list[bytes], index: int, field: str, value: Any, reseal_it: bool
) -> None:
    records = parsed(genuine)
    names = sorted(records[index])
    records[index][names[hash(field) % len(names)] if field else field] = value
    try:
        lines = reseal(records, None) if reseal_it else [
            *genuine[:index], orjson.dumps(records[index], option=orjson.OPT_NON_STR_KEYS) + b"\n",
            *genuine[index + 1:]]  # fmt: skip
    except (TypeError, orjson.JSONEncodeError):
        return  # not even JSON: nothing a file could hold
    report = verify(lines, allow_incomplete=True)
    assert isinstance(report.ok, bool)
    orjson.dumps(report.to_dict())


@pytest.mark.parametrize(
    "line",
    [
        b"{}\n",
        b"[1,2]\n",
        b'{"schema":"x"}\n',
        b"\x00\xff\n",
        b'{"timestamp": 0, "input_length": 1, "hash_ids": [1]}\n',
    ],
)
def test_a_file_that_is_not_receipts_is_one_error(line: bytes) -> None:
    with pytest.raises(InputError, match="not a kvreceipts receipts file"):
        verify([line, line])


def test_an_old_format_file_is_refused_in_one_error() -> None:
    with pytest.raises(InputError, match=r"line 1: schema kvreceipts.eviction/1 is no longer"):
        verify([b'{"schema":"kvreceipts.eviction/1","kind":[]}\n'])


# 7. Memory stays bounded ------------------------------------------------------------------------


def _one_record_runs(count: int) -> list[bytes]:
    lines = []
    for index in range(count):
        body = {"kind": "open", "run_id": f"{index:032x}", "seq": 0, "timestamp": "t",
                "alg": "sha256", "schema": "kvreceipts.eviction/2"}  # fmt: skip
        payload = canonical(body)
        lines.append(payload[:-1] + b',"digest":"%b"}\n' % chain_digest(
            ZERO_DIGEST, payload).encode())  # fmt: skip
    return lines


def test_many_runs_take_bounded_memory() -> None:
    peaks = []
    for count in (2_000, 20_000):
        lines = _one_record_runs(count)
        tracemalloc.start()
        report = verify(lines)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert report.violation_count >= count  # each is broken, and counted
        assert len(report.violations) <= 1000
    assert peaks[1] < 3 * peaks[0] + 20_000_000, peaks


# The campaign: single mutations of a real file --------------------------------------------------


def _mutations(rng: random.Random, lines: list[bytes], key: bytes | None) -> list[bytes]:
    records = parsed(lines)
    i = rng.randrange(len(lines))
    kind = rng.randrange(6)
    if kind == 0:  # delete a record
        return lines[:i] + lines[i + 1 :]
    if kind == 1:  # duplicate one
        return [*lines[: i + 1], lines[i], *lines[i + 1 :]]
    if kind == 2:  # swap two neighbours
        j = min(i + 1, len(lines) - 1) if i + 1 < len(lines) else i - 1
        out = list(lines)
        out[i], out[j] = out[j], out[i]
        return out
    if kind == 3:  # cut the tail
        return lines[: max(1, i)]
    # edit one value (and, as an attacker without the key, re-seal it all)
    record = records[i]
    name = rng.choice([k for k in record if k not in ("digest", "alg", "key_id")])
    value = record[name]
    if isinstance(value, bool):
        record[name] = not value
    elif isinstance(value, int):
        record[name] = value + rng.choice([-1, 1, 7])
    elif isinstance(value, str):
        record[name] = value + "x"
    elif isinstance(value, dict) and value:
        sub = rng.choice(sorted(value))
        record[name] = {**value, sub: (value[sub] + 1) if isinstance(value[sub], int)
                        else "x"}  # fmt: skip
    else:
        record[name] = "x"
    if kind == 4:
        return [*lines[:i], orjson.dumps(record) + b"\n", *lines[i + 1 :]]
    return reseal(records, OTHER_KEY if key else None)


@pytest.mark.slow
def test_every_single_mutation_is_caught(tmp_path: Path, key: bytes | None) -> None:
    lines, anchor = run_lines(tmp_path / "r.jsonl", key=key)
    rng = random.Random(12)
    caught = 0
    for _ in range(600):
        mutated = _mutations(rng, lines, key)
        if mutated == lines:
            continue
        report = verify(mutated, key=key, anchors={"": anchor})
        assert not report.ok, "a mutation went unnoticed"
        caught += 1
    assert caught >= 500


# Everything simulate writes verifies -------------------------------------------------------------


@pytest.mark.traces
@pytest.mark.parametrize("layout", ["lean", "upstream"])
@pytest.mark.parametrize("policy", ["lru", "fifo", "lfu", "s3fifo"])
@pytest.mark.parametrize("allocator", ["arena", "paged"])
def test_every_file_simulate_writes_verifies(
    tmp_path: Path, traces_dir: Path, allocator: str, policy: str, layout: str
) -> None:
    key = KEY if policy in ("lfu", "s3fifo") else None
    lines, anchor = run_lines(
        tmp_path / "r.jsonl", key=key, trace=str(traces_dir / "mooncake_synthetic_trace.jsonl"),
        allocator=allocator, policy=policy, layout=layout,
    )  # fmt: skip
    report = verify(lines, key=key, anchors={"": anchor})
    assert report.ok, report.violations[:3]
    assert report.kinds["eviction"] > 0
    assert report.authentication == ("hmac" if key else "none")
