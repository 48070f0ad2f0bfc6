"""Writing receipts from the command line: ``-o`` never overwrites or goes unwritten by
accident, a run whose sinks lost receipts says so and fails, and devices work.
"""

from __future__ import annotations

import http.server
import threading
from typing import TYPE_CHECKING

import orjson
import pytest
from typer.testing import CliRunner, Result

from kvreceipts.cli import app

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.needs("receipts")
SMALL = ("--requests", "200", "--capacity-mb", "64", "-q")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def simulate_to(path: Path, *extra: str) -> Result:
    return invoke("simulate", *SMALL, "-f", "json", "-o", str(path), *extra)


def test_an_existing_file_is_refused_then_appended_or_replaced(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    first = simulate_to(path)
    assert first.exit_code == 0, first.stderr
    before = path.read_bytes()

    refused = simulate_to(path, "--seed", "1")
    assert refused.exit_code == 2
    assert "the file exists; --append adds this run after the runs in it, --force replaces it" in (
        " ".join(refused.stderr.split())
    )
    assert path.read_bytes() == before  # nothing written is lost

    appended = simulate_to(path, "--seed", "1", "--append")
    assert appended.exit_code == 0
    assert path.read_bytes().startswith(before)
    anchors = [f"{orjson.loads(r.stdout)['run_id']}={orjson.loads(r.stdout)['last_digest']}"
               for r in (first, appended)]  # fmt: skip
    both = invoke("verify", str(path), *(a for anchor in anchors
                                         for a in ("--expect-last-digest", anchor)))  # fmt: skip
    assert both.exit_code == 0, both.stdout

    replaced = simulate_to(path, "--seed", "2", "--force")
    assert replaced.exit_code == 0
    assert invoke("verify", str(path), "--expect-last-digest",
                  orjson.loads(replaced.stdout)["last_digest"]).exit_code == 0  # fmt: skip


def test_output_with_receipts_off_is_an_error_that_says_why(tmp_path: Path) -> None:
    result = invoke("simulate", *SMALL, "--no-receipts", "-o", str(tmp_path / "x.jsonl"))
    assert result.exit_code == 2
    assert "receipts are off" in result.stderr
    assert not (tmp_path / "x.jsonl").exists()


def test_dev_null_is_a_fine_output() -> None:
    result = invoke("simulate", *SMALL, "-f", "json", "-o", "/dev/null")
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def refusing_server() -> Iterator[str]:
    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(400)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/receipts"
    server.shutdown()
    server.server_close()


def test_a_sink_that_lost_receipts_fails_the_run(refusing_server: str) -> None:
    lost = invoke("simulate", *SMALL, "-f", "json", "--http-sink", refusing_server)
    assert lost.exit_code == 1
    assert "sink http lost" in lost.stderr
    assert "--allow-sink-loss" in lost.stderr
    accepted = invoke("simulate", *SMALL, "-f", "json", "--http-sink", refusing_server,
                      "--allow-sink-loss")  # fmt: skip
    assert accepted.exit_code == 0
    assert orjson.loads(accepted.stdout)["sinks"]  # the counters are still reported


def test_verify_says_unauthenticated_on_stderr_when_stdout_is_a_pipe(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    assert simulate_to(path).exit_code == 0
    result = invoke("verify", str(path))
    assert result.exit_code == 0
    assert "UNAUTHENTICATED" in result.stdout
    assert "UNAUTHENTICATED" in result.stderr
