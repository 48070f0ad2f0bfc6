r"""Checking a ``kvreceipts.eviction/2`` stream, line by line, run by run.

Per line: only the sealer's bytes (canonical JSON with the digest last, one ``\\n``), the
record's shape for its run's layout, the algorithm and key the run declares, the digest
chained from the previous record, ``seq``, time order, and the kind's arithmetic
(:mod:`kvreceipts.verify.kinds`: bytes, counters, batch coverage and totals, the close record
against the run). Memory is bounded in count and in size: at most :data:`MAX_OPEN_RUNS` runs
are followed at once, each keeps a few numbers (:class:`~kvreceipts.verify.state.RunState`)
plus capped tables, identifiers are kept shortened or as digests, and the shape tests are
cached for known kinds only.

An eviction line first tries the fast path (:mod:`kvreceipts.verify.structs`: decoded into a
typed struct, canonical if it encodes back to its own bytes); a line it does not take, and
every other kind, is checked as a parsed dict. Both feed the same checks.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Any

import orjson

from kvreceipts.chain import DIGEST_SUFFIX_LEN, key_id
from kvreceipts.errors import InputError
from kvreceipts.schema import ALGORITHMS, LAYOUTS, SCHEMA_ID_V1
from kvreceipts.shape import check_record, shape_test
from kvreceipts.verify import kinds
from kvreceipts.verify.report import RunOutcome, VerifyReport, Violation
from kvreceipts.verify.state import MAX_ID, RunState, clip, instant, run_key, short_id
from kvreceipts.verify.structs import DecodeError, eviction_decoder
from kvreceipts.verify.structs import encode as _encode

if TYPE_CHECKING:
    from collections.abc import Callable

    from kvreceipts.verify import VerifyOptions

__all__ = ["MAX_LINE_BYTES", "MAX_OPEN_RUNS", "MAX_SEEN_RUNS", "V1_ERROR", "StreamVerifier"]

MAX_OPEN_RUNS = 64
"""Runs followed at once (interleaved writers); a file that opens more is reported."""
MAX_SEEN_RUNS = 100_000
"""Run keys remembered to catch a run that appears twice (each at most 64 characters: a
longer run id is remembered as a digest)."""
MAX_LINE_BYTES = 1 << 20
"""A longer line is no receipt (the longest, an upstream eviction, is ~1.5 KiB)."""
_SORT = orjson.OPT_SORT_KEYS
_HEX = b"0123456789abcdef"
_SUFFIX_HEAD = b',"digest":"'
_HEAD_LEN = len(_SUFFIX_HEAD)
_loads, _dumps, _sha256 = orjson.loads, orjson.dumps, hashlib.sha256
_UNKNOWN: Any = object()
_TREE_KINDS = frozenset(("checkpoint", "close"))
_check_eviction = kinds.check_eviction
V1_ERROR = (f"schema {SCHEMA_ID_V1} is no longer verified; re-run the simulation to write /2 "
             "receipts")  # fmt: skip


class StreamVerifier:
    """Feeds on complete lines (newline included) and fills a :class:`VerifyReport`."""

    def __init__(self, report: VerifyReport, options: VerifyOptions) -> None:
        self.report = report
        self.options = options
        self.key = options.key
        self.key_id = key_id(options.key) if options.key is not None else None
        report.key_id = self.key_id
        self.mac = hmac.new(options.key, digestmod=hashlib.sha256) if options.key else None
        self.plain = options.key is None and not options.require_hmac
        """Plain SHA-256 records need no more than their digest checked."""
        self.runs: dict[str | bytes, RunState] = {}
        """The open runs, by :func:`~kvreceipts.verify.state.run_key`."""
        self.seen: set[str | bytes] = set()
        self.fits: dict[tuple[str, str], Callable[[dict[str, Any]], bool]] = {}
        """The fast shape test of each known kind and layout (an unknown kind is not cached:
        hostile files name thousands)."""
        self.tracked_blocks = 0
        """Block hashes remembered by the open runs together."""
        self.fast: Callable[[bytes], Any] | None = None
        """Decodes an eviction of :attr:`fast_layout`, the last opened run's layout."""
        self.fast_layout = ""
        self.single: RunOutcome | None = None
        """The file's only run, when one anchor is given without a run id."""
        self.anchored: dict[str, RunOutcome] = {}

    def fail(
        self, line: int, check: str, message: str, seq: Any = None, run: RunState | Any = None
    ) -> None:
        """Record a violation (seq and run id only when they are what they claim; a run id
        shortened).
        """
        run_id = run.run_id if isinstance(run, RunState) else run
        self.report.add(Violation(
            line, check, message, seq if type(seq) is int else None,
            short_id(run_id) if type(run_id) is str else None,
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
            or end > MAX_LINE_BYTES
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
                    report.records += 1  # _counted, inline
                    counted, counts = report.kinds, run.counts
                    counted["eviction"] = counted.get("eviction", 0) + 1
                    counts["eviction"] = counts.get("eviction", 0) + 1
                    self._link(number, run, rec, payload, claimed)
                    _check_eviction(self, number, run, rec)
                    return
        self._general(number, payload, claimed)

    def _general(self, number: int, payload: bytes, claimed: bytes) -> None:  # noqa: PLR0911, PLR0912, PLR0915
        """Check a line of any kind as a parsed dict, and word what is wrong with it."""
        try:
            record = _loads(payload)
        except orjson.JSONDecodeError as exc:
            self.fail(number, "json", f"not valid JSON: {exc.msg}")
            return
        if type(record) is not dict:
            self.fail(number, "schema", "a receipt must be a JSON object")
            return
        if record.get("schema") == SCHEMA_ID_V1:
            raise InputError(f"line {number}: {V1_ERROR}", path=self.report.path)
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
        key = run_key(run_id)
        run = self.runs.get(key)
        if kind == "open":
            run = self._open(number, record, run_id, key)
        elif run is None:
            where = "after its close record" if key in self.seen else "with no open record"
            self.fail(number, "frame", f"a {clip(kind)} record of run {short_id(run_id)} "
                      f"{where}", seq, run_id)  # fmt: skip
        if run is None:
            return
        fits = self.fits.get((kind, run.layout), _UNKNOWN)
        if fits is _UNKNOWN:
            fits = shape_test(kind, run.layout)
            if fits is not None:  # a known kind: a bounded cache
                self.fits[kind, run.layout] = fits
        if fits is None or not fits(record):
            self.fail(number, "schema", check_record(record, run.layout) or "", seq, run)
            return
        view = _Fields(record)
        if kind == "loss":
            self._counted(run, kind, in_run=False)
            self._seal(number, run, view, payload, claimed)
            kinds.check_loss(self, number, record, run)
            return
        self._counted(run, kind, in_run=kind != "close")
        head = run.prev  # the chain head before this record
        if kind in _TREE_KINDS:  # the tree it states is of the records before it
            self._tree(number, record, run)
        self._link(number, run, view, payload, claimed)
        if kind == "eviction":
            kinds.check_eviction(self, number, run, view)
        elif kind == "close":
            kinds.check_close(self, number, record, run, head)
            self._finish_run(run, complete=True, digest=claimed.decode(), seq=seq)
        elif kind == "eviction_batch":
            kinds.check_batch(self, number, record, run)
        elif kind == "snapshot":
            kinds.check_snapshot(self, number, record, run)
        elif kind != "open":
            kinds.barrier(run, seq, kind)

    def _tree(self, number: int, record: dict[str, Any], run: RunState) -> None:
        """The tree a checkpoint or close record states, and its signed note."""
        report, verifier, seq = self.report, self.options.verifier, record["seq"]
        if "checkpoint" in record:
            report.checkpoints += 1
        elif verifier is not None and record["kind"] == "close":
            report.signature_failures += 1
            self.fail(number, "auth", "the close record carries no signed checkpoint, and "
                      "--vkey asks for one", seq, run)  # fmt: skip
        problems = run.tree.check(record, run.run_id, verifier)
        report.signature_failures += bool(problems and verifier is not None)
        for problem in problems:
            self.fail(number, "tree", problem, seq, run)

    def _counted(self, run: RunState, kind: str, *, in_run: bool = True) -> None:
        """Count a record that fits its kind, in the file and (but a loss or close) in its run."""
        counted = self.report.kinds
        self.report.records += 1
        counted[kind] = counted.get(kind, 0) + 1
        if in_run:
            run.counts[kind] = run.counts.get(kind, 0) + 1

    def _link(self, number: int, run: RunState, rec: Any, payload: bytes, claimed: bytes) -> None:
        """Check a record's seal, then its place in the run: seq, time, chain."""
        if self.plain and rec.alg == "sha256" == run.alg and run.key_id is rec.key_id is None:
            self.report.unauthenticated += 1  # the common case, inline
            if _sha256(run.prev + payload).hexdigest().encode() != claimed:
                self._digest_failed(number, rec.seq, run)
        else:
            self._seal(number, run, rec, payload, claimed)
        run.tree.frontier.append(
            _sha256(b"".join((b"\x00", payload[:-1], _SUFFIX_HEAD, claimed, b'"}'))).digest()
        )  # the record's line is a leaf of the run's tree
        seq, timestamp = rec.seq, rec.timestamp
        if seq == run.next_seq and (timestamp == run.last_timestamp or _later(run, timestamp)):
            run.next_seq = seq + 1  # in order: the common case
            run.prev = run.present = claimed
            run.present_seq = seq
            run.records += 1
        else:
            self._sequence(number, run, rec, claimed)

    def _bad_bytes(self, number: int, raw: bytes) -> None:
        """Say what is wrong with a line that is not the sealer's bytes."""
        if raw.endswith(b"\r\n"):
            self.fail(number, "bytes", "the line ends with CRLF; the sealer writes LF only")
        elif not raw.strip():
            self.fail(number, "bytes", "a blank line; the sealer writes none")
        elif len(raw) > MAX_LINE_BYTES:
            self.fail(number, "bytes", f"a line longer than {MAX_LINE_BYTES:,} bytes is no "
                      "receipt")  # fmt: skip
        else:
            self.fail(number, "canonical", "the line does not end with the sealer's digest "
                      '(,"digest":"<64 hex>"})')  # fmt: skip

    def _open(
        self, number: int, record: dict[str, Any], run_id: str, key: str | bytes
    ) -> RunState | None:
        seq = record["seq"]
        if key in self.runs or key in self.seen:
            self.fail(number, "frame", f"run {short_id(run_id)} is opened a second time", seq,
                      run_id)  # fmt: skip
            return None
        if len(self.runs) >= MAX_OPEN_RUNS:
            self.fail(number, "frame", f"more than {MAX_OPEN_RUNS} runs are open at once; run "
                      f"{short_id(run_id)} is not followed", seq, run_id)  # fmt: skip
            return None
        layout, alg, kid = record.get("layout"), record.get("alg"), record.get("key_id")
        if seq != 0:
            self.fail(number, "seq", "an open record must have seq 0", seq, run_id)
        total = record.get("total_bytes")
        run = RunState(  # nothing of unbounded size: a hostile open record fails its shape
            short_id(run_id),
            key,
            run_id if run_id in self.options.anchors else None,
            layout if layout in LAYOUTS else "lean",
            alg if alg in ALGORITHMS else clip(alg),
            kid if type(kid) is str and len(kid) <= MAX_ID else None if kid is None else clip(kid),
            number,
            total_bytes=total if type(total) is int else 0,
        )
        self.runs[key] = run
        if len(self.seen) < MAX_SEEN_RUNS:
            self.seen.add(key)
        self.fast, self.fast_layout = eviction_decoder(run.layout), run.layout
        return run

    def _seal(self, number: int, run: RunState, rec: Any, payload: bytes, claimed: bytes) -> None:
        """Check the algorithm and key the record states, then its digest."""
        alg, kid, seq, opts, report = rec.alg, rec.key_id, rec.seq, self.options, self.report
        keyed = self.key is not None
        if alg != run.alg or kid != run.key_id:
            report.auth_failures += keyed
            self.fail(number, "alg", f"sealed with {clip(alg)}{'/' + clip(kid) if kid else ''}, "
                      f"but the run declares {clip(run.alg)}"
                      f"{'/' + clip(run.key_id) if run.key_id else ''}", seq, run)  # fmt: skip
        if alg == "sha256":
            report.unauthenticated += 1
            if keyed or opts.require_hmac:
                report.auth_failures += 1
                self.fail(number, "auth", "not HMAC-sealed: plain SHA-256 proves nothing against "
                          "anyone who can rewrite the file", seq, run)  # fmt: skip
        elif alg == "hmac-sha256" and keyed and kid != self.key_id:
            report.auth_failures += 1
            self.fail(number, "auth", f"HMAC-sealed with key {clip(kid)}, not with the given key "
                      f"{self.key_id}", seq, run)  # fmt: skip
            return
        elif alg == "hmac-sha256" and not keyed:
            report.unchecked += 1
            return
        elif alg != "hmac-sha256":
            self.fail(number, "alg", f"unknown digest algorithm {clip(alg)}", seq, run)
            return
        prev = rec.prev_digest.encode() if rec.kind == "loss" else run.prev
        if self.mac is not None and alg == "hmac-sha256":
            mac = self.mac.copy()
            mac.update(prev)
            mac.update(payload)
            good = hmac.compare_digest(mac.hexdigest().encode(), claimed)
            report.hmac_verified += good
            report.auth_failures += not good
        else:
            good = hashlib.sha256(prev + payload).hexdigest().encode() == claimed
        if not good:
            self._digest_failed(number, seq, run)

    def _digest_failed(self, number: int, seq: int, run: RunState) -> None:
        self.report.digest_failures += 1
        self.fail(number, "digest", "the digest does not match the record's contents after "
                  "the previous record's digest (edited, or a record before it is missing or "
                  "moved)", seq, run)  # fmt: skip

    def _sequence(self, number: int, run: RunState, rec: Any, claimed: bytes) -> None:
        seq, kind, timestamp = rec.seq, rec.kind, rec.timestamp
        if seq != run.next_seq and kind != "open":
            if seq > run.next_seq:
                self.fail(number, "gap", f"{seq - run.next_seq:,} record(s) missing (seq "
                          f"{run.next_seq}..{seq - 1}); no loss record explains the gap", seq,
                          run)  # fmt: skip
                run.last_evictions = None  # the counters moved in the gap
            else:
                self.fail(number, "seq", f"seq {seq} comes after seq {run.next_seq - 1}: a "
                          "repeated, reordered or inserted record", seq, run)  # fmt: skip
        run.next_seq = max(run.next_seq, seq + 1)
        run.prev = run.present = claimed
        run.present_seq = seq
        run.records += kind != "open"
        if timestamp == run.last_timestamp:
            return
        when = instant(timestamp)
        if when is None:
            self.fail(number, "time", f"timestamp {clip(timestamp)} is not an RFC 3339 "
                      "date-time", seq, run)  # fmt: skip
        elif when < run.last_instant:
            self.fail(number, "time", f"timestamp {clip(timestamp)} is earlier than the previous "
                      f"record's {run.last_timestamp}", seq, run)  # fmt: skip
        else:
            run.last_instant, run.last_timestamp = when, timestamp

    def _finish_run(self, run: RunState, *, complete: bool, digest: str, seq: int) -> None:
        del self.runs[run.key]
        self.tracked_blocks -= len(run.evicted_at_misses)
        outcome = RunOutcome(run.run_id, run.records, run.alg, complete, digest, seq)
        self.report.add_run(outcome)
        self.report.last_digest = digest
        anchors = self.options.anchors
        if "" in anchors:
            self.single = outcome if self.report.run_count == 1 else None
        elif anchors:
            if run.anchor is None:
                self.fail(run.line, "anchor", f"run {run.run_id} is not one of the anchored "
                          "runs (--expect-last-digest RUN_ID=DIGEST)", 0, run)  # fmt: skip
            else:
                self.anchored[run.anchor] = outcome

    def finish(self, torn: tuple[int, bytes] | None) -> None:
        """End of input: a torn last line, and the runs that never closed."""
        report, opts = self.report, self.options
        if torn is not None:
            report.truncated_tail = True
            report.truncated_tail_lines = 1
            number = torn[0]
            if not self.runs or opts.anchors:
                self.fail(number, "tail", "the last line is cut short after a complete run "
                          "(bytes appended, or a torn write)")  # fmt: skip
        for run in list(self.runs.values()):
            report.incomplete_runs += 1
            if not opts.allow_incomplete:
                self.fail(report.lines, "incomplete", f"run {run.run_id} has no close record: "
                          "it was cut short (or crashed; --allow-incomplete accepts the valid "
                          "prefix)", None, run)  # fmt: skip
            self._finish_run(run, complete=False, digest=run.present.decode(),
                             seq=run.present_seq)  # fmt: skip


def _later(run: RunState, timestamp: str) -> bool:
    """Whether ``timestamp`` is a time at or after the run's last (then it becomes the last)."""
    when = instant(timestamp)
    if when is None or when < run.last_instant:
        return False
    run.last_instant, run.last_timestamp = when, timestamp
    return True


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
