"""Receipts you can prove: ``verify_lines`` catches every single edit, deletion, insertion and
reorder of a real receipt file, rejects records forged without the HMAC key, accepts what the
sinks legitimately write (including declared losses), and streams in bounded memory.
"""

from __future__ import annotations

import hashlib
import json
import random
import tracemalloc
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from typer.testing import CliRunner

from kvreceipts.chain import Sealer, canonical, compute_digest
from kvreceipts.cli import app
from kvreceipts.config import CachingConfig, SimulationConfig
from kvreceipts.policies import POLICIES
from kvreceipts.schema import ZERO_DIGEST
from kvreceipts.simulation import build_manager, plan_simulation, run_simulation
from kvreceipts.verify import VerifyReport, verify_lines

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from kvreceipts.receipts import Receipt

MOONCAKE = "mooncake_synthetic_trace.jsonl"
HMAC_KEY = b"receipts-you-can-prove"

# --------------------------------------------------------------------------------------------
# Building real receipt files with the library


def simulate_to_file(
    path: Path, *, hmac_key: bytes | None = None, capacity_mb: float = 512, **simulation: Any
) -> tuple[list[bytes], str]:
    """Run a simulation with a JsonlSink on ``path``; its lines and the run's last digest."""
    from kvreceipts.sinks import JsonlSink

    plan = plan_simulation(
        CachingConfig(enable_receipts=True, kv_cache_size_mb=capacity_mb),
        SimulationConfig(**simulation),
    )
    manager = build_manager(plan, sink=JsonlSink(path, append=False), hmac_key=hmac_key)
    result = run_simulation(
        manager,
        plan.requests(),
        prefill_ms_per_token=plan.simulation.prefill_ms_per_token,
        trace_stats=plan.trace_stats,
    )
    manager.shutdown()
    assert result.last_digest is not None
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) == result.receipts > 0
    return lines, result.last_digest


def mooncake(traces_dir: Path, **extra: Any) -> dict[str, Any]:
    """Simulation settings for a paged LRU replay of the Mooncake synthetic trace."""
    settings: dict[str, Any] = {
        "trace": str(traces_dir / MOONCAKE),
        "allocator": "paged",
        "policy": "lru",
        "batch_receipts": True,
    }
    settings.update(extra)
    return settings


def records_of(lines: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in lines if line.strip()]


def checks(report: VerifyReport) -> set[str]:
    return {v.check for v in report.violations}


# --------------------------------------------------------------------------------------------
# Single mutations of a receipt file (lists of lines; each returns a new list)


def _leaves(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    else:
        yield path, value


def _set(record: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    target = record
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


HEX = "0123456789abcdef"


def _flip_hex(rng: random.Random, digest: str) -> str:
    i = rng.randrange(len(digest))
    return digest[:i] + rng.choice([c for c in HEX if c != digest[i]]) + digest[i + 1 :]


def _new_string(rng: random.Random, old: str) -> str:
    if len(old) == 64 and all(c in HEX for c in old):
        return _flip_hex(rng, old)
    if not old:
        return "x"
    i = rng.randrange(len(old))
    return rng.choice([old[:i] + chr(ord(old[i]) ^ 1) + old[i + 1 :], old + "x", old[:-1]])


def _new_value(rng: random.Random, old: Any) -> Any:
    """A different value of (mostly) the same JSON type."""
    if isinstance(old, bool):
        return not old
    if isinstance(old, int):
        bump = rng.randint(2, 1 << 20)
        return rng.choice([old + 1, old - 1, old + bump, old * 2 + 1, -1, str(old)])
    if isinstance(old, float):
        nudged = old * (1 + 1e-9) + 1e-9
        return rng.choice([old + 1.0, nudged, old - 0.5, round(old) + 0.25, int(old) + 1])
    if isinstance(old, str):
        return _new_string(rng, old)
    assert old is None, f"unexpected leaf {old!r}"
    return rng.choice(["forged", 0])


def _edit_record(rng: random.Random, record: dict[str, Any], *, keep: tuple[str, ...] = ()) -> str:
    """Change one leaf of ``record`` in place (a real change of content); what changed."""
    before = canonical(record)
    leaves = [(path, old) for path, old in _leaves(record) if path[0] not in keep]
    while True:
        path, old = rng.choice(leaves)
        _set(record, path, _new_value(rng, old))
        if canonical(record) != before:
            return ".".join(path)
        _set(record, path, old)


def _encode(record: dict[str, Any]) -> bytes:
    """A record written the way the sealer writes it (as a careful forger would)."""
    body = {key: value for key, value in record.items() if key != "digest"}
    if "digest" not in record:
        return canonical(body) + b"\n"
    return b'%b,"digest":"%b"}\n' % (canonical(body)[:-1], record["digest"].encode())


def _reseal_plain(record: dict[str, Any]) -> None:
    """What a forger can do without a key: recompute the plain SHA-256 digest."""
    record.pop("digest", None)
    record["digest"] = compute_digest(canonical(record))


Mutation = tuple[str, list[bytes]]


def m_edit_value(rng: random.Random, lines: list[bytes]) -> Mutation:
    i = rng.randrange(len(lines))
    record = orjson.loads(lines[i])
    what = _edit_record(rng, record)
    out = lines[:]
    out[i] = _encode(record)
    return f"edit {what} at line {i + 1}", out


def m_edit_and_reseal(rng: random.Random, lines: list[bytes]) -> Mutation:
    i = rng.randrange(len(lines))
    record = orjson.loads(lines[i])
    what = _edit_record(rng, record)
    if what != "digest":
        _reseal_plain(record)
    out = lines[:]
    out[i] = _encode(record)
    return f"edit {what} at line {i + 1} and recompute its digest", out


def m_edit_digest(rng: random.Random, lines: list[bytes]) -> Mutation:
    i = rng.randrange(len(lines))
    record = orjson.loads(lines[i])
    field = rng.choice(["digest", "prev_digest"])
    others = [orjson.loads(line)["digest"] for line in rng.sample(lines, min(3, len(lines)))]
    choices = [_flip_hex(rng, record[field]), ZERO_DIGEST, *others]
    choices = [c for c in choices if c != record[field]]
    record[field] = rng.choice(choices)
    out = lines[:]
    out[i] = _encode(record)
    return f"edit {field} at line {i + 1}", out


def m_delete(rng: random.Random, lines: list[bytes]) -> Mutation:
    i = rng.choice([rng.randrange(len(lines)), 0, len(lines) - 1])
    return f"delete line {i + 1}", lines[:i] + lines[i + 1 :]


def m_cut_tail(rng: random.Random, lines: list[bytes]) -> Mutation:
    keep = rng.randrange(len(lines))
    return f"cut the file after line {keep}", lines[:keep]


def m_duplicate(rng: random.Random, lines: list[bytes]) -> Mutation:
    i = rng.randrange(len(lines))
    at = rng.choice([i + 1, rng.randrange(len(lines) + 1)])
    return f"copy line {i + 1} to {at + 1}", [*lines[:at], lines[i], *lines[at:]]


def m_swap(rng: random.Random, lines: list[bytes]) -> Mutation:
    i = rng.randrange(len(lines) - 1)
    j = rng.choice([i + 1, rng.randrange(len(lines))])
    if j == i:
        j = i + 1
    out = lines[:]
    out[i], out[j] = out[j], out[i]
    return f"swap lines {i + 1} and {j + 1}", out


def m_move(rng: random.Random, lines: list[bytes]) -> Mutation:
    i = rng.randrange(len(lines))
    out = lines[:]
    line = out.pop(i)
    at = rng.choice([j for j in range(len(lines)) if j != i])
    out.insert(at, line)
    return f"move line {i + 1} to {at + 1}", out


def m_insert_forged(rng: random.Random, lines: list[bytes]) -> Mutation:
    """A copied record with one field changed, placed anywhere; sometimes digest-recomputed,
    sometimes also renumbered and linked to the line before it, as a careful forger would.

    A resealed forgery keeps its run id: a record that starts a run of its own is a whole
    forged run, which only the HMAC key can reject (see the HMAC test).
    """
    record = orjson.loads(rng.choice(lines))
    style = rng.choice(["as is", "resealed", "linked"])
    what = _edit_record(rng, record, keep=("run_id",) if style != "as is" else ())
    at = rng.randrange(len(lines) + 1)
    if style == "linked" and at > 0 and what not in ("digest", "prev_digest", "seq"):
        previous = orjson.loads(lines[at - 1])
        record["seq"] = previous["seq"] + 1
        record["prev_digest"] = previous["digest"]
        record["run_id"] = previous["run_id"]
    if style != "as is":
        _reseal_plain(record)
    return f"insert a forged record ({what} changed, {style}) at line {at + 1}", [
        *lines[:at],
        _encode(record),
        *lines[at:],
    ]


MUTATIONS: list[Callable[[random.Random, list[bytes]], Mutation]] = [
    m_edit_value,
    m_edit_value,
    m_edit_value,
    m_edit_and_reseal,
    m_edit_digest,
    m_delete,
    m_cut_tail,
    m_duplicate,
    m_swap,
    m_move,
    m_insert_forged,
    m_insert_forged,
]


def run_campaign(
    lines: list[bytes],
    last_digest: str,
    *,
    count: int,
    seed: int,
    skip: Callable[[str, list[bytes]], bool] | None = None,
    key: bytes | None = None,
) -> dict[str, int]:
    """Apply ``count`` single mutations; every one must be caught. Mutations by kind."""
    rng = random.Random(seed)
    missed: list[str] = []
    done: dict[str, int] = {}
    while sum(done.values()) < count:
        mutate = rng.choice(MUTATIONS)
        what, mutated = mutate(rng, lines)
        if mutated == lines or (skip is not None and skip(what, mutated)):
            continue
        done[mutate.__name__] = done.get(mutate.__name__, 0) + 1
        report = verify_lines(iter(mutated), key=key, expect_last_digest=last_digest)
        if report.ok:
            missed.append(what)
    assert not missed, f"{len(missed)} of {count} mutations went unnoticed, e.g. {missed[:5]}"
    return done


# --------------------------------------------------------------------------------------------
# The mutation campaign


@pytest.mark.slow
@pytest.mark.needs("receipts")
@pytest.mark.traces
def test_every_single_mutation_of_a_real_paged_receipt_file_is_caught(
    traces_dir: Path, tmp_path: Path
) -> None:
    # A small real run, as each of the 1,000 mutated files is verified whole (verify costs
    # ~40-70 us a line): paged LRU on the Mooncake trace, evicting from the 4th request.
    lines, last = simulate_to_file(
        tmp_path / "run.jsonl", **mooncake(traces_dir, capacity_blocks=230, requests=4,
                                           snapshot_every=1)
    )  # fmt: skip
    kinds = {r["kind"] for r in records_of(lines)}
    assert kinds == {"eviction", "eviction_batch", "snapshot"}
    assert 25 <= len(lines) <= 60
    clean = verify_lines(iter(lines), expect_last_digest=last)
    assert clean.ok, clean.violations
    assert clean.records == len(lines)

    done = run_campaign(lines, last, count=1000, seed=20240611)
    assert set(done) == {m.__name__ for m in MUTATIONS}  # every kind of mutation was tried


@pytest.mark.slow
@pytest.mark.needs("receipts")
def test_every_single_mutation_of_a_signed_stream_with_loss_records_is_caught() -> None:
    # Signed: nothing chains to a loss record (it stands beside the chain), so without a key
    # a forger could reseal one with another sink name or time; with the key they cannot.
    lines, last, _ = channel_stream(
        "drop_newest", capacity=4, drain_every=9, evictions=40, hmac_key=HMAC_KEY
    )
    assert {r["kind"] for r in records_of(lines)} == {"eviction", "loss"}
    clean = verify_lines(iter(lines), key=HMAC_KEY, expect_last_digest=last)
    assert clean.ok, clean.violations
    assert len(clean.declared_losses) > 3

    def moves_only_a_loss_record(what: str, mutated: list[bytes]) -> bool:
        # A loss record stands beside the chain: where a sink puts it says nothing, so
        # moving one (and only that) is not tampering.
        if not what.startswith(("swap", "move")):
            return False
        sequenced = [line for line in mutated if b'"kind":"loss"' not in line]
        return sequenced == [line for line in lines if b'"kind":"loss"' not in line]

    done = run_campaign(lines, last, count=300, seed=7, skip=moves_only_a_loss_record, key=HMAC_KEY)
    assert done["m_duplicate"] > 0


# --------------------------------------------------------------------------------------------
# HMAC


def forge_downstream(lines: list[bytes], index: int, key: bytes | None) -> tuple[list[bytes], str]:
    """Edit record ``index`` (a field no other check looks at) and recompute every digest from
    there on, relinking the chain, with ``key`` (None: plain SHA-256). New lines, new head.
    """
    out = lines[:index]
    previous = orjson.loads(lines[index - 1])["digest"] if index else ZERO_DIGEST
    for i, line in enumerate(lines[index:], start=index):
        record = orjson.loads(line)
        if i == index:
            assert record["kind"] == "eviction"
            record["session_id"] = "someone-else"
        record.pop("digest")
        record["prev_digest"] = previous
        record["digest"] = previous = compute_digest(canonical(record), key)
        out.append(_encode(record))
    return out, previous


@pytest.mark.needs("receipts")
def test_hmac_rejects_records_forged_without_the_key(tmp_path: Path) -> None:
    signed, signed_head = _arena_run(tmp_path / "signed.jsonl", hmac_key=HMAC_KEY)
    plain, _ = _arena_run(tmp_path / "plain.jsonl", hmac_key=None)
    assert len(signed) > 20

    good = verify_lines(iter(signed), key=HMAC_KEY, expect_last_digest=signed_head)
    assert good.ok, good.violations
    assert good.hmac

    target = [i for i, line in enumerate(signed) if b'"kind":"eviction",' in line][5]
    assert target < len(signed) - 5
    # The forgery is good enough to fool the plain chain: on an unsigned file it verifies.
    fooled, _ = forge_downstream(plain, target, None)
    assert verify_lines(iter(fooled)).ok

    for forger_key in (None, b"a guess at the key"):
        forged, forged_head = forge_downstream(signed, target, forger_key)
        report = verify_lines(iter(forged), key=HMAC_KEY)
        assert not report.ok
        assert checks(report) == {"digest"}
        # Every forged record is rejected, no record before the edit is.
        assert {v.line for v in report.violations} == set(range(target + 1, len(signed) + 1))
        anchored = verify_lines(iter(forged), key=HMAC_KEY, expect_last_digest=signed_head)
        assert "anchor" in checks(anchored)
        assert forged_head != signed_head

    unkeyed = verify_lines(iter(signed))
    assert not unkeyed.ok
    assert checks(unkeyed) == {"digest"}
    assert unkeyed.digest_failures == unkeyed.records == len(signed)
    wrong = verify_lines(iter(signed), key=b"not the key")
    assert wrong.digest_failures == len(signed)


def _arena_run(path: Path, *, hmac_key: bytes | None) -> tuple[list[bytes], str]:
    from kvreceipts.sinks import JsonlSink

    plan = plan_simulation(
        CachingConfig(enable_receipts=True, kv_cache_size_mb=8),
        SimulationConfig(workload="chat", requests=150, allocator="arena", batch_receipts=True),
    )
    manager = build_manager(plan, sink=JsonlSink(path, append=False), hmac_key=hmac_key)
    result = run_simulation(manager, plan.requests())
    manager.shutdown()
    assert result.last_digest is not None
    return path.read_bytes().splitlines(keepends=True), result.last_digest


# --------------------------------------------------------------------------------------------
# Everything simulate writes verifies


@pytest.mark.needs("receipts")
@pytest.mark.traces
@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("allocator", ["arena", "paged"])
def test_every_file_simulate_writes_verifies(
    allocator: str, policy: str, traces_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run.jsonl"
    if allocator == "arena":
        source = ["--workload", "burst", "--requests", "250", "--capacity-mb", "8"]
    else:
        source = ["--trace", str(traces_dir / MOONCAKE), "--requests", "90",
                  "--capacity-blocks", "1200"]  # fmt: skip
    result = CliRunner().invoke(
        app,
        ["simulate", *source, "--allocator", allocator, "--policy", policy, "--batch-receipts",
         "--snapshot-every", "25", "-f", "json", "-o", str(out), "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    summary = orjson.loads(result.stdout)
    lines = out.read_bytes().splitlines(keepends=True)
    kinds = {r["kind"] for r in records_of(lines)}
    assert kinds == {"eviction", "eviction_batch", "snapshot"}
    assert {r["policy"] for r in records_of(lines) if r["kind"] == "eviction"} == {policy}

    report = verify_lines(iter(lines), path=str(out), expect_last_digest=summary["last_digest"])
    assert report.ok, report.violations[:5]
    assert report.records == summary["receipts"] == len(lines)
    assert report.kinds["eviction"] == summary["evictions"] > 0
    assert not report.truncated_tail
    assert not report.gaps


# --------------------------------------------------------------------------------------------
# Declared losses: what a full ChannelSink drops


def channel_stream(
    overflow: str,
    *,
    capacity: int,
    drain_every: int,
    evictions: int,
    hmac_key: bytes | None = None,
) -> tuple[list[bytes], str, list[bytes]]:
    """A manager feeding a FanoutSink of a JsonlSink (the whole stream) and a small
    ChannelSink whose consumer drains it only every ``drain_every`` receipts.

    Returns what the consumer got (drained records, then the loss records that never made it
    onto the queue), the run's last digest, and the whole stream.
    """
    import io

    from kvreceipts.manager import KVCacheManager
    from kvreceipts.sinks import BaseSink, ChannelSink, FanoutSink, JsonlSink

    whole = io.BytesIO()
    channel = ChannelSink(capacity, overflow)  # type: ignore[arg-type]
    received: list[Receipt] = []

    class SlowConsumer(BaseSink):
        name = "consumer"

        def deliver(self, record: Receipt) -> None:
            if record.seq % drain_every == drain_every - 1:
                received.extend(channel.drain())

    manager = KVCacheManager(
        CachingConfig(kv_cache_size_mb=0.0625, enable_receipts=True),  # room for 8 entries
        sink=FanoutSink([JsonlSink(whole), channel, SlowConsumer()]),
        hmac_key=hmac_key,
    )
    for i in range(evictions + 8):
        manager.get_or_create_cache(f"session-{i}", 16)
    manager.shutdown()
    assert manager.evictions == evictions
    assert manager.last_digest is not None
    received.extend(channel.drain())
    unqueued = [loss for loss in channel.losses if all(loss is not r for r in received)]
    lines = [r.line for r in received] + [loss.line for loss in unqueued]
    assert channel.counters.dropped > 0
    return lines, manager.last_digest, whole.getvalue().splitlines(keepends=True)


@pytest.mark.needs("receipts")
@pytest.mark.parametrize("overflow", ["drop_newest", "drop_oldest"])
@pytest.mark.parametrize("drain_every", [7, 1000])
def test_a_stream_a_full_channel_dropped_from_verifies_with_declared_losses(
    overflow: str, drain_every: int
) -> None:
    lines, last, whole = channel_stream(overflow, capacity=4, drain_every=drain_every,
                                        evictions=60)  # fmt: skip
    assert verify_lines(iter(whole), expect_last_digest=last).ok

    report = verify_lines(iter(lines), expect_last_digest=last)
    assert report.ok, report.violations
    all_seqs = {r["seq"] for r in records_of(whole)}
    got = {r["seq"] for r in records_of(lines) if r["kind"] != "loss"}
    dropped = all_seqs - got
    declared = {
        seq for gap in report.declared_losses for seq in range(gap.first_seq, gap.last_seq + 1)
    }
    assert dropped
    assert declared == dropped
    assert all(gap.declared_by == "channel" for gap in report.declared_losses)
    assert sum(gap.count for gap in report.declared_losses) == len(dropped)

    # Deleting any one loss record leaves its gap unexplained: a "gap" violation, or for the
    # records that ended the run, a chain that stops short of the anchor.
    last_kept = max(got)
    for i, line in enumerate(lines):
        if b'"kind":"loss"' in line:
            cut = verify_lines(iter(lines[:i] + lines[i + 1 :]), expect_last_digest=last)
            assert not cut.ok
            trailing = orjson.loads(line)["first_seq"] > last_kept
            assert ("anchor" if trailing else "gap") in checks(cut)


@pytest.mark.needs("receipts")
def test_deleting_a_loss_record_in_the_middle_is_a_gap_violation() -> None:
    lines, last, _ = channel_stream("drop_newest", capacity=4, drain_every=9, evictions=40)
    middle = [
        i
        for i, line in enumerate(lines)
        if b'"kind":"loss"' in line
        and orjson.loads(line)["last_seq"] < max(orjson.loads(x)["seq"] for x in lines)
    ]
    assert middle
    cut = lines[: middle[0]] + lines[middle[0] + 1 :]
    report = verify_lines(iter(cut), expect_last_digest=last)
    assert not report.ok
    gap = next(v for v in report.violations if v.check == "gap")
    assert "no loss record explains" in gap.message


@pytest.mark.needs("receipts")
def test_a_loss_record_forged_to_hide_a_deletion_needs_the_key() -> None:
    for key in (None, HMAC_KEY):
        _, last, whole = channel_stream(
            "drop_newest", capacity=4, drain_every=9, evictions=30, hmac_key=key
        )
        records = records_of(whole)
        first, lost = records[10], records[12]
        forged: dict[str, Any] = {
            "schema": lost["schema"], "kind": "loss", "run_id": lost["run_id"],
            "seq": 12, "timestamp": lost["timestamp"], "sim_time_ms": lost["sim_time_ms"],
            "prev_digest": first["prev_digest"], "sink": "channel", "first_seq": 10,
            "last_seq": 12, "count": 3, "last_lost_digest": lost["digest"],
        }  # fmt: skip
        _reseal_plain(forged)
        doctored = [*whole[:10], _encode(forged), *whole[13:]]
        report = verify_lines(iter(doctored), key=key, expect_last_digest=last)
        if key is None:
            # Without a key the deletion passes for a sink's drop: ok, with a declared loss
            # (the CLI warns about it). This is what signing is for.
            assert report.ok, report.violations
            assert [(g.first_seq, g.last_seq) for g in report.declared_losses] == [(10, 12)]
        else:
            assert not report.ok
            assert [(v.line, v.check) for v in report.violations] == [(11, "digest")]


# --------------------------------------------------------------------------------------------
# Torn lines, blank lines, empty files, several runs


@pytest.fixture
def small_run(tmp_path: Path) -> tuple[list[bytes], str]:
    return _arena_run(tmp_path / "small.jsonl", hmac_key=None)


@pytest.mark.needs("receipts")
def test_a_torn_last_line_is_a_truncated_tail_not_a_failure(
    small_run: tuple[list[bytes], str],
) -> None:
    lines, _ = small_run
    for cut in (1, len(lines[-1]) // 2, len(lines[-1]) - 2):
        torn = [*lines[:-1], lines[-1][:cut]]
        report = verify_lines(iter(torn))
        assert report.ok, report.violations
        assert report.truncated_tail
        assert report.records == len(lines) - 1
    # A whole last line without its newline is a record, not a tear.
    report = verify_lines(iter([*lines[:-1], lines[-1].rstrip(b"\n")]))
    assert report.ok
    assert not report.truncated_tail
    assert report.records == len(lines)
    # With the anchor, the record lost to the tear is noticed.
    _, last = small_run
    anchored = verify_lines(iter([*lines[:-1], lines[-1][:20]]), expect_last_digest=last)
    assert checks(anchored) == {"anchor"}


@pytest.mark.needs("receipts")
def test_a_torn_line_in_the_middle_is_a_json_violation(
    small_run: tuple[list[bytes], str],
) -> None:
    lines, _ = small_run
    torn = [*lines[:5], lines[5][: len(lines[5]) // 2] + b"\n", *lines[6:]]
    report = verify_lines(iter(torn))
    assert not report.ok
    assert not report.truncated_tail
    first = report.violations[0]
    assert (first.line, first.check) == (6, "json")


@pytest.mark.needs("receipts")
def test_blank_lines_are_ignored(small_run: tuple[list[bytes], str]) -> None:
    lines, last = small_run
    padded = [b"\n", *lines[:3], b"   \n", b"\r\n", *lines[3:], b"\n"]
    report = verify_lines(iter(padded), expect_last_digest=last)
    assert report.ok, report.violations
    assert report.records == len(lines)
    # Numbers name physical lines, blank ones included.
    bad = [*padded[:6], b"{not json}\n", *padded[6:]]
    assert verify_lines(iter(bad)).violations[0].line == 7


def test_an_empty_file_is_ok_with_no_records() -> None:
    for stream in ([], [b"\n", b"  \n"]):
        report = verify_lines(iter(stream))
        assert report.ok
        assert report.records == 0
        assert report.last_digest is None
        assert not report.truncated_tail


@pytest.mark.needs("receipts")
def test_two_runs_in_one_file_verify(tmp_path: Path) -> None:
    first, _ = _arena_run(tmp_path / "a.jsonl", hmac_key=None)
    second, last = simulate_to_file(
        tmp_path / "b.jsonl", capacity_mb=8, workload="burst", requests=200, allocator="arena"
    )
    report = verify_lines(iter(first + second), expect_last_digest=last)
    assert report.ok, report.violations[:5]
    assert len(report.runs) == 2
    assert sorted(report.runs.values()) == sorted([len(first), len(second)])
    # Interleaving two runs is fine as well: each run is its own chain.
    mixed = [line for pair in zip(first, second, strict=False) for line in pair]
    mixed += first[len(second) :] + second[len(first) :]
    assert verify_lines(iter(mixed)).ok


@pytest.mark.needs("receipts")
def test_the_same_run_appended_twice_fails(small_run: tuple[list[bytes], str]) -> None:
    lines, last = small_run
    report = verify_lines(iter(lines + lines), expect_last_digest=last)
    assert not report.ok
    assert "seq" in checks(report)
    first = next(v for v in report.violations if v.check == "seq")
    assert first.line == len(lines) + 1


# --------------------------------------------------------------------------------------------
# Memory: the verifier streams


def sealed_stream(n: int) -> Iterator[bytes]:
    """``n`` valid, chained arena-style eviction receipts, built one at a time."""
    from kvreceipts.clock import SIM_EPOCH, format_timestamp
    from kvreceipts.receipts import KvEvictionReport
    from kvreceipts.stats import KVCacheStatistics

    sealer = Sealer()
    total, block, full = 1 << 30, 1 << 20, 1000

    def stats(sessions: int, evictions: int, seq: int) -> KVCacheStatistics:
        return KVCacheStatistics.compute(
            sessions=sessions, used_bytes=sessions * block, total_bytes=total, hits=seq,
            misses=seq + 1000, tokens=sessions * 64, fragmentation=0.0, evictions=evictions,
        )  # fmt: skip

    for seq in range(n):
        report = KvEvictionReport(
            run_id="streaming",
            seq=seq,
            timestamp=format_timestamp(SIM_EPOCH + seq / 1000),
            sim_time_ms=float(seq),
            session_id=f"session-{seq}",
            block_offset=(seq % full) * block,
            block_size_bytes=block,
            before=stats(full, seq, seq),
            after=stats(full - 1, seq + 1, seq),
            reason="lru",
            policy="lru",
            trigger_session_id=f"session-{seq + full}",
        )
        yield sealer.seal(report)


def _peak_while_verifying(n: int) -> tuple[int, VerifyReport]:
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    report = verify_lines(sealed_stream(n))
    return tracemalloc.get_traced_memory()[1] - base, report


@pytest.mark.needs("receipts")
def test_verifying_does_not_hold_the_file() -> None:
    n = 200
    tracemalloc.start()
    try:
        verify_lines(sealed_stream(20))  # warm caches (regexes, formatters) first
        small, small_report = _peak_while_verifying(n)
        large, large_report = _peak_while_verifying(10 * n)
    finally:
        tracemalloc.stop()
    assert small_report.ok
    assert large_report.ok, large_report.violations[:3]
    assert (small_report.records, large_report.records) == (n, 10 * n)
    assert large <= 1.2 * small, (small, large)
    # The bound means something: holding the extra 9n lines would cost far more than 20%.
    line_bytes = len(next(sealed_stream(1)))
    assert 9 * n * line_bytes > 2 * small


# Keep the helpers honest: the plain-SHA-256 reseal is what the sealer computes.
@pytest.mark.needs("receipts")
def test_plain_reseal_matches_the_sealer(small_run: tuple[list[bytes], str]) -> None:
    lines, _ = small_run
    record = orjson.loads(lines[0])
    digest = record["digest"]
    _reseal_plain(record)
    assert (
        record["digest"]
        == digest
        == hashlib.sha256(canonical({k: v for k, v in record.items() if k != "digest"})).hexdigest()
    )
    assert _encode(record) == lines[0]


@pytest.mark.needs("receipts")
def test_a_repeated_key_or_a_reformatted_line_is_caught() -> None:
    from kvreceipts import CachingConfig, ChannelSink, KVCacheManager

    sink = ChannelSink(16)
    manager = KVCacheManager(CachingConfig(enable_receipts=True, kv_cache_size_mb=1), sink=sink)
    for name in "abcde":
        manager.get_or_create_cache(name, 1000)  # 512,000 bytes each: two fit, then evictions
    lines = [record.line for record in sink.drain()]
    assert verify_lines(iter(lines)).ok
    # orjson keeps the last of two equal keys, so the digest still matches what it parses;
    # a reader that keeps the first would see "manual". The bytes check catches it.
    doubled = b'{"reason":"manual",' + lines[0][1:]
    assert orjson.loads(doubled)["reason"] == "lru"
    report = verify_lines(iter([doubled, *lines[1:]]))
    assert [(v.line, v.check) for v in report.violations] == [(1, "canonical")]
    pretty = json.dumps(orjson.loads(lines[1]), indent=1).replace("\n", " ").encode() + b"\n"
    report = verify_lines(iter([lines[0], pretty]))
    assert [(v.line, v.check) for v in report.violations] == [(2, "canonical")]
