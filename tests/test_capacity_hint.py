"""When most requests are larger than the whole cache, ``simulate`` says what would hold them;
and an ``-o`` path that cannot be written fails before any work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
import pytest
from typer.testing import CliRunner

from kvreceipts.cli import app

if TYPE_CHECKING:
    from pathlib import Path


def simulate(*args: str) -> Any:
    return CliRunner().invoke(app, ["simulate", *args])


def summary(*args: str) -> dict[str, Any]:
    result = simulate("-f", "json", *args)
    assert result.exit_code == 0, result.stderr
    document: dict[str, Any] = orjson.loads(result.stdout)
    return document


def test_the_default_arena_with_llama_3_8b_names_the_capacity_to_pass() -> None:
    result = simulate("-f", "json", "--model", "llama-3-8b")
    document = orjson.loads(result.stdout)
    hint = document["capacity_hint"]
    too_large = document["requests"]["rejected_by_reason"]["too_large"]
    assert hint["too_large"] == too_large > document["requests"]["total"] / 10
    assert hint["option"] == f"--capacity-mb {hint['capacity_mb']}"
    assert hint["capacity_mb"] * 2**20 >= hint["largest_request_bytes"]
    assert (hint["capacity_mb"] - 1) * 2**20 < hint["largest_request_bytes"]
    assert hint["capacity_blocks"] * 512 * 131072 >= hint["largest_request_bytes"]
    lines = [line for line in result.stderr.splitlines() if line.startswith("hint: ")]
    assert lines == [
        (f"hint: {too_large:,} of 2,000 requests (87%) were larger than the whole 512.0 MiB "
         f"cache; the largest needs 4.0 GiB ({hint['capacity_blocks']} blocks of 512 tokens): "
         f"pass {hint['option']}")
    ]  # fmt: skip
    assert "hint:" not in result.stdout  # data on stdout, the hint for people on stderr
    # The capacity it names holds every request.
    held = summary("--model", "llama-3-8b", *hint["option"].split())
    assert "too_large" not in held["requests"]["rejected_by_reason"]
    assert held["capacity_hint"] is None


def test_the_table_gives_the_hint_after_the_summary() -> None:
    result = simulate("-f", "table", "--model", "llama-3-8b", "--limit", "1")
    assert result.exit_code == 0
    assert result.stderr.splitlines()[-2].startswith("hint: ")
    assert "--capacity-mb 4096" in result.stderr


def test_few_rejections_give_no_hint() -> None:
    assert summary()["capacity_hint"] is None
    result = simulate("-f", "table", "--limit", "1")
    assert "hint:" not in result.stderr


def test_a_paged_run_names_blocks(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    sizes = [12 if i % 2 else 3 for i in range(20)]
    rows = [{"timestamp": i, "input_length": 512 * n, "output_length": 1,
             "hash_ids": list(range(20 * i, 20 * i + n))} for i, n in enumerate(sizes)]  # fmt: skip
    trace.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    hint = summary("--trace", str(trace), "--capacity-blocks", "8")["capacity_hint"]
    assert hint["option"] == "--capacity-blocks 12"
    held = summary("--trace", str(trace), "--capacity-blocks", "12")
    assert held["requests"]["rejected"] == 0


@pytest.mark.needs("receipts")  # without it there are no receipts to write, and -o says so
@pytest.mark.parametrize("target", ["/nonexistent/dir/run.jsonl", "/etc/hostname/run.jsonl"])
def test_an_output_that_cannot_be_written_fails_before_the_run(target: str) -> None:
    result = simulate("-f", "jsonl", "--requests", "500", "-o", target)
    assert result.exit_code == 2
    assert result.stdout == ""  # no receipt was printed: nothing ran
    assert result.stderr.startswith(f"error: {target}: cannot write the receipts file: ")
    assert result.stderr.count("\n") == 1
