"""Options shared by several commands, as ``Annotated`` aliases."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

__all__ = [
    "ConfigOption",
    "HmacKeyOption",
    "InputArgument",
    "PinOption",
    "QuietOption",
    "ReceiptFormat",
    "ReportFormat",
    "ReportFormatOption",
]

HMAC_KEY_ENV = "KVRECEIPTS_HMAC_KEY_FILE"


class ReceiptFormat(StrEnum):
    """How ``simulate`` prints receipts."""

    table = "table"
    jsonl = "jsonl"
    json = "json"


class ReportFormat(StrEnum):
    """How a report prints."""

    table = "table"
    json = "json"


InputArgument = Annotated[
    str,
    typer.Argument(
        metavar="[PATH|-]",
        help="A receipts JSONL file, or - (the default) for standard input.",
        show_default=False,
    ),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", dir_okay=False, show_default=False,
                 help="A TOML config file (\\[caching] and \\[simulation] tables)."),
]  # fmt: skip
HmacKeyOption = Annotated[
    Path | None,
    typer.Option("--hmac-key-file", envvar=HMAC_KEY_ENV, dir_okay=False, show_default=False,
                 help="File holding the HMAC key: digests become HMAC-SHA-256."),
]  # fmt: skip
ReportFormatOption = Annotated[
    ReportFormat,
    typer.Option("--format", "-f", help="table for people, json for machines."),
]
QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bar or notes on stderr.")
]
PinOption = Annotated[
    bool | None,
    typer.Option("--pin/--no-pin", show_default="pinned",
                 help="Paged: pin a request's own blocks while it is admitted; --no-pin lets "
                 "it evict them, as block-level simulators (libCacheSim) do."),
]  # fmt: skip
