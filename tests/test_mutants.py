"""Tests written to kill the mutants ``nox -s mutants`` found alive (docs/development.md lists
the ones that are equivalent, with the reason). Each says which guarantee it holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from kvreceipts.chain import (
    DIGEST_SUFFIX_LEN,
    Sealer,
    canonical,
    chain_digest,
    key_id,
    read_hmac_key,
)
from kvreceipts.errors import InputError, UsageError
from kvreceipts.policies import FIFOPolicy, LFUPolicy, LRUPolicy, S3FIFOPolicy, make_policy
from kvreceipts.schema import ZERO_DIGEST
from test_verify import KEY, checks, parsed, reseal, run_lines, verify

if TYPE_CHECKING:
    from pathlib import Path

# --- verify: time order and seq on the common path (issue 26: no test wrote either) ------


@pytest.mark.needs("receipts")
@pytest.mark.parametrize("key", [None, KEY], ids=["sha256", "hmac"])
def test_a_timestamp_that_goes_back_is_a_time_violation(tmp_path: Path, key: bytes | None) -> None:
    lines, _ = run_lines(tmp_path / "r.jsonl", key=key)
    records = parsed(lines)
    middle = len(records) // 2
    assert records[middle]["kind"] == "eviction"
    records[middle]["timestamp"] = "2000-01-01T00:00:00.000000Z"  # before the open record
    report = verify(reseal(records, key), key=key)
    assert checks(report) == {"time"}
    (violation,) = report.violations
    assert violation.line == middle + 1
    assert "2000-01-01T00:00:00.000000Z is earlier than the previous record's" in violation.message
    assert verify(reseal(parsed(lines), key), key=key).ok  # the same file untouched


@pytest.mark.needs("receipts")
def test_equal_timestamps_are_in_order(tmp_path: Path) -> None:
    lines, _ = run_lines(tmp_path / "r.jsonl")
    records = parsed(lines)
    records[2]["timestamp"] = records[1]["timestamp"]
    assert "time" not in checks(verify(reseal(records, None)))


@pytest.mark.needs("receipts")
def test_a_repeated_seq_is_a_seq_violation_then_a_gap(tmp_path: Path) -> None:
    lines, _ = run_lines(tmp_path / "r.jsonl")
    records = parsed(lines)
    records[3]["seq"] = records[2]["seq"]  # seq 2 twice (the chain re-linked), seq 3 missing
    report = verify(reseal(records, None))
    found = [(v.line, v.check) for v in report.violations]
    assert found == [(4, "seq"), (5, "gap")]
    assert report.violations[0].message.startswith("seq 2 comes after seq 2: a repeated")
    assert report.violations[1].message.startswith("1 record(s) missing (seq 3..3)")


@pytest.mark.needs("receipts")
def test_a_skipped_seq_is_a_gap_of_its_size(tmp_path: Path) -> None:
    lines, _ = run_lines(tmp_path / "r.jsonl")
    records = parsed(lines)
    for record in records[3:]:
        if record["kind"] != "loss":
            record["seq"] += 2
    report = verify(reseal(records, None))
    gap = next(v for v in report.violations if v.check == "gap")
    assert gap.line == 4
    assert gap.message.startswith("2 record(s) missing")


# --- chain -------------------------------------------------------------------------------


def test_the_sealer_chains_from_zeros_and_appends_the_digest_last() -> None:
    sealer = Sealer()
    assert (sealer.alg, sealer.key_id, sealer.last_digest) == ("sha256", None, ZERO_DIGEST)
    body: dict[str, Any] = {"kind": "open", "seq": 0, "run_id": "r"}
    digest, line = sealer.seal_dict(dict(body))
    payload = canonical({**body, "alg": "sha256"})
    assert digest == chain_digest(ZERO_DIGEST, payload) == sealer.last_digest
    assert line == payload[:-1] + b',"digest":"' + digest.encode() + b'"}\n'
    assert len(line) - 1 - len(payload) == DIGEST_SUFFIX_LEN - 1
    second, _ = sealer.seal_dict({"kind": "close", "seq": 1, "run_id": "r"})
    assert second == chain_digest(digest, canonical({"kind": "close", "seq": 1, "run_id": "r",
                                                     "alg": "sha256"}))  # fmt: skip


def test_a_keyed_sealer_names_its_key_and_seals_beside_without_moving() -> None:
    sealer = Sealer(b"k")
    assert sealer.alg == "hmac-sha256"
    assert sealer.key_id is not None
    assert len(sealer.key_id) == 16
    head = sealer.last_digest
    digest, line = sealer.seal_beside("ab" * 32, {"kind": "loss", "seq": 3})
    assert sealer.last_digest == head  # the chain did not move
    payload = canonical({"kind": "loss", "seq": 3, "alg": "hmac-sha256",
                         "key_id": sealer.key_id})  # fmt: skip
    assert digest == chain_digest("ab" * 32, payload, b"k")
    assert line.endswith(b'"digest":"' + digest.encode() + b'"}\n')
    first, _ = sealer.seal_dict({"kind": "open", "seq": 0})
    assert first != chain_digest(ZERO_DIGEST, canonical({"kind": "open", "seq": 0}))


def test_an_hmac_key_file_loses_one_line_ending_only(tmp_path: Path) -> None:
    path = tmp_path / "k"
    for written, key in [(b"s\r\n", b"s"), (b"s\n\n", b"s\n"), (b"s\r", b"s"), (b"\ns", b"\ns")]:
        path.write_bytes(written)
        assert read_hmac_key(path) == key, written


# --- policies ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lru", "fifo", "lfu", "s3fifo"])
def test_make_policy_builds_each_policy(name: str) -> None:
    policy = make_policy(name, 4)
    expected = {"lru": LRUPolicy, "fifo": FIFOPolicy, "lfu": LFUPolicy, "s3fifo": S3FIFOPolicy}
    assert type(policy) is expected[name]


@pytest.mark.parametrize("name", ["lru", "fifo", "lfu", "s3fifo"])
def test_a_policy_keeps_its_capacity(name: str) -> None:
    assert make_policy(name, 7).capacity == 7


def test_an_empty_hmac_key_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_bytes(b"\r\n")
    with pytest.raises(InputError, match="HMAC key file is empty") as caught:
        read_hmac_key(path)
    assert str(caught.value) == f"{path}: HMAC key file is empty"
    assert caught.value.path == str(path)


def _s3fifo(small: str, main: list[tuple[str, int]]) -> S3FIFOPolicy:
    """Capacity 10 (small 1, main 9): ``small`` in small, then ``main`` (key, size) in main
    (before the first eviction, inserts go to main once small is full)."""
    policy = S3FIFOPolicy(10)
    policy.insert(small)
    for key, size in main:
        policy.insert(key, size)
    return policy


def _victims(policy: S3FIFOPolicy, count: int) -> list[object]:
    return [policy.victim() for _ in range(count)]


def test_s3fifo_main_counts_every_hit() -> None:
    """A key hit three times outlasts one hit once, which outlasts one never hit."""
    policy = _s3fifo("s", [("c", 1), ("e", 1), ("x", 1)])
    for key in ("c", "c", "c", "e"):
        policy.access(key)
    assert _victims(policy, 4) == ["s", "x", "e", "c"]


def test_s3fifo_a_hit_buys_one_pass_not_two() -> None:
    policy = _s3fifo("g", [("e", 1), ("f", 1)])
    policy.access("e")
    assert _victims(policy, 2) == ["g", "f"]  # g leaves small for the ghost; e goes round
    policy.on_miss("g")  # back from the ghost: straight to main, behind e
    policy.insert("g")
    assert _victims(policy, 2) == ["e", "g"]


def test_s3fifo_a_key_hit_often_is_still_evicted_when_alone() -> None:
    policy = S3FIFOPolicy(10)
    policy.insert("s")
    policy.insert("k")
    for _ in range(10):
        policy.access("k")
    assert _victims(policy, 3) == ["s", "k", None]


def test_s3fifo_removing_from_small_frees_small() -> None:
    policy = _s3fifo("s", [(f"m{i}", 1) for i in range(8)])
    policy.remove("s")
    policy.insert("new")  # small is empty again, so it goes to small...
    assert policy.victim() == "new"  # ...and small is evicted first while main is in share


def test_s3fifo_removing_from_main_frees_main() -> None:
    policy = _s3fifo("s", [("big", 9), ("mid", 5), ("one", 1)])
    policy.remove("one")  # main holds 14 of its 9: still over, so main is evicted from
    assert policy.victim() == "big"
    policy = _s3fifo("s", [("big", 9), ("one", 1)])
    policy.remove("one")  # main holds 9 of 9: within its share, so small goes first
    assert policy.victim() == "s"


def test_a_key_id_is_an_hmac_of_the_fixed_label() -> None:
    assert key_id(b"k") == "2dc4ddf985b296c9"  # hmac(k, "kvreceipts key id")[:16]


def test_an_unknown_policy_lists_the_choices() -> None:
    with pytest.raises(UsageError) as caught:
        make_policy("nope", 1)
    assert str(caught.value) == "unknown policy 'nope' (choose from: lru, fifo, lfu, s3fifo)"


def test_lfu_forgets_its_minimum_when_emptied() -> None:
    policy = LFUPolicy(4)
    policy.insert("a")
    policy.remove("a")
    policy.insert("b")
    assert policy.victim() == "b"
    assert policy.victim() is None


def _after_first_eviction() -> S3FIFOPolicy:
    """Capacity 10: 0 in small, 1..9 in main; the first victim, 0, goes to the ghost."""
    policy = S3FIFOPolicy(10)
    for key in range(10):
        policy.insert(key)
    assert policy.victim() == 0
    return policy


def test_s3fifo_an_empty_key_is_a_key_like_any_other() -> None:
    policy = S3FIFOPolicy(10)
    policy.insert("")  # to small: nothing came back from the ghost
    policy.insert("a")  # small is full: to main
    assert policy.victim() == ""
    policy = _after_first_eviction()
    policy.insert("")
    assert policy.victim() == ""  # it went to small, evicted first while main is in share


def test_s3fifo_after_the_first_eviction_inserts_go_to_small() -> None:
    policy = _after_first_eviction()
    policy.insert(10)
    policy.insert(11)  # small is over its share now, but fills from the front anyway
    assert policy.victim() == 10


def test_s3fifo_main_over_its_share_is_evicted_from_even_with_small_full() -> None:
    policy = _after_first_eviction()
    policy.on_miss(0)
    policy.insert(0)  # back from the ghost: main holds 10 of its 9
    policy.insert(10)  # to small
    assert policy.victim() == 1


def test_s3fifo_the_ghost_forgets_its_oldest_past_nine_tenths() -> None:
    policy = _after_first_eviction()  # the ghost holds 0
    for key in range(10, 19):  # nine more keys through small and out to the ghost
        policy.insert(key)
        assert policy.victim() == key
    policy.on_miss(0)  # the ghost (9 keys) forgot 0 when 18 came in
    policy.insert(0)
    assert policy.victim() == 0  # so 0 went to small, and small goes first (0 to the ghost
    policy.on_miss(11)  # again, pushing out 10); 11 is still in the ghost:
    policy.insert(11)  # to main, which is over its share now
    assert policy.victim() == 1


def test_s3fifo_a_cache_too_small_for_a_ghost_has_none() -> None:
    policy = S3FIFOPolicy(1)  # no ghost at all
    policy.insert("a")
    assert policy.victim() == "a"  # from main: main's victims never go to the ghost
    policy.insert("b")  # to small now
    assert policy.victim() == "b"  # from small, so to the ghost, which holds nothing
    policy.on_miss("b")
    policy.insert("b")  # not remembered: to small again
    assert policy.victim() == "b"
    policy = S3FIFOPolicy(2)  # a ghost of one key
    policy.insert("a")
    policy.insert("b")
    assert policy.victim() == "a"
    policy.insert("c")  # after the first eviction: to small
    assert policy.victim() == "c"  # to the ghost
    policy.on_miss("c")
    policy.insert("c")  # from the ghost: to main, which now holds b and c (2 of 2)
    assert policy.victim() == "b"


def test_s3fifo_small_fills_by_size_before_the_first_eviction() -> None:
    policy = S3FIFOPolicy(20)  # small holds 2
    for key in ("a", "b", "c", "d"):
        policy.insert(key)  # a and b fill small, c and d go to main
    policy.access("c")
    assert _victims(policy, 4) == ["a", "b", "d", "c"]


def test_s3fifo_main_bytes_count_what_goes_in_and_out() -> None:
    policy = _s3fifo("s", [("m1", 5), ("m2", 5)])  # main holds 10 of its 9
    assert policy.victim() == "m1"
    policy = _s3fifo("s", [("m1", 1), ("m2", 9), ("m3", 1)])  # 11 of 9
    assert policy.victim() == "m1"
    assert policy.victim() == "m2"  # 10 of 9 still


def test_s3fifo_a_promoted_key_starts_main_at_zero() -> None:
    policy = _after_first_eviction()
    policy.insert(10)
    policy.access(10)
    policy.access(10)
    assert policy.victim() == 1  # 10 moved to main, main's oldest left
    policy.on_miss(0)
    policy.insert(0)  # from the ghost, behind 10
    assert _victims(policy, 10) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 0]


def test_s3fifo_a_promotion_counts_in_main_and_small_goes_on() -> None:
    policy = _after_first_eviction()
    policy.insert(10)
    policy.access(10)
    policy.access(10)
    policy.insert(11)
    assert policy.victim() == 11  # 10 promoted on the way, 11 (never hit) evicted
    policy.insert(12)
    assert policy.victim() == 1  # main holds 10 of its 9 after the promotion


def test_s3fifo_main_counters_are_capped_at_three() -> None:
    policy = _s3fifo("s", [("k", 1), ("j", 1)])
    for _ in range(5):
        policy.access("k")
    for _ in range(3):
        policy.access("j")
    assert _victims(policy, 3) == ["s", "k", "j"]  # both capped at 2 after a pass: k first
    policy = _s3fifo("s", [("k", 1), ("j", 1)])
    policy.access("k")
    policy.access("k")
    policy.access("j")
    assert _victims(policy, 3) == ["s", "j", "k"]


def test_s3fifo_an_unpinned_key_promoted_from_small_is_found_when_main_is_pinned() -> None:
    policy = S3FIFOPolicy(20)
    for key in range(20):
        policy.insert(key)
    for key in (0, 1):
        policy.access(key)
        policy.access(key)
    assert policy.victim() == 2  # 0 and 1 promoted: main holds 19 of its 18
    main = set(range(20)) - {2}
    policy.insert(99)
    policy.access(99)
    policy.access(99)
    assert policy.victim(main) == 99  # promoted by the second try at small, then found in main
