"""Tests written to kill the mutants ``nox -s mutants`` found alive (docs/development.md lists
the ones that are equivalent, with the reason). Each says which guarantee it holds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from kvreceipts.chain import DIGEST_SUFFIX_LEN, Sealer, canonical, chain_digest, read_hmac_key
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
