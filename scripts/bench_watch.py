"""The watch rows of scripts/bench.py: ``watch --from`` a recording, and a live watch of
the tests' publisher and of vLLM 0.34.0's own.
"""

from __future__ import annotations

import importlib
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_common import ROOT, Row, _kvreceipts, _timed

WATCH_REMOVALS = 1_000_000
WATCH_PER_BATCH = 8


def make_watch_recording(path: str, removals: int, per_batch: int = WATCH_PER_BATCH) -> int:
    """A recording as ``watch --record`` writes it: batches of one ``BlockStored`` of
    ``per_batch`` new hashes and ``per_batch`` ``BlockRemoved`` events of one hash each (vLLM's
    shape), removing what was stored four batches earlier. Returns the removal events.
    """
    import msgspec

    from kvreceipts.engine.recording import FINISH, MESSAGE, Recorder

    start = 1_750_000_000.0
    header = {"run_id": "bench", "start_s": start, "source": "watch", "endpoint": "bench",
              "topic": "", "replay_endpoint": None, "regret_window_s": 60.0}  # fmt: skip
    recorder = Recorder(path, header)
    encode = msgspec.msgpack.Encoder().encode
    batches = removals // per_batch + 4
    for b in range(batches):
        stored = {"type": "BlockStored", "block_hashes": list(range(b * per_batch,
                  (b + 1) * per_batch)), "parent_block_hash": None, "token_ids": [],
                  "block_size": 16, "lora_id": None, "medium": "GPU"}  # fmt: skip
        gone = range((b - 4) * per_batch, (b - 3) * per_batch) if b >= 4 else range(0)
        events = [stored, *({"type": "BlockRemoved", "block_hashes": [h], "medium": "GPU"}
                            for h in gone)]  # fmt: skip
        ts = start + b / 1000
        recorder.entry(MESSAGE, ts + 0.0002, [b"", b.to_bytes(8, "big"), encode([ts, events, 0])])
    recorder.entry(FINISH, start + batches / 1000 + 1, [])
    recorder.close()
    return (batches - 4) * per_batch


def bench_watch_from(reps: int, rows: list[Row], tmp: str, removals: int) -> None:
    """``watch --from`` a recording, receipts to a file, as a whole process."""
    recording = str(Path(tmp) / "watch.kvrec")
    events = make_watch_recording(recording, removals)
    out = Path(tmp) / "watch.jsonl"

    def run() -> None:
        subprocess.run([*_kvreceipts(), "watch", "--from", recording, "-o", str(out), "-f",
                        "table", "-q"], check=True, stdout=subprocess.DEVNULL)  # fmt: skip

    times, cpu = [], []
    for _ in range(max(1, reps)):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        times.append(_timed(run, lambda: out.unlink(missing_ok=True)))
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    lines = sum(1 for _ in out.open("rb"))
    assert lines == events + 3, f"{lines} lines for {events} removals (+ open, tally, close)"
    rate = events / statistics.median(times)
    # A busy machine stretches the wall time; the process's own CPU time says what it costs.
    rows.append(Row(f"watch --from, {events:,} removal events, receipts to a file (process)",
                    rate, "ev/s", ">= 100,000", rate >= 100_000,
                    f"median of {len(times)}: {statistics.median(times):.2f} s wall, "
                    f"{statistics.median(cpu):.2f} s CPU ({events / statistics.median(cpu):,.0f}"
                    " ev/s of CPU time); load average "
                    f"{os.getloadavg()[0]:.1f}"))  # fmt: skip


def bench_watch_live(
    rows: list[Row], tmp: str, seconds: float, rate: int, *, replay: bool = True
) -> None:
    """A live publisher at ``rate`` batches/s of 8 events for ``seconds``: every batch is
    processed or declared lost (engine_loss), none vanishes.
    """
    import orjson

    sys.path.insert(0, str(ROOT / "tests"))
    publisher: Any = importlib.import_module("watch_publisher")  # the tests' engine stand-in
    stored, removed = publisher.stored, publisher.removed

    out = Path(tmp) / "live.jsonl"
    out.unlink(missing_ok=True)
    with publisher.Publisher() as pub:
        proc = subprocess.Popen(
            [*_kvreceipts(), "watch", pub.endpoint, "-o", str(out), "-f", "table", "-q",
             "--idle-timeout", "3",
             *(["--replay-endpoint", str(pub.replay_endpoint)] if replay else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        pub.wait_subscribed()
        total = int(seconds * rate)
        begin = time.perf_counter()
        for n in range(total):
            ahead = begin + n / rate - time.perf_counter()
            if ahead > 0.001:
                time.sleep(ahead)
            new = [stored([4 * n + k]) for k in range(4)]
            pub.batch([*new, *(removed([4 * (n - 1) + k]) for k in range(4) if n)])
        sent_s = time.perf_counter() - begin
        _, stderr = proc.communicate(timeout=600)
    seen: set[int] = set()
    declared: set[int] = set()
    for line in out.open("rb"):
        record = orjson.loads(line)
        if record["kind"] == "engine_removal":
            seen.add(record["engine_seq"])
        elif record["kind"] == "engine_loss":
            declared.update(range(record["first_engine_seq"], record["last_engine_seq"] + 1))
    seen.add(0)  # the first batch removes nothing
    vanished = total - len(seen | declared)
    rows.append(Row(f"watch live{'' if replay else ' (no replay socket)'}: {rate:,} batches/s"
                    f" x 8 events for {seconds:g} s, lost",
                    len(declared), "batch", "0 or declared", vanished == 0,
                    f"{total:,} sent in {sent_s:.1f} s; {len(declared):,} declared lost, "
                    f"{vanished:,} unaccounted; exit {proc.returncode}"
                    + (f": {stderr.decode().strip().splitlines()[-1]}" if proc.returncode
                       else "")))  # fmt: skip


def bench_watch_vllm(rows: list[Row], tmp: str, seconds: float, rate: int) -> None:
    """The live watch against vLLM 0.34.0's own ``ZmqEventPublisher`` (its ``kv_events.py``
    from the wheel, see tests/engine_wheels.py) at ``rate`` batches/s of 8 events (4 stores,
    4 removals) for ``seconds``, replay socket on: every batch is processed or declared
    lost; the events/s the watch processed.
    """
    import orjson

    sys.path.insert(0, str(ROOT / "tests"))
    wheels: Any = importlib.import_module("engine_wheels")
    name = f"watch live, vLLM 0.34.0's publisher: {rate:,} batches/s x 8 events for {seconds:g} s"
    try:
        vllm = wheels.load("vllm", "0.34.0")
    except wheels.WheelUnavailableError as exc:
        rows.append(Row(name, 0, "batch", "0 or declared", False, f"not run: {exc}"))
        return
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    out = Path(tmp) / "vllm-live.jsonl"
    out.unlink(missing_ok=True)
    idle = 3.0
    proc = subprocess.Popen(
        [*_kvreceipts(), "watch", f"tcp://127.0.0.1:{ports[0]}", "--replay-endpoint",
         f"tcp://127.0.0.1:{ports[1]}", "-o", str(out), "-f", "table", "-q",
         "--idle-timeout", str(idle), "--allow-loss"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    pub = vllm.ZmqEventPublisher(data_parallel_rank=0, endpoint=f"tcp://*:{ports[0]}",
                                 replay_endpoint=f"tcp://*:{ports[1]}")  # fmt: skip
    monitor = pub._pub.get_monitor_socket(importlib.import_module("zmq").EVENT_HANDSHAKE_SUCCEEDED)
    monitor.poll(30_000)
    pub._pub.disable_monitor()
    monitor.close(0)
    time.sleep(0.5)  # the subscription follows the handshake
    stored, removed, batch = vllm.BlockStored, vllm.BlockRemoved, vllm.KVEventBatch
    total = int(seconds * rate)
    begin = time.perf_counter()
    wall0 = time.time()
    for n in range(total):
        ahead = begin + n / rate - time.perf_counter()
        if ahead > 0.001:
            time.sleep(ahead)
        events = [stored(block_hashes=[4 * n + k], parent_block_hash=None, token_ids=[1] * 16,
                         block_size=16, lora_id=None, medium="GPU", lora_name=None)
                  for k in range(4)]  # fmt: skip
        if n:
            events += [removed(block_hashes=[4 * (n - 1) + k], medium="GPU") for k in range(4)]
        pub.publish(batch(ts=wall0 + n / rate, events=events, data_parallel_rank=0))
    sent_s = time.perf_counter() - begin
    _, stderr = proc.communicate(timeout=900)
    end = time.time()
    pub.shutdown()
    processed = lost = 0
    for line in out.open("rb"):
        if b'"kind":"engine_tally"' in line:
            tally = orjson.loads(line)
            processed, lost = tally["batches"], tally["lost_batches"]
    busy_s = max(end - wall0 - idle, 1e-9)
    vanished = total - processed - lost
    rows.append(Row(name + ", lost", lost, "batch", "0 or declared", vanished == 0,
                    f"{total:,} sent in {sent_s:.1f} s ({total / sent_s:,.0f}/s); "
                    f"{processed:,} processed, {processed * 8 / busy_s:,.0f} events/s over "
                    f"{busy_s:.1f} s; {lost:,} declared lost, {vanished:,} unaccounted; exit "
                    f"{proc.returncode}; load average {os.getloadavg()[0]:.1f}"
                    + (f": {stderr.decode().strip().splitlines()[-1]}" if proc.returncode
                       else "")))  # fmt: skip
