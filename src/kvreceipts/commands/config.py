"""``kvreceipts config init|show``: write a complete config file; print the resolved one."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from kvreceipts.commands.options import ConfigOption
from kvreceipts.commands.output import Output
from kvreceipts.config import CachingConfig, LoadedConfig, dump_toml, load_config
from kvreceipts.errors import InputError, UsageError

__all__ = ["app"]

DEFAULT_PATH = "kvreceipts.toml"

app = typer.Typer(
    help="Write and show config files (TOML: \\[caching] and \\[simulation] tables).",
    no_args_is_help=True,
)


class ConfigFormat(StrEnum):
    """How ``config show`` prints."""

    toml = "toml"
    json = "json"


@app.command(epilog="[bold]Example[/bold]: kvreceipts config init && kvreceipts simulate -c "
             "kvreceipts.toml")  # fmt: skip
def init(
    path: Annotated[Path, typer.Argument(help="Where to write it.", dir_okay=False)] = Path(
        DEFAULT_PATH
    ),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a complete config with every default, ready for `simulate --config`."""
    out = Output()
    if path.exists() and not force:
        raise UsageError(f"{path} already exists (use --force to overwrite it)")
    # Receipts on, as `simulate` runs without a config: the same command with and without
    # this file prints the same bytes.
    text = dump_toml(LoadedConfig(caching=CachingConfig(enable_receipts=True)))
    header = (
        "# kvreceipts config: every key with the value `kvreceipts simulate` uses by default.\n"
        f"# `kvreceipts simulate --config {path.name}` reads it; command-line options override "
        "it.\n\n"
    )
    try:
        path.write_text(header + text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot write: {exc.strerror}", path=str(path)) from None
    out.note(f"wrote {path}")


@app.command(epilog="[bold]Example[/bold]: kvreceipts config show -c kvreceipts.toml --format json")
def show(
    config: ConfigOption = None,
    fmt: Annotated[ConfigFormat, typer.Option("--format", "-f", help="toml or json.")] = (
        ConfigFormat.toml
    ),
) -> None:
    """Print the config in force: the file's values over the defaults."""
    loaded = load_config(config) if config else LoadedConfig()
    out = Output(json_mode=fmt is ConfigFormat.json)
    if out.json_mode:
        out.json(loaded.to_dict())
    else:
        out.write(dump_toml(loaded).encode())
        out.flush()
