"""``kvreceipts schema``: the JSON Schema of each receipt kind."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from kvreceipts.commands.output import Output
from kvreceipts.schema import KIND_NAMES, json_schema

__all__ = ["schema"]

EXAMPLES = """
[bold]Examples[/bold]

  kvreceipts schema --kind eviction
  kvreceipts schema | jq '.eviction.required'
"""


class Kind(StrEnum):
    """Receipt kinds, or all of them."""

    open = "open"
    close = "close"
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
    all = "all"


def schema(
    kind: Annotated[
        Kind, typer.Option(help="One kind, or all (an object keyed by kind).")
    ] = Kind.all,
) -> None:
    """Print the JSON Schema (draft 2020-12) of receipts, as JSON on stdout."""
    out = Output(json_mode=True)
    if kind is Kind.all:
        out.json({name: json_schema(name) for name in KIND_NAMES})
    else:
        out.json(json_schema(kind.value))
