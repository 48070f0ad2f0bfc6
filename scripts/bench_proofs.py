"""The proofs rows of scripts/bench.py: sealing with a signing key, ``prove`` on a large
file, the Merkle frontier's append and ``verify-proof``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_common import CONVERSATION, Row, _kvreceipts, _timed, load_requests, paged_replay, paired

_PEAK_CHILD = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, capture_output=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""
"""Runs one command and prints its peak RSS in KiB (a fresh parent: the max is that child's)."""


def _process(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one whole process."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", _PEAK_CHILD, *argv], check=True,
                            capture_output=True, text=True)  # fmt: skip
    return time.perf_counter() - start, int(result.stdout) / 1024


def bench_proofs(reps: int, rows: list[Row], tmp: str, *, million: int) -> None:
    """Issue 23: sealing with a signing key, prove on a large file, verify-proof, verify --vkey."""
    from kvreceipts.checkpoints import Checkpoints
    from kvreceipts.proofs.note import generate
    from kvreceipts.sinks import JsonlSink

    signer = generate("bench")
    pub = Path(tmp) / "bench.pub"
    pub.write_text(signer.verifier.key_string + "\n")
    requests = load_requests(CONVERSATION)
    capacity = int(len({h for r in requests for h in r.block_hashes}) * 0.05)
    out = Path(tmp) / "signed.jsonl"
    every = 10_000

    def remove_output() -> None:
        out.unlink(missing_ok=True)

    def replay(checkpoints: Any) -> Any:
        sink = JsonlSink(out, flush="batch")
        return paged_replay(requests, capacity, sink=sink, receipts=True, checkpoints=checkpoints)

    signing = Checkpoints(signer=signer, every=every)
    pair = paired(lambda: replay(signing), lambda: replay(None), reps, remove_output)
    remove_output()
    emitted = replay(signing).receipts_emitted
    rate = emitted / pair.a
    rows.append(Row(f"receipts per second, --sign-key --checkpoint-every {every:,}", rate, "/s",
                    ">= 150,000", rate >= 150_000, f"{emitted:,} receipts to JSONL"))  # fmt: skip
    rows.append(Row("ratio: signed / unsigned sealing", pair.ratio, "x",
                    note="both with the Merkle frontier: it is always kept"))  # fmt: skip
    records = sum(1 for _ in out.open("rb"))
    check = [*_kvreceipts(), "verify", str(out), "--vkey", str(pub), "--format", "json"]
    times = [_timed(lambda: subprocess.run(check, check=True, capture_output=True))
             for _ in range(reps + 1)][1:]  # fmt: skip
    rate = records / statistics.median(times)
    rows.append(Row("verify --vkey, records per second (process)", rate, "/s", ">= 100,000",
                    rate >= 100_000, f"{records:,} records"))  # fmt: skip
    # A signed run of about `million` records: the trace over and over, at a tenth of the size.
    big = Path(tmp) / "million.jsonl"
    out.unlink()
    repeated = requests * -(-million // emitted)
    sink = JsonlSink(big, flush="batch")
    paged_replay(repeated, capacity // 10, sink=sink, receipts=True, checkpoints=signing)
    records = sum(1 for _ in big.open("rb"))
    bundle = Path(tmp) / "proof.json"
    prove = [*_kvreceipts(), "prove", str(big), "--seq", str(records // 2), "-o", str(bundle),
             "--force"]  # fmt: skip
    samples = [_process(prove) for _ in range(max(3, reps // 2))]
    seconds = statistics.median(s for s, _ in samples)
    peak = statistics.median(m for _, m in samples)
    note = f"{records:,} records, one run"
    rows.append(Row("prove one receipt (process)", seconds, "s", "<= 5", seconds <= 5, note))
    rows.append(Row("prove one receipt, peak RSS", peak, "MiB", "<= 100", peak <= 100, note))


def bench_proof_tools(reps: int, rows: list[Row], tmp: str) -> None:
    """Issue 23: the Merkle frontier's append (once per sealed receipt) and ``verify-proof``
    as a whole process, beside ``--version``.
    """
    import hashlib

    from kvreceipts.proofs import bundle, checkpoint, merkle, note

    hashes = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(200_000)]

    def appends() -> None:
        append = merkle.Frontier().append
        for h in hashes:
            append(h)

    samples = [_timed(appends) for _ in range(max(reps, 5))]
    per = statistics.median(samples) / len(hashes) * 1e6
    rows.append(Row("Frontier.append (Merkle leaf, in process)", per, "µs",
                    note=f"{len(hashes):,} appends, a 32-byte leaf hash each"))  # fmt: skip
    out = Path(tmp) / "proof"
    out.mkdir()
    command = _kvreceipts()

    def run(args: list[str]) -> bytes:
        return subprocess.run(args, check=True, capture_output=True).stdout

    run([*command, "keygen", "bench.example", "-o", str(out / "k")])
    lines = run([*command, "simulate", "--requests", "3000", "-q", "-f", "jsonl"])
    leaves = [merkle.leaf_hash(line) for line in lines.splitlines()]
    run_id, index = json.loads(lines.splitlines()[0])["run_id"], len(leaves) // 2
    signer = note.parse_signer((out / "k.key").read_text())
    signed = checkpoint.sign_checkpoint(checkpoint.Checkpoint(
        bundle.origin_for(run_id), len(leaves), merkle.root_of(leaves)), signer)  # fmt: skip
    document = bundle.proof_bundle(
        run_id=run_id, record=lines.splitlines()[index].decode(), leaf_index=index,
        tree_size=len(leaves), inclusion=merkle.inclusion_proof_of(leaves, index),
        checkpoint=signed)  # fmt: skip
    (out / "p.json").write_text(json.dumps(document))
    verify = [*command, "verify-proof", str(out / "p.json"), "--vkey", str(out / "k.pub")]
    pair = paired(lambda: run(verify), lambda: run([*command, "--version"]), max(reps, 9))
    rows.append(Row("verify-proof (process)", pair.a, "s", "<= 0.3", pair.a <= 0.3,
                    f"{pair.ratio:.2f}x kvreceipts --version ({pair.b:.3f} s), one receipt "
                    f"of {len(leaves):,}"))  # fmt: skip
