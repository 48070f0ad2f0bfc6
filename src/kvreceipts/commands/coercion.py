"""Command-line values turned into the types the commands declare, without pydantic.

Typer builds a pydantic ``TypeAdapter`` for every parameter of the command it runs: importing
pydantic and building the adapters costs more than a whole one-request simulation, and
pydantic's messages ("Input should be a valid integer", "Value error, ...") are not ours. Every
type the commands use (str, int, float, bool, Path, a StrEnum, a list of one of those) is
parsed here instead, with messages that say what was wrong in the option's own terms; any other
annotation goes to Typer's own coercion. :func:`install` puts this in front of Typer's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args, get_origin

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["choices_text", "install", "parser_for"]

_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off", ""})


def choices_text(values: list[str]) -> str:
    """``open, eviction, close``: the choices as a reader types them."""
    return ", ".join(values)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = _text(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{_text(value)!r} is not a boolean (true or false)")


def _number(kind: type[Any], info: Any) -> Callable[[Any], Any]:
    low, high, clamp = info.min, info.max, info.clamp
    wanted = "an integer" if kind is int else "a number"

    def parse(value: Any) -> Any:
        if isinstance(value, kind) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = kind(_text(value).strip())
            except ValueError:
                raise ValueError(f"{_text(value)!r} is not {wanted}") from None
        if low is not None and number < low:
            if clamp:
                return kind(low)
            bounds = f"at least {low}" if high is None else f"{low} to {high}"
            raise ValueError(f"{number} is out of range ({bounds})")
        if high is not None and number > high:
            if clamp:
                return kind(high)
            bounds = f"at most {high}" if low is None else f"{low} to {high}"
            raise ValueError(f"{number} is out of range ({bounds})")
        return number

    return parse


def _choice(enum: type[Enum], info: Any) -> Callable[[Any], Any]:
    members = list(enum)
    fold = (lambda text: text) if info.case_sensitive else str.casefold
    by_name = {fold(str(m.value)): m for m in members}

    def parse(value: Any) -> Any:
        if isinstance(value, enum):
            return value
        member = by_name.get(fold(_text(value)))
        if member is None:
            names = choices_text([str(m.value) for m in members])
            raise ValueError(f"{_text(value)!r} is not one of {names}")
        return member

    return parse


def _path(kind: type[Any], info: Any) -> Callable[..., Any]:
    from typer._param_types import coerce_cli_path

    def parse(value: Any, param: Any = None, ctx: Any = None) -> Any:
        # Typer's checks (exists, file_okay, dir_okay, ...) on the text; pydantic is only
        # asked for when the path type is not a str: it is made here instead.
        text = coerce_cli_path(_text(value), info, path_type=None, param=param, ctx=ctx)
        return text if kind is str else kind(os.fsdecode(text))

    return parse


def parser_for(annotation: Any, info: Any) -> Callable[..., Any] | None:
    """How to parse one value of ``annotation`` (``None``: leave it to Typer). A path parser
    takes the parameter and the context too (for Typer's messages); the others the value.
    """
    if getattr(info, "parser", None) is not None or getattr(info, "click_type", None):
        return None
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        one = parser_for(item, info)
        if one is None or _is(item, Path):
            return None
        return lambda values: [one(v) for v in (values if isinstance(values, list | tuple)
                                                 else [values])]  # fmt: skip
    simple: dict[Any, Callable[..., Any]] = {bool: _bool, str: _text}
    if annotation in simple:
        return simple[annotation]
    made: Callable[[Any, Any], Callable[..., Any]] | None = {int: _number, float: _number}.get(
        annotation
    )
    if made is None:
        made = _choice if _is(annotation, Enum) else _path if _is(annotation, Path) else None
    return None if made is None else made(annotation, info)


def _is(annotation: Any, kind: type[Any]) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, kind)


def install() -> None:
    """Put :func:`parser_for` in front of Typer's pydantic coercion (once per process)."""
    from typer import core
    from typer._click.exceptions import BadParameter
    from typer._coercion import RuntimeParam

    if getattr(core._TyperParameter.get_runtime_param, "kvreceipts", False):
        return

    @dataclass(frozen=True)
    class Parsed(RuntimeParam):
        """A value parsed by one of this module's parsers."""

        parse: Callable[..., Any]
        with_context: bool

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            try:
                if self.with_context:
                    return self.parse(value, param, ctx)
                return self.parse(value)
            except ValueError as exc:
                raise BadParameter(str(exc), ctx=ctx, param=param) from None

    typer_own = core._TyperParameter.get_runtime_param

    def get_runtime_param(self: Any) -> RuntimeParam:
        if self._runtime_param is None:
            descriptor = self.type_descriptor
            parse = None
            if descriptor.file_annotation is None:
                parse = parser_for(descriptor.annotation, descriptor.parameter_info)
            if parse is None:
                own: RuntimeParam = typer_own(self)
                return own
            self._runtime_param = Parsed(descriptor.parameter_info, descriptor.annotation,
                                         parse, _is(descriptor.annotation, Path))  # fmt: skip
        param: RuntimeParam = self._runtime_param
        return param

    get_runtime_param.kvreceipts = True  # type: ignore[attr-defined]
    core._TyperParameter.get_runtime_param = get_runtime_param  # type: ignore[method-assign]
