"""``kvreceipts simulate``, ``config`` and ``schema`` as a user runs them (CliRunner).

Each test asserts on stdout and stderr separately: data belongs on stdout, people-facing
text on stderr.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import jsonschema
import pytest
from typer.testing import CliRunner, Result

from kvreceipts.cli import app

if TYPE_CHECKING:
    from pathlib import Path


runner = CliRunner()
receipts = pytest.mark.needs("receipts")


ENGINE_KINDS = ("engine_removal", "engine_clear", "engine_restore", "engine_restart",
                "engine_loss", "engine_reuse", "engine_tally")  # fmt: skip
"""What kvreceipts watch writes: schema prints these kinds too."""


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, list(args), env=env)


def jsonl(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


@receipts
def test_default_run_outside_a_terminal_prints_json_lines_and_a_summary_on_stderr() -> None:
    result = run("simulate")
    assert result.exit_code == 0, result.stderr
    records = jsonl(result.stdout)
    # One run: its open record, the eviction receipts, its close record.
    assert [records[0]["kind"], records[-1]["kind"]] == ["open", "close"]
    evictions = records[1:-1]
    assert evictions, "the built-in workload must produce evictions"
    assert {r["kind"] for r in evictions} == {"eviction"}
    assert [r["seq"] for r in records] == list(range(len(records)))
    assert len({r["run_id"] for r in records}) == 1
    assert re.fullmatch("[0-9a-f]{16}", records[0]["run_id"])
    assert (records[0]["source"], records[0]["layout"]) == ("simulate", "lean")
    assert records[-1]["counts"] == {"eviction": len(evictions), "open": 1}
    assert "evictions" in result.stderr
    assert f"{len(evictions):,}" in result.stderr


@receipts
def test_every_jsonl_line_validates_against_the_printed_schema(tmp_path: Path) -> None:
    validators = {
        kind: jsonschema.Draft202012Validator(schema)
        for kind, schema in json.loads(run("schema").stdout).items()
    }
    assert set(validators) == {"open", "close", "checkpoint", "eviction", "eviction_batch",
                               "snapshot", "demotion", "loss", *ENGINE_KINDS}  # fmt: skip
    result = run("simulate", "--requests", "600", "--batch-receipts", "--snapshot-every", "100")
    records = jsonl(result.stdout)
    assert {r["kind"] for r in records} == {"open", "eviction", "eviction_batch", "snapshot",
                                            "close"}  # fmt: skip
    paged = jsonl(run("simulate", "--allocator", "paged", "--capacity-mb", "96",
                      "--requests", "600").stdout)  # fmt: skip
    assert any("block_hash" in r for r in paged)
    upstream = jsonl(run("simulate", "--layout", "upstream", "--requests", "600").stdout)
    assert upstream[0]["layout"] == "upstream"
    for record in records + paged + upstream:
        validators[record["kind"]].validate(record)
    # The lean layout says the run's config and policy once, in the open record; upstream's
    # layout says them in every receipt.
    lean_eviction = next(r for r in records if r["kind"] == "eviction")
    upstream_eviction = next(r for r in upstream if r["kind"] == "eviction")
    assert not {"schema", "policy", "sim_time_ms", "prev_digest"} & lean_eviction.keys()
    assert {"schema", "policy", "sim_time_ms"} <= upstream_eviction.keys()
    assert "prev_digest" not in upstream_eviction
    assert records[0]["policy"] == upstream_eviction["policy"] == "lru"


@receipts
def test_json_summary_is_one_document_whose_evictions_match_the_receipts() -> None:
    document = json.loads(run("simulate", "--format", "json").stdout)
    for key in ("config", "workload", "stats", "requests", "evictions", "receipts", "sinks",
                "last_digest", "duration_s"):  # fmt: skip
        assert key in document
    lines = jsonl(run("simulate", "--format", "jsonl").stdout)
    evictions = [r for r in lines if r["kind"] == "eviction"]
    assert document["evictions"] == len(evictions) == document["stats"]["evictions"]
    assert lines[-1]["kind"] == "close"
    assert document["last_digest"] == lines[-1]["digest"]  # the close record's: the anchor
    stats = document["stats"]
    assert stats["hit_rate"] == pytest.approx(
        stats["cache_hits"] / (stats["cache_hits"] + stats["cache_misses"])
    )
    assert document["config"]["caching"]["enable_receipts"] is True


@receipts
def test_table_format_shows_the_first_receipts_and_a_summary_panel() -> None:
    result = run("simulate", "--format", "table", "--limit", "3")
    assert result.exit_code == 0
    assert "KV eviction receipts" in result.stdout
    assert "more (--limit N shows more" in result.stdout
    assert "hit rate" in result.stdout
    assert "chain head" in result.stdout
    assert "{" not in result.stdout  # no JSON in the human view


@receipts
def test_same_command_twice_prints_identical_bytes() -> None:
    first = run("simulate", "--format", "jsonl", "--seed", "7", "--requests", "800")
    second = run("simulate", "--format", "jsonl", "--seed", "7", "--requests", "800")
    assert first.stdout == second.stdout
    other = run("simulate", "--format", "jsonl", "--seed", "8", "--requests", "800")
    assert other.stdout != first.stdout
    assert json.loads(run("simulate", "-f", "json", "--requests", "800").stdout) == json.loads(
        run("simulate", "-f", "json", "--requests", "800").stdout
    )


@receipts
def test_output_file_gets_the_same_receipts_as_stdout(tmp_path: Path) -> None:
    target = tmp_path / "run.jsonl"
    result = run("simulate", "-o", str(target))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.encode() == target.read_bytes()
    written = target.read_bytes()
    # -o never overwrites by accident: an existing file is an error unless told.
    refused = run("simulate", "--seed", "3", "-o", str(target))
    assert refused.exit_code == 2
    assert refused.stdout == ""
    assert "the file exists" in refused.stderr
    assert "--append" in refused.stderr
    assert "--force" in refused.stderr
    assert target.read_bytes() == written
    again = run("simulate", "--seed", "3", "-o", str(target), "--force")  # replaces it
    assert again.exit_code == 0, again.stderr
    assert again.stdout.encode() == target.read_bytes() != written
    more = run("simulate", "-o", str(target), "--append")  # adds a run after it
    assert more.exit_code == 0, more.stderr
    assert target.read_bytes() == again.stdout.encode() + more.stdout.encode()
    runs = [r["run_id"] for r in jsonl(target.read_text()) if r["kind"] == "open"]
    assert len(runs) == len(set(runs)) == 2
    both = run("simulate", "-o", str(target), "--append", "--force")
    assert both.exit_code == 2
    assert "contradict" in both.stderr


@receipts
def test_output_file_with_receipts_off_is_an_error(tmp_path: Path) -> None:
    target = tmp_path / "run.jsonl"
    result = run("simulate", "--no-receipts", "-o", str(target))
    assert result.exit_code == 2
    assert "receipts are off" in result.stderr
    assert not target.exists()
    assert run("simulate", "--force").exit_code == 2  # --force and --append are for -o


@receipts
@pytest.mark.traces
def test_trace_replay_in_paged_mode(traces_dir: Path) -> None:
    trace = traces_dir / "mooncake_conversation_trace.jsonl"
    result = run("simulate", "--trace", str(trace), "--requests", "600",
                 "--capacity-blocks", "1500", "-f", "json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["workload"]["allocator"] == "paged"  # auto: Mooncake has prefix hashes
    assert document["workload"]["format"] == "mooncake"
    assert document["requests"]["total"] == 600
    assert document["evictions"] > 0
    assert document["stats"]["total_sessions"] <= 1500


def test_no_receipts_still_simulates_and_says_so() -> None:
    result = run("simulate", "--no-receipts", "-f", "json")
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["receipts"] == 0
    assert document["evictions"] > 0
    assert document["config"]["caching"]["enable_receipts"] is False


def test_with_the_receipts_feature_off_simulate_runs_and_says_receipts_are_off() -> None:
    result = run("simulate", "--features", "", "-f", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["receipts"] == 0
    assert "receipts: off" in result.stderr
    assert "'receipts' feature is off" in result.stderr


@receipts
def test_receipts_flag_beats_the_config_file_which_beats_the_default(tmp_path: Path) -> None:
    config = tmp_path / "off.toml"
    config.write_text("[caching]\nenable_receipts = false\n")
    from_file = json.loads(run("simulate", "-c", str(config), "-f", "json").stdout)
    assert from_file["receipts"] == 0
    flag = json.loads(run("simulate", "-c", str(config), "--receipts", "-f", "json").stdout)
    assert flag["receipts"] > 0


@receipts
def test_config_init_writes_a_file_that_simulate_accepts_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "kv.toml"
    result = run("config", "init", str(path))
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "wrote" in result.stderr
    text = path.read_text()
    assert "[caching]" in text
    assert "[simulation]" in text
    assert "kv_cache_size_mb = 512" in text
    assert "enable_receipts = true" in text  # as simulate runs without a file
    with_file = run("simulate", "-c", str(path), "-f", "jsonl")
    assert with_file.exit_code == 0
    assert with_file.stdout == run("simulate", "-f", "jsonl").stdout
    again = run("config", "init", str(path))
    assert again.exit_code == 2
    assert "already exists" in again.stderr
    assert run("config", "init", str(path), "--force").exit_code == 0


def test_config_show_prints_the_resolved_config(tmp_path: Path) -> None:
    path = tmp_path / "kv.toml"
    path.write_text('[simulation]\npolicy = "fifo"\n[caching]\nkv_cache_size_mb = 64\n')
    toml = run("config", "show", "-c", str(path))
    assert 'policy = "fifo"' in toml.stdout
    assert "kv_cache_size_mb = 64" in toml.stdout
    document = json.loads(run("config", "show", "-c", str(path), "--format", "json").stdout)
    assert document["simulation"]["policy"] == "fifo"
    assert document["caching"]["model_cache_ttl"] == 3600


def test_schema_prints_each_kind() -> None:
    everything = json.loads(run("schema").stdout)
    assert set(everything) == {"open", "close", "checkpoint", "eviction", "eviction_batch",
                               "snapshot", "demotion", "loss", *ENGINE_KINDS}  # fmt: skip
    eviction = json.loads(run("schema", "--kind", "eviction").stdout)
    assert eviction == everything["eviction"]
    layouts = {branch["title"]: branch for branch in eviction["oneOf"]}
    assert set(layouts) == {"lean layout", "upstream layout"}
    for branch in layouts.values():
        assert {"block_offset", "alg", "digest"} <= set(branch["required"])
        assert "performance" not in branch["required"]
        assert "prev_digest" not in branch["properties"]
    assert "policy" in layouts["upstream layout"]["required"]
    assert "policy" not in layouts["lean layout"]["properties"]
    for schema in everything.values():
        jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "lruu"], "--policy 'lruu' is not one of: lru, fifo, lfu, s3fifo"),
        (["--trace", "/nonexistent/trace.jsonl"], "/nonexistent/trace.jsonl: trace file not found"),
        (["--capacity-mb", "0"], "--capacity-mb must be greater than 0"),
        (["--capacity-mb", "-5"], "--capacity-mb must be greater than 0"),
        (["--model", "gpt-9"], "--model 'gpt-9' is not one of"),
        (["--model", "llama-3-8b", "--bytes-per-token", "8"], "--model or --bytes-per-token"),
        (["--workload", "chat", "--trace", "x.jsonl"], "--workload or --trace, not both"),
        (["--capacity-blocks", "10", "--allocator", "arena"], "--capacity-blocks is for the paged"),
        (["--no-such-option"], "No such option: --no-such-option"),
        (["--features", "receipts,warp"], "unknown feature 'warp'"),
        (["--config", "/nonexistent.toml"], "/nonexistent.toml: config file not found"),
    ],
)
def test_bad_input_is_one_error_line_with_exit_2(args: list[str], message: str) -> None:
    result = run("simulate", *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_malformed_trace_line_names_file_line_and_field(tmp_path: Path) -> None:
    trace = tmp_path / "bad.jsonl"
    good = '{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1]}\n'
    trace.write_text(good + '{"timestamp": 5, "input_length": "ten", "output_length": 1, '
                     '"hash_ids": [1]}\n' + good)  # fmt: skip
    result = run("simulate", "--trace", str(trace))
    assert result.exit_code == 2
    # (with the receipts feature off, a note that receipts are off comes first)
    assert result.stderr.splitlines()[-1].startswith(f"error: {trace}:2: field 'input_length'")
    skipped = run("simulate", "--trace", str(trace), "--skip-bad-lines", "-f", "json")
    assert skipped.exit_code == 0
    assert json.loads(skipped.stdout)["requests"]["skipped_lines"] == 1
    assert f"{trace}:2" in skipped.stderr


def test_bad_config_key_names_file_line_and_suggests(tmp_path: Path) -> None:
    config = tmp_path / "kv.toml"
    config.write_text("[caching]\nkv_cache_size = 64\n")
    result = run("simulate", "-c", str(config))
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {config}:2: [caching] unknown key 'kv_cache_size' "
        "(did you mean 'kv_cache_size_mb'?)\n"
    )


def test_receipts_asked_for_with_the_feature_off_is_an_error() -> None:
    result = run("simulate", "--features", "", "--receipts")
    assert result.exit_code == 2
    assert "needs the 'receipts' feature" in result.stderr


def test_debug_shows_the_traceback_instead() -> None:
    result = run("--debug", "simulate", "--policy", "nope")
    assert result.exit_code != 0
    assert result.exception is not None
    assert "not one of" in str(result.exception)


def test_version_and_help() -> None:
    version = run("--version")
    assert version.exit_code == 0
    assert version.stdout.startswith("kvreceipts ")
    for command in ("simulate", "verify", "stats", "schema", "config"):
        page = run(command, "--help")
        assert page.exit_code == 0
        assert "Usage" in page.stdout
    assert "Examples" in run("simulate", "--help").stdout


def test_the_kind_option_lists_every_kind_the_schema_has() -> None:
    from kvreceipts.commands.options import Kind
    from kvreceipts.schema import KIND_NAMES

    assert {k.value for k in Kind} == {*KIND_NAMES, "all"}
