"""The verifier's fast path: an eviction line decoded straight into a typed struct, in C.

The structs are built from the same field tables as :mod:`kvreceipts.shape`, with the keys in
canonical (sorted) order, so encoding a decoded struct again gives the sealer's bytes exactly
when the line is canonical. They are a little stricter than the tables where msgspec's writer
and the canonical one (orjson) part ways; a line they refuse goes the general way, which has
the last word and words the problem.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Annotated, Any, Literal, Union

import msgspec
from msgspec import Meta

from kvreceipts.schema import COMMON, EVICTION_LAYOUTS, HEX16, HEX64, Field

__all__ = ["DecodeError", "encode", "eviction_decoder"]

DecodeError = msgspec.DecodeError
"""Raised for a line the struct does not take (its validation errors included)."""
encode = msgspec.json.Encoder().encode

_INT_RANGE = (-(2**63), 2**63 - 1)  # msgspec's bounds; orjson reads to 2**64 - 1
_FLOAT_LIMIT = 1e16
"""From here on msgspec writes ``1e16`` where the canonical form has ``1e+16``."""
_PATTERNS = {HEX64: r"^[0-9a-f]{64}\Z", HEX16: r"^[0-9a-f]{16}\Z"}
"""The tables' patterns, with ``\\Z``: msgspec searches, and ``$`` also matches before a
final newline."""


def _type(name: str, f: Field) -> Any:
    options: list[Any] = []
    if "integer" in f.types or "number" in f.types:
        low = _INT_RANGE[0] if f.minimum is None else max(math.ceil(f.minimum), _INT_RANGE[0])
        options.append(Annotated[int, Meta(ge=low, le=_INT_RANGE[1])])
    if "number" in f.types:
        low_float = math.nextafter(-_FLOAT_LIMIT, 0) if f.minimum is None else f.minimum
        options.append(Annotated[float, Meta(ge=low_float, lt=_FLOAT_LIMIT)])
    if "string" in f.types and f.enum is not None:
        options.append(Literal[f.enum])
    elif "string" in f.types:
        options.append(Annotated[str, Meta(pattern=_PATTERNS[f.pattern])] if f.pattern else str)
    if "boolean" in f.types:
        options.append(bool)
    if "object" in f.types:
        assert f.fields is not None
        options.append(_struct(name, f.fields))
    # An optional field absent decodes to None, which omit_defaults does not write again: a
    # null written where the table allows none fails the round trip.
    if "null" in f.types or f.optional:
        options.append(None)
    return Union[tuple(options)]  # noqa: UP007 - built at run time


def _struct(name: str, fields: dict[str, Field], **overrides: Any) -> type[msgspec.Struct]:
    spec: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for key in sorted(fields):
        f = fields[key]
        kind = overrides.get(key, _type(key, f))
        spec.append((key, kind, None) if f.optional else (key, kind))
    return msgspec.defstruct(
        name.title().replace("_", ""), spec,
        kw_only=True, forbid_unknown_fields=True, omit_defaults=True,
    )  # fmt: skip


@cache
def eviction_decoder(layout: str) -> Any:
    """Decode a payload (the line without its digest) into an eviction struct of ``layout``."""
    fields = {**COMMON, **EVICTION_LAYOUTS[layout]}
    del fields["digest"]  # checked on the bytes, before decoding
    struct = _struct(f"{layout}_eviction", fields, kind=Literal["eviction"])
    return msgspec.json.Decoder(struct).decode
