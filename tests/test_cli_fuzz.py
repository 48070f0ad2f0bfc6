"""Random strings, numbers and TOML values at every option and config key of every command:
the answer is exit 0, or exit 2 with one ``error: …`` line; never a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import math
import tempfile
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import tomli_w
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from kvreceipts import features, simulation
from kvreceipts.cli import app
from kvreceipts.config import CachingConfig, SimulationConfig

if TYPE_CHECKING:
    from collections.abc import Iterator

runner = CliRunner()

# Each command, with arguments that keep a valid run short.
BASE: dict[tuple[str, ...], list[str]] = {
    ("simulate",): ["-q", "--format", "json", "--requests", "30"],
    ("verify",): [],
    ("stats",): [],
    ("schema",): [],
    ("config", "init"): ["--force"],
    ("config", "show"): [],
    ("validate",): ["--dry-run"],
    ("prove",): ["{signed}"],
    ("verify-proof",): ["{bundle}", "--vkey", "{pub}"],
    ("keygen",): ["fuzz", "-o", "fuzz"],
}
"""``{signed}``, ``{bundle}`` and ``{pub}``: a signed run, a proof bundle of it and its
verifier key, made once (:func:`_proof_files`)."""

SPECIAL = [
    "nan", "inf", "-inf", "1e400", "-1", "0", "1e-9", "99999999999999999999999",
    "-99999999999999999999999", "", " ", "notaurl", "0x10", "1_000", "--", "-",
]  # fmt: skip

NUMBERS = st.one_of(
    st.integers(min_value=-(10**25), max_value=10**25),
    st.floats(allow_nan=True, allow_infinity=True),
)
VALUES = st.one_of(
    st.sampled_from(SPECIAL),
    NUMBERS.map(str),
    st.text(alphabet=st.characters(exclude_characters="/\\\x00"), max_size=12),
)


def _options(path: tuple[str, ...]) -> list[tuple[str, bool]]:
    """Every option of a command: (its first name, whether it is a flag)."""
    command: Any = typer.main.get_command(app)
    ctx = command.make_context("kvreceipts", ["--help"], resilient_parsing=True)
    for name in path:
        command = command.get_command(ctx, name)
    return [
        (param.opts[0], bool(param.is_flag))
        for param in command.params
        if param.param_type_name == "option" and "--help" not in param.opts
    ]


CASES = [(path, name, flag) for path in BASE for name, flag in _options(path)]


@functools.cache
def _proof_files() -> dict[str, str]:
    folder = Path(tempfile.mkdtemp(prefix="kvreceipts-fuzz-"))
    for args in (("keygen", "fuzz", "-o", str(folder / "k")),
                 ("simulate", "-q", "-f", "json", "--requests", "200", "--sign-key",
                  str(folder / "k.key"), "-o", str(folder / "run.jsonl")),
                 ("prove", str(folder / "run.jsonl"), "--seq", "0", "-o",
                  str(folder / "p.json"))):  # fmt: skip
        assert runner.invoke(app, list(args)).exit_code == 0, args
    return {"signed": str(folder / "run.jsonl"), "bundle": str(folder / "p.json"),
            "pub": str(folder / "k.pub")}  # fmt: skip


def _base(path: tuple[str, ...]) -> list[str]:
    return [arg.format(**_proof_files()) if "{" in arg else arg for arg in BASE[path]]


def _check(result: Result, *, violations: bool = False) -> None:
    """``violations``: exit 1 is an answer too (verify found violations, or stats no records,
    in empty input)."""
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), repr(result.exception)
    assert "Traceback" not in result.stderr
    assert result.exit_code in ((0, 1, 2) if violations else (0, 2)), (
        result.exit_code,
        result.stderr,
    )
    if result.exit_code == 2:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("error: "), result.stderr


@pytest.fixture(autouse=True)
def _short_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A valid --requests may be 2**62: run at most 50 requests of whatever is asked for."""
    original = simulation.Plan.requests

    def first_50(self: simulation.Plan) -> Iterator[Any]:
        return islice(original(self), 50)

    monkeypatch.setattr(simulation.Plan, "requests", first_50)


def test_every_command_has_options_to_fuzz() -> None:
    names = {name for _, name, _ in CASES}
    assert {"--capacity-mb", "--requests", "--seed", "--http-sink", "--output"} <= names
    assert {path for path, _, _ in CASES} == set(BASE)


@pytest.mark.slow  # a campaign: ~1,000 runs; the full-suite sessions run it
@pytest.mark.parametrize(("path", "option", "flag"), CASES, ids=str)
@settings(max_examples=12)
@given(value=VALUES)
def test_random_values_at_every_option(
    path: tuple[str, ...], option: str, flag: bool, value: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        args = [*path, *_base(path), option] + ([] if flag else [value])
        answers = (("verify",), ("stats",), ("verify-proof",))  # exit 1 is an answer there
        _check(runner.invoke(app, args), violations=path in answers)


TOML_VALUES = st.one_of(
    NUMBERS,
    st.booleans(),
    st.text(max_size=12),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e-9, 10**23, -(10**23)]),
)
KEYS = [("caching", f) for f in CachingConfig.__slots__] + [
    ("simulation", f) for f in SimulationConfig.__slots__
]


@pytest.mark.slow
@pytest.mark.parametrize(("table", "key"), KEYS, ids=str)
@settings(max_examples=12)
@given(value=TOML_VALUES)
def test_random_values_at_every_config_key(table: str, key: str, value: object) -> None:
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        with open("k.toml", "w", encoding="utf-8") as handle:  # noqa: PTH123
            handle.write(tomli_w.dumps({table: {key: value}}))
        for command in (["simulate", *BASE[("simulate",)]], ["config", "show"]):
            _check(runner.invoke(app, [*command, "--config", "k.toml"]))


def test_the_commands_of_the_issue_fail_in_one_line(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    commands = [
        ["--capacity-mb", "nan"], ["--capacity-mb", "inf"], ["--capacity-mb", "1e-9"],
        ["--requests", "99999999999999999999999"], ["--seed", "99999999999999999999999"],
        ["--bytes-per-token", "99999999999999999999999"],
        ["--snapshot-every", "99999999999999999999999"], ["--http-sink", "notaurl"],
        ["--capacity-blocks", "-5", "--trace", "junk.jsonl"],
        ["--block-tokens", "0"], ["--decode-ms-per-token", "nan"], ["--requests", "-1"],
        ["--requests", "10000001"], ["--capacity-blocks", "4194305"],
        ["--decode-ms-per-token", "230675170669"],  # the clock would pass year 9999
    ]  # fmt: skip
    if features.enabled("receipts"):  # without receipts no file is written, so -o is moot
        commands.append(["-o", "/nonexistent/dir/x.jsonl"])
    for args in commands:
        result = runner.invoke(app, ["simulate", "-q", *args])
        assert result.exit_code == 2, (args, result.stderr)
        _check(result)
    for text in ("kv_cache_size_mb = nan", "kv_cache_size_mb = inf", "kv_cache_size_mb = 1e400"):
        (tmp_path / "c.toml").write_text(f"[caching]\n{text}\n", encoding="utf-8")
        result = runner.invoke(app, ["simulate", "-c", "c.toml"])
        assert result.exit_code == 2
        assert result.stderr.startswith("error: c.toml:2: [caching] kv_cache_size_mb must be")


def test_debug_after_the_command_is_the_root_option() -> None:
    result = runner.invoke(app, ["simulate", "--debug", "-q", "--format", "json", "--requests",
                                 "5"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    with pytest.raises(Exception, match="finite number"):
        runner.invoke(app, ["simulate", "--debug", "--capacity-mb", "nan"],
                      catch_exceptions=False)  # fmt: skip
