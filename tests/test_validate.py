"""``kvreceipts validate``: the verdict read from recorded nox reports, step selection, the nox
command line, and the command's output. nox never runs: ``fixtures/nox/fake_nox.py`` stands in
for it, replaying reports recorded from real nox runs.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvreceipts.cli import app
from kvreceipts.errors import InputError, UsageError
from kvreceipts.validation import runner
from kvreceipts.validation.report import (
    NoxSession,
    Status,
    StepResult,
    ValidationReport,
    build_report,
    parse_nox_report,
    read_nox_report,
)
from kvreceipts.validation.runner import (
    NoxOptions,
    find_checkout,
    find_nox,
    nox_command,
    schedule,
)
from kvreceipts.validation.steps import STEPS, TARGETS, Selection, select

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "nox"
FAKE_NOX = FIXTURES / "fake_nox.py"
DEFAULT_SESSIONS = [
    "baseline", "lint", "format", "docs", "msrv", "features(receipts)",
    "features(receipts,tuning)", "features(tuning)", "happy", "guard", "tests", "crosscheck",
    "engine-compat", "fuzz",
]  # fmt: skip


def report_of(fixture: str, words: tuple[str, ...] = ()) -> ValidationReport:
    return build_report(select(words), read_nox_report(FIXTURES / fixture))


def by_name(report: ValidationReport, name: str) -> StepResult:
    return next(step for step in report.steps if step.step.name == name)


# --- the verdict, from recorded reports ---------------------------------------------------


@pytest.mark.parametrize("fixture", ["all_pass.json", "parallel.json"])
def test_every_session_passing_is_green(fixture: str) -> None:
    report = report_of(fixture)
    assert report.ok
    assert [step.step.number for step in report.steps] == list(range(1, 14))
    assert all(step.status is Status.passed for step in report.steps)
    assert report.verdict.startswith("✅ passed: all 13 required step(s) passed")
    assert report.to_dict()["verdict"] == "passed"


def test_a_failed_session_fails_its_step_and_the_verdict() -> None:
    report = report_of("one_failed.json")
    assert not report.ok
    assert [step.step.name for step in report.failures] == ["lint"]
    assert by_name(report, "lint").status is Status.failed
    assert "1 of 13 required step(s) did not pass" in report.verdict
    assert "2 lint (failed)" in report.verdict


def test_a_missing_interpreter_is_not_green() -> None:
    # nox itself exited 0 on this run: only the report says the session was skipped.
    report = report_of("skipped_interpreter.json")
    step = by_name(report, "tests")
    assert not report.ok
    assert step.status is Status.skipped
    assert step.reason == "Python interpreter 3.13 not found"
    assert "10 tests (skipped: Python interpreter 3.13 not found)" in report.verdict
    document = report.to_dict()
    assert document["ok"] is False
    (entry,) = (s for s in document["steps"] if s["name"] == "tests")
    assert entry["status"] == "skipped"
    assert entry["reason"] == "Python interpreter 3.13 not found"


def test_an_aborted_session_is_a_failure() -> None:
    report = report_of("aborted.json")
    step = by_name(report, "guard")
    assert step.status is Status.aborted
    assert step.reason == "explicit error"
    assert report.failures == [step]


def test_sessions_absent_from_the_report_are_failures() -> None:
    # nox -x stopped after docs failed: later sessions are not in the report at all.
    report = report_of("stopped_early.json")
    assert by_name(report, "docs").status is Status.failed
    missing = [step.step.name for step in report.steps if step.status is Status.missing]
    assert missing == [step.name for step in STEPS[4:13]]
    assert by_name(report, "msrv").reason == (
        "not in the nox report (nox stopped before running it?)"
    )
    assert len(report.failures) == 10


def test_no_report_at_all_leaves_every_session_missing() -> None:
    report = build_report(select(["quick"]), None, missing_reason="nox exited 3", nox_exit_code=3)
    assert not report.ok
    assert {step.status for step in report.steps} == {Status.missing}
    assert {step.reason for step in report.steps} == {"nox exited 3"}
    assert report.to_dict()["nox_exit_code"] == 3


def test_a_session_the_noxfile_lacks_is_missing_with_that_reason() -> None:
    report = build_report(select(["lint"]), [], undefined=["lint"])
    assert by_name(report, "lint").reason == "noxfile.py defines no such session"


def test_a_step_is_as_bad_as_its_worst_session() -> None:
    entries = [
        NoxSession(("features(receipts,tuning)",), Status.passed, None, 1.0),
        NoxSession(("features(tuning)",), Status.skipped, "not today", 0.5),
    ]
    (step,) = build_report(select(["7"]), entries).steps
    assert step.status is Status.skipped
    assert step.reason == "features(tuning) skipped: not today"
    assert step.duration_s == 1.5


def test_an_advisory_step_does_not_fail_the_verdict() -> None:
    bench = next(step for step in STEPS if step.name == "bench")
    lint = next(step for step in STEPS if step.name == "lint")
    selections = [Selection(lint, ("lint",), True), Selection(bench, ("bench",), False)]
    entries = [
        NoxSession(("lint",), Status.passed, None, 1.0),
        NoxSession(("bench",), Status.aborted, "scripts/bench.py does not exist yet", 0.1),
    ]
    report = build_report(selections, entries)
    assert report.ok
    assert "1 advisory step(s) did not pass" in report.verdict


def test_no_steps_is_not_green() -> None:
    assert not build_report([], []).ok


def test_unknown_nox_results_count_as_failures() -> None:
    document = {"sessions": [{"name": "lint", "signatures": ["lint"], "result": "exploded"}]}
    (entry,) = parse_nox_report(document)
    assert entry.status is Status.failed
    assert entry.reason == "unknown nox result 'exploded'"


@pytest.mark.parametrize(
    "document",
    [[], {"sessions": {}}, {"sessions": [1]}, {"sessions": [{"name": "x"}]},
     {"sessions": [{"name": "x", "result": "success", "signatures": "x"}]}],
)  # fmt: skip
def test_malformed_reports_are_input_errors(document: object) -> None:
    with pytest.raises(InputError, match="not a nox report"):
        parse_nox_report(document)


def test_unreadable_report_files_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_nox_report(tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"sessions": [', encoding="utf-8")
    with pytest.raises(InputError, match="unreadable nox report"):
        read_nox_report(broken)


# --- selecting steps ------------------------------------------------------------------------


def sessions_of(words: list[str]) -> list[str]:
    return [session for selection in select(words) for session in selection.sessions]


def test_no_words_selects_the_default_set_in_upstream_order() -> None:
    assert sessions_of([]) == DEFAULT_SESSIONS
    assert sessions_of(["all"]) == DEFAULT_SESSIONS


def test_targets() -> None:
    assert [s.step.number for s in select(["receipts"])] == list(range(1, 10))
    assert sessions_of(["quick"]) == ["lint", "features(receipts,tuning)"]
    assert set(TARGETS) == {"receipts", "all", "quick"}


def test_steps_by_number_name_and_session_come_back_in_step_order() -> None:
    assert sessions_of(["guard", "2", "tests-3.13", "features(tuning)"]) == [
        "lint", "features(tuning)", "guard", "tests",
    ]  # fmt: skip
    assert sessions_of(["7", "features(tuning)"]) == [
        "features(receipts,tuning)", "features(tuning)",
    ]  # fmt: skip


def test_an_advisory_step_named_directly_is_required() -> None:
    (bench,) = select(["bench"])
    assert bench.required
    assert "bench" not in sessions_of([])


def test_unknown_steps_are_usage_errors_with_a_suggestion() -> None:
    with pytest.raises(UsageError, match=r"unknown step 'lnt' \(did you mean 'lint'\?\)"):
        select(["lnt"])


# --- the nox command line -------------------------------------------------------------------


def test_nox_command_line() -> None:
    root, report = Path("/src/kvreceipts"), Path("/tmp/r.json")
    plain = nox_command(["nox"], root, ["lint", "docs"], report, NoxOptions())
    assert plain == [
        "nox", "--noxfile", "/src/kvreceipts/noxfile.py", "--report", "/tmp/r.json",
        "--download-python", "never", "--sessions", "lint", "docs",
    ]  # fmt: skip
    warm = nox_command(["nox"], root, ["lint"], report, NoxOptions(True, 2, ("--", "-x")))
    assert warm[warm.index("--reuse-venv") + 1] == "yes"
    assert warm[warm.index("--parallel") + 1] == "2"
    assert "--allow-parallel" in warm
    assert warm[-4:] == ["--sessions", "lint", "--", "-x"]  # posargs last
    assert "--parallel" not in nox_command(["nox"], root, ["lint"], report, NoxOptions(jobs=1))


def test_parallel_runs_start_the_longest_sessions_first(tmp_path: Path) -> None:
    (tmp_path / runner.DURATIONS).parent.mkdir()
    (tmp_path / runner.DURATIONS).write_text('{"lint": 5, "tests": 40, "docs": 3}')
    sessions = ["lint", "docs", "happy", "tests"]
    assert schedule(sessions, NoxOptions(jobs=2), tmp_path) == ["happy", "tests", "lint", "docs"]
    assert schedule(sessions, NoxOptions(jobs=1), tmp_path) == sessions


def test_find_checkout_walks_up_to_the_noxfile(tmp_path: Path) -> None:
    (tmp_path / "noxfile.py").touch()
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    assert find_checkout(nested) == tmp_path.resolve()


def test_find_checkout_outside_a_checkout(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not in a kvreceipts source checkout"):
        find_checkout(tmp_path)


def test_find_nox_honours_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(runner.NOX_ENV, "python3 -m nox")
    assert find_nox() == ["python3", "-m", "nox"]


def no_nox_anywhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(runner.NOX_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)


def test_find_nox_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    no_nox_anywhere(monkeypatch, tmp_path)
    with pytest.raises(UsageError, match=r"nox is not installed: run \./ci-local\.sh"):
        find_nox()


# --- the command ------------------------------------------------------------------------------


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder that looks like a checkout, with the fake nox standing in for nox."""
    (tmp_path / "noxfile.py").touch()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(runner.NOX_ENV, f"{sys.executable} {FAKE_NOX}")
    monkeypatch.setenv("FAKE_NOX_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.delenv("FAKE_NOX_REPORT", raising=False)
    monkeypatch.delenv("FAKE_NOX_EXIT", raising=False)
    return tmp_path


def nox_calls(checkout: Path) -> list[list[str]]:
    lines = (checkout / "calls.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


runner_cli = CliRunner()


def test_list_prints_every_step_and_runs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    result = runner_cli.invoke(app, ["validate", "--list"])
    assert result.exit_code == 0
    for step in STEPS:
        assert f" {step.name} " in result.stdout
    assert "features(receipts," in result.stdout
    assert "features(tuning)" in result.stdout
    assert "(advisory)" in result.stdout  # bench
    assert max(len(line) for line in result.stdout.splitlines()) <= 80  # a 200-column terminal
    assert "target quick: steps 2, 7" in result.stdout
    assert "kvreceipts validate [STEP]" in result.stderr
    assert "error" not in result.stderr


def test_list_json() -> None:
    result = runner_cli.invoke(app, ["validate", "--list", "--json"])
    assert result.exit_code == 0
    assert result.stderr == ""
    document = json.loads(result.stdout)
    assert [step["number"] for step in document["steps"]] == list(range(1, 15))
    bench = document["steps"][-1]
    assert bench["name"] == "bench"
    assert (bench["required"], bench["default"], bench["targets"]) == (False, False, [])
    assert document["steps"][6]["sessions"] == ["features(receipts,tuning)", "features(tuning)"]
    assert document["targets"]["quick"] == ["lint", "features(receipts,tuning)"]


def test_list_of_a_target() -> None:
    result = runner_cli.invoke(app, ["validate", "--list", "--json", "quick"])
    steps = json.loads(result.stdout)["steps"]
    assert [(s["name"], s["sessions"]) for s in steps] == [
        ("lint", ["lint"]), ("combo-receipts-tuning", ["features(receipts,tuning)"]),
    ]  # fmt: skip


def test_json_report_of_a_skipped_interpreter_run(
    checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NOX_REPORT", "skipped_interpreter.json")
    result = runner_cli.invoke(app, ["validate", "--json", "--reuse", "--jobs", "2"])
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["schema"] == "kvreceipts.validate/1"
    assert (document["ok"], document["verdict"]) == (False, "failed")
    statuses = {step["name"]: (step["status"], step["reason"]) for step in document["steps"]}
    assert statuses["tests"] == ("skipped", "Python interpreter 3.13 not found")
    assert statuses["lint"] == ("passed", None)
    assert document["nox_exit_code"] == 0
    assert "(fake) running sessions" in result.stderr  # nox's output: stderr
    listing, run = nox_calls(checkout)
    assert "--list" in listing
    assert run[run.index("--sessions") + 1 :] == DEFAULT_SESSIONS
    assert run[run.index("--download-python") + 1] == "never"
    assert run[run.index("--reuse-venv") + 1] == "yes"
    assert run[run.index("--parallel") + 1 :][:2] == ["2", "--allow-parallel"]


def test_table_of_a_green_run(checkout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_NOX_REPORT", "all_pass.json")
    monkeypatch.setenv("COLUMNS", "200")
    output = checkout / "out" / "validate.json"
    output.parent.mkdir()
    result = runner_cli.invoke(app, ["validate", "receipts", "-o", str(output)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("│ ✅ passed") == 10  # nine steps, ten sessions
    assert "✅ passed: all 9 required step(s) passed" in result.stdout
    assert "tests-3.13" not in result.stdout
    assert "crosscheck" not in result.stdout
    assert json.loads(output.read_text(encoding="utf-8"))["ok"] is True
    assert f"report: {output}" in result.stderr
    assert "$ " in result.stderr  # the nox command line, announced


def test_table_of_a_failed_run_shows_reasons(
    checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NOX_REPORT", "aborted.json")
    monkeypatch.setenv("COLUMNS", "200")
    result = runner_cli.invoke(app, ["validate", "guard", "9", "lint"])
    assert result.exit_code == 1
    assert "❌ aborted: explicit error" in result.stdout
    verdict = result.stdout.splitlines()[-1]  # one line, however long
    assert verdict.startswith("❌ failed: 1 of 2 required step(s) did not pass in ")
    assert verdict.endswith(": 9 guard (aborted: explicit error)")


def test_nox_without_a_report_fails_every_step(
    checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NOX_EXIT", "3")
    result = runner_cli.invoke(app, ["validate", "--json", "lint"])
    assert result.exit_code == 1
    (step,) = json.loads(result.stdout)["steps"]
    assert step["status"] == "missing"
    assert step["reason"].startswith("nox exited 3 without writing a report")


def test_dry_run_prints_the_nox_command(checkout: Path) -> None:
    result = runner_cli.invoke(app, ["validate", "quick", "--dry-run", "-r", "-j", "2",
                                     "--nox-arg=--", "--nox-arg=-x"])  # fmt: skip
    assert result.exit_code == 0
    assert result.stdout.startswith(f"{sys.executable} {FAKE_NOX} --noxfile ")
    assert result.stdout.rstrip().endswith(
        "--reuse-venv yes --parallel 2 --allow-parallel --sessions lint "
        "'features(receipts,tuning)' -- -x"
    )
    assert not (checkout / "calls.jsonl").exists()  # nothing ran


def test_outside_a_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner_cli.invoke(app, ["validate", "lint"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: not in a kvreceipts source checkout")
    assert result.stderr.count("\n") == 1


def test_without_nox(checkout: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    no_nox_anywhere(monkeypatch, tmp_path)
    result = runner_cli.invoke(app, ["validate", "lint"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "error: nox is not installed: run ./ci-local.sh" in result.stderr


def test_unknown_step_is_a_usage_error(checkout: Path) -> None:
    result = runner_cli.invoke(app, ["validate", "nine"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: unknown step 'nine'")
    assert not (checkout / "calls.jsonl").exists()
