"""Hostile input files, as an attacker would write them (issue 26), and a peak-RSS runner.

Each generator writes one file and returns its path; the big ones stream what they write, so
making them costs little memory. :func:`peak_rss` runs a ``kvreceipts`` command in a fresh
process under ``/usr/bin/time -f %M`` and returns its exit code, stderr and peak RSS (MB).

    python tests/hostile.py DIR   # write every file into DIR and print each command's RSS
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
RSS_BOUND_MB = 150
"""The bound docs/receipts.md promises for every command that reads a file."""
MB = 1 << 20
RUN = "6f2d3a1c9b8e4f70a1b2c3d4e5f60718"
_TS = "2026-12-01T00:00:00.000000Z"
_DIGEST = "0" * 64


def _open_record(run: str = RUN) -> dict[str, Any]:
    return {"alg": "sha256", "allocator": None, "config": {}, "kind": "open", "layout": "lean",
            "policy": None, "run_id": run, "schema": "kvreceipts.eviction/2", "seq": 0,
            "sim_time_ms": 0.0, "source": "watch", "timestamp": _TS, "total_bytes": 0,
            "tuning": False, "workload": {}, "digest": _DIGEST}  # fmt: skip


def engine_removal(seq: int, **changes: Any) -> dict[str, Any]:
    """An engine_removal receipt as ``watch`` writes it, with ``changes`` applied."""
    record = {"alg": "sha256", "block_hash": seq, "bytes_freed": None, "dp_rank": 0,
              "engine_seq": seq, "engine_ts": 1000.0 + seq, "group_idx": None,
              "kind": "engine_removal", "locality": None, "medium": "GPU", "ownership": None,
              "parent_block_hash": None, "residency_ms": 2000.0, "run_id": RUN, "seq": seq,
              "store": None, "stored_ts": 998.0 + seq, "timestamp": _TS, "tokens": None,
              "topic": "kv@pod-a", "digest": _DIGEST}  # fmt: skip
    record.update(changes)
    return record


def engine_clear(seq: int, **changes: Any) -> dict[str, Any]:
    """An engine_clear receipt, with ``changes`` applied."""
    record = {"alg": "sha256", "count": 3, "dp_rank": None, "engine_seq": seq,
              "engine_ts": 1000.0 + seq, "kept": 0, "kind": "engine_clear", "run_id": RUN,
              "seq": seq, "timestamp": _TS, "topic": "kv@pod-a", "digest": _DIGEST}  # fmt: skip
    record.update(changes)
    return record


def engine_tally(seq: int, **changes: Any) -> dict[str, Any]:
    """An engine_tally receipt with one tier, with ``changes`` applied."""
    tier = {"incarnation": 0, "dp_rank": 0, "medium": "GPU", "group_idx": None,
            "locality": None, "ownership": None, "kv_cache_spec_kind": None, "stores": 4,
            "hits": 1, "removals": 2, "regret": 0, "resident": 2}  # fmt: skip
    record = {"alg": "sha256", "batches": 3, "hit_rate": 0.2, "incarnations": 1,
              "kind": "engine_tally", "lost_batches": 0, "recovered_batches": 0, "run_id": RUN,
              "seq": seq, "tiers": [tier], "timestamp": _TS, "topic": "kv@pod-a",
              "unknown": {}, "digest": _DIGEST}  # fmt: skip
    record.update(changes)
    return record


def _lines(records: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def engine_receipts(path: Path, *records: dict[str, Any]) -> Path:
    """An open record, then ``records``."""
    path.write_bytes(_lines([_open_record(), *records]))
    return path


def long_topics(path: Path, count: int = 1000, size: int = 1_000_000) -> Path:
    """``count`` engine removals, each with its own ~1 MB topic name (row 7 of the issue)."""
    with path.open("wb") as out:
        out.write(_lines([_open_record()]))
        for i in range(1, count + 1):
            topic = f"{i:08d}" + "t" * (size - 8)
            out.write(orjson.dumps(engine_removal(i, topic=topic)) + b"\n")
    return path


def identical_removals(path: Path, count: int = 4_000_000) -> Path:
    """``count`` identical engine removals, zstd-compressed (row 8: residency per record)."""
    import zstandard

    line = orjson.dumps(engine_removal(1)) + b"\n"
    batch = line * 10_000
    with path.open("wb") as raw, zstandard.ZstdCompressor(level=1).stream_writer(raw) as out:
        out.write(_lines([_open_record()]))
        for _ in range(count // 10_000):
            out.write(batch)
        out.write(line * (count % 10_000))
    return path


def one_line_gzip_trace(path: Path, size: int = 100 * MB) -> Path:
    """A Mooncake trace in gzip whose one line is ``size`` bytes (row 9 of the issue)."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    chunk = b"1," * (MB // 2)
    with path.open("wb") as out:
        out.write(compressor.compress(b'{"timestamp": 0, "input_length": 1, "output_length": 1, '
                                      b'"hash_ids": ['))  # fmt: skip
        for _ in range(size // len(chunk)):
            out.write(compressor.compress(chunk))
        out.write(compressor.compress(b"1]}\n"))
        out.write(compressor.flush())
    return path


def many_requests_trace(path: Path, count: int = 400_000) -> Path:
    """A valid Mooncake trace of ``count`` one-block requests, each block new: all a sweep
    must hold, and the most requests for the bytes.
    """
    with path.open("w", encoding="utf-8") as out:
        for i in range(count):
            out.write(f'{{"timestamp": {i}, "input_length": 1, "output_length": 1, '
                      f'"hash_ids": [{i}]}}\n')  # fmt: skip
    return path


def one_line_trace(
    path: Path, size: int = 100 * MB, compression: str = "gzip", *, noise: bool = False
) -> Path:
    """The same one-line trace in any compression (``gzip``, ``zstd``, ``xz``, ``plain``);
    with ``noise`` the line is random hex digits, which compress only twofold.
    """
    if compression == "gzip" and not noise:
        return one_line_gzip_trace(path, size)
    head = b'{"timestamp": 0, "input_length": 1, "output_length": 1, "hash_ids": ['
    chunks = (os.urandom(MB // 4).hex().encode() if noise else b"1," * (MB // 2)
              for _ in range(size // MB))  # fmt: skip
    if compression == "zstd":
        import zstandard

        opened: Any = zstandard.ZstdCompressor(level=1).stream_writer(path.open("wb"))
    elif compression == "xz":
        import lzma

        opened = lzma.open(path, "wb", preset=0)  # noqa: SIM115 - closed by the with below
    elif compression == "gzip":
        import gzip

        opened = gzip.open(path, "wb", compresslevel=1)  # noqa: SIM115 - closed below
    else:
        opened = path.open("wb")
    with opened as out:
        out.write(head)
        for chunk in chunks:
            out.write(chunk)
        out.write(b"1]}\n")
    return path


# Recordings (engine/recording.py): MAGIC, a length-prefixed JSON header, then entries.
MAGIC = b"KVRWATCH\x01\n"
_HEAD = struct.Struct(">cdH")
_LEN = struct.Struct(">I")


def recording(path: Path, header: object, entries: bytes = b"", *, raw_header: bytes | None = None
              ) -> Path:  # fmt: skip
    """A recording with this header (any JSON value, or raw bytes) and these entry bytes."""
    head = raw_header if raw_header is not None else orjson.dumps(header)
    path.write_bytes(MAGIC + _LEN.pack(len(head)) + head + entries)
    return path


def entry(kind: bytes, at_s: float, frames: list[bytes], *, count: int | None = None) -> bytes:
    """One recorded entry; ``count`` overrides the frame count it declares."""
    parts = [_HEAD.pack(kind, at_s, len(frames) if count is None else count)]
    for frame in frames:
        parts += [_LEN.pack(len(frame)), frame]
    return b"".join(parts)


GOOD_HEADER = {"run_id": RUN, "start_s": 1000.0, "source": "watch", "endpoint": "tcp://h:1",
               "topic": "", "replay_endpoint": None, "regret_window_s": 60.0}  # fmt: skip


def giant_frame_recording(path: Path) -> Path:
    """An entry whose one frame declares 4 GiB and holds a few bytes."""
    return recording(path, GOOD_HEADER, _HEAD.pack(b"M", 1.0, 1) + _LEN.pack(0xFFFFFFFF) + b"x")


def huge_count_recording(path: Path) -> Path:
    """An entry that declares 65,535 frames of 64 KiB each but the file holds 16 MB of them."""
    frame = _LEN.pack(0xFFFF) + b"\x00" * 0xFFFF
    return recording(path, GOOD_HEADER, _HEAD.pack(b"M", 1.0, 0xFFFF) + frame * 256)


def giant_header_recording(path: Path) -> Path:
    """A header that declares 4 GiB and holds a few bytes."""
    path.write_bytes(MAGIC + _LEN.pack(0xFFFFFFFF) + b'{"run_id": "x"}')
    return path


def batch(ts: float, events: list[dict[str, Any]]) -> bytes:
    """An engine batch payload (msgpack ``[ts, events, rank]``)."""
    import msgspec

    return msgspec.msgpack.encode([ts, events, 0])


def stored_event(hashes: list[int], medium: str | None = "GPU", **fields: Any) -> dict[str, Any]:
    """A BlockStored event in vLLM's map layout (``fields``: more of its fields, e.g.
    ``group_idx``)."""
    return {"type": "BlockStored", "block_hashes": hashes, "parent_block_hash": None,
            "token_ids": [], "block_size": 16, "lora_id": None, "medium": medium,
            **fields}  # fmt: skip


def seq_recording(path: Path, messages: list[tuple[bytes, int, bytes]]) -> Path:
    """A recording of these (topic, engine seq, payload) messages, and an end."""
    parts = [entry(b"M", 1001.0 + i / 1000, [topic, seq.to_bytes(8, "big"), payload])
             for i, (topic, seq, payload) in enumerate(messages)]  # fmt: skip
    parts.append(entry(b"Z", 1001.0 + len(messages) / 1000 + 1, []))
    return recording(path, GOOD_HEADER, b"".join(parts))


def messages_recording(path: Path, messages: list[tuple[bytes, bytes]]) -> Path:
    """A recording of these (topic, payload) messages, seqs counting up per topic, and an end."""
    seqs: dict[bytes, int] = {}
    parts = []
    for i, (topic, payload) in enumerate(messages):
        seq = seqs.get(topic, 0)
        seqs[topic] = seq + 1
        parts.append(entry(b"M", 1001.0 + i / 1000, [topic, seq.to_bytes(8, "big"), payload]))
    parts.append(entry(b"Z", 1001.0 + len(messages) / 1000 + 1, []))
    return recording(path, GOOD_HEADER, b"".join(parts))


def many_blocks_recording(path: Path, blocks: int = 3_000_000, per_batch: int = 50_000) -> Path:
    """Batches storing ``blocks`` distinct hashes, never removed (the held-block map)."""
    import msgspec

    encode = msgspec.msgpack.encode
    with path.open("wb") as out:
        head = orjson.dumps(GOOD_HEADER)
        out.write(MAGIC + _LEN.pack(len(head)) + head)
        for b in range(blocks // per_batch):
            hashes = list(range(b * per_batch, (b + 1) * per_batch))
            payload = encode([1000.0 + b, [stored_event(hashes)], 0])
            out.write(entry(b"M", 1001.0 + b, [b"", b.to_bytes(8, "big"), payload]))
        out.write(entry(b"Z", 2000.0 + blocks, []))
    return path


def many_removals_recording(path: Path, blocks: int = 2_000_000, per_batch: int = 100_000) -> Path:
    """Batches each removing ``per_batch`` never-stored hashes (one event), all inside the
    regret window: the removal table, and the receipts of one huge batch."""
    import msgspec

    encode = msgspec.msgpack.encode
    with path.open("wb") as out:
        head = orjson.dumps(GOOD_HEADER)
        out.write(MAGIC + _LEN.pack(len(head)) + head)
        for b in range(blocks // per_batch):
            event = {"type": "BlockRemoved", "block_hashes": list(range(b * per_batch, (b + 1)
                     * per_batch)), "medium": "GPU"}  # fmt: skip
            payload = encode([1000.0, [event], 0])
            out.write(entry(b"M", 1001.0, [b"", b.to_bytes(8, "big"), payload]))
        out.write(entry(b"Z", 1002.0, []))
    return path


@dataclass(frozen=True, slots=True)
class Run:
    """What a command did: exit code, stderr, peak RSS in MB."""

    code: int
    stderr: str
    rss_mb: float


def peak_rss(*args: str, stdin: bytes | None = None, timeout: float = 600) -> Run:
    """Run ``python -m kvreceipts ARGS`` under ``/usr/bin/time -f %M``: its exit code, stderr
    (without time's line) and peak RSS in MB.
    """
    env = {**os.environ, "PYTHONPATH": os.environ.get("HOSTILE_SRC", str(ROOT / "src"))}
    marker = "@@peak-rss-kb "
    command = ["/usr/bin/time", "-f", marker + "%M", sys.executable, "-m", "kvreceipts", *args]
    done = subprocess.run(command, input=stdin, capture_output=True, env=env, timeout=timeout,
                          check=False)  # fmt: skip
    stderr = done.stderr.decode("utf-8", "replace")
    head, _, tail = stderr.rpartition(marker)
    status = f"Command exited with non-zero status {done.returncode}\n"
    return Run(done.returncode, head.removesuffix(status), int(tail.split()[0]) / 1024)


def main() -> None:
    """Write the files into a folder and print each command's exit code and peak RSS."""
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[tuple[str, list[str]]] = []
    topics = long_topics(folder / "topics.jsonl")
    cases.append(("1,000 ~1 MB topics", ["stats", str(topics), "--format", "json"]))
    same = identical_removals(folder / "same.jsonl.zst")
    cases.append(("4 M identical removals", ["stats", str(same), "--format", "json"]))
    trace = one_line_gzip_trace(folder / "one-line.jsonl.gz")
    cases.append(("100 MB one-line .gz trace", ["simulate", "-q", "--trace", str(trace),
                                                "--format", "json"]))  # fmt: skip
    cases.append(("100 MB one-line .gz trace", ["sweep", "--trace", str(trace), "-q",
                                                "--format", "json"]))  # fmt: skip
    many = many_requests_trace(folder / "many.jsonl")
    cases.append(
        (
            "400,000 one-block requests",
            ["sweep", "--trace", str(many), "-q", "--format", "json", "--workers", "1"],
        )
    )
    for name, command in cases:
        run = peak_rss(*command)
        last = run.stderr.strip().splitlines()[-1:] or [""]
        print(f"{name:30} {command[0]:8} exit {run.code} {run.rss_mb:7.0f} MB  {last[0][:100]}")


if __name__ == "__main__":
    main()
