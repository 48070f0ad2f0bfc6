"""The ``kvreceipts`` command: composes one module per command, and turns every error into
one ``error: …`` line on stderr (exit 2 for bad usage or input) instead of a traceback.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup, TyperOption

from kvreceipts import __version__
from kvreceipts.commands import config as config_command
from kvreceipts.commands import keygen as keygen_command
from kvreceipts.commands import prove as prove_command
from kvreceipts.commands import schema as schema_command
from kvreceipts.commands import simulate as simulate_command
from kvreceipts.commands import stats as stats_command
from kvreceipts.commands import sweep as sweep_command
from kvreceipts.commands import validate as validate_command
from kvreceipts.commands import verify as verify_command
from kvreceipts.commands import verify_proof as verify_proof_command
from kvreceipts.commands import watch as watch_command
from kvreceipts.commands.output import Output
from kvreceipts.errors import KvReceiptsError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["app", "main"]


class _Group(TyperGroup):
    """Runs a command and reports what went wrong in one line."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv, debug = _hoist_debug(list(sys.argv[1:] if args is None else args))
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            code = 130
        except KvReceiptsError as exc:
            if debug:
                raise
            Output().error(str(exc))
            code = exc.exit_code
        except Exception as exc:
            if not hasattr(exc, "format_message") or debug:
                raise
            if type(exc).__name__ == "NoArgsIsHelpError":
                code = 0
            else:
                name = getattr(getattr(exc, "ctx", None), "command_path", "kvreceipts")
                Output().error(f"{exc.format_message()} (see: {name} --help)")
                code = getattr(exc, "exit_code", 2)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


_display_type = TyperOption.display_type_rich


def _flag_type(self: TyperOption, ctx: Any) -> str | None:
    """A flag takes no value, so ``--help`` shows no ``<bool>`` type beside it."""
    return None if self.is_flag else _display_type(self, ctx)


TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]


def _hoist_debug(argv: list[str]) -> tuple[list[str], bool]:
    """``--debug`` is a root option that works anywhere before ``--``: ``kvreceipts simulate
    --debug`` moves it in front of the command, where Click expects it.
    """
    end = argv.index("--") if "--" in argv else len(argv)
    if "--debug" not in argv[:end]:
        return argv, False
    rest = [arg for arg in argv[:end] if arg != "--debug"] + argv[end:]
    return ["--debug", *rest], True


app = typer.Typer(
    name="kvreceipts",
    cls=_Group,
    help="Auditable KV-cache eviction receipts: simulate a KV cache manager, print one "
    "verifiable receipt per eviction, verify and summarize receipt files.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"kvreceipts {__version__}\n")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")
    ] = False,
) -> None:
    """kvreceipts: what did my KV cache evict, why, and can I prove it?"""


app.command(epilog=simulate_command.EXAMPLES)(simulate_command.simulate)
app.command(epilog=sweep_command.EXAMPLES)(sweep_command.sweep)
app.command(epilog=verify_command.EXAMPLES)(verify_command.verify)
app.command(epilog=prove_command.EXAMPLES)(prove_command.prove)
app.command("verify-proof", epilog=verify_proof_command.EXAMPLES)(verify_proof_command.verify_proof)
app.command(epilog=stats_command.EXAMPLES)(stats_command.stats)
app.command(epilog=schema_command.EXAMPLES)(schema_command.schema)
app.command(epilog=watch_command.EXAMPLES)(watch_command.watch)
app.add_typer(config_command.app, name="config")
app.command(epilog=validate_command.EXAMPLES)(validate_command.validate)
app.command(epilog=keygen_command.EXAMPLES)(keygen_command.keygen)


def main() -> None:
    """Console-script entry point."""
    app()
