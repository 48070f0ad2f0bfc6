"""Make tests/fixtures/watch/engine.kvrec (a recorded watch) and engine.jsonl (its receipts).

    python tests/make_watch_fixture.py                  # record anew
    python tests/make_watch_fixture.py --receipts-only  # the receipts of the same recording

Every receipt kind, both event layouts, byte and integer hashes, two topics, a batch
recovered by replay, a lost one, a restart and an undecodable payload.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kvreceipts.engine.session import watch_recording
from watch_harness import Lines, Watch
from watch_publisher import Publisher, cleared, removed, stored

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "watch"
A, B = b"kv@pod-a@llama", b"kv@pod-b@llama"


def main() -> None:
    """Publish, watch with --record, and write the receipts the recording replays to."""
    FIXTURES.mkdir(parents=True, exist_ok=True)
    recording = FIXTURES / "engine.kvrec"
    if "--receipts-only" in sys.argv:  # the receipt format changed, the recording did not
        lines = Lines()
        watch_recording(str(recording), lines)
        (FIXTURES / "engine.jsonl").write_bytes(b"".join(lines.lines))
        return
    with Publisher() as pub:
        watch = Watch(pub, record=str(recording), max_batches=11)
        pub.batch([stored([101, 102, 103], parent=100)], topic=A, ts=1_000.0)
        pub.batch([stored([b"\x00\x00\x00\x00\x00\x00\x01\x01"], medium="CPU",
                          layout="array", extra=True)], topic=B, ts=1_000.5)  # fmt: skip
        pub.batch([removed([101])], topic=A, ts=1_002.0, skip=True)  # recovered by replay
        pub.batch([removed([102], layout="array")], topic=A, ts=1_003.0)
        pub.batch([stored([101])], topic=A, ts=1_004.0)  # regret: removed 2 s ago
        pub.batch([removed([b"\x00\x00\x00\x00\x00\x00\x01\x01"], medium="CPU")], topic=B,
                  ts=1_005.0)  # fmt: skip
        watch.wait_for(5)
        pub.batch([removed([103])], topic=A, ts=1_006.0, skip=True)
        pub.engine(A).buffer.clear()  # not in the replay buffer any more: lost
        pub.batch([cleared()], topic=A, ts=1_007.0)
        pub.batch([], topic=B, payload=b"\xc1")  # undecodable
        pub.restart(A)
        pub.batch([stored([7, 8])], topic=A, ts=2_000.0)
        pub.batch([removed([7, 8, 101])], topic=A, ts=2_001.25)
        pub.batch([stored([b"\x00\x00\x00\x00\x00\x00\x02\x02"], medium=None)], topic=B,
                  ts=2_002.0)  # fmt: skip
        pub.batch([removed([b"\x00\x00\x00\x00\x00\x00\x02\x02"], medium=None)], topic=B,
                  ts=2_003.0)  # fmt: skip
        watch.done()
    lines = Lines()
    watch_recording(str(recording), lines)
    assert lines.lines == watch.sink.lines
    (FIXTURES / "engine.jsonl").write_bytes(b"".join(lines.lines))
    print(f"{recording}: {recording.stat().st_size} bytes, {len(lines.lines)} receipts")


if __name__ == "__main__":
    main()
