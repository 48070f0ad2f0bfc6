"""What ``simulate`` tells people besides the receipts: a chain head that can be copied, one
note about Azure traces, and a ``--help`` without ``<bool>`` beside its flags.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from kvreceipts.cli import app

if TYPE_CHECKING:
    from pathlib import Path

runner = CliRunner()


@pytest.mark.needs("receipts")
def test_the_chain_head_is_printed_in_full_on_its_own_line() -> None:
    result = runner.invoke(app, ["simulate", "--format", "jsonl", "--requests", "600"],
                           env={"COLUMNS": "80"})  # fmt: skip
    assert result.exit_code == 0
    assert re.search(r"^chain head  [0-9a-f]{64}$", result.stderr, re.MULTILINE), result.stderr


def test_an_azure_trace_says_once_that_every_lookup_misses(tmp_path: Path) -> None:
    trace = tmp_path / "azure.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                     "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n",
                     encoding="utf-8")  # fmt: skip
    result = runner.invoke(app, ["simulate", "--trace", str(trace), "--format", "json"])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("Azure traces carry no prefix hashes") == 1


def test_help_shows_no_bool_metavar() -> None:
    result = runner.invoke(app, ["simulate", "--help"], env={"COLUMNS": "120"})
    assert "--no-receipts" in result.stdout
    assert "<bool>" not in result.stdout


def test_requests_0_is_refused_rather_than_running_everything() -> None:
    result = runner.invoke(app, ["simulate", "-q", "--requests", "0"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --requests: 0 is out of range (at least 1)")


@pytest.mark.needs("receipts")
def test_tracing_leaves_the_receipts_logger_as_it_found_it(tmp_path: Path) -> None:
    import logging

    config = tmp_path / "t.toml"
    config.write_text("[simulation]\ntracing = true\nrequests = 300\n", encoding="utf-8")
    logger = logging.getLogger("kvreceipts.kv.receipts")
    before = (list(logger.handlers), logger.level)
    for _ in range(2):
        assert runner.invoke(app, ["simulate", "-c", str(config), "-q"]).exit_code == 0
    assert (list(logger.handlers), logger.level) == before


def test_a_trace_time_beyond_what_a_receipt_can_date_is_an_input_error(tmp_path: Path) -> None:
    trace = tmp_path / "late.jsonl"
    trace.write_text('{"timestamp": 1e15, "input_length": 10, "output_length": 1, '
                     '"hash_ids": [1]}\n', encoding="utf-8")  # fmt: skip
    result = runner.invoke(app, ["simulate", "--trace", str(trace), "-q", "--no-receipts"])
    assert result.exit_code == 2
    assert "late.jsonl:1: field 'timestamp': expected milliseconds from 0 to" in result.stderr
