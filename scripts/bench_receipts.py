"""The receipts rows of scripts/bench.py: the paged LRU replay against its peers, with
receipts on and the feature off, and receipt files as a user makes and checks them.
"""

from __future__ import annotations

import functools
import statistics
import subprocess
from pathlib import Path
from typing import Any

from bench_common import (
    CONVERSATION,
    SHORT_PAIR_TURNS,
    Row,
    _kvreceipts,
    _timed,
    libcachesim_lru,
    load_requests,
    ordered_dict_lru,
    paged_replay,
    paired,
    write_oracle_general,
)


def bench_paged(reps: int, rows: list[Row], tmp: str) -> None:
    """Items 1-3: paged LRU replay vs its peers; receipts on; feature off vs disabled."""
    from kvreceipts import features
    from kvreceipts.sinks import JsonlSink

    requests = load_requests(CONVERSATION)
    blocks = [h for r in requests for h in r.block_hashes]
    capacity = int(len(set(blocks)) * 0.05)
    oracle_file = str(Path(tmp) / "conversation.oracleGeneral")
    write_oracle_general(blocks, oracle_file)

    replay = functools.partial(paged_replay, requests, capacity)
    turns = SHORT_PAIR_TURNS * reps
    vs_bare = paired(replay, lambda: ordered_dict_lru(blocks, capacity), turns)
    vs_lcs = paired(replay, lambda: libcachesim_lru(oracle_file, capacity, len(blocks)), turns)
    hits = paged_replay(requests, capacity).hits
    assert (
        hits
        == ordered_dict_lru(blocks, capacity)
        == libcachesim_lru(oracle_file, capacity, len(blocks))
    ), "the three LRUs disagree"
    refs = f"{len(requests):,} requests, {len(blocks):,} block refs, capacity {capacity:,}"
    rows.append(Row("paged LRU replay, receipts off", vs_bare.a * 1000, "ms", note=refs))
    rows.append(Row("bare OrderedDict LRU loop", vs_bare.b * 1000, "ms"))
    rows.append(Row("libCacheSim LRU (C, process_trace)", vs_lcs.b * 1000, "ms"))
    rows.append(Row("ratio: paged / OrderedDict", vs_bare.ratio, "x", "<= 2.0",
                    vs_bare.ratio <= 2.0))  # fmt: skip
    rows.append(Row("ratio: paged / libCacheSim", vs_lcs.ratio, "x", "<= 5", vs_lcs.ratio <= 5))

    out = Path(tmp) / "receipts.jsonl"

    def remove_output() -> None:  # untimed: freeing the last turn's 130 MB is no sealing
        out.unlink(missing_ok=True)

    def with_receipts() -> Any:
        return paged_replay(requests, capacity, sink=JsonlSink(out, flush="batch"), receipts=True)

    on = paired(with_receipts, replay, reps, remove_output)
    remove_output()
    emitted = with_receipts().receipts_emitted
    rate = emitted / on.a
    note = f"{emitted:,} receipts, chained, flush=batch, fsync on close"
    rows.append(Row("paged LRU replay, receipts on -> JSONL", on.a * 1000, "ms", note=note))
    rows.append(Row("receipts per second", rate, "/s", ">= 150,000", rate >= 150_000))
    rows.append(Row("ratio: receipts on / off", on.ratio, "x"))

    def without_tuning() -> Any:
        with features.overridden("receipts"):
            return with_receipts()

    lean = paired(without_tuning, with_receipts, reps, remove_output)
    rows.append(Row("receipts per second, tuning off", emitted / lean.a, "/s",
                    note="no performance block: smaller records"))  # fmt: skip

    def feature_off() -> Any:
        with features.overridden(""):
            return paged_replay(requests, capacity)

    def present_but_disabled() -> Any:
        sink = JsonlSink(out, flush="batch")
        return paged_replay(requests, capacity, sink=sink, receipts=False)

    remove_output()  # else the kernel writes the last turn's 130 MB back while the pair runs
    gate = paired(present_but_disabled, feature_off, turns)
    rows.append(Row("receipts feature off", gate.b * 1000, "ms"))
    rows.append(Row("feature on, sink set, enable_receipts=false", gate.a * 1000, "ms"))
    rows.append(Row("ratio: disabled / feature off", gate.ratio, "x", "<= 1.02",
                    gate.ratio <= 1.02))  # fmt: skip


def bench_receipt_files(reps: int, rows: list[Row], tmp: str) -> None:
    """Issue 16: lean receipts as a user makes and checks them, whole processes."""
    out = Path(tmp) / "conversation.jsonl"
    replay = [*_kvreceipts(), "simulate", "--trace", str(CONVERSATION), "--capacity-blocks",
              "9139", "-q", "--format", "json"]  # fmt: skip

    def receipts_on() -> None:
        subprocess.run([*replay, "-o", str(out)], check=True, capture_output=True)

    def receipts_off() -> None:
        subprocess.run([*replay, "--no-receipts"], check=True, capture_output=True)

    pair = paired(receipts_on, receipts_off, reps, lambda: out.unlink(missing_ok=True))
    receipts_on()  # the file the rows below read (the pair's last turn may have removed it)
    lines = sizes = 0
    with out.open("rb") as stream:
        for line in stream:
            if b'"kind":"eviction"' in line:
                lines += 1
                sizes += len(line)
    mean = sizes / lines
    rows.append(Row("mean bytes per eviction line, lean layout", mean, "B", "<= 600",
                    mean <= 600, f"{lines:,} eviction lines"))  # fmt: skip
    rows.append(Row("simulate -o, receipts on (process)", pair.a, "s"))
    rows.append(Row("simulate --no-receipts (process)", pair.b, "s"))
    rows.append(Row("ratio: receipts on / off, whole process", pair.ratio, "x", "<= 5",
                    pair.ratio <= 5))  # fmt: skip
    records = sum(1 for _ in out.open("rb"))
    check = [*_kvreceipts(), "verify", str(out), "--format", "json"]
    times = [_timed(lambda: subprocess.run(check, check=True, capture_output=True))
             for _ in range(reps + 1)][1:]  # fmt: skip
    rate = records / statistics.median(times)
    rows.append(Row("verify, records per second (process)", rate, "/s", ">= 100,000",
                    rate >= 100_000, f"{records:,} records"))  # fmt: skip
    plain = out.stat().st_size
    packed = {}
    for suffix in (".zst", ".gz"):  # the same (deterministic) run, written compressed
        target = out.with_name(out.name + suffix)
        target.unlink(missing_ok=True)
        subprocess.run([*replay, "-o", str(target)], check=True, capture_output=True)
        packed[suffix] = target.stat().st_size / plain
    rows.append(Row("file size, .zst / plain (the same run)", packed[".zst"], "", "<= 0.15",
                    packed[".zst"] <= 0.15, f"{plain:,} B plain; .gz / plain "
                    f"{packed['.gz']:.3f}"))  # fmt: skip
