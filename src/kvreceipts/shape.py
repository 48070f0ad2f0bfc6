"""Checking a parsed record against its kind's fields, fast: each kind's field table from
:mod:`kvreceipts.schema` is compiled once into a straight-line yes-test (the common case) and a
checker that finds and words the first problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from kvreceipts.bounded import shorten
from kvreceipts.schema import COMMON, EVICTION_LAYOUTS, HEX16, HEX64, KINDS, Field

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["check_record", "record_problem", "shape_test"]


_PY_TYPES: dict[str, tuple[type, ...]] = {
    "integer": (int,),
    "number": (int, float),
    "string": (str,),
    "boolean": (bool,),
    "null": (type(None),),
    "object": (dict,),
    "array": (list,),
}
_HEX = "0123456789abcdef"
_ABSENT = object()
"""What an optional field reads when it is absent (``type(_ABSENT) is object``: no JSON value's
type)."""


@dataclass(frozen=True, slots=True)
class _Shape:
    """An object's fields, compiled for checking many records fast.

    Types are checked once per *signature* (the keys and the exact Python types of the
    values, so ``True`` is no integer) and the verdict is remembered; the values' bounds and
    hex digests are checked on every record, a whole group of fields at a time.
    """

    fields: dict[str, Field]
    types: dict[str, frozenset[type]]
    required: frozenset[str]
    floors: tuple[tuple[float, tuple[str, ...], Callable[[dict[str, Any]], tuple[Any, ...]]], ...]
    """Required, never-null fields grouped by their minimum, with a getter for each group."""
    loose_floors: tuple[tuple[str, float], ...]
    """Fields with a minimum that may be absent or null."""
    hex_fields: tuple[str, ...]
    enums: tuple[tuple[str, tuple[str, ...]], ...]
    maps: tuple[tuple[str, Field], ...]
    """Fields that map names to values of one type (``counts``)."""
    nested: tuple[tuple[str, _Shape], ...]
    fits: Callable[[dict[str, Any]], bool]
    """A straight-line test that says yes to a record that fits (the common case, fast);
    on no, :func:`_check` finds and words the problem."""
    verdicts: dict[tuple[object, ...], tuple[str, str] | None] = field(default_factory=dict)


_MAX_SIGNATURES = 256  # a file of odd records must not grow the cache without bound


def _compile(fields: dict[str, Field]) -> _Shape:
    # The checker knows two patterns, 16 or 64 hex digits, and tests them without a regex.
    assert all(f.pattern in (None, HEX64, HEX16) for f in fields.values())
    strict: dict[float, list[str]] = {}
    loose = []
    for name, f in fields.items():
        if f.minimum is None:
            continue
        if f.optional or "null" in f.types:
            loose.append((name, f.minimum))
        else:
            strict.setdefault(f.minimum, []).append(name)
    return _Shape(
        fields=fields,
        types={n: frozenset(t for k in f.types for t in _PY_TYPES[k]) for n, f in fields.items()},
        required=frozenset(n for n, f in fields.items() if not f.optional),
        floors=tuple((low, tuple(names), _tuple_getter(names)) for low, names in strict.items()),
        loose_floors=tuple(loose),
        hex_fields=tuple(n for n, f in fields.items() if f.pattern is not None),
        enums=tuple((n, f.enum) for n, f in fields.items() if f.enum is not None),
        maps=tuple((n, f.values) for n, f in fields.items() if f.values is not None),
        nested=tuple((n, _compile(f.fields)) for n, f in fields.items() if f.fields is not None),
        fits=_fits(fields),
    )


def _fits(fields: dict[str, Field]) -> Callable[[dict[str, Any]], bool]:  # noqa: PLR0915
    """Generate the fast yes-test of :class:`_Shape` from the same field table."""
    lines: list[str] = []
    scope: dict[str, Any] = {"_HEX": _HEX, "_ABSENT": _ABSENT}

    def emit(fields: dict[str, Field], var: str) -> None:  # noqa: PLR0912
        required = frozenset(n for n, f in fields.items() if not f.optional)
        scope[f"_req_{var}"], scope[f"_all_{var}"] = required, frozenset(fields)
        lines.append(f"if type({var}) is not dict: return False")
        if required == frozenset(fields):
            lines.append(f"if {var}.keys() != _req_{var}: return False")
        else:
            lines.append(f"if not (_req_{var} <= {var}.keys() <= _all_{var}): return False")
        for name, f in fields.items():
            item = f"v{len(scope)}"  # unique across nesting levels
            get = f"{var}[{name!r}]" if not f.optional else f"{var}.get({name!r}, _ABSENT)"
            lines.append(f"{item} = {get}")
            types = {t for k in f.types for t in _PY_TYPES[k]}
            if f.optional:  # absent, never null (unless its types allow null)
                types.add(object)
            if len(types) == 1:  # one identity test beats a set lookup
                (only,) = types
                scope[f"_t_{item}"] = only
                lines.append(f"if type({item}) is not _t_{item}: return False")
            else:
                scope[f"_t_{item}"] = frozenset(types)
                lines.append(f"if type({item}) not in _t_{item}: return False")
            guard = f"{item} is not None and " if type(None) in types else ""
            if f.optional:
                guard += f"{item} is not _ABSENT and "
            if f.enum is not None:
                scope[f"_e_{item}"] = frozenset(f.enum)
                lines.append(f"if {guard}{item} not in _e_{item}: return False")
            if f.values is not None:
                (value_type,) = {t for k in f.values.types for t in _PY_TYPES[k]}
                scope[f"_vt_{item}"] = value_type
                low = f.values.minimum if f.values.minimum is not None else float("-inf")
                scope[f"_vm_{item}"] = low
                lines.append(f"if {guard}any(type(x) is not _vt_{item} or x < _vm_{item} "
                             f"for x in {item}.values()): return False")  # fmt: skip
            if f.minimum is not None:
                lines.append(f"if {guard}{item} < {f.minimum!r}: return False")
            if f.pattern is not None:
                width = 16 if f.pattern == HEX16 else 64
                lines.append(f"if {guard}(len({item}) != {width} or {item}.strip(_HEX)): "
                             "return False")  # fmt: skip
            if f.fields is not None:
                if guard:
                    lines.append(f"if {guard.removesuffix(' and ')}:")
                    start = len(lines)
                    emit(f.fields, item)
                    lines[start:] = ["    " + line for line in lines[start:]]
                else:
                    emit(f.fields, item)

    emit(fields, "v")
    # The constants become the closure of fits: a cell read is cheaper than a global lookup.
    body = "".join(f"        {line}\n" for line in lines)
    source = (f"def make({', '.join(scope)}):\n    def fits(v):\n{body}        return True\n"
              "    return fits\n")  # fmt: skip
    namespace: dict[str, Any] = {}
    exec(compile(source, "<kvreceipts shape>", "exec"), namespace)  # noqa: S102 - our own tables
    return namespace["make"](**scope)  # type: ignore[no-any-return]


def _tuple_getter(names: list[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    get = itemgetter(*names)
    return get if len(names) > 1 else lambda value: (get(value),)


_SHAPES: dict[tuple[str, str], _Shape] = {}
"""Compiled on first use, from the tables of :mod:`kvreceipts.schema` (kinds registered
later included)."""


def _shape(kind: str, layout: str) -> _Shape | None:
    key = (kind, layout if kind == "eviction" and layout in EVICTION_LAYOUTS else "lean")
    shape = _SHAPES.get(key)
    if shape is None:
        fields = EVICTION_LAYOUTS[key[1]] if kind == "eviction" else KINDS.get(kind)
        if fields is None:
            return None
        shape = _SHAPES[key] = _compile({**COMMON, **fields})
    return shape


def _check_types(value: dict[str, Any], shape: _Shape) -> tuple[str, str] | None:
    """The first key or type problem, as (field, what is wrong)."""
    keys = value.keys()
    if not shape.required <= keys:
        return min(shape.required - keys), "is missing"
    if not keys <= shape.types.keys():
        return min(keys - shape.types.keys()), "is not a field of this kind"
    for name, item in value.items():
        if type(item) not in shape.types[name]:
            return name, f"must be {' or '.join(shape.fields[name].types)}, not {_short(item)}"
    return None


def _check(value: dict[str, Any], shape: _Shape, where: str) -> str | None:
    problem = _problem(value, shape, where)
    # A hostile record's unknown key can be a megabyte long: the message names its head.
    return None if problem is None else f"field {shorten(problem[0])!r} {problem[1]}"


def _problem(value: dict[str, Any], shape: _Shape, where: str) -> tuple[str, str] | None:
    """The first problem as (field, what is wrong), or ``None`` if ``value`` fits."""
    if shape.fits(value):
        return None
    verdicts = shape.verdicts
    if value.keys() <= shape.types.keys():  # the fields' own names: a bounded signature
        signature = (*value, *map(type, value.values()))
        if signature in verdicts:
            problem = verdicts[signature]
        else:
            problem = _check_types(value, shape)
            if len(verdicts) < _MAX_SIGNATURES:
                verdicts[signature] = problem
    else:  # a name no field has (perhaps a megabyte long) is never kept
        problem = _check_types(value, shape)
    if problem is not None:
        return where + problem[0], problem[1]
    return _check_values(value, shape, where)


def _check_values(  # noqa: PLR0911, PLR0912
    value: dict[str, Any], shape: _Shape, where: str
) -> tuple[str, str] | None:
    """Bounds and digests, for a record whose keys and types are known to be right."""
    for low, names, get in shape.floors:
        if min(get(value)) < low:
            name = next(n for n in names if value[n] < low)
            return where + name, f"must be at least {low:g}, not {_short(value[name])}"
    for name, low in shape.loose_floors:
        item = value.get(name)
        if item is not None and item < low:
            return where + name, f"must be at least {low:g}, not {_short(item)}"
    for name, allowed in shape.enums:
        item = value.get(name, _ABSENT)
        if item is not _ABSENT and item not in allowed:
            return where + name, f"must be {' or '.join(map(repr, allowed))}, not {_short(item)}"
    for name, of in shape.maps:
        entries: dict[str, Any] = value.get(name, {})  # values of any type, checked here
        for key, entry in entries.items():
            wanted: Any = _PY_TYPES[of.types[0]][0]
            if type(entry) is not wanted:
                return (
                    f"{where}{name}.{_short_key(key)}",
                    f"must be {of.types[0]}, not {_short(entry)}",
                )
            if of.minimum is not None and entry < of.minimum:
                return (f"{where}{name}.{_short_key(key)}",
                        f"must be at least {of.minimum:g}, not {_short(entry)}")  # fmt: skip
    for name in shape.hex_fields:
        item = value.get(name)
        if item is None:  # an optional digest that is absent
            continue
        width = 16 if shape.fields[name].pattern == HEX16 else 64
        if len(item) != width or item.strip(_HEX):
            return where + name, f"must be {width} lowercase hex digits"
    for name, nested in shape.nested:
        if name in value:
            problem = _problem(value[name], nested, f"{where}{name}.")
            if problem:
                return problem
    return None


def record_problem(record: dict[str, Any], layout: str = "lean") -> tuple[str, str] | None:
    """What :func:`check_record` finds wrong with a ``/2`` record whose ``kind`` is a known
    one, as (field, what is wrong: "must be integer, not 1e+300"); ``None`` if it fits.
    Raises ``KeyError`` for a record of an unknown kind.
    """
    kind = record.get("kind")
    shape = _shape(kind, layout) if type(kind) is str else None
    if shape is None:
        raise KeyError(kind)
    return _problem(record, shape, "")


def check_record(record: object, layout: str = "lean") -> str | None:
    """What is wrong with the shape of a parsed ``/2`` record, or ``None`` if it fits its kind
    (``layout`` picks the eviction layout; other kinds have one shape).
    """
    if not isinstance(record, dict):
        return "a receipt must be a JSON object"
    kind = record.get("kind")
    shape = _shape(kind, layout) if type(kind) is str else None
    if shape is None:
        return f"field 'kind' must be one of {', '.join(KINDS)}, not {_short(kind)}"
    return _check(record, shape, "")


def shape_test(kind: str, layout: str = "lean") -> Callable[[dict[str, Any]], bool] | None:
    """The fast yes-test of a ``/2`` kind's shape (``None`` for an unknown kind); on no,
    :func:`check_record` words the problem.
    """
    shape = _shape(kind, layout)
    return shape.fits if shape is not None else None


def _short_key(key: str) -> str:
    return key if len(key) <= 40 else key[:37] + "..."


def _short(value: object) -> str:
    """A value for a message, cut to a readable length (hostile input can be huge)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
