"""The generated parts of the docs site stay in step with the code.

``docs/cli.md`` is rendered from the Typer app and the field tables of ``docs/receipts.md`` from
``kvreceipts.schema``. When one is stale the test fails; regenerate both with
``KVRECEIPTS_UPDATE_DOCS=1 pytest tests/test_docs.py`` and commit the result.
"""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path
from typing import Any

import pytest
import typer
from rich.errors import MarkupError
from rich.text import Text

from kvreceipts import schema
from kvreceipts.cli import app

DOCS = Path(__file__).resolve().parent.parent / "docs"
MKDOCS = DOCS.parent / "mkdocs.yml"
UPDATE = os.environ.get("KVRECEIPTS_UPDATE_DOCS") == "1"
REGENERATE = "KVRECEIPTS_UPDATE_DOCS=1 pytest tests/test_docs.py"


def _plain(text: str | None) -> str:
    """Help text as the terminal shows it: rich markup applied, then dropped."""
    text = inspect.cleandoc(text or "")
    try:
        return Text.from_markup(text).plain
    except MarkupError:
        return text


def _param_help(text: str) -> str:
    """Click appends ``  [default: …; x>=1]`` as plain text: only the help is markup."""
    help_text, bracket, extra = text.rpartition("  [")
    if bracket and text.endswith("]"):
        return f"{_plain(help_text)}  [{extra}"
    return _plain(text)


def _command_section(command: Any, ctx: Any, depth: int) -> list[str]:
    # Typer bundles its own Click: duck typing, not isinstance checks against ``click``.
    lines = [f"{'#' * depth} `{ctx.command_path}`", ""]
    if command.help:
        lines += [_plain(command.help), ""]
    usage = " ".join(command.collect_usage_pieces(ctx))
    lines += ["```console", f"$ {ctx.command_path} {usage}".rstrip(), "```", ""]
    records = [
        (param, record)
        for param in command.get_params(ctx)
        if not getattr(param, "hidden", False) and (record := param.get_help_record(ctx))
    ]
    for title, kind in (("Arguments", "argument"), ("Options", "option")):
        items = [record for param, record in records if param.param_type_name == kind]
        if items:
            lines += [f"**{title}**", ""]
            lines += [f"- `{name}`: {_param_help(text)}".rstrip(": ") for name, text in items]
            lines.append("")
    if command.epilog:
        lines += ["```text", _plain(command.epilog).strip("\n"), "```", ""]
    if hasattr(command, "list_commands"):
        names = command.list_commands(ctx)
        lines += ["**Commands**", ""]
        for name in names:
            sub = command.get_command(ctx, name)
            assert sub is not None
            summary = _plain(sub.help).split("\n\n")[0].replace("\n", " ")
            anchor = f"{ctx.command_path} {name}".replace(" ", "-")
            lines.append(f"- [`{name}`](#{anchor}): {summary}")
        lines.append("")
        for name in names:
            sub = command.get_command(ctx, name)
            assert sub is not None
            sub_ctx = typer.Context(sub, info_name=name, parent=ctx)
            lines += _command_section(sub, sub_ctx, depth + 1)
    return lines


def cli_reference() -> str:
    """The Markdown of ``docs/cli.md``."""
    root = typer.main.get_command(app)
    header = [
        "# CLI reference",
        "",
        f"<!-- Generated from the Typer app by tests/test_docs.py; do not edit: {REGENERATE} -->",
        "",
        "Every command prints data on stdout and people-facing text on stderr; an error is one",
        "`error: …` line with exit status 2. `--help` on any command shows the same text.",
        "",
    ]
    with typer.Context(root, info_name="kvreceipts") as ctx:
        body = _command_section(root, ctx, 2)
    return "\n".join(header + body).rstrip() + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _field_table(fields: dict[str, schema.Field]) -> list[str]:
    lines = ["| field | type | meaning |", "|---|---|---|"]
    for name, field in fields.items():
        kind = " or ".join(field.types)
        if field.optional:
            kind += ", optional"
        if field.minimum is not None:
            kind += f", ≥ {field.minimum:g}"
        lines.append(f"| `{name}` | {kind} | {_cell(field.doc)} |")
    return lines


def receipt_fields() -> str:
    """The Markdown of the field tables in ``docs/receipts.md``."""
    parts: list[str] = ["### Fields of every record", "", *_field_table(schema.COMMON), ""]
    for kind, fields in schema.KINDS.items():
        title = f"`{kind}`" + (" (lean layout, the default)" if kind == "eviction" else "")
        parts += [f"### {title}", "", *_field_table(fields), ""]
    parts += [
        "### `eviction` (upstream layout)", "", *_field_table(schema.EVICTION_LAYOUTS["upstream"]),
        "",
    ]  # fmt: skip
    nested = (
        ("Lean `before`", schema.LEAN_BEFORE),
        ("Lean `after`", schema.LEAN_STATISTICS),
        ("Lean `performance` (with the tuning feature)", schema.LEAN_PERFORMANCE),
        ("Statistics (upstream `before`, `after`; `final_stats`)", schema.STATISTICS),
        ("Upstream `performance` (with the tuning feature)", schema.PERFORMANCE),
        ("Caching config (`config`, `performance.current_config`)", schema.CACHING_CONFIG),
    )
    for title, fields in nested:
        parts += [f"### {title}", "", *_field_table(fields), ""]
    return "\n".join(parts).rstrip() + "\n"


BEGIN, END = "<!-- fields:begin -->\n", "<!-- fields:end -->"


def _check_or_update(path: Path, current: str, expected: str) -> None:
    if current == expected:
        return
    if UPDATE:
        path.write_text(expected, encoding="utf-8")
        return
    pytest.fail(f"{path.relative_to(DOCS.parent)} is stale: regenerate it with {REGENERATE}")


def test_cli_reference_is_current() -> None:
    path = DOCS / "cli.md"
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    _check_or_update(path, current, cli_reference())


def test_cli_reference_covers_every_command() -> None:
    text = cli_reference()
    for name in ("simulate", "verify", "stats", "schema", "validate", "config init", "config show"):
        assert f"## `kvreceipts {name}`" in text


def test_receipt_field_tables_are_current() -> None:
    path = DOCS / "receipts.md"
    current = path.read_text(encoding="utf-8")
    head, begin, rest = current.partition(BEGIN)
    _, end, tail = rest.partition(END)
    assert begin, f"{path.name} lost its {BEGIN.strip()} marker"
    assert end, f"{path.name} lost its {END} marker"
    _check_or_update(path, current, head + BEGIN + "\n" + receipt_fields() + "\n" + END + tail)


def test_every_docs_page_is_in_the_nav() -> None:
    nav = MKDOCS.read_text(encoding="utf-8")
    listed = set(re.findall(r":\s*([\w-]+\.md)\s*$", nav, flags=re.MULTILINE))
    assert listed == {path.name for path in DOCS.glob("*.md")}
