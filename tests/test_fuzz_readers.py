"""Generated input at every reader (issue 26): receipts, recordings, traces and config files,
each made from real ones with values swapped for random JSON, or from nothing. For each input
the answer keeps the rules of tests/fuzz_targets.py: an exit code the docs name, no traceback,
exit 2 as one error line, peak RSS under 150 MB.

``nox -s fuzz`` runs these with many more examples (HYPOTHESIS_PROFILE=fuzz), then the
coverage-guided byte mutator (tests/fuzz_atheris.py). The inputs that once broke a reader are
kept in tests/fixtures/fuzz/ and replayed by :func:`test_the_inputs_that_broke_a_reader`.
"""

from __future__ import annotations

import struct
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import orjson
import pytest
import tomli_w
from hypothesis import given
from hypothesis import strategies as st

from fuzz_targets import BY_NAME, TARGETS, Target, Unanswered, Worker
from kvreceipts.engine.recording import MAGIC

if TYPE_CHECKING:
    from collections.abc import Iterator

FIXTURES = Path(__file__).resolve().parent / "fixtures"
WORKER = Worker()
REAL: list[tuple[bytes, ...]] = []
"""The real receipts files the receipts strategy changes (filled in by its test)."""
REGRESSIONS = FIXTURES / "fuzz"
WATCH_FILES = FIXTURES / "watch"

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),  # what orjson can write
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e300, -0.0, 2**63, 2**63 - 1, -1, "nan", "", "GPU", "eviction"]),
    st.text(max_size=20),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


@cache
def _simulated_lines() -> tuple[bytes, ...]:
    """A short real run: open, evictions, close."""
    from typer.testing import CliRunner

    from kvreceipts.cli import app

    result = CliRunner().invoke(app, ["simulate", "-q", "--requests", "300", "--format", "jsonl",
                                      "--capacity-mb", "64"])  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return tuple(line + b"\n" for line in result.stdout_bytes.splitlines())


@cache
def _watch_lines() -> tuple[bytes, ...]:
    return tuple(line + b"\n" for line in (WATCH_FILES / "engine.jsonl").read_bytes().splitlines())


@pytest.fixture(autouse=True, scope="module")
def _stop_the_worker() -> Iterator[None]:
    yield
    WORKER.close()


@st.composite
def receipts(draw: st.DrawFn) -> bytes:
    """A real receipts file (simulated or watched) with a few lines changed."""
    lines = list(REAL[draw(st.integers(0, len(REAL) - 1))])
    lines = lines[: draw(st.integers(min_value=1, max_value=len(lines)))]
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        index = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        try:
            record = orjson.loads(lines[index])
        except orjson.JSONDecodeError:  # changed to bytes already
            continue
        if not isinstance(record, dict) or not record:  # bytes that happen to be JSON
            continue
        how = draw(st.sampled_from(["value", "drop", "add", "bytes", "nested"]))
        keys = sorted(record)
        if how == "value":
            record[draw(st.sampled_from(keys))] = draw(JSON)
        elif how == "drop":
            record.pop(draw(st.sampled_from(keys)))
        elif how == "add":
            record[draw(st.text(max_size=12))] = draw(JSON)
        elif how == "nested":
            nested = [k for k in keys if isinstance(record[k], dict) and record[k]]
            if nested:
                inner = record[draw(st.sampled_from(nested))]
                inner[draw(st.sampled_from(sorted(inner)))] = draw(JSON)
        if how == "bytes":
            lines[index] = draw(st.binary(max_size=60)) + b"\n"
        else:
            lines[index] = orjson.dumps(record) + b"\n"
    data = b"".join(lines)
    if draw(st.booleans()):
        data = data[: draw(st.integers(min_value=0, max_value=len(data)))]  # a torn end
    return data


_HEAD = struct.Struct(">cdH")
_LEN = struct.Struct(">I")
HEADER_FIELDS = ["run_id", "start_s", "source", "endpoint", "topic", "replay_endpoint",
                 "regret_window_s"]  # fmt: skip
GOOD_HEADER = {"run_id": "f" * 32, "start_s": 1000.0, "source": "watch", "endpoint": "tcp://h:1",
               "topic": "", "replay_endpoint": None, "regret_window_s": 60.0}  # fmt: skip
HASH = st.one_of(st.integers(min_value=0, max_value=2**64 - 1), st.binary(max_size=9))
MEDIUM = st.one_of(st.none(), st.sampled_from(["GPU", "CPU"]), st.text(max_size=5), st.just(3))
EVENT = st.one_of(
    st.fixed_dictionaries({"type": st.just("BlockStored"),
                           "block_hashes": st.lists(HASH, max_size=5),
                           "parent_block_hash": st.one_of(st.none(), HASH),
                           "token_ids": st.just([]), "block_size": st.just(16),
                           "lora_id": st.none(), "medium": MEDIUM}),
    st.fixed_dictionaries({"type": st.just("BlockRemoved"),
                           "block_hashes": st.lists(HASH, max_size=5), "medium": MEDIUM}),
    st.fixed_dictionaries({"type": st.just("AllBlocksCleared")}),
    st.lists(st.one_of(st.sampled_from(["BlockStored", "BlockRemoved"]), HASH), max_size=4),
)  # fmt: skip
BATCH = st.builds(
    lambda ts, events: msgspec.msgpack.encode([ts, events, 0]),
    st.one_of(st.floats(min_value=900, max_value=1100), st.floats()), st.lists(EVENT, max_size=4),
)  # fmt: skip


@st.composite
def entries(draw: st.DrawFn) -> bytes:
    """One recorded entry: mostly well-formed messages, sometimes anything."""
    kind = draw(st.sampled_from([b"M", b"M", b"M", b"P", b"E", b"D", b"Z", b"\x00", b"m"]))
    at_s = draw(st.one_of(st.floats(min_value=1000, max_value=1010), st.floats()))
    if kind == b"M" and draw(st.booleans()):
        topic = draw(st.sampled_from([b"", b"kv@a", b"kv@b"]))
        frames = [topic, draw(st.integers(0, 12)).to_bytes(8, "big"), draw(BATCH)]
    else:
        frames = draw(st.lists(st.binary(max_size=12), max_size=4))
    count = len(frames) if draw(st.integers(0, 9)) else draw(st.integers(0, 0xFFFF))
    parts = [_HEAD.pack(kind, at_s, count)]
    for frame in frames:
        size = len(frame) if draw(st.integers(0, 9)) else draw(st.integers(0, 2**32 - 1))
        parts += [_LEN.pack(size), frame]
    return b"".join(parts)


@st.composite
def recordings(draw: st.DrawFn) -> bytes:
    """A recording: a header (real, or with fields swapped), then entries."""
    header: Any = dict(GOOD_HEADER)
    for name in draw(st.lists(st.sampled_from(HEADER_FIELDS), max_size=2)):
        if draw(st.booleans()):
            header[name] = draw(JSON)
        else:
            header.pop(name, None)
    if not draw(st.integers(0, 9)):
        header = draw(JSON)
    head = orjson.dumps(header)
    size = len(head) if draw(st.integers(0, 9)) else draw(st.integers(0, 2**32 - 1))
    body = b"".join(draw(st.lists(entries(), max_size=6)))
    return MAGIC + _LEN.pack(size) + head + body


@st.composite
def mooncake_traces(draw: st.DrawFn) -> bytes:
    """Mooncake rows, mostly valid-looking, with fields swapped for random JSON."""
    rows = []
    for i in range(draw(st.integers(1, 8))):
        length = draw(st.integers(0, 3000))
        row: dict[str, Any] = {"timestamp": i * 10, "input_length": length, "output_length": 5,
                               "hash_ids": list(range(-(-length // 512)))}  # fmt: skip
        if draw(st.booleans()):
            row[draw(st.sampled_from(sorted(row)))] = draw(JSON)
        rows.append(orjson.dumps(row) if draw(st.integers(0, 9)) else draw(st.binary(max_size=30)))
    return b"\n".join(rows) + b"\n"


AZURE_CELL = st.one_of(st.integers(-5, 10**8).map(str), st.text(max_size=10),
                       st.sampled_from(["2023-11-16 18:17:03.9799600", "nan", ""]))  # fmt: skip


@st.composite
def azure_traces(draw: st.DrawFn) -> bytes:
    """Azure CSV: the header, then rows of three cells, sometimes of anything."""
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for i in range(draw(st.integers(1, 8))):
        cells = [f"2023-11-16 18:17:{i:02d}.0000000", str(draw(st.integers(0, 5000))), "7"]
        if draw(st.booleans()):
            cells[draw(st.integers(0, 2))] = draw(AZURE_CELL)
        if not draw(st.integers(0, 9)):
            cells = draw(st.lists(AZURE_CELL, max_size=5))
        lines.append(",".join(cells))
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


TOML_VALUE = st.one_of(
    st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=10),
    st.lists(st.integers(-5, 5), max_size=3),
)  # fmt: skip
CONFIG_KEYS = [
    "kv_cache_size_mb",
    "enable_receipts",
    "kv_cache_enabled",
    "model_cache_size",
    "max_batch_size",
    "batch_timeout_ms",
    "policy",
    "requests",
    "seed",
    "nonsense",
]


@st.composite
def config_files(draw: st.DrawFn) -> bytes:
    """A TOML config with random tables, keys and values; sometimes not TOML at all."""
    if not draw(st.integers(0, 9)):
        return draw(st.binary(max_size=80))
    document: dict[str, Any] = {}
    for table in draw(st.lists(st.sampled_from(["caching", "simulation", "other"]), max_size=3)):
        keys = st.one_of(st.sampled_from(CONFIG_KEYS), st.text(min_size=1, max_size=8))
        document[table] = draw(st.dictionaries(keys, TOML_VALUE, max_size=4))
    return tomli_w.dumps(document).encode()


@pytest.mark.needs("receipts")  # the changed files start as simulated receipts
def test_receipts_readers_answer_every_changed_file() -> None:
    REAL[:] = [_simulated_lines(), _watch_lines()]  # made before any example: no hidden state

    @given(data=receipts(), name=st.sampled_from(["stats", "stats-table", "verify"]))
    def check(data: bytes, name: str) -> None:
        WORKER.run(BY_NAME[name], data)

    check()


@given(data=recordings())
def test_watch_from_answers_every_recording(data: bytes) -> None:
    WORKER.run(BY_NAME["watch-from"], data)


@given(data=st.one_of(mooncake_traces(), azure_traces(), st.binary(max_size=200)),
       name=st.sampled_from(["simulate-trace", "simulate-mooncake", "simulate-azure",
                             "sweep-trace"]))  # fmt: skip
def test_trace_readers_answer_every_trace(data: bytes, name: str) -> None:
    WORKER.run(BY_NAME[name], data)


@given(data=config_files(), name=st.sampled_from(["config", "simulate-config"]))
def test_config_readers_answer_every_config(data: bytes, name: str) -> None:
    WORKER.run(BY_NAME[name], data)


def _regressions() -> list[Path]:
    return sorted(p for p in REGRESSIONS.glob("*") if p.is_file() and p.suffix != ".md")


@pytest.mark.parametrize("path", _regressions(), ids=lambda p: p.name)
def test_the_inputs_that_broke_a_reader(path: Path) -> None:
    """Each file is named ``TARGET--what.ext``: the reader it once broke, and how."""
    target = BY_NAME[path.name.split("--")[0]]
    WORKER.run(target, path.read_bytes())


@pytest.mark.needs("receipts")
def test_every_target_is_a_command_that_runs() -> None:
    assert {t.name for t in TARGETS} >= {"stats", "verify", "watch-from", "simulate-trace",
                                         "sweep-trace", "config"}  # fmt: skip
    assert WORKER.run(BY_NAME["stats"], b"".join(_simulated_lines())) == 0
    assert WORKER.run(BY_NAME["watch-from"], (WATCH_FILES / "engine.kvrec").read_bytes()) == 1
    with pytest.raises(Unanswered, match="exit 0, not one of"):
        WORKER.run(Target("strict", ("stats", "{}"), frozenset({1})), b"".join(_watch_lines()))
