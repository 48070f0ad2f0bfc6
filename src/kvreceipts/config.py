"""Configuration: upstream's ``CachingConfig`` plus kvreceipts' ``SimulationConfig``, in TOML.

A config file has a ``[caching]`` table (the upstream fields) and a ``[simulation]`` table (what
``kvreceipts simulate`` replays and how). Unknown keys and wrong types are errors that name the
file, line, table and key, with a close-match suggestion.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

from kvreceipts.errors import InputError, UsageError
from kvreceipts.numbers import (
    MAX_BLOCKS,
    MAX_MS_PER_TOKEN,
    MAX_SYNTHETIC_REQUESTS,
    check_number,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = [
    "ALLOCATORS",
    "MIB",
    "TRACE_FORMATS",
    "WORKLOADS",
    "CachingConfig",
    "LoadedConfig",
    "SimulationConfig",
    "check_capacity_mb",
    "dump_toml",
    "load_config",
]

MIB = 1024 * 1024
DEFAULT_BLOCK_TOKENS = 512
ALLOCATORS = ("auto", "arena", "paged")
WORKLOADS = ("chat", "agent", "burst", "uniform")
TRACE_FORMATS = ("auto", "mooncake", "azure", "kvrec")


@dataclass(frozen=True, slots=True)
class CachingConfig:
    """Upstream ``CachingConfig``: every field and default as in ``bitnet-server``.

    Frozen, as the upstream manager owns its config: derive a changed copy with
    ``dataclasses.replace(config, enable_receipts=True)``.
    """

    model_cache_enabled: bool = True
    model_cache_size: int = 3
    model_cache_ttl: int = 3600
    """Seconds an idle session may stay cached before the TTL sweep removes it."""
    kv_cache_enabled: bool = True
    kv_cache_size_mb: float = 512
    """Size of the KV arena in MiB (an int upstream; fractions are allowed here)."""
    batching_enabled: bool = True
    max_batch_size: int = 8
    batch_timeout_ms: int = 10
    connection_pool_size: int = 100
    auto_tuning_enabled: bool = True
    tuning_interval_seconds: int = 300
    enable_receipts: bool = False
    """Runtime switch for receipts; off by default in the library, as upstream."""

    @property
    def kv_cache_size_bytes(self) -> int:
        """The arena size in whole bytes."""
        return int(self.kv_cache_size_mb * MIB)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, in upstream field order."""
        return asdict(self)

    def validate(self) -> Self:
        """Check value ranges that the type alone does not; return self."""
        _numbers("caching", self)
        check_capacity_mb("[caching] kv_cache_size_mb", self.kv_cache_size_mb, "kv_cache_size_mb")
        _at_least("caching", "model_cache_ttl", self.model_cache_ttl, 0)
        return self


@dataclass(slots=True)
class SimulationConfig:
    """What ``kvreceipts simulate`` runs. Zero or empty means "derive it" where noted."""

    allocator: str = "auto"
    """``arena`` (sessions, upstream), ``paged`` (prefix blocks), or ``auto`` (paged for traces
    with prefix hashes, arena otherwise)."""
    policy: str = "lru"
    capacity_blocks: int = 0
    """Paged cache size in blocks; 0 derives it from ``kv_cache_size_mb``."""
    block_tokens: int = DEFAULT_BLOCK_TOKENS
    model: str = ""
    """A model preset for bytes per token; empty uses the upstream "bitnet" rule."""
    bytes_per_token: int = 0
    """Explicit KV bytes per token; 0 uses ``model`` or the bitnet rule."""
    workload: str = "chat"
    trace: str = ""
    """A trace file to replay instead of the synthetic ``workload``."""
    trace_format: str = "auto"
    requests: int = 0
    """How many requests to run; 0 means the whole trace, or 2,000 for a synthetic workload."""
    seed: int = 0
    prefill_ms_per_token: float = 0.05
    """Simulated prefill cost of each token not found in the cache."""
    decode_ms_per_token: float = 0.0
    """Simulated decode time per output token; above 0 requests hold their KV until done."""
    skip_bad_lines: bool = False
    strict_time: bool = False
    """A trace timestamp that goes backwards is an error (by default: counted, served in
    file order)."""
    batch_receipts: bool = False
    snapshot_every: int = 0
    """Emit a snapshot receipt after every N requests; 0 turns snapshots off."""
    layout: str = "lean"
    """Eviction receipt layout: ``lean`` (the config once, in the open record) or ``upstream``
    (upstream's full payload, ``current_config`` in every receipt)."""
    output: str = ""
    """Also write receipts to this JSONL file."""
    http_sink: str = ""
    """Also POST receipts to this URL."""
    hmac_key_file: str = ""
    tracing: bool = False
    """Also log each receipt through the ``kvreceipts.kv.receipts`` logger."""
    pin_admitting: bool = True
    """Paged: a request's own blocks are pinned while it is admitted; false lets it evict
    them, as block-level simulators (libCacheSim) do."""
    tiers: str = ""
    """Paged: memory tiers, fastest first, ``;``-separated ``NAME=SIZE[,bw=RATE]`` (the first
    is the cache itself and sets its size); empty: one tier."""

    def validate(self) -> Self:
        """Check names and ranges; return self."""
        from kvreceipts.policies import POLICIES

        _choice("simulation", "allocator", self.allocator, ALLOCATORS)
        _choice("simulation", "workload", self.workload, WORKLOADS)
        _choice("simulation", "trace_format", self.trace_format, TRACE_FORMATS)
        _choice("simulation", "policy", self.policy, tuple(POLICIES))
        _choice("simulation", "layout", self.layout, ("lean", "upstream"))
        _numbers("simulation", self)
        _positive("simulation", "block_tokens", self.block_tokens)
        for name in ("capacity_blocks", "bytes_per_token", "requests", "snapshot_every"):
            _at_least("simulation", name, getattr(self, name), 0)
        for name in ("prefill_ms_per_token", "decode_ms_per_token"):
            check_number(f"[simulation] {name}", getattr(self, name), low=0,
                         high=MAX_MS_PER_TOKEN, key=name)  # fmt: skip
        check_number("[simulation] capacity_blocks", self.capacity_blocks, high=MAX_BLOCKS,
                     key="capacity_blocks")  # fmt: skip
        if not self.trace:  # a trace is streamed: --requests only cuts it
            check_number("[simulation] requests (of a synthetic workload)", self.requests,
                         high=MAX_SYNTHETIC_REQUESTS, key="requests")  # fmt: skip
        if self.http_sink:
            _http_url("simulation", "http_sink", self.http_sink)
        if self.tiers:
            from kvreceipts.tiers import parse_tier

            for text in self.tiers.split(";"):
                parse_tier(text)
        for name in ("trace", "output", "hmac_key_file"):
            if "\0" in getattr(self, name):
                raise UsageError(
                    f"[simulation] {name} holds a NUL character: not a file name", key=name
                )
        if self.model:
            from kvreceipts.sizing import MODEL_PRESETS

            _choice("simulation", "model", self.model, tuple(MODEL_PRESETS))
        return self


@dataclass(slots=True)
class LoadedConfig:
    """A config file's two tables, and which ``[caching]`` keys the file set explicitly."""

    caching: CachingConfig = field(default_factory=CachingConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    caching_keys: frozenset[str] = frozenset()
    simulation_keys: frozenset[str] = frozenset()
    path: str | None = None

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Both tables as plain values."""
        return {"caching": self.caching.to_dict(), "simulation": asdict(self.simulation)}


def _suggest(value: str, choices: Iterable[str], show: Callable[[str], str] = repr) -> str:
    """`` (did you mean 'x'?)`` for a close match, else nothing."""
    import difflib

    hint = difflib.get_close_matches(value, list(choices), n=1)
    return f" (did you mean {show(hint[0])}?)" if hint else ""


def _choice(table: str, key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(
            f"[{table}] {key} = {value!r} is not one of: {', '.join(choices)}"
            + _suggest(value, choices),
            key=key,
        )


def _positive(table: str, key: str, value: float) -> None:
    check_number(f"[{table}] {key}", value, above=0, key=key)


def _at_least(table: str, key: str, value: float, low: float) -> None:
    check_number(f"[{table}] {key}", value, low=low, key=key)


def _http_url(table: str, key: str, url: str) -> None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise UsageError(f"[{table}] {key} = {url!r} is not a URL: {exc}", key=key) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            f"[{table}] {key} = {url!r} is not an http(s) URL (like http://host:8080/receipts)",
            key=key,
        )


def _numbers(table: str, config: CachingConfig | SimulationConfig) -> None:
    """Every number of the table is finite and fits in 64 bits (ranges are checked apart)."""
    for item in fields(config):
        value = getattr(config, item.name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            check_number(f"[{table}] {item.name}", value, key=item.name)


MAX_CAPACITY_MB = float(2**43)
"""The largest KV cache in MiB: 8 EiB, so that its size in bytes fits in 64 bits."""


def check_capacity_mb(where: str, value: float, key: str | None = None) -> None:
    """A cache size in MiB: finite, at least one byte, and its bytes within 64 bits."""
    check_number(where, value, above=0, high=MAX_CAPACITY_MB, key=key)
    if int(value * MIB) < 1:
        raise UsageError(
            f"{where} must be at least one byte, {1 / MIB:.4g} MiB (got {value:g})", key=key
        )


def _type_name(value: object) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string"}.get(
        type(value), type(value).__name__
    )


def _key_line(text: str, table: str, key: str) -> int | None:
    """The 1-based line where ``key`` is set inside ``[table]``, for error messages."""
    import re

    current = ""
    key_re = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    for number, line in enumerate(text.splitlines(), start=1):
        header = re.match(r"^\s*\[\s*([^\]]+?)\s*\]", line)
        if header:
            current = header.group(1)
        elif current == table and key_re.match(line):
            return number
    return None


_Table = TypeVar("_Table", CachingConfig, SimulationConfig)


def _coerce_table(
    cls: type[_Table], table: str, raw: object, path: str, text: str
) -> tuple[_Table, frozenset[str]]:
    def fail(message: str, key: str | None = None) -> InputError:
        line = _key_line(text, table, key) if key else None
        return InputError(message, path=path, line=line)

    if not isinstance(raw, dict):
        raise fail(f"[{table}] must be a table")
    defaults = cls()
    known = {f.name: getattr(defaults, f.name) for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise fail(f"[{table}] unknown key {key!r}{_suggest(key, known)}", key)
        default = known[key]
        ok = (
            type(value) is type(default)
            or (isinstance(default, float) and type(value) is int)
            or (key == "kv_cache_size_mb" and type(value) in (int, float))
        )
        if not ok:
            # kv_cache_size_mb defaults to upstream's integer 512 but takes fractions too.
            expected = "float" if key == "kv_cache_size_mb" else _type_name(default)
            article = "an" if expected[0] in "aeiou" else "a"
            raise fail(
                f"[{table}] {key} must be {article} {expected}, not {_type_name(value)} {value!r}",
                key,
            )
        values[key] = value
    try:
        return replace(defaults, **values).validate(), frozenset(values)
    except UsageError as exc:
        raise fail(str(exc), exc.key) from None


def load_config(path: str | Path) -> LoadedConfig:
    """Read and validate a TOML config file."""
    import re
    import tomllib

    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("config file not found", path=name) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read config file: {exc}", path=name) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # Before Python 3.14 the error has no ``lineno``; its message says "(at line N, ...)".
        at = re.search(r" \(at line (\d+)", str(exc))
        line = getattr(exc, "lineno", None) or (int(at.group(1)) if at else None)
        message = str(exc).split(" (at line")[0]
        raise InputError(f"invalid TOML: {message}", path=name, line=line) from None
    unknown = sorted(set(data) - {"caching", "simulation"})
    if unknown:
        raise InputError(
            f"unknown table [{unknown[0]}]"
            f"{_suggest(unknown[0], ('caching', 'simulation'), lambda t: f'[{t}]')}; "
            "a config has [caching] and [simulation]",
            path=name,
        )
    caching, caching_keys = _coerce_table(
        CachingConfig, "caching", data.get("caching", {}), name, text
    )
    simulation, simulation_keys = _coerce_table(
        SimulationConfig, "simulation", data.get("simulation", {}), name, text
    )
    return LoadedConfig(caching, simulation, caching_keys, simulation_keys, name)


def dump_toml(config: LoadedConfig) -> str:
    """The config as TOML text that :func:`load_config` reads back unchanged."""
    import tomli_w

    return tomli_w.dumps(config.to_dict())
