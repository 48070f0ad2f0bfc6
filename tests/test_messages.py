"""Every bad command-line value reads as our own one line, and no command imports pydantic.

Typer would parse values through pydantic (``Input should be a valid integer``, ``Value error,
'x' is not one of ...``); kvreceipts.commands.coercion parses them instead. The sweep below
gives every option of every command a value its type refuses, so a new option cannot bring the
old wording back.
"""

from __future__ import annotations

import subprocess
import sys
from enum import Enum
from typing import TYPE_CHECKING, Any

import pytest
import typer
from typer.testing import CliRunner

from kvreceipts.cli import COMMANDS, app

if TYPE_CHECKING:
    from pathlib import Path

LEAKS = ("Value error", "Input should", "pydantic", "Invalid value for", "Traceback")


def _leaves() -> list[tuple[list[str], Any]]:
    root = typer.main.get_command(app)
    found = []
    with typer.Context(root, info_name="kvreceipts") as ctx:
        for name in root.list_commands(ctx):  # type: ignore[attr-defined]
            command = root.get_command(ctx, name)  # type: ignore[attr-defined]
            if hasattr(command, "list_commands"):
                sub_ctx = typer.Context(command, info_name=name, parent=ctx)
                found += [([name, sub], command.get_command(sub_ctx, sub))
                          for sub in command.list_commands(sub_ctx)]  # fmt: skip
            else:
                found.append(([name], command))
    return found


def _bad_values() -> list[tuple[list[str], str, str]]:
    """(command path, option, a value its type refuses) for every typed option."""
    cases = []
    for path, command in _leaves():
        for param in command.params:
            opts = [o for o in param.opts if o.startswith("--")]
            if param.param_type_name != "option" or not opts or param.is_flag:
                continue
            annotation = param.type_descriptor.annotation
            if annotation is int or annotation is float:
                cases.append((path, max(opts, key=len), "not-a-number"))
            elif isinstance(annotation, type) and issubclass(annotation, Enum):
                cases.append((path, max(opts, key=len), "bogus"))
    return cases


CASES = _bad_values()


def test_the_sweep_covers_every_kind_of_typed_option() -> None:
    options = {option for _, option, _ in CASES}
    assert {"--requests", "--capacity-mb", "--kind", "--format", "--workload"} <= options
    assert len(CASES) >= 20


@pytest.mark.parametrize(("path", "option", "value"), CASES,
                         ids=[f"{' '.join(p)} {o}" for p, o, _ in CASES])  # fmt: skip
def test_a_refused_value_is_one_line_naming_the_option(
    path: list[str], option: str, value: str
) -> None:
    result = CliRunner().invoke(app, [*path, option, value])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {option}: '{value}' is not "), result.stderr
    assert result.stderr.count("\n") == 1
    assert not any(leak in result.stderr for leak in LEAKS), result.stderr


def test_schema_kind_names_the_kinds() -> None:
    result = CliRunner().invoke(app, ["schema", "--kind", "bogus"])
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "error: --kind: 'bogus' is not one of open, close, checkpoint, eviction,"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["simulate", "--requests", "0"], "error: --requests: 0 is out of range (at least 1)"),
        (["stats", "--top", "0"], "error: --top: 0 is out of range (at least 1)"),
        (["simulate", "--trace", "/"], "error: --trace: file '/' is a directory."),
        (["simulate", "--requests", "1.5"], "error: --requests: '1.5' is not an integer"),
    ],
)  # fmt: skip
def test_range_and_path_messages(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr == message + "\n"


def test_values_still_parse() -> None:
    result = CliRunner().invoke(app, ["simulate", "--requests", "3", "--capacity-mb", "64.5",
                                      "--workload", "agent", "-f", "json", "-q"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert '"total": 3' in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("command", ["simulate", "stats", "show", "verify", "schema", "--version"])
def test_a_command_process_imports_neither_pydantic_nor_the_other_commands(
    command: str, tmp_path: Path
) -> None:
    args = [command] if command.startswith("-") else [command, "--help"]
    probe = (
        "import sys, runpy\n"
        f"sys.argv = ['kvreceipts', *{args!r}]\n"
        "try:\n    runpy.run_module('kvreceipts', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'pydantic'"
        " or m.startswith('kvreceipts.commands.'))\n"
        "print(' '.join(loaded), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, cwd=tmp_path)  # fmt: skip
    loaded = done.stderr.split()
    assert not [m for m in loaded if m.startswith("pydantic")]
    others = {f"kvreceipts.commands.{c}" for c in COMMANDS} - {f"kvreceipts.commands.{command}"}
    assert not others & set(loaded), sorted(others & set(loaded))
