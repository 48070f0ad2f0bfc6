"""``kvreceipts verify`` as a user runs it on files in the old ``/1`` format: exit codes, the
violations table, JSON output, HMAC keys from a file or the environment, the end-of-chain
anchor, standard input, and the word that the format is old.

The files here are sealed by hand (plain dicts and the old chain rule), so these tests run
without the ``receipts`` feature too: a verifier needs no emitter.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from typer.testing import CliRunner, Result

from kvreceipts.chain import HMAC_KEY_ENV, canonical
from kvreceipts.cli import app
from kvreceipts.schema import SCHEMA_ID_V1 as SCHEMA_ID
from kvreceipts.schema import ZERO_DIGEST

if TYPE_CHECKING:
    from pathlib import Path

KEY = b"a key that signs receipts"


@pytest.fixture(autouse=True)
def _no_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HMAC_KEY_ENV, raising=False)


def invoke(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=stdin, env=env)


def _stats(sessions: int, evictions: int) -> dict[str, Any]:
    total, used = 1 << 20, sessions * 4096
    return {
        "total_sessions": sessions, "total_memory_mb": 1.0, "used_memory_mb": used / (1 << 20),
        "memory_utilization": used / total, "cache_hits": 5, "cache_misses": 7,
        "hit_rate": 5 / 12, "average_session_length": 16.0, "memory_pool_efficiency": 1.0,
        "evictions": evictions, "used_bytes": used, "total_bytes": total,
    }  # fmt: skip


def compute_digest(payload: bytes, key: bytes | None) -> str:
    """The old format's digest: over the record alone (its prev_digest is a field)."""
    if key is None:
        return hashlib.sha256(payload).hexdigest()
    return hmac.new(key, payload, hashlib.sha256).hexdigest()


def _seal(record: dict[str, Any], key: bytes | None) -> bytes:
    payload = canonical(record)
    record["digest"] = compute_digest(payload, key)
    return payload[:-1] + b',"digest":"%b"}\n' % record["digest"].encode()


def handmade(
    n: int, *, key: bytes | None = None, run_id: str = "handmade-run", drop: range = range(0)
) -> tuple[list[bytes], str]:
    """``n`` chained eviction receipts sealed the way the emitter seals them; the records in
    ``drop`` are left out and explained by one ``loss`` record. Lines and the last digest.
    """
    previous = ZERO_DIGEST
    lines: list[bytes] = []
    dropped: list[dict[str, Any]] = []
    for seq in range(n):
        record: dict[str, Any] = {
            "schema": SCHEMA_ID, "kind": "eviction", "run_id": run_id, "seq": seq,
            "timestamp": f"2025-01-01T00:{seq // 60:02d}:{seq % 60:02d}.000000Z",
            "sim_time_ms": seq * 1000.0, "prev_digest": previous, "session_id": f"s{seq % 3}",
            "block_offset": 4096 * (seq % 10), "block_size_bytes": 4096,
            "before": _stats(10, seq), "after": _stats(9, seq + 1), "reason": "lru",
            "policy": "lru", "trigger_session_id": f"t{seq}",
        }  # fmt: skip
        line = _seal(record, key)
        previous = record["digest"]
        if seq in drop:
            dropped.append(record)
            continue
        lines.append(line)
    if dropped:
        first, last = dropped[0], dropped[-1]
        loss = {
            "schema": SCHEMA_ID, "kind": "loss", "run_id": run_id, "seq": last["seq"],
            "timestamp": last["timestamp"], "sim_time_ms": last["sim_time_ms"],
            "prev_digest": first["prev_digest"], "sink": "channel",
            "first_seq": first["seq"], "last_seq": last["seq"], "count": len(dropped),
            "last_lost_digest": last["digest"],
        }  # fmt: skip
        lines.append(_seal(loss, key))
    return lines, previous


def write(path: Path, lines: list[bytes]) -> str:
    path.write_bytes(b"".join(lines))
    return str(path)


def flat(text: str) -> str:
    """Text with rich's line wrapping (80 columns under CliRunner) undone."""
    return " ".join(text.split())


def table_rows(stdout: str) -> set[tuple[int, str]]:
    """(line, check) of each row of the violations table."""
    return {(int(m[1]), m[2]) for m in re.finditer(r"│\s*(\d+)\s*│\s*(\w+)\s*│", stdout)}


def one_error_line(result: Result) -> str:
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


# --------------------------------------------------------------------------------------------


def test_a_clean_file_exits_0(tmp_path: Path) -> None:
    lines, last = handmade(30)
    path = write(tmp_path / "clean.jsonl", lines)
    result = invoke("verify", path)
    assert result.exit_code == 0, result.output
    assert "is in the old format (kvreceipts.eviction/1)" in flat(result.stderr)
    assert "✓" in result.stdout
    assert "30 records (30 eviction) in 1 run(s) verified; chain head " + last in flat(
        result.stdout
    )


def test_violations_exit_1_and_the_table_names_their_lines_and_checks(tmp_path: Path) -> None:
    lines, _ = handmade(30)
    lines[12] = lines[12].replace(b'"reason":"lru"', b'"reason":"ttl"')
    del lines[4]  # seq 4: the record now on line 5 follows a gap
    path = write(tmp_path / "tampered.jsonl", lines)
    result = invoke("verify", path)
    assert result.exit_code == 1, result.output
    assert table_rows(result.stdout) == {(5, "gap"), (12, "digest")}
    assert "2 violation(s)" in result.stdout
    assert "✗" in result.stdout
    assert "old format" in result.stderr


def test_a_missing_file_is_one_error_line_and_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.jsonl"
    result = invoke("verify", str(missing))
    assert result.exit_code == 2
    line = one_error_line(result)
    assert str(missing) in line
    assert "not found" in line


def test_a_directory_is_an_input_error(tmp_path: Path) -> None:
    result = invoke("verify", str(tmp_path))
    assert result.exit_code == 2
    assert str(tmp_path) in one_error_line(result)


def test_json_format_prints_one_document(tmp_path: Path) -> None:
    lines, _ = handmade(20)
    clean = write(tmp_path / "clean.jsonl", lines)
    result = invoke("verify", clean, "--format", "json")
    assert result.exit_code == 0
    document = orjson.loads(result.stdout)  # one document, nothing else on stdout
    assert document["ok"] is True
    assert document["records"] == 20
    assert document["violations"] == []
    assert document["violation_count"] == 0
    assert document["authentication"] == "unauthenticated"
    assert "UNAUTHENTICATED" in result.stderr  # said on stderr too: stdout may be a pipe

    swapped = lines[:]
    swapped[7], swapped[8] = swapped[8], swapped[7]
    bad = write(tmp_path / "swapped.jsonl", swapped)
    result = invoke("verify", bad, "-f", "json")
    assert result.exit_code == 1
    document = orjson.loads(result.stdout)
    assert document["ok"] is False
    assert document["violation_count"] == len(document["violations"]) > 0
    assert {(v["line"], v["check"]) for v in document["violations"]} >= {(9, "seq")}
    assert all(set(v) == {"line", "check", "seq", "run_id", "message"}
               for v in document["violations"])  # fmt: skip


def test_declared_losses_and_a_torn_tail_are_warnings_not_failures(tmp_path: Path) -> None:
    lines, last = handmade(20, drop=range(6, 9))
    torn = [*lines, b'{"schema":"kvreceipts.eviction/1","kind":"evi']
    path = write(tmp_path / "lossy.jsonl", torn)
    result = invoke("verify", path, "--expect-last-digest", last)
    assert result.exit_code == 0, result.output
    warnings = flat(result.stderr)
    assert "3 record(s) of run handmade-run (seq 6..8) were dropped by sink channel" in warnings
    assert "truncated tail" in warnings
    document = orjson.loads(invoke("verify", path, "-f", "json").stdout)
    assert document["ok"] is True
    assert document["truncated_tail"] is True
    assert document["declared_losses"] == [
        {"run_id": "handmade-run", "first_seq": 6, "last_seq": 8, "count": 3, "sink": "channel",
         "line": 7}
    ]  # fmt: skip


def test_an_hmac_key_from_the_option_or_the_environment(tmp_path: Path) -> None:
    lines, last = handmade(25, key=KEY)
    path = write(tmp_path / "signed.jsonl", lines)
    key_file = tmp_path / "key.bin"
    key_file.write_bytes(KEY + b"\n")  # one trailing newline is not part of the key

    unsigned = invoke("verify", path)
    assert unsigned.exit_code == 1
    assert table_rows(unsigned.stdout) == {(n, "digest") for n in range(1, 26)}
    assert "no digest matched: was the run signed? pass --hmac-key-file" in flat(unsigned.stdout)

    with_option = invoke("verify", path, "--hmac-key-file", str(key_file))
    assert with_option.exit_code == 0, with_option.output
    assert "authenticated with the HMAC key" in flat(with_option.stdout)

    with_env = invoke("verify", path, "-f", "json", env={HMAC_KEY_ENV: str(key_file)})
    assert with_env.exit_code == 0, with_env.output
    document = orjson.loads(with_env.stdout)
    assert document["hmac"] is True
    assert document["last_digest"] == last

    wrong = tmp_path / "wrong.bin"
    wrong.write_bytes(b"not the key")
    rejected = invoke("verify", path, "-f", "json", "--hmac-key-file", str(wrong))
    assert rejected.exit_code == 1
    assert {v["check"] for v in orjson.loads(rejected.stdout)["violations"]} == {"digest"}

    # The option wins over the environment.
    both = invoke("verify", path, "--hmac-key-file", str(key_file), env={HMAC_KEY_ENV: str(wrong)})
    assert both.exit_code == 0


def test_a_bad_hmac_key_file_is_an_input_error(tmp_path: Path) -> None:
    lines, _ = handmade(5, key=KEY)
    path = write(tmp_path / "signed.jsonl", lines)
    missing = tmp_path / "missing.key"
    result = invoke("verify", path, "--hmac-key-file", str(missing))
    assert result.exit_code == 2
    assert str(missing) in one_error_line(result)
    empty = tmp_path / "empty.key"
    empty.write_bytes(b"\n")
    result = invoke("verify", path, env={HMAC_KEY_ENV: str(empty)})
    assert result.exit_code == 2
    assert "empty" in one_error_line(result)


def test_expect_last_digest_catches_records_cut_off_the_end(tmp_path: Path) -> None:
    lines, last = handmade(15)
    whole = write(tmp_path / "whole.jsonl", lines)
    assert invoke("verify", whole, "--expect-last-digest", last).exit_code == 0

    cut = write(tmp_path / "cut.jsonl", lines[:-2])
    assert invoke("verify", cut).exit_code == 0  # a clean prefix, on its own
    result = invoke("verify", cut, "--expect-last-digest", last)
    assert result.exit_code == 1
    assert (13, "anchor") in table_rows(result.stdout)

    other = invoke("verify", whole, "-f", "json", "--expect-last-digest", "0" * 64)
    assert other.exit_code == 1
    assert [v["check"] for v in orjson.loads(other.stdout)["violations"]] == ["anchor"]


def test_standard_input_is_read_with_a_dash_or_no_path(tmp_path: Path) -> None:
    lines, _ = handmade(12)
    data = b"".join(lines)
    for args in (["verify", "-"], ["verify"]):
        result = invoke(*args, "-f", "json", stdin=data)
        assert result.exit_code == 0, result.output
        document = orjson.loads(result.stdout)
        assert (document["path"], document["records"]) == ("-", 12)
    tampered = data.replace(b'"session_id":"s1"', b'"session_id":"s2"', 1)
    assert invoke("verify", "-", stdin=tampered).exit_code == 1


def test_an_empty_file_is_a_failure_with_no_records(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.jsonl", [])
    result = invoke("verify", path)
    assert result.exit_code == 1
    assert "no records: the input is empty" in flat(result.stdout)
    assert invoke("verify", "-", stdin=b"").exit_code == 1


@pytest.mark.needs("receipts")
def test_verify_accepts_what_simulate_signs(tmp_path: Path) -> None:
    key_file = tmp_path / "key.bin"
    key_file.write_bytes(KEY)
    out = tmp_path / "run.jsonl"
    run = invoke("simulate", "--workload", "burst", "--requests", "80", "--capacity-mb", "4",
                 "--hmac-key-file", str(key_file), "-o", str(out), "-f", "json", "-q")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    summary = orjson.loads(run.stdout)
    assert summary["receipts"] > 20
    good = invoke("verify", str(out), "--hmac-key-file", str(key_file), "--expect-last-digest",
                  summary["last_digest"])  # fmt: skip
    assert good.exit_code == 0, good.stdout
    assert f"{summary['receipts']:,} eviction" in flat(good.stdout)
    assert invoke("verify", str(out)).exit_code == 1
