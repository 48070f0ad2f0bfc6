"""Options shared by several commands, as ``Annotated`` aliases."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from kvreceipts.errors import UsageError

__all__ = [
    "AppendOption",
    "CheckpointEveryOption",
    "CheckpointOutOption",
    "ConfigOption",
    "ForceOption",
    "HmacKeyOption",
    "InputArgument",
    "Kind",
    "OutputOption",
    "PinOption",
    "QuietOption",
    "ReceiptFormat",
    "ReportFormat",
    "ReportFormatOption",
    "SignKeyOption",
    "check_output",
]

HMAC_KEY_ENV = "KVRECEIPTS_HMAC_KEY_FILE"


class ReceiptFormat(StrEnum):
    """How ``simulate`` prints receipts."""

    table = "table"
    jsonl = "jsonl"
    json = "json"


class Kind(StrEnum):
    """Receipt kinds, or all of them."""

    open = "open"
    close = "close"
    checkpoint = "checkpoint"
    eviction = "eviction"
    eviction_batch = "eviction_batch"
    snapshot = "snapshot"
    demotion = "demotion"
    loss = "loss"
    engine_removal = "engine_removal"
    engine_clear = "engine_clear"
    engine_restore = "engine_restore"
    engine_restart = "engine_restart"
    engine_loss = "engine_loss"
    engine_reuse = "engine_reuse"
    engine_tally = "engine_tally"
    all = "all"


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
SignKeyOption = Annotated[
    Path | None,
    typer.Option("--sign-key", dir_okay=False, show_default=False,
                 help="Signer key (kvreceipts keygen's .key): every close record, and every "
                 "checkpoint record, carries a signed checkpoint of the run's Merkle tree."),
]  # fmt: skip
CheckpointEveryOption = Annotated[
    int,
    typer.Option("--checkpoint-every", min=0, metavar="N",
                 help="Also write a checkpoint record (the tree's size and root, signed with "
                 "--sign-key) once N records followed the last one; 0: only at the close."),
]  # fmt: skip
CheckpointOutOption = Annotated[
    Path | None,
    typer.Option("--checkpoint-out", dir_okay=False, show_default=False,
                 help="Keep the latest signed checkpoint in this file (replaced atomically)."),
]  # fmt: skip
ReportFormatOption = Annotated[
    ReportFormat,
    typer.Option("--format", "-f", help="table for people, json for machines."),
]
BlockTokensOption = Annotated[
    int | None,
    typer.Option(
        help="Tokens per paged block.", min=1, show_default="512; a watch recording: its engine's"
    ),
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
OutputOption = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Also write the receipts to this JSONL file (.gz or "
                 ".zst: compressed).", dir_okay=False, show_default=False),
]  # fmt: skip
AppendOption = Annotated[
    bool,
    typer.Option("--append", help="-o FILE exists: add this run after the runs in it.",
                 show_default=False),
]  # fmt: skip
ForceOption = Annotated[
    bool, typer.Option("--force", help="-o FILE exists: replace it.", show_default=False)
]


def check_output(output: str | Path | None, *, append: bool, force: bool) -> None:
    """``-o`` never overwrites by accident: an existing file needs ``--append`` or ``--force``."""
    if append and force:
        raise UsageError("--append and --force contradict each other; give one")
    if not output:
        if append or force:
            raise UsageError("--append and --force are for -o FILE")
        return
    if Path(output).is_file() and not (append or force):
        raise UsageError(f"-o {output}: the file exists; --append adds this run after the "
                         "runs in it, --force replaces it")  # fmt: skip
