"""A summary of a receipts file for ``kvreceipts stats``.

Counts, bytes freed, top sessions, runs, and memory over time, for schema ``/1`` and ``/2``
records alike. Every field read is type-checked: a record with a bad field is counted (with its
line number) and changes nothing else. Memory stays bounded whatever the input: the memory
series is downsampled as it streams, the per-session counts are a bounded top-k sketch, and the
per-run table and the count tables are capped.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import orjson

from kvreceipts.engine.figures import EngineFigures, engine_problem
from kvreceipts.errors import InputError
from kvreceipts.numbers import INT64_MAX
from kvreceipts.schema import SCHEMA_ID, SCHEMA_ID_V1
from kvreceipts.sniff import SNIFF_LINES, not_a_receipt, sniff_receipts

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

__all__ = [
    "BLOCKS_KEPT",
    "PROBLEMS_KEPT",
    "RUNS_KEPT",
    "SERIES_POINTS",
    "SESSIONS_KEPT",
    "ReceiptSummary",
    "TopCounter",
    "summarize_lines",
]

SCHEMAS = (SCHEMA_ID_V1, SCHEMA_ID)
SERIES_POINTS = 120
"""Points kept for the memory chart; older points are thinned as the stream grows."""
SESSIONS_KEPT = 25_000
"""Sessions counted exactly until this many are seen; beyond, a top-k sketch (see TopCounter)."""
BLOCKS_KEPT = 25_000
"""Prefix blocks (paged runs) counted exactly until this many are seen; beyond, a top-k sketch."""
RUNS_KEPT = 1000
"""Runs listed one by one; later ones are only counted."""
DISTINCT_KEPT = 64
"""Distinct kinds, reasons or policies counted by name; any others are counted as OTHER."""
OTHER = "(other)"
PROBLEMS_KEPT = 5
"""Unreadable lines described (line, field, problem); the rest are only counted."""
MAX_TIME_MS = 1e15
MAX_ID = 256
"""Longest id, kind, reason or policy accepted (longer ones would make the tables unbounded)."""


class _BadFieldError(Exception):
    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


_MISSING = object()


# The checks run on every field of every line: the common case is one type() test and a range
# test, the explanation is built only for a bad value.
def _int(record: dict[str, Any], key: str, where: str = "") -> int:
    value = record.get(key, _MISSING)
    if type(value) is int and 0 <= value <= INT64_MAX:  # type(True) is bool, not int
        return value
    raise _bad(where + key, value, "an integer", "0..2^63-1")


def _str(record: dict[str, Any], key: str, where: str = "") -> str:
    value = record.get(key, _MISSING)
    if type(value) is str and len(value) <= MAX_ID:
        return value
    if type(value) is str:
        problem = f"a string of {len(value):,} characters (at most {MAX_ID})"
        raise _BadFieldError(where + key, problem)
    raise _bad(where + key, value, "a string", "")


def _bad(name: str, value: Any, wanted: str, bounds: str) -> _BadFieldError:
    if value is _MISSING:
        return _BadFieldError(name, "missing")
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if bounds and is_number and (wanted != "an integer" or isinstance(value, int)):
        return _BadFieldError(name, f"{_show(value)} is out of range ({bounds})")
    return _BadFieldError(name, f"{_show(value)} is not {wanted}")


def _obj(record: dict[str, Any], key: str) -> dict[str, Any]:
    value = record.get(key, _MISSING)
    if type(value) is dict:
        return value
    raise _bad(key, value, "an object", "")


def _time(record: dict[str, Any], key: str) -> float:
    value = record.get(key, _MISSING)
    if type(value) in (int, float) and 0 <= value <= MAX_TIME_MS:
        return float(value)
    raise _bad(key, value, "a number", "0..1e15")


def _show(value: Any) -> str:
    text = orjson.dumps(value).decode() if not isinstance(value, float) or math.isfinite(value) \
        else repr(value)  # fmt: skip
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(slots=True)
class _Series:
    """Every ``stride``-th sample, the stride doubling whenever the buffer fills. A sample's
    time is ``sim_time_ms`` (a number) or, for records without it, the timestamp (a string).
    """

    limit: int = SERIES_POINTS
    stride: int = 1
    seen: int = 0
    points: list[tuple[float | str, int, int]] = field(default_factory=list)

    def add(self, point: tuple[float | str, int, int]) -> None:
        if self.seen % self.stride == 0:
            self.points.append(point)
            if len(self.points) >= 2 * self.limit:
                self.points = self.points[::2]
                self.stride *= 2
        self.seen += 1


@dataclass(slots=True)
class TopCounter:
    """Counts per key, exact while there are at most ``capacity`` keys, bounded after that.

    Beyond that it is the space-saving sketch, pruned in batches: when ``2 * capacity`` keys
    are held, only the ``capacity`` largest are kept, and ``floor`` becomes the largest count
    dropped. A key seen afresh starts at ``floor + 1`` (it may have been dropped), so every
    count is an upper bound at most ``floor`` too high, and any key whose true count exceeds
    ``floor`` is held.
    """

    capacity: int = SESSIONS_KEPT
    counts: dict[str, int] = field(default_factory=dict)
    floor: int = 0

    def add(self, key: str) -> None:
        """Count ``key`` once."""
        count = self.counts.get(key)
        if count is None:
            if len(self.counts) >= 2 * self.capacity:
                ordered = sorted(self.counts.items(), key=itemgetter(1), reverse=True)
                self.floor = max(self.floor, ordered[self.capacity][1])
                self.counts = dict(ordered[: self.capacity])
            self.counts[key] = self.floor + 1
        else:
            self.counts[key] = count + 1

    def most_common(self, n: int) -> list[tuple[str, int]]:
        """The ``n`` keys with the highest counts, highest first."""
        return sorted(self.counts.items(), key=itemgetter(1), reverse=True)[:n]

    @property
    def exact(self) -> bool:
        """Whether no key was ever dropped (then every count is exact)."""
        return self.floor == 0

    def __len__(self) -> int:
        return len(self.counts)


@dataclass(slots=True)
class RunSummary:
    """One run: its records, evictions, policy and pool size (from its open record, or from
    its ``/1`` evictions).
    """

    run_id: str
    records: int = 0
    evictions: int = 0
    policy: str | None = None
    total_bytes: int | None = None
    source: str | None = None
    """What wrote the run (its open record's ``source``: ``simulate``, ``watch``)."""
    removals: int = 0
    """A watched engine's ``engine_removal`` receipts (a watch run evicts nothing itself)."""
    hits: int | None = None
    misses: int | None = None
    """The run's lookups, from its close record's ``final_stats`` (None: no close record)."""

    @property
    def hit_rate(self) -> float | None:
        """Hits over lookups, from the close record (None without one, or without lookups)."""
        if self.hits is None or self.misses is None or not self.hits + self.misses:
            return None
        return self.hits / (self.hits + self.misses)

    def to_dict(self) -> dict[str, Any]:
        """Plain values."""
        return {"run_id": self.run_id, "records": self.records, "evictions": self.evictions,
                "policy": self.policy, "total_bytes": self.total_bytes, "source": self.source,
                "removals": self.removals, "cache_hits": self.hits, "cache_misses": self.misses,
                "hit_rate": self.hit_rate}  # fmt: skip


@dataclass(slots=True)  # not frozen: a frozen init is several times slower
class _Eviction:
    """The fields of an eviction receipt that the summary reads, checked."""

    reason: str
    policy: str
    session: str
    size: int
    used_before: int
    used_after: int
    total_bytes: int | None
    when: float | str
    block: str | None
    """A paged eviction's prefix-block hash, as text (None: an arena eviction)."""

    @classmethod
    def read(cls, record: dict[str, Any], run: RunSummary | None, stamp: str | None) -> _Eviction:
        """Check and take the fields; ``run`` gives a ``/2`` lean record's policy."""
        reason, session = _str(record, "reason"), _str(record, "session_id")
        size = _int(record, "block_size_bytes")
        before, after = _obj(record, "before"), _obj(record, "after")
        used_before = _int(before, "used_bytes", "before.")
        used_after = _int(after, "used_bytes", "after.")
        # /1 and the /2 upstream layout carry the policy and the pool size on each eviction;
        # /2 lean lines leave them to the run's open record.
        if "policy" in record:
            policy = _str(record, "policy")
        else:
            policy = (run.policy if run is not None else None) or "unknown"
        total = _int(before, "total_bytes", "before.") if "total_bytes" in before else None
        when: float | str
        if "sim_time_ms" in record:
            when = _time(record, "sim_time_ms")
        elif stamp is not None:
            when = stamp
        else:
            raise _BadFieldError("timestamp", "missing (and no sim_time_ms)")
        block = _block_hash(record) if "block_hash" in record else None
        return cls(reason, policy, session, size, used_before, used_after, total, when, block)


def _block_hash(record: dict[str, Any]) -> str:
    """A block hash as text: an integer (64 bits, either sign) or a short string."""
    value = record.get("block_hash")
    if type(value) is int and -(2**64) < value < 2**64:
        return str(value)
    if type(value) is str and len(value) <= MAX_ID:
        return value
    raise _bad("block_hash", value, "an integer or a string of at most 256 characters", "")


def _lookups(record: dict[str, Any]) -> tuple[int, int]:
    """A close record's hits and misses (its ``final_stats``)."""
    final = _obj(record, "final_stats")
    return _int(final, "cache_hits", "final_stats."), _int(final, "cache_misses", "final_stats.")


def _bump(counter: Counter[str], key: str, n: int = 1) -> None:
    counter[key if key in counter or len(counter) < DISTINCT_KEPT else OTHER] += n


@dataclass(slots=True)
class ReceiptSummary:
    """What a receipts file says, in aggregate."""

    path: str
    records: int = 0
    unreadable_lines: int = 0
    """Lines not summarized: not JSON, not a receipt, or a receipt with a bad field."""
    invalid_records: int = 0
    """Of those, the receipts with a missing or ill-typed field."""
    problems: list[dict[str, Any]] = field(default_factory=list)
    """The first few unreadable lines: ``{line, field, problem}``."""
    truncated_tail: bool = False
    kinds: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    policies: Counter[str] = field(default_factory=Counter)
    demotions: Counter[str] = field(default_factory=Counter)
    """Demotion receipts (memory tiers) by move, ``"hbm->dram"``."""
    sessions: TopCounter = field(default_factory=TopCounter)
    blocks: TopCounter = field(default_factory=lambda: TopCounter(BLOCKS_KEPT))
    """Evictions per prefix block (paged runs)."""
    hits: int = 0
    misses: int = 0
    closed_runs: int = 0
    """Runs whose close record was read: ``hits`` and ``misses`` are theirs, summed."""
    runs: dict[str, RunSummary] = field(default_factory=dict)
    run_count: int = 0
    """Runs seen; those past :data:`RUNS_KEPT` are counted where the run id changes."""
    bytes_freed: int = 0
    total_bytes: int = 0
    peak_used_bytes: int = 0
    lost: int = 0
    first_timestamp: str | None = None
    last_timestamp: str | None = None
    series: _Series = field(default_factory=_Series)
    engine: EngineFigures | None = None
    """Where engine receipts are folded in, once checked (``stats`` shows them apart)."""
    _run: RunSummary | None = None

    def unreadable(self, line: int, name: str | None, problem: str, *, invalid: bool) -> None:
        """Count a line that is not summarized, and describe the first few."""
        self.unreadable_lines += 1
        self.invalid_records += invalid
        if len(self.problems) < PROBLEMS_KEPT:
            self.problems.append({"line": line, "field": name, "problem": problem})

    @property
    def records_in_unlisted_runs(self) -> int:
        """Records of the runs past :data:`RUNS_KEPT`."""
        return self.records - sum(run.records for run in self.runs.values())

    def _known(self, run_id: str) -> RunSummary | None:
        """The run seen last or a listed one, if it is ``run_id``'s."""
        run = self._run
        return run if run is not None and run.run_id == run_id else self.runs.get(run_id)

    def _run_of(self, run_id: str) -> RunSummary:
        run = self._known(run_id)
        if run is None:
            self.run_count += 1
            run = RunSummary(run_id)
            if len(self.runs) < RUNS_KEPT:
                self.runs[run_id] = run
        self._run = run
        return run

    def add(self, record: dict[str, Any]) -> None:
        """Fold one receipt in; raises ``_BadFieldError`` (and changes nothing) if a field it needs
        is missing or ill-typed.
        """
        schema = record.get("schema")
        if schema is not None and schema not in SCHEMAS:
            raise _BadFieldError("schema", f"{_show(schema)} is not a schema this version reads")
        kind = _str(record, "kind")
        run_id = _str(record, "run_id")
        stamp = _str(record, "timestamp") if "timestamp" in record else None
        lost = _int(record, "count") if kind == "loss" else 0
        move = f"{_str(record, 'from_tier')}->{_str(record, 'to_tier')}" if kind == "demotion" \
            else None  # fmt: skip
        engine = kind.startswith("engine_")
        if engine:  # typed against its kind's shape before stats uses it
            problem = engine_problem(record)
            if problem is not None:
                raise _BadFieldError(*problem)
        opened = None
        if kind == "open":  # a watch's run has no policy of its own
            policy = None if record.get("policy") is None else _str(record, "policy")
            source = None if record.get("source") is None else _str(record, "source")
            opened = (policy, _int(record, "total_bytes"), source)
        lookups = _lookups(record) if kind == "close" and "final_stats" in record else None
        eviction = _Eviction.read(record, self._known(run_id), stamp) if kind == "eviction" \
            else None  # fmt: skip
        # Every field is good: from here on nothing raises.
        run = self._run_of(run_id)
        if opened is not None:
            run.policy, run.total_bytes, run.source = opened
            self.total_bytes = opened[1]
        if lookups is not None:
            run.hits, run.misses = lookups
            self.hits += lookups[0]
            self.misses += lookups[1]
            self.closed_runs += 1
        if kind == "engine_removal":
            run.removals += 1
        if eviction is not None:
            self._eviction(eviction, run)
        run.records += 1
        self.records += 1
        if engine and self.engine is not None:
            self.engine.add_checked(record)
        _bump(self.kinds, kind)
        if move is not None:
            _bump(self.demotions, move)
        self.lost += lost
        if stamp is not None:
            self.first_timestamp = self.first_timestamp or stamp
            self.last_timestamp = stamp

    def _eviction(self, ev: _Eviction, run: RunSummary) -> None:
        if ev.total_bytes is not None:
            self.total_bytes = ev.total_bytes
            if run.total_bytes is None:
                run.total_bytes = ev.total_bytes
        if run.policy is None:
            run.policy = ev.policy
        run.evictions += 1
        _bump(self.reasons, ev.reason)
        _bump(self.policies, ev.policy)
        self.sessions.add(ev.session)
        if ev.block is not None:
            self.blocks.add(ev.block)
        self.bytes_freed += ev.size
        self.peak_used_bytes = max(self.peak_used_bytes, ev.used_before)
        self.series.add((ev.when, ev.used_before, ev.used_after))

    @property
    def evictions(self) -> int:
        """Eviction receipts seen."""
        return self.kinds.get("eviction", 0)

    @property
    def runs_not_listed(self) -> int:
        """Runs seen but not kept in :attr:`runs`."""
        return self.run_count - len(self.runs)

    @property
    def hit_rate(self) -> float | None:
        """Hits over lookups of the runs with a close record (None: none, or no lookups)."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else None

    @property
    def engine_only(self) -> bool:
        """Whether the file is a watched engine's: no evictions of its own, and every run
        that says what wrote it is a watch.
        """
        sources = {run.source for run in self.runs.values()}
        return not self.evictions and "watch" in sources and sources <= {"watch", None}

    def top_sessions(self, n: int = 10) -> list[tuple[str, int]]:
        """The sessions with the most evictions."""
        return self.sessions.most_common(n)

    def to_dict(self, top: int = 10) -> dict[str, Any]:
        """Plain values for ``--format json``."""
        return {
            "path": self.path,
            "records": self.records,
            "unreadable_lines": self.unreadable_lines,
            "invalid_records": self.invalid_records,
            "problems": self.problems,
            "truncated_tail": self.truncated_tail,
            "runs": {run_id: run.records for run_id, run in self.runs.items()},
            "run_count": self.run_count,
            "runs_not_listed": self.runs_not_listed,
            "records_in_unlisted_runs": self.records_in_unlisted_runs,
            "per_run": [run.to_dict() for run in self.runs.values()],
            "kinds": dict(self.kinds),
            "reasons": dict(self.reasons),
            "policies": dict(self.policies),
            "demotions": dict(self.demotions),
            "evictions": self.evictions,
            "bytes_freed": self.bytes_freed,
            "peak_used_bytes": self.peak_used_bytes,
            "total_bytes": self.total_bytes,
            "lost": self.lost,
            "first_timestamp": self.first_timestamp,
            "last_timestamp": self.last_timestamp,
            "top_sessions": [{"session_id": s, "evictions": n} for s, n in self.top_sessions(top)],
            "top_sessions_exact": self.sessions.exact,
            "top_sessions_max_overcount": self.sessions.floor,
            "hit_rate": self.hit_rate,
            "cache_hits": self.hits,
            "cache_misses": self.misses,
            "closed_runs": self.closed_runs,
            "top_blocks": [
                {"block_hash": b, "evictions": n} for b, n in self.blocks.most_common(top)
            ],
            "top_blocks_exact": self.blocks.exact,
            "top_blocks_max_overcount": self.blocks.floor,
            "memory": [
                {
                    ("timestamp" if isinstance(t, str) else "sim_time_ms"): t,
                    "used_bytes_before": b,
                    "used_bytes_after": a,
                }
                for t, b, a in self.series.points
            ],
        }


def _head(lines: Iterator[bytes]) -> list[bytes]:
    """The first lines, up to :data:`SNIFF_LINES` non-blank ones."""
    head: list[bytes] = []
    seen = 0
    for raw in lines:
        head.append(raw)
        seen += bool(raw.strip())
        if seen >= SNIFF_LINES:
            break
    return head


def summarize_lines(
    lines: Iterable[bytes], *, path: str = "-", engine: EngineFigures | None = None
) -> ReceiptSummary:
    """Summarize a stream of receipt lines (newlines included); lines that are not receipts
    are counted apart. Raises :class:`InputError` if the stream does not start like a
    receipts file. A last line without a newline that is not JSON is a truncated tail, as is
    a torn compressed frame (``lines.truncated_tail``). Engine receipts that fit their kind
    are also folded into ``engine``.
    """
    summary = ReceiptSummary(path, engine=engine)
    stream = iter(lines)
    head = _head(stream)
    sniffed = head
    if len(head) < SNIFF_LINES and head and not head[-1].endswith(b"\n"):
        sniffed = head[:-1]  # a torn last line says nothing about what the file is
    problem = sniff_receipts(sniffed)
    if problem is not None:
        raise InputError(f"not a kvreceipts receipts file ({problem})", path=path)
    number = 0
    for number, raw in enumerate(chain(head, stream), start=1):
        _fold(summary, number, raw)
    summary.truncated_tail = summary.truncated_tail or bool(getattr(lines, "truncated_tail", False))
    return summary


def _fold(summary: ReceiptSummary, number: int, raw: bytes) -> None:
    if not raw.strip():
        return
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        if not raw.endswith(b"\n"):  # only the last line can lack one
            summary.truncated_tail = True
        else:
            summary.unreadable(number, None, "not valid JSON", invalid=False)
        return
    why = not_a_receipt(record)
    if why is not None:
        summary.unreadable(number, None, why, invalid=False)
        return
    try:
        summary.add(record)
    except _BadFieldError as bad:
        summary.unreadable(number, bad.name, bad.problem, invalid=True)
