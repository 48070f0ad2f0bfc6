r"""Checking a ``kvreceipts.eviction/2`` stream, line by line, run by run.

Per line: only the sealer's bytes (canonical JSON with the digest last, one ``\\n``), the
record's shape for its run's layout, the algorithm and key the run declares, the digest
chained from the previous record, ``seq``, time order, and the kind's arithmetic (bytes,
counters, batch totals, the close record's counts). Memory is bounded: at most
:data:`MAX_OPEN_RUNS` runs are followed at once, and each keeps a few numbers plus a capped
table of evicted block hashes.

An eviction line first tries the fast path (:mod:`kvreceipts.verify.structs`: decoded into a
typed struct, canonical if it encodes back to its own bytes); a line it does not take, and
every other kind, is checked as a parsed dict. Both feed the same checks.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from kvreceipts.chain import DIGEST_SUFFIX_LEN, key_id
from kvreceipts.schema import ZERO_DIGEST
from kvreceipts.shape import check_record, shape_test
from kvreceipts.verify.report import DeclaredLoss, RunOutcome, VerifyReport, Violation
from kvreceipts.verify.structs import DecodeError, eviction_decoder
from kvreceipts.verify.structs import encode as _encode
from kvreceipts.verify.tree import RunTree

if TYPE_CHECKING:
    from collections.abc import Callable

    from kvreceipts.verify import VerifyOptions

__all__ = ["MAX_OPEN_RUNS", "StreamVerifier"]

MAX_OPEN_RUNS = 64
"""Runs followed at once (interleaved writers); a file that opens more is reported."""
MAX_TRACKED_BLOCKS = 250_000
"""Evicted block hashes remembered per run for the re-eviction check."""
MAX_SEEN_RUNS = 100_000
"""Closed run ids remembered to catch a run that appears twice."""
_SORT = orjson.OPT_SORT_KEYS
_HEX = b"0123456789abcdef"
_SUFFIX_HEAD = b',"digest":"'
_HEAD_LEN = len(_SUFFIX_HEAD)
_loads, _dumps, _sha256 = orjson.loads, orjson.dumps, hashlib.sha256
_TREE_KINDS = frozenset(("checkpoint", "close"))
_SIZE_LIMIT = 1 << 20
"""A longer line is no receipt (the longest, an upstream eviction, is ~1.5 KiB)."""


@dataclass(slots=True)
class _Run:
    """What the verifier remembers of one run between lines."""

    run_id: str
    layout: str
    alg: str
    key_id: str | None
    line: int
    prev: bytes = ZERO_DIGEST.encode()
    next_seq: int = 1
    last_timestamp: str = ""
    records: int = 1
    counts: dict[str, int] = field(default_factory=dict)
    bytes_freed: int = 0
    lost: int = 0
    """Records declared lost by loss records."""
    present: bytes = ZERO_DIGEST.encode()
    """Digest of the last record present (a loss record never stands in for one)."""
    last_evictions: int | None = 0
    last_hits: int = 0
    last_misses: int = 0
    streak: list[int] = field(default_factory=list)
    """For the evictions with consecutive seqs just before now (an eviction round is one),
    from ``streak_first`` on: the bytes the streak had freed before each of them."""
    streak_first: int = 0
    streak_bytes: int = 0
    evicted_at_misses: dict[int, int] = field(default_factory=dict)
    fits: dict[str, Callable[[dict[str, Any]], bool] | None] = field(default_factory=dict)
    """The fast shape test of each kind, for this run's layout."""
    tree: RunTree = field(default_factory=RunTree)
    """The run's Merkle tree so far."""


class StreamVerifier:
    """Feeds on complete lines (newline included) and fills a :class:`VerifyReport`."""

    def __init__(self, report: VerifyReport, options: VerifyOptions) -> None:
        self.report = report
        self.options = options
        self.key = options.key
        self.key_id = key_id(options.key) if options.key is not None else None
        self.mac = hmac.new(options.key, digestmod=hashlib.sha256) if options.key else None
        self.plain = options.key is None and not options.require_hmac
        """Plain SHA-256 records need no more than their digest checked."""
        self.runs: dict[str, _Run] = {}
        self.seen: set[str] = set()
        self.fast: Callable[[bytes], Any] | None = None
        """Decodes an eviction of :attr:`fast_layout`, the last opened run's layout."""
        self.fast_layout = ""
        self.single: RunOutcome | None = None
        """The file's only run, when one anchor is given without a run id."""
        self.anchored: dict[str, RunOutcome] = {}

    def fail(self, line: int, check: str, message: str, seq: Any = None, run: Any = None) -> None:
        """Record a violation (seq and run id only when they are what they claim)."""
        self.report.add(Violation(
            line, check, message, seq if type(seq) is int else None,
            run if type(run) is str else None,
        ))  # fmt: skip

    # -- one line ------------------------------------------------------------------------------

    def line(self, number: int, raw: bytes) -> None:
        """Check one line that ends with a newline."""
        report = self.report
        report.lines += 1
        # Only the sealer's bytes: canonical JSON, then ,"digest":"<64 hex>"} and one \n.
        end = len(raw) - 1
        cut = end - DIGEST_SUFFIX_LEN
        claimed = raw[cut + _HEAD_LEN : end - 2]
        if (
            raw[cut : cut + _HEAD_LEN] != _SUFFIX_HEAD
            or raw[end - 2 : end] != b'"}'
            or claimed.strip(_HEX)
            or cut < 1
            or end > _SIZE_LIMIT
        ):
            self._bad_bytes(number, raw)
            return
        payload = raw[:cut] + b"}"
        decode = self.fast
        if decode is not None:  # an eviction of the last opened run's layout: the common case
            try:
                rec = decode(payload)
            except DecodeError:
                pass
            else:
                run = self.runs.get(rec.run_id)
                # Encoding it again gives the line's bytes only if they are canonical.
                if run is not None and run.layout == self.fast_layout and _encode(rec) == payload:
                    self._counted(run, "eviction")
                    self._link(number, run, rec, payload, claimed)
                    self._eviction(number, run, rec)
                    return
        self._general(number, payload, claimed)

    def _general(self, number: int, payload: bytes, claimed: bytes) -> None:  # noqa: PLR0911, PLR0912
        """Check a line of any kind as a parsed dict, and word what is wrong with it."""
        try:
            record = _loads(payload)
        except orjson.JSONDecodeError as exc:
            self.fail(number, "json", f"not valid JSON: {exc.msg}")
            return
        if type(record) is not dict:
            self.fail(number, "schema", "a receipt must be a JSON object")
            return
        try:
            canonical = _dumps(record, option=_SORT) == payload and "digest" not in record
        except orjson.JSONEncodeError:  # e.g. an integer beyond 64 bits
            canonical = False
        kind, run_id, seq = record.get("kind"), record.get("run_id"), record.get("seq")
        if not canonical:
            # The digest covers what a parser reads; the bytes must also be the sealer's own,
            # or a repeated key could show one reader one value and the digest another.
            self.fail(number, "canonical", "the line is not in the canonical form the sealer "
                      "writes (reformatted, reordered, or a key appears twice)", seq,
                      run_id)  # fmt: skip
            return
        record["digest"] = claimed.decode()  # the shape check sees the record as written
        if type(kind) is not str or type(run_id) is not str or type(seq) is not int:
            problem = check_record(record)
            self.fail(number, "schema", problem or "kind, run_id and seq are required", seq,
                      run_id)  # fmt: skip
            return
        run = self.runs.get(run_id)
        if kind == "open":
            run = self._open(number, record, run_id)
        elif run is None:
            where = "after its close record" if run_id in self.seen else "with no open record"
            self.fail(number, "frame", f"a {_clip(kind)} record of run {_clip(run_id)} {where}",
                      seq, run_id)  # fmt: skip
        if run is None:
            return
        fits = run.fits.get(kind)
        if fits is None:
            fits = run.fits[kind] = shape_test(kind, run.layout)
        if fits is None or not fits(record):
            self.fail(number, "schema", check_record(record, run.layout) or "", seq, run_id)
            return
        view = _Fields(record)
        if kind == "loss":
            self._counted(run, kind, in_run=False)
            self._seal(number, run, view, payload, claimed)
            self._loss(number, record, run)
            return
        self._counted(run, kind, in_run=kind != "close")
        if kind in _TREE_KINDS:  # the tree it states is of the records before it
            self._tree(number, record, run)
        self._link(number, run, view, payload, claimed)
        if kind == "eviction":
            self._eviction(number, run, view)
        elif kind == "eviction_batch":
            self._batch(number, record, run)
        elif kind == "close":
            self._close(number, record, run, claimed)

    def _counted(self, run: _Run, kind: str, *, in_run: bool = True) -> None:
        """Count a record that fits its kind, in the file and (but a loss or close) in its run."""
        kinds = self.report.kinds
        self.report.records += 1
        kinds[kind] = kinds.get(kind, 0) + 1
        if in_run:
            run.counts[kind] = run.counts.get(kind, 0) + 1

    def _link(self, number: int, run: _Run, rec: Any, payload: bytes, claimed: bytes) -> None:
        """Check a record's seal, then its place in the run: seq, time, chain."""
        if self.plain and rec.alg == "sha256" == run.alg and run.key_id is rec.key_id is None:
            self.report.unauthenticated += 1  # the common case, inline
            if _sha256(run.prev + payload).hexdigest().encode() != claimed:
                self._digest_failed(number, rec.seq, run.run_id)
        else:
            self._seal(number, run, rec, payload, claimed)
        run.tree.frontier.append(
            _sha256(b"".join((b"\x00", payload[:-1], _SUFFIX_HEAD, claimed, b'"}'))).digest()
        )  # the record's line is a leaf of the run's tree
        seq, timestamp = rec.seq, rec.timestamp
        if seq == run.next_seq and timestamp >= run.last_timestamp:  # in order: the common case
            run.next_seq = seq + 1
            run.prev = run.present = claimed
            run.records += 1
            run.last_timestamp = timestamp
        else:
            self._sequence(number, run, rec, claimed)

    def _bad_bytes(self, number: int, raw: bytes) -> None:
        """Say what is wrong with a line that is not the sealer's bytes."""
        if raw.endswith(b"\r\n"):
            self.fail(number, "bytes", "the line ends with CRLF; the sealer writes LF only")
        elif not raw.strip():
            self.fail(number, "bytes", "a blank line; the sealer writes none")
        elif len(raw) > _SIZE_LIMIT:
            self.fail(number, "bytes", f"a line of {len(raw):,} bytes is no receipt")
        else:
            self.fail(number, "canonical", "the line does not end with the sealer's digest "
                      '(,"digest":"<64 hex>"})')  # fmt: skip

    def _open(self, number: int, record: dict[str, Any], run_id: str) -> _Run | None:
        if run_id in self.runs or run_id in self.seen:
            self.fail(number, "frame", f"run {_clip(run_id)} is opened a second time",
                      record["seq"], run_id)  # fmt: skip
            return None
        if len(self.runs) >= MAX_OPEN_RUNS:
            self.fail(number, "frame", f"more than {MAX_OPEN_RUNS} runs are open at once; run "
                      f"{_clip(run_id)} is not followed", record["seq"], run_id)  # fmt: skip
            return None
        layout, alg = record.get("layout"), record.get("alg")
        if record.get("seq") != 0:
            self.fail(number, "seq", "an open record must have seq 0", record["seq"], run_id)
        run = _Run(
            run_id,
            layout if layout in ("lean", "upstream") else "lean",
            alg if type(alg) is str else "",
            record.get("key_id") if type(record.get("key_id")) is str else None,
            number,
        )
        self.runs[run_id] = run
        if len(self.seen) < MAX_SEEN_RUNS:
            self.seen.add(run_id)
        self.fast, self.fast_layout = eviction_decoder(run.layout), run.layout
        return run

    def _seal(self, number: int, run: _Run, rec: Any, payload: bytes, claimed: bytes) -> None:
        """Check the algorithm and key the record states, then its digest."""
        alg, kid, seq, opts, run_id = rec.alg, rec.key_id, rec.seq, self.options, run.run_id
        if alg != run.alg or kid != run.key_id:
            self.fail(number, "alg", f"sealed with {alg}{'/' + kid if kid else ''}, but the run "
                      f"declares {run.alg}{'/' + run.key_id if run.key_id else ''}", seq,
                      run_id)  # fmt: skip
        if alg == "sha256":
            self.report.unauthenticated += 1
            if self.key is not None or opts.require_hmac:
                self.fail(number, "auth", "not HMAC-sealed: plain SHA-256 proves nothing against "
                          "anyone who can rewrite the file", seq, run_id)  # fmt: skip
        elif alg == "hmac-sha256" and self.key is not None and kid != self.key_id:
            self.fail(number, "auth", f"HMAC-sealed with key {kid}, not with the given key "
                      f"{self.key_id}", seq, run_id)  # fmt: skip
            return
        elif alg == "hmac-sha256" and self.key is None:
            self.report.unchecked += 1
            return
        elif alg != "hmac-sha256":
            self.fail(number, "alg", f"unknown digest algorithm {_clip(alg)}", seq, run_id)
            return
        prev = rec.prev_digest.encode() if rec.kind == "loss" else run.prev
        if self.mac is not None and alg == "hmac-sha256":
            mac = self.mac.copy()
            mac.update(prev)
            mac.update(payload)
            good = hmac.compare_digest(mac.hexdigest().encode(), claimed)
        else:
            good = hashlib.sha256(prev + payload).hexdigest().encode() == claimed
        if not good:
            self._digest_failed(number, seq, run_id)

    def _digest_failed(self, number: int, seq: int, run_id: str) -> None:
        self.report.digest_failures += 1
        self.fail(number, "digest", "the digest does not match the record's contents after "
                  "the previous record's digest (edited, or a record before it is missing or "
                  "moved)", seq, run_id)  # fmt: skip

    def _sequence(self, number: int, run: _Run, rec: Any, claimed: bytes) -> None:
        seq, kind, timestamp = rec.seq, rec.kind, rec.timestamp
        if seq != run.next_seq and kind != "open":
            if seq > run.next_seq:
                self.fail(number, "gap", f"{seq - run.next_seq:,} record(s) missing (seq "
                          f"{run.next_seq}..{seq - 1}); no loss record explains the gap", seq,
                          run.run_id)  # fmt: skip
                run.last_evictions = None  # the counters moved in the gap
            else:
                self.fail(number, "seq", f"seq {seq} comes after seq {run.next_seq - 1}: a "
                          "repeated, reordered or inserted record", seq, run.run_id)  # fmt: skip
        run.next_seq = max(run.next_seq, seq + 1)
        run.prev = run.present = claimed
        run.records += kind != "open"
        if timestamp < run.last_timestamp:
            self.fail(number, "time", f"timestamp {_clip(timestamp)} is earlier than the previous "
                      f"record's {run.last_timestamp}", seq, run.run_id)  # fmt: skip
        else:
            run.last_timestamp = timestamp

    def _loss(self, number: int, record: dict[str, Any], run: _Run) -> None:
        first, last, seq = record["first_seq"], record["last_seq"], record["seq"]
        ok = seq == last and record["count"] == last - first + 1 and last >= first
        if not ok:
            self.fail(number, "loss", f"seq {seq} and count {record['count']} do not fit the "
                      f"lost range {first}..{last}", seq, run.run_id)  # fmt: skip
            return
        if first != run.next_seq or record["prev_digest"].encode() != run.prev:
            self.fail(number, "loss", f"the loss record for seq {first}..{last} does not follow "
                      "the record before the gap", seq, run.run_id)  # fmt: skip
            return
        # A loss record stands beside the chain: the next record links past it.
        loss = DeclaredLoss(run.run_id, first, last, record["sink"], number)
        self.report.add_loss(loss)
        if not self.options.allow_loss:
            self.fail(number, "loss", f"{loss.count:,} record(s) (seq {first}..{last}) were "
                      f"dropped by sink {_clip(loss.sink)} (--allow-loss accepts declared "
                      "losses)", seq, run.run_id)  # fmt: skip
        problem = run.tree.lost(first, last, record["lost_tree"])
        if problem is not None:
            self.fail(number, "tree", problem, seq, run.run_id)
        run.prev = record["last_lost_digest"].encode()
        run.next_seq = last + 1
        run.lost += loss.count
        run.last_evictions = None

    def _tree(self, number: int, record: dict[str, Any], run: _Run) -> None:
        """The tree a checkpoint or close record states, and its signed note."""
        signed = "checkpoint" in record
        verifier = self.options.verifier
        if signed:
            self.report.checkpoints += 1
        elif verifier is not None and record["kind"] == "close":
            self.fail(number, "auth", "the close record carries no signed checkpoint, and "
                      "--vkey asks for one", record["seq"], run.run_id)  # fmt: skip
        for problem in run.tree.check(record, run.run_id, verifier):
            self.fail(number, "tree", problem, record["seq"], run.run_id)

    def _eviction(self, number: int, run: _Run, rec: Any) -> None:
        """The arithmetic of one eviction, and its place among the run's evictions."""
        before, after, size, seq, run_id = (
            rec.before,
            rec.after,
            rec.block_size_bytes,
            rec.seq,
            run.run_id,
        )
        if after.used_bytes != before.used_bytes - size:
            self.fail(number, "bytes", f"after.used_bytes {after.used_bytes} != before."
                      f"used_bytes {before.used_bytes} - block_size_bytes {size}", seq,
                      run_id)  # fmt: skip
        if after.total_sessions != before.total_sessions - 1:
            self.fail(number, "sessions", "total_sessions must drop by exactly one", seq, run_id)
        evictions, hits, misses = after.evictions, after.cache_hits, after.cache_misses
        evictions_before = getattr(before, "evictions", None)  # in the upstream layout only
        if evictions_before is not None and evictions != evictions_before + 1:
            self.fail(number, "counter", "evictions must rise by exactly one", seq, run_id)
        if run.last_evictions is not None and evictions != run.last_evictions + 1:
            self.fail(number, "counter", f"after.evictions {evictions} does not follow the "
                      f"previous eviction's {run.last_evictions}: an eviction receipt is "
                      "missing or repeated", seq, run_id)  # fmt: skip
        if hits < run.last_hits or misses < run.last_misses:
            self.fail(number, "counter", "hit or miss counters went backwards", seq, run_id)
        run.last_evictions, run.last_hits, run.last_misses = evictions, hits, misses
        run.bytes_freed += size
        streak = run.streak
        if seq != run.streak_first + len(streak) or len(streak) >= MAX_TRACKED_BLOCKS:
            streak.clear()
            run.streak_first, run.streak_bytes = seq, 0
        streak.append(run.streak_bytes)
        run.streak_bytes += size
        block_hash = rec.block_hash
        if block_hash is not None:
            seen = run.evicted_at_misses.get(block_hash)
            if seen is not None and misses <= seen:
                self.fail(number, "block", f"block {block_hash} evicted again without a miss "
                          "that could have cached it in between", seq, run_id)  # fmt: skip
            if seen is not None or len(run.evicted_at_misses) < MAX_TRACKED_BLOCKS:
                run.evicted_at_misses[block_hash] = misses

    def _batch(self, number: int, record: dict[str, Any], run: _Run) -> None:
        seq, run_id = record["seq"], run.run_id
        first, last, freed = record["first_seq"], record["last_seq"], record["total_bytes_freed"]
        problems = []
        if record["count"] != last - first + 1 or last != seq - 1:
            problems.append(f"its range {first}..{last} and count {record['count']} do not end "
                            "just before it")  # fmt: skip
        if record["pool_used_before"] - freed != record["pool_used_after_evictions"]:
            problems.append("pool_used_before - total_bytes_freed != pool_used_after_evictions")
        if (
            record["pool_used_after_evictions"] + record["allocated_bytes"]
            != record["pool_used_after"]
        ):
            problems.append("pool_used_after_evictions + allocated_bytes != pool_used_after")
        at, streak = first - run.streak_first, run.streak
        if 0 <= at < len(streak) and last == run.streak_first + len(streak) - 1:  # else a gap
            summed = run.streak_bytes - streak[at]
            if summed != freed:
                problems.append(f"its evictions freed {summed:,} bytes, not {freed:,}")
        for problem in problems:
            self.fail(number, "batch", problem, seq, run_id)
        streak.clear()
        run.streak_bytes = 0

    def _close(self, number: int, record: dict[str, Any], run: _Run, claimed: bytes) -> None:
        seq, run_id = record["seq"], run.run_id
        if record["records"] != seq:
            self.fail(number, "close", f"records {record['records']} != its seq {seq}", seq,
                      run_id)  # fmt: skip
        counts = record["counts"]
        if run.lost:  # the kinds of lost records are unknown: their number must add up
            total = sum(v for v in counts.values() if type(v) is int)
            if total != sum(run.counts.values()) + run.lost:
                self.fail(number, "close", f"counts add up to {total:,} records, but the run "
                          f"holds {sum(run.counts.values()):,} and declares {run.lost:,} lost",
                          seq, run_id)  # fmt: skip
        elif counts != run.counts:
            self.fail(number, "close", f"counts {_clip(counts)} differ from the run's "
                      f"records {_clip(run.counts)}", seq, run_id)  # fmt: skip
        if not run.lost and record["bytes_freed"] != run.bytes_freed:  # lost bytes are unknown
            self.fail(number, "close", f"bytes_freed {record['bytes_freed']:,} differs from the "
                      f"run's evictions, {run.bytes_freed:,}", seq, run_id)  # fmt: skip
        self._finish_run(run, complete=True, digest=claimed.decode())

    def _finish_run(self, run: _Run, *, complete: bool, digest: str) -> None:
        del self.runs[run.run_id]
        outcome = RunOutcome(run.run_id, run.records, run.alg, complete, digest)
        self.report.add_run(outcome)
        self.report.last_digest = digest
        anchors = self.options.anchors
        if "" in anchors:
            self.single = outcome if self.report.run_count == 1 else None
        elif anchors:
            expected = anchors.get(run.run_id)
            if expected is None:
                self.fail(run.line, "anchor", f"run {run.run_id} is not one of the anchored "
                          "runs (--expect-last-digest RUN_ID=DIGEST)", 0, run.run_id)  # fmt: skip
            else:
                self.anchored[run.run_id] = outcome

    def finish(self, torn: tuple[int, bytes] | None) -> None:
        """End of input: a torn last line, and the runs that never closed."""
        report, opts = self.report, self.options
        if torn is not None:
            report.truncated_tail = True
            number = torn[0]
            if not self.runs or opts.anchors:
                self.fail(number, "tail", "the last line is cut short after a complete run "
                          "(bytes appended, or a torn write)")  # fmt: skip
        for run in list(self.runs.values()):
            report.incomplete_runs += 1
            if not opts.allow_incomplete:
                self.fail(report.lines, "incomplete", f"run {run.run_id} has no close record: "
                          "it was cut short (or crashed; --allow-incomplete accepts the valid "
                          "prefix)", None, run.run_id)  # fmt: skip
            self._finish_run(run, complete=False, digest=run.present.decode())


class _Fields:
    """A parsed record read as attributes (an absent field reads ``None``), the way the fast
    path reads its struct, so both paths share one set of checks.
    """

    __slots__ = ("_record",)

    def __init__(self, record: dict[str, Any]) -> None:
        self._record = record

    def __getattr__(self, name: str) -> Any:
        value = self._record.get(name)
        return _Fields(value) if type(value) is dict else value


def _clip(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
