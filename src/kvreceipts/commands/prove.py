"""``kvreceipts prove``: a proof bundle that one receipt (or a session's) is in a signed run,
or that a run's tree grew from an earlier checkpoint without rewriting it.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated

import orjson
import typer

from kvreceipts.commands.options import ForceOption, check_output
from kvreceipts.commands.output import Output
from kvreceipts.commands.reading import open_receipts
from kvreceipts.errors import UsageError

__all__ = ["prove"]

EXAMPLES = """
[bold]Examples[/bold]

  kvreceipts keygen auditor -o auditor && kvreceipts simulate --sign-key auditor.key -o run.jsonl
  kvreceipts prove run.jsonl --seq 42 -o seq42.proof.json
  kvreceipts prove run.jsonl --session chat-35 -o chat-35.proof.json
  kvreceipts prove run.jsonl --from-size 300 -o grew.proof.json
  kvreceipts verify-proof seq42.proof.json --vkey auditor.pub

The proof is against the run's newest signed checkpoint (its close record's, once closed).
Exit status: 0 written, 2 unusable input (no such seq, no signed checkpoint, …).
"""


def prove(
    path: Annotated[
        Path,
        typer.Argument(
            help="A receipts file written with --sign-key.", dir_okay=False, show_default=False
        ),
    ],
    seq: Annotated[
        int | None, typer.Option(help="Prove the record with this seq.", min=0, show_default=False)
    ] = None,
    session: Annotated[
        str | None,
        typer.Option(help="Prove every eviction receipt of this session.", show_default=False),
    ] = None,
    from_size: Annotated[
        int | None,
        typer.Option(
            help="Prove the run's newest checkpoint extends its tree at this size (an earlier "
            "checkpoint's tree_size).",
            min=1,
            show_default=False,
        ),
    ] = None,
    run: Annotated[
        str | None,
        typer.Option(help="The run (its run_id) in a file of several.", show_default=False),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            dir_okay=False,
            help="Write the bundle here (default: stdout).",
            show_default=False,
        ),
    ] = None,
    force: ForceOption = False,
) -> None:
    """Write an RFC 9162 inclusion (or consistency) proof bundle that anyone holding the
    signer's public key can check with ``kvreceipts verify-proof``, without the receipts file.
    """  # fmt: skip
    from kvreceipts import proving

    asked = [name for name, value in (("--seq", seq), ("--session", session),
                                      ("--from-size", from_size)) if value is not None]  # fmt: skip
    if len(asked) != 1:
        raise UsageError("give exactly one of --seq, --session and --from-size")
    name = str(path)
    if name == "-":
        raise UsageError("prove reads its file twice: give a file, not standard input")
    check_output(output, append=False, force=force)
    out = Output()

    def opener() -> AbstractContextManager[Iterable[bytes]]:
        return open_receipts(name)

    found = proving.find_run(name, opener, run=run, session=session)
    if from_size is not None:
        document, what = proving.consistency_bundle(opener, name, found, from_size)
    else:
        document, what = proving.inclusion_bundle(opener, name, found, seq=seq, session=session)
    data = orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"
    if output is None:
        out.write(data)
    else:
        output.write_bytes(data)
    out.note(
        f"proof of {what} in run {found.run_id} under its signed checkpoint of "
        f"{found.tree_size:,} records" + (f" written to {output}" if output else "")
    )
