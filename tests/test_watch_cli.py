"""``kvreceipts watch`` on the command line: options, errors, exit codes, the recorded
fixture, ``verify`` / ``stats`` / ``schema`` on watch files, and a real process stopped by
SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pytest
from typer.testing import CliRunner, Result

pytest.importorskip("zmq")
pytestmark = pytest.mark.needs("receipts")

from kvreceipts.cli import app  # noqa: E402
from watch_publisher import Publisher, removed, stored  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "watch"
RECORDING = FIXTURES / "engine.kvrec"
EXPECTED = FIXTURES / "engine.jsonl"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def in_thread(args: list[str]) -> tuple[threading.Thread, list[Result]]:
    """Run the CLI on a thread (no signal handlers there), collecting its result."""
    results: list[Result] = []
    thread = threading.Thread(target=lambda: results.append(invoke(*args)), daemon=True)
    thread.start()
    return thread, results


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["not-an-endpoint", "--idle-timeout", "1"], "is not a ZMQ address"),
        (["tcp://*:5557"], "bind address"),
        ([], "give an ENDPOINT"),
        (["tcp://h:1", "--from", "x.kvrec"], "only one"),
        (["--from", "x.kvrec", "--from-trtllm", "-"], "only one"),
        (["--from-trtllm", "-", "--replay-endpoint", "tcp://h:2"], "not --from-trtllm"),
        (["--from", "x.kvrec", "--record", "y"], "--record is for live watches"),
        (["tcp://h:1", "--replay-endpoint", "h:2"], "--replay-endpoint 'h:2' is not a ZMQ"),
        (["--from", "missing.kvrec"], "watch recording not found"),
    ],
)
def test_bad_usage_is_one_error_line(args: list[str], message: str) -> None:
    result = invoke("watch", *args)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert message in result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert result.stdout == ""


def test_the_recorded_fixture_replays_to_the_same_bytes(tmp_path: Path) -> None:
    out = tmp_path / "again.jsonl"
    result = invoke("watch", "--from", str(RECORDING), "-f", "jsonl", "-o", str(out),
                    "--allow-loss")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.stdout.encode() == EXPECTED.read_bytes()
    assert out.read_bytes() == EXPECTED.read_bytes()
    assert "stopped by  end of recording" in result.stderr


def test_lost_batches_exit_1_unless_allowed() -> None:
    result = invoke("watch", "--from", str(RECORDING), "-f", "jsonl")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        "error: 2 engine batch(es) lost (see the engine_loss receipts); --allow-loss accepts that"
    )


def test_verify_and_stats_read_watch_files() -> None:
    strict = invoke("verify", str(EXPECTED), "--format", "json")
    assert strict.exit_code == 1  # two engine batches were lost and declared
    assert [v["check"] for v in orjson.loads(strict.stdout)["violations"]] == ["loss", "loss"]
    verify = invoke("verify", str(EXPECTED), "--format", "json", "--allow-loss")
    assert verify.exit_code == 0, verify.stdout
    report = orjson.loads(verify.stdout)
    assert report["kinds"]["engine_removal"] == 7
    assert [r["complete"] for r in report["runs"]] == [True]
    stats = invoke("stats", str(EXPECTED), "--format", "json")
    engine = orjson.loads(stats.stdout)["engine"]
    assert engine["removals_by_medium"] == {"GPU": 5, "CPU": 1, "unknown": 1}
    assert engine["residency_ms"] == {"known": 6, "unknown": 1, "p50": 1250.0, "p90": 4500.0,
                                      "p99": 4500.0, "max": 4500.0}  # fmt: skip
    assert engine["regret"]["restores"] == 1
    assert (engine["restarts"], engine["clears"], engine["lost_batches"]) == (1, 1, 2)
    assert engine["lost_by_cause"] == {"not_received": 1, "undecodable": 1}
    table = invoke("stats", str(EXPECTED))
    assert "engine (kvreceipts watch)" in table.stdout
    assert "GPU 5" in table.stdout


def test_hmac_key_changes_the_digests_and_verify_needs_it(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_bytes(b"secret\n")
    out = tmp_path / "signed.jsonl"
    result = invoke("watch", "--from", str(RECORDING), "-f", "jsonl", "--allow-loss",
                    "--hmac-key-file", str(key), "-o", str(out))  # fmt: skip
    assert result.exit_code == 0
    assert out.read_bytes() != EXPECTED.read_bytes()
    assert invoke("verify", str(out), "--hmac-key-file", str(key), "--allow-loss").exit_code == 0
    wrong = tmp_path / "wrong"
    wrong.write_bytes(b"other")
    assert invoke("verify", str(out), "--hmac-key-file", str(wrong), "--allow-loss").exit_code == 1


def test_schema_lists_the_engine_kinds() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    document = orjson.loads(invoke("schema").stdout)
    for line in EXPECTED.read_bytes().splitlines():
        record = orjson.loads(line)
        jsonschema.validate(record, document[record["kind"]])
    assert {"engine_removal", "engine_clear", "engine_restore", "engine_restart",
            "engine_loss", "engine_reuse", "engine_tally"} <= document.keys()  # fmt: skip


def test_a_live_watch_on_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "live.jsonl"
    with Publisher() as pub:
        thread, results = in_thread(["watch", pub.endpoint, "--max-batches", "2", "-f", "jsonl",
                                     "-o", str(out), "--idle-timeout", "10"])  # fmt: skip
        pub.wait_subscribed()
        pub.batch([stored([1])], ts=1.0)
        pub.batch([removed([1])], ts=2.0)
        thread.join(60)
    (result,) = results
    assert result.exit_code == 0, result.stderr
    assert out.read_text() == result.stdout
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [r["kind"] for r in lines] == ["open", "engine_removal", "engine_tally", "close"]
    assert lines[0]["workload"]["endpoint"] == pub.endpoint
    assert lines[1]["residency_ms"] == 1000.0
    assert lines[2]["hit_rate"] == 0.0
    assert lines[3]["counts"] == {"engine_removal": 1, "engine_tally": 1, "open": 1}
    assert "stopped by  max-batches" in result.stderr


def wait_until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.slow
def test_sigterm_mid_stream_leaves_a_file_that_verifies(tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with Publisher() as pub:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kvreceipts", "watch", pub.endpoint, "-o", str(out),
             "-f", "jsonl", "--replay-endpoint", str(pub.replay_endpoint)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        pub.wait_subscribed()
        stop = threading.Event()

        def publish() -> None:
            n = 0
            while not stop.is_set():
                pub.batch([stored([n]), removed([n - 1])], ts=float(n))
                n += 1
                time.sleep(0.0005)

        publisher = threading.Thread(target=publish)
        publisher.start()
        try:
            wait_until(lambda: out.exists() and out.stat().st_size > 50_000, timeout=90)
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
        finally:
            stop.set()
            publisher.join()
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    text = stderr.decode()
    assert proc.returncode == 0, text
    assert "stopped by  signal" in text
    assert "Traceback" not in text
    assert out.read_bytes().endswith(b"}\n")
    verify = invoke("verify", str(out), "--format", "json")
    assert verify.exit_code == 0, verify.stdout  # complete: framed by open and close
    report = orjson.loads(verify.stdout)
    assert not report["truncated_tail"]
    assert [r["complete"] for r in report["runs"]] == [True]
    assert report["kinds"].get("engine_loss", 0) == 0


@pytest.mark.slow
def test_the_pre_stop_hook_command_fails_cleanly() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kvreceipts", "watch", "not-an-endpoint", "--idle-timeout",
         "1"], capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ")
    assert "Traceback" not in proc.stderr


def test_without_the_watch_extra_one_line_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    # As on a machine without pyzmq: `import zmq` fails and find_spec finds nothing.
    monkeypatch.setitem(sys.modules, "zmq", None)
    monkeypatch.delitem(sys.modules, "kvreceipts.engine.live", raising=False)
    for endpoint in ("tcp://127.0.0.1:5557", "not-an-endpoint"):
        result = invoke("watch", endpoint, "--idle-timeout", "1")
        assert result.exit_code == 2
        assert result.stderr == (
            "error: watch needs pyzmq, which is not installed: pip install 'kvreceipts[watch]'\n"
        )


def test_a_replay_needs_no_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    # As on a machine without the watch extra: replaying a recording must not import zmq.
    monkeypatch.setitem(sys.modules, "zmq", None)
    for module in ("live", "session"):
        monkeypatch.delitem(sys.modules, f"kvreceipts.engine.{module}", raising=False)
    out = tmp_path / "removals.jsonl"
    result = invoke("watch", "--from", str(RECORDING), "-o", str(out), "-q", "--allow-loss")
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes() == EXPECTED.read_bytes()


def test_a_metrics_port_in_use_is_one_error_line() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = invoke("watch", "tcp://127.0.0.1:1", "--idle-timeout", "1", "--metrics-port",
                        str(port))  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: --metrics-port: cannot serve on 127.0.0.1:{port}")
    assert "Traceback" not in result.stderr


def test_output_refuses_an_existing_file_unless_told(tmp_path: Path) -> None:
    out = tmp_path / "run.jsonl"
    out.write_text("keep me\n")
    args = ["watch", "--from", str(RECORDING), "-f", "jsonl", "--allow-loss", "-o", str(out)]
    refused = invoke(*args)
    assert refused.exit_code == 2
    assert "the file exists; --append adds this run" in refused.stderr
    assert out.read_text() == "keep me\n"
    assert invoke(*args, "--force").exit_code == 0
    assert out.read_bytes() == EXPECTED.read_bytes()
    assert invoke(*args, "--append", "--force").exit_code == 2


def test_a_torn_recording_replays_what_is_whole(tmp_path: Path) -> None:
    torn = tmp_path / "torn.kvrec"
    torn.write_bytes(RECORDING.read_bytes()[:-40])  # killed mid-write: no end entry, a cut one
    result = invoke("watch", "--from", str(torn), "-f", "jsonl", "--allow-loss")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("the recording ends mid-entry") == 1
    lines = result.stdout.encode().splitlines(keepends=True)
    expected = EXPECTED.read_bytes().splitlines(keepends=True)
    whole = [line for line in lines if b'"kind":"engine_tally"' not in line]
    assert whole[:-1] == expected[: len(whole) - 1]  # the same receipts up to the cut
    assert orjson.loads(lines[-1])["kind"] == "close"  # after the tallies of what was read
    replayed = tmp_path / "replayed.jsonl"
    replayed.write_bytes(result.stdout.encode())
    assert invoke("verify", str(replayed), "--allow-loss").exit_code == 0  # a complete run


def test_no_publisher_says_what_to_check_and_exits_1() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = invoke("watch", f"tcp://127.0.0.1:{port}", "--idle-timeout", "0.5", "-f", "jsonl")
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: nothing was received from tcp://127.0.0.1:{port}")
    assert '--kv-events-config \'{"enable_kv_cache_events": true' in last


@pytest.mark.parametrize("option", ["-o", "--record"])
def test_an_unwritable_output_fails_before_the_watch(option: str, tmp_path: Path) -> None:
    result = invoke("watch", "tcp://127.0.0.1:1", option, str(tmp_path / "no" / "x"))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {option} ")
    assert "does not exist" in result.stderr
    assert "watching" not in result.stderr


def test_a_metrics_port_in_use_fails_before_the_watch(tmp_path: Path) -> None:
    out = tmp_path / "x.jsonl"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = invoke("watch", "tcp://127.0.0.1:1", "--metrics-port", str(port), "-o", str(out))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --metrics-port: cannot serve on 127.0.0.1:")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()  # nothing was written


def test_the_summary_fits_80_columns_without_cutting() -> None:
    result = CliRunner().invoke(app, ["watch", "--from", str(RECORDING), "-f", "jsonl",
                                      "--allow-loss"], env={"COLUMNS": "80"})  # fmt: skip
    assert result.exit_code == 0, result.stderr
    panel = [line for line in result.stderr.splitlines() if line.startswith(("│", "╭", "╰"))]
    assert panel, result.stderr
    assert max(len(line) for line in panel) <= 80
    assert "…" not in result.stderr
    assert "kv@pod-a@llama  seq 1 · 7 batches" in result.stderr
    assert "restarts 1" in result.stderr
