"""The ``kvreceipts`` command: composes one module per command, and turns every error into
one ``error: …`` line on stderr (exit 2 for bad usage or input) instead of a traceback.

A process imports only the command it runs: :func:`main` builds the app with that one command
when the command line names it (the full app, for ``--help``, completion or a typo, otherwise),
and every value is parsed by :mod:`kvreceipts.commands.coercion` rather than by pydantic.
``app`` (the full app, as tests and the docs generator use it) is built on first use.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup, TyperOption

from kvreceipts import __version__
from kvreceipts.commands import coercion
from kvreceipts.commands.output import Output
from kvreceipts.errors import KvReceiptsError

if TYPE_CHECKING:
    from collections.abc import Sequence

    app: typer.Typer
    """Every command (built on first use, by the module's ``__getattr__``)."""

__all__ = ["COMMANDS", "app", "build_app", "main"]


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
                Output().error(_usage_message(exc))
                code = getattr(exc, "exit_code", 2)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def _usage_message(exc: Any) -> str:
    """Click's usage error as our one line: a bad value is ``--opt: what is wrong``, with
    no pydantic wording; anything else points at the command's ``--help``.
    """
    param = getattr(exc, "param", None)
    message = str(getattr(exc, "message", "")).removeprefix("Value error, ")
    if type(exc).__name__ == "BadParameter" and param is not None and message:
        opts = [o for o in getattr(param, "opts", []) if o.startswith("--")]
        name = max(opts, key=len) if opts else param.human_readable_name
        return f"{name}: {message}"
    name = getattr(getattr(exc, "ctx", None), "command_path", "kvreceipts")
    return f"{exc.format_message().replace('Value error, ', '')} (see: {name} --help)"


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


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"kvreceipts {__version__}\n")
        raise typer.Exit


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


COMMANDS = ("simulate", "sweep", "show", "verify", "prove", "verify-proof", "stats", "schema",
            "watch", "keygen", "config", "validate")  # fmt: skip
"""The commands in the order ``--help`` lists them; each is ``kvreceipts.commands.<name>``
(dashes as underscores), whose function of the same name (or, for a group, ``app``) is the
command."""


def build_app(only: str | None = None) -> typer.Typer:
    """The app with every command, or with ``only`` that one (what a process runs; ``""``:
    none, for ``--version``).
    """
    from importlib import import_module

    coercion.install()
    built = typer.Typer(
        name="kvreceipts",
        cls=_Group,
        help="Auditable KV-cache eviction receipts: simulate a KV cache manager, print one "
        "verifiable receipt per eviction, verify and summarize receipt files.",
        no_args_is_help=True,
        rich_markup_mode="rich",
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    built.callback()(_root)
    for name in COMMANDS if only is None else (only,) if only else ():
        attribute = name.replace("-", "_")
        module = import_module(f"kvreceipts.commands.{attribute}")
        if hasattr(module, "app"):
            built.add_typer(module.app, name=name)
        else:
            built.command(name, epilog=module.EXAMPLES)(_evaluated(getattr(module, attribute)))
    return built


def _evaluated(function: Any) -> Any:
    """``function`` with its annotations evaluated once (the modules postpone them): Typer
    reads them twice, through ``inspect`` and ``typing``, and would compile each string twice.
    """
    import inspect

    function.__annotations__ = inspect.get_annotations(function, eval_str=True)
    return function


_FULL: list[typer.Typer] = []


def __getattr__(name: str) -> Any:
    if name == "app":
        if not _FULL:
            _FULL.append(build_app())
        return _FULL[0]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _command_named(argv: list[str]) -> str | None:
    """The command a command line runs, when it names one (before it, only ``--debug``);
    ``""`` for ``--version``, which needs none.
    """
    if any(key.startswith("_") and key.endswith("_COMPLETE") for key in os.environ):
        return None  # shell completion lists every command
    for arg in argv:
        if arg in ("--version", "-V"):
            return ""
        if arg != "--debug":
            return arg if arg in COMMANDS else None
    return None


def main() -> None:
    """Console-script entry point: builds only the command it runs."""
    build_app(_command_named(sys.argv[1:]))()
