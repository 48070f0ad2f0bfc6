"""``kvreceipts verify`` as a user runs it: exit codes, the violations table, JSON output, HMAC
keys from a file or the environment, the end-of-chain anchor (and the word that it matched),
standard input, and the one-line refusal of the old ``/1`` format.

The files here are sealed with the real Sealer from plain dicts (tests/receipt_files.py), so
these tests run without the ``receipts`` feature too: a verifier needs no emitter.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import orjson
import pytest
from typer.testing import CliRunner, Result

from kvreceipts.chain import HMAC_KEY_ENV, key_id
from kvreceipts.cli import app
from receipt_files import KEY, lean_run, parsed, seal

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture(autouse=True)
def _no_key_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HMAC_KEY_ENV, raising=False)


def invoke(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=stdin, env=env)


def handmade(
    n: int, *, key: bytes | None = None, run_id: str = "handmade-run", drop: range = range(0)
) -> tuple[list[bytes], str]:
    """A run of ``n`` records (open, ``n - 2`` evictions, close) sealed the way the emitter
    seals them; the records in ``drop`` are left out and explained by one ``loss`` record.
    Lines and the close record's digest (the anchor).
    """
    lines = seal(lean_run(n - 2, run_id=run_id), key, lose=drop)
    return lines, parsed(lines)[-1]["digest"]


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
    assert "✓" in result.stdout
    assert "30 records (1 close, 28 eviction, 1 open) in 1 run(s) verified; chain head " + last \
        in flat(result.stdout)  # fmt: skip
    assert "UNAUTHENTICATED: plain SHA-256" in flat(result.stdout)


def test_violations_exit_1_and_the_table_names_their_lines_and_checks(tmp_path: Path) -> None:
    lines, _ = handmade(30)
    lines[12] = lines[12].replace(b'"reason":"lru"', b'"reason":"ttl"')
    del lines[4]  # seq 4: the record now on line 5 follows a gap
    path = write(tmp_path / "tampered.jsonl", lines)
    result = invoke("verify", path)
    assert result.exit_code == 1, result.output
    assert table_rows(result.stdout) == {
        (5, "gap"),
        (5, "digest"),
        (12, "digest"),
        (29, "close"),
        (29, "tree"),
    }
    assert "✗" in result.stdout


def test_an_old_format_file_is_refused_in_one_line(tmp_path: Path) -> None:
    old = (b'{"kind":"eviction","prev_digest":"%b","run_id":"r","schema":"kvreceipts.eviction/1",'
           b'"seq":0,"digest":"%b"}\n') % (b"0" * 64, b"1" * 64)  # fmt: skip
    for at, lines in ((1, [old, old]), (3, [*handmade(5)[0][:2], old])):
        path = write(tmp_path / "old.jsonl", lines)
        result = invoke("verify", path)
        assert result.exit_code == 2
        assert one_error_line(result) == (
            f"error: {path}: line {at}: schema kvreceipts.eviction/1 is no longer verified; "
            "re-run the simulation to write /2 receipts"
        )


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
    assert document["authentication"] == "none"
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


def test_declared_losses_and_a_torn_tail_are_warnings_when_allowed(tmp_path: Path) -> None:
    lines, _ = handmade(20, drop=range(6, 9))
    torn = [*lines[:-1], lines[-1][:40]]  # a crash in the middle of writing the close record
    path = write(tmp_path / "lossy.jsonl", torn)
    result = invoke("verify", path, "--allow-loss", "--allow-incomplete")
    assert result.exit_code == 0, result.output
    warnings = flat(result.stderr)
    assert "3 record(s) of run handmade-run (seq 6..8) were dropped by sink channel" in warnings
    assert "truncated tail" in warnings
    document = orjson.loads(invoke("verify", path, "-f", "json", "--allow-loss",
                                   "--allow-incomplete").stdout)  # fmt: skip
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
    assert table_rows(unsigned.stdout) == {(25, "auth")}
    assert "NOT AUTHENTICATED: HMAC-sealed, but no key was given" in flat(unsigned.stdout)

    with_option = invoke("verify", path, "--hmac-key-file", str(key_file))
    assert with_option.exit_code == 0, with_option.output
    assert f"authenticated: every record was sealed with the HMAC key {key_id(KEY)}" in flat(
        with_option.stdout)  # fmt: skip

    with_env = invoke("verify", path, "-f", "json", env={HMAC_KEY_ENV: str(key_file)})
    assert with_env.exit_code == 0, with_env.output
    document = orjson.loads(with_env.stdout)
    assert document["hmac"] is True
    assert document["last_digest"] == last

    wrong = tmp_path / "wrong.bin"
    wrong.write_bytes(b"not the key")
    rejected = invoke("verify", path, "-f", "json", "--hmac-key-file", str(wrong))
    assert rejected.exit_code == 1
    document = orjson.loads(rejected.stdout)
    assert {v["check"] for v in document["violations"]} == {"auth"}
    assert document["authentication"] == "failed"  # never "authenticated" under a wrong key
    text = invoke("verify", path, "--hmac-key-file", str(wrong))
    assert "AUTHENTICATION FAILED: 25 record(s) failed a check under the HMAC key" in flat(
        text.stdout)  # fmt: skip
    assert "authenticated:" not in text.stdout

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

    matched = invoke("verify", whole, "--expect-last-digest", last)
    assert f"anchor matched: run handmade-run ends at seq 14 with digest {last}" in flat(
        matched.stdout)  # fmt: skip
    document = orjson.loads(invoke("verify", whole, "-f", "json", "--expect-last-digest",
                                   f"handmade-run={last}").stdout)  # fmt: skip
    assert document["anchors_matched"] == [{"run_id": "handmade-run", "seq": 14, "digest": last}]

    cut = write(tmp_path / "cut.jsonl", lines[:-2])
    assert invoke("verify", cut, "--allow-incomplete").exit_code == 0  # a clean prefix
    result = invoke("verify", cut, "--allow-incomplete", "--expect-last-digest", last)
    assert result.exit_code == 1
    assert (13, "anchor") in table_rows(result.stdout)
    assert "anchor matched" not in result.stdout

    other = invoke("verify", whole, "-f", "json", "--expect-last-digest", "0" * 64)
    assert other.exit_code == 1
    assert [v["check"] for v in orjson.loads(other.stdout)["violations"]] == ["anchor"]
    assert orjson.loads(other.stdout)["anchors_matched"] == []


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
