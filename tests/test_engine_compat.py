"""``kvreceipts watch`` against the engines' own publishers (issue 27), not our stand-in.

Each release's ``ZmqEventPublisher`` (vLLM 0.10.2 and 0.34.0, SGLang 0.5.10 and 0.5.23, from
their wheels, see ``engine_wheels``) is driven the way the block pool drives it: chained
stores, removals, offload to CPU, hybrid groups and reuse reports (where the release has the
fields), a burst while the watch is stopped (SIGSTOP) so that PUB drops and the replay socket
must give the batches back, ``AllBlocksCleared``, and a restart whose first batches fall in
the slow-joiner window. A real ``kvreceipts watch`` process on 127.0.0.1 writes the receipts;
they are checked against a reference model fed the batches the driver published, less those
the watch declared lost: every count per tier, the resident sets and every residency time.

Runs in the ``engine-compat`` nox session (``KVRECEIPTS_ENGINE_COMPAT=1``); wheels are
downloaded once and cached.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import msgspec
import orjson
import pytest

# A mark, not a module-level skip: a run that selects other tests by name (-k) then counts
# nothing skipped here (the happy and guard steps require exactly their own runs).
pytestmark = [
    pytest.mark.engine_compat,
    pytest.mark.needs("receipts"),
    pytest.mark.skipif(os.environ.get("KVRECEIPTS_ENGINE_COMPAT") != "1",
                       reason="the engine-compat nox session runs these "
                       "(KVRECEIPTS_ENGINE_COMPAT=1)"),
]  # fmt: skip
zmq = pytest.importorskip("zmq")

import engine_wheels  # noqa: E402

if TYPE_CHECKING:
    from pathlib import Path


RELEASES = [("vllm", "0.10.2"), ("vllm", "0.34.0"), ("sglang", "0.5.10"), ("sglang", "0.5.23")]
BLOCK = 16


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_free(*ports: int, timeout: float = 20.0) -> None:
    """Until each port can be bound again (as ZMQ binds: SO_REUSEADDR)."""
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(("", port))
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
            time.sleep(0.05)


class Driver:
    """Publishes through the engine's own publisher and keeps what it sent."""

    def __init__(self, module: Any, project: str, port: int, replay: int) -> None:
        self.m, self.project = module, project
        self.port, self.replay = port, replay
        self.fields = {f.name for f in msgspec.structs.fields(module.BlockStored)}
        self.removed_fields = {f.name for f in msgspec.structs.fields(module.BlockRemoved)}
        self.sent: list[tuple[int, int, float, list[dict[str, Any]]]] = []
        self.incarnation = -1
        self.ts = 1_000.0
        self.next_hash = 1
        self.pub: Any = None

    @property
    def signed(self) -> bool:
        return self.project == "sglang"  # SGLang's hashes are signed 64-bit

    def hashes(self, n: int) -> list[int]:
        out = []
        for _ in range(n):
            value = (self.next_hash * 0x9E3779B97F4A7C15) & (2**64 - 1)
            if self.signed and value >= 2**63:
                value -= 2**64
            out.append(value)
            self.next_hash += 1
        return out

    def start(self, *, hwm: int = 100_000) -> None:
        rank = "data_parallel_rank" if self.project == "vllm" else "attn_dp_rank"
        wait_free(self.port, self.replay)  # the old process's ports take a moment
        self.pub = self.m.ZmqEventPublisher(**{rank: 0}, endpoint=f"tcp://*:{self.port}",
                                            replay_endpoint=f"tcp://*:{self.replay}",
                                            hwm=hwm)  # fmt: skip
        self.start_watching()
        self.incarnation += 1
        self.seq = 0

    def start_watching(self) -> None:
        """Watch the PUB socket for the subscriber's handshake (right after binding)."""
        self.monitor = self.pub._pub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)

    def wait_connected(self, timeout: float = 20.0, *, required: bool = True) -> None:
        """Until the watch's SUB completed its handshake with the PUB (its subscription
        follows at once). A handshake before the monitor was attached is missed: then, when
        not ``required``, a short wait stands for it.
        """
        try:
            if not self.monitor.poll(int((timeout if required else 2.0) * 1000)) and required:
                raise TimeoutError("the watch did not connect")
        finally:
            self.pub._pub.disable_monitor()
            self.monitor.close(0)
        time.sleep(0.3)

    def stop(self) -> None:
        self.pub.shutdown()

    def stored(self, hashes: list[int], parent: int | None, medium: str = "GPU",
               tokens: int | None = None, **extra: Any) -> Any:  # fmt: skip
        count = len(hashes) * BLOCK if tokens is None else tokens
        values = {"block_hashes": hashes, "parent_block_hash": parent,
                  "token_ids": [30_000 + i for i in range(count)], "block_size": BLOCK,
                  "lora_id": None, "medium": medium, "lora_name": None, **extra}  # fmt: skip
        return self.m.BlockStored(**{k: v for k, v in values.items() if k in self.fields})

    def removed(self, hashes: list[int], medium: str = "GPU", **extra: Any) -> Any:
        values = {"block_hashes": hashes, "medium": medium, **extra}
        return self.m.BlockRemoved(**{k: v for k, v in values.items()
                                      if k in self.removed_fields})  # fmt: skip

    def batch(self, events: list[Any]) -> None:
        self.ts += 0.25
        rank = "data_parallel_rank" if self.project == "vllm" else "attn_dp_rank"
        self.pub.publish(self.m.KVEventBatch(ts=self.ts, events=events, **{rank: 0}))
        self.sent.append((self.incarnation, self.seq, self.ts, [
            {"type": type(e).__name__, **msgspec.structs.asdict(e)} for e in events
        ]))  # fmt: skip
        self.seq += 1


class Reference:
    """What the watch should conclude from the batches it processed."""

    def __init__(self) -> None:
        self.tiers: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.removals: list[tuple[Any, ...]] = []
        self.clears: list[tuple[int, int]] = []

    def tier(self, inc: int, event: dict[str, Any]) -> dict[str, Any]:
        medium = event.get("medium")
        key = (inc, 0, medium.upper() if medium else None, event.get("group_idx"),
               event.get("locality"), event.get("ownership"))  # fmt: skip
        return self.tiers.setdefault(key, {"resident": {}, "stores": 0, "hits": 0,
                                           "removals": 0})  # fmt: skip

    def feed(self, inc: int, ts: float, events: list[dict[str, Any]]) -> None:
        for event in events:
            kind = event["type"]
            if kind == "BlockStored":
                tier = self.tier(inc, event)
                for h in event["block_hashes"]:
                    if h in tier["resident"]:
                        tier["hits"] += 1
                    else:
                        tier["resident"][h] = ts
                        tier["stores"] += 1
            elif kind == "BlockRemoved":
                tier = self.tier(inc, event)
                for h in event["block_hashes"]:
                    stored = tier["resident"].pop(h, None)
                    tier["removals"] += 1
                    residency = None if stored is None else round((ts - stored) * 1000.0, 3)
                    medium = event.get("medium")
                    self.removals.append((h, medium.upper() if medium else None,
                                          event.get("group_idx"), residency))  # fmt: skip
            else:
                count = kept = 0
                for key, tier in self.tiers.items():
                    if key[0] != inc:
                        continue
                    if key[2] in ("GPU", None):
                        count += len(tier["resident"])
                        tier["resident"].clear()
                    else:
                        kept += len(tier["resident"])
                self.clears.append((count, kept))


def settle(out: Path, quiet_s: float = 1.5, timeout: float = 120.0) -> None:
    """Until the watch's output stops growing: it has caught up with what was sent."""
    deadline = time.monotonic() + timeout
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = out.stat().st_size if out.exists() else 0
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.1)


def scenario(driver: Driver, watch: subprocess.Popen[bytes], out: Path) -> None:
    hybrid = "group_idx" in driver.fields
    reuse = "session_id" in driver.fields
    cpu = "CPU_PINNED" if driver.project == "sglang" else "CPU"
    driver.start(hwm=1_000)
    driver.wait_connected()
    chains: list[list[int]] = []
    for _ in range(40):  # stores with parents, as prompts fill blocks
        chain = driver.hashes(4)
        chains.append(chain)
        driver.batch([driver.stored(chain[:2], None), driver.stored(chain[2:], chain[1],
                                                                    tokens=BLOCK + 5)])  # fmt: skip
    for chain in chains[:10]:  # evictions: one BlockRemoved per hash, as vLLM sends them
        driver.batch([driver.removed([h]) for h in chain])
    for chain in chains[10:15]:  # offload to CPU, then the GPU copy goes
        driver.batch([driver.stored(chain, None, medium=cpu), driver.removed(chain)])
    if hybrid:  # full + sliding window: one hash per group
        shared = driver.hashes(6)
        driver.batch([driver.stored(shared, None, group_idx=0, kv_cache_spec_kind="full"),
                      driver.stored(shared, None, group_idx=1,
                                    kv_cache_spec_kind="sliding_window",
                                    kv_cache_spec_sliding_window=32)])  # fmt: skip
        driver.batch([driver.removed(shared[:4], group_idx=1)])
    if reuse:  # kv_cache_report_mode="full": cached blocks reported again, no parent
        driver.batch([driver.stored(chains[20], None, session_id="s-1"),
                      driver.stored(chains[21][:2], None, session_id="s-2")])  # fmt: skip
    os.kill(watch.pid, signal.SIGSTOP)  # the watch stalls: PUB drops past its hwm
    try:
        live: list[int] = []
        for _ in range(6_000):
            fresh = driver.hashes(64)
            gone, live = live, fresh
            driver.batch([driver.stored(fresh, None), driver.removed(gone)])
        time.sleep(1.0)
    finally:
        os.kill(watch.pid, signal.SIGCONT)
    settle(out)
    driver.batch([driver.removed(chains[30])])
    driver.batch([driver.m.AllBlocksCleared()])
    driver.batch([driver.stored(driver.hashes(3), None)])
    settle(out)
    driver.stop()
    # A restart: the new process's first batches go out before the watch reconnects.
    driver.start()
    early = driver.hashes(3)
    driver.batch([driver.stored(early, None)])
    driver.batch([driver.removed(early[:1])])
    driver.wait_connected(required=False)
    for _ in range(5):
        chain = driver.hashes(2)
        driver.batch([driver.stored(chain, None)])
    driver.batch([driver.removed(early[1:])])
    settle(out)
    driver.stop()
    # Another restart, after a short life: the new process's first batch seen is at or past
    # the old one's next seq, so only the connection and the replay buffer can tell.
    driver.start()
    for _ in range(12):
        driver.batch([driver.stored(driver.hashes(1), None)])
    driver.wait_connected(required=False)
    driver.batch([driver.removed([early[0]])])
    driver.batch([driver.stored(driver.hashes(2), None)])
    settle(out)
    driver.stop()


@pytest.mark.parametrize(("project", "version"), RELEASES, ids=[f"{p}-{v}" for p, v in RELEASES])
def test_watch_follows_the_engines_own_publisher(project: str, version: str,
                                                 tmp_path: Path) -> None:  # fmt: skip
    module = engine_wheels.load(project, version)
    port, replay = free_port(), free_port()
    out = tmp_path / "watch.jsonl"
    watch = subprocess.Popen(
        [sys.executable, "-m", "kvreceipts", "watch", f"tcp://127.0.0.1:{port}",
         "--replay-endpoint", f"tcp://127.0.0.1:{replay}", "--replay-timeout", "10",
         "-f", "jsonl", "-o", str(out), "--idle-timeout", "10", "--allow-loss"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    driver = Driver(module, project, port, replay)
    try:
        scenario(driver, watch, out)
        _, stderr = watch.communicate(timeout=120)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.communicate()
    assert watch.returncode == 0, stderr.decode()
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    lost: set[tuple[int, int]] = set()
    incarnation = 0
    for record in records:  # the watch's incarnations follow its restart receipts
        if record["kind"] == "engine_restart":
            incarnation = record["incarnation"]
        if record["kind"] == "engine_loss":
            lost.update((incarnation, s) for s in range(record["first_engine_seq"],
                                                        record["last_engine_seq"] + 1))  # fmt: skip
    reference = Reference()
    for inc, seq, ts, events in driver.sent:
        if (inc, seq) not in lost:
            reference.feed(inc, ts, events)
    (tally,) = [r for r in records if r["kind"] == "engine_tally"]
    assert tally["incarnations"] == 3
    got = {(t["incarnation"], t["dp_rank"], t["medium"], t["group_idx"], t["locality"],
            t["ownership"]): (t["stores"], t["hits"], t["removals"], t["resident"])
           for t in tally["tiers"]}  # fmt: skip
    want = {key: (t["stores"], t["hits"], t["removals"], len(t["resident"]))
            for key, t in reference.tiers.items()}  # fmt: skip
    assert got == want
    removals = [(r["block_hash"], r["medium"], r["group_idx"], r["residency_ms"])
                for r in records if r["kind"] == "engine_removal"]  # fmt: skip
    assert removals == reference.removals
    clears = [(r["count"], r["kept"]) for r in records if r["kind"] == "engine_clear"]
    assert clears == reference.clears
    first, second = [r for r in records if r["kind"] == "engine_restart"]
    assert first["evidence"] in {"seq_back", "replay", "reconnect"}
    assert second["evidence"] in {"replay", "reconnect"}, second  # seq alone would miss it
    sent = len(driver.sent)
    # Every batch the driver sent was processed or declared lost; the burst needed replay.
    assert tally["batches"] + tally["lost_batches"] == sent
    assert tally["lost_batches"] == len(lost)
    recovered = tally["recovered_batches"]
    assert recovered > 0, "the burst should have needed the replay socket"
    print(
        f"{project} {version}: {sent} batches sent, {len(lost)} declared lost, "
        f"{recovered} recovered by replay, {len(removals)} removals checked"
    )
    print("\n".join(line for line in stderr.decode().splitlines() if "replay" in line))
