"""Where a sweep's requests come from, read once per process and held in memory within a bound.

A sweep replays its trace once per grid point, so it holds every request. What it holds grows
with the trace, so reading stops, with one line that names the file and line, once the memory
the requests will take passes ``Source.max_memory`` (``--max-memory``, 150 MB by default):
a file from anyone cannot push a sweep past its documented bound.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kvreceipts.errors import InputError, UsageError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from kvreceipts.workloads import Request

__all__ = ["DEFAULT_MAX_MEMORY", "Source", "load_source", "local_path", "trace_caveats"]

DEFAULT_MAX_MEMORY = 150_000_000
"""``--max-memory``: the peak a sweep of a trace stays under, by default."""
BASE_BYTES = 30_000_000
"""The process before it reads the trace (the interpreter and the sweep's modules)."""
REQUEST_BYTES = 450
REFERENCE_BYTES = 350
"""What one request and one block reference cost, at the peak, a sweep without plots or Dask:
measured in whole processes (``/usr/bin/time -f %M``) on traces of many one-block requests, of
all-distinct blocks and on the Mooncake conversation trace, rounded up (docs/sweep.md)."""


@dataclass(frozen=True, slots=True)
class Source:
    """Where requests come from: a trace (path or fsspec URL) or a synthetic workload."""

    trace: str = ""
    trace_format: str = "auto"
    workload: str = ""
    requests: int = 0
    seed: int = 0
    block_tokens: int = 512
    max_memory: int = DEFAULT_MAX_MEMORY
    """Bytes the sweep may take for this trace (a synthetic workload is sized by the user)."""

    @property
    def label(self) -> str:
        """The name rows carry: the trace's file name, or the workload's name."""
        if self.trace:
            return self.trace.rstrip("/").rsplit("/", 1)[-1]
        return self.workload


@functools.lru_cache(maxsize=4)
def _load(source: Source) -> tuple[tuple[Request, ...], tuple[str, ...]]:
    from kvreceipts.workloads import TraceStats, read_trace, synthetic_workload

    if not source.trace:
        requests = synthetic_workload(
            source.workload,
            requests=source.requests,
            seed=source.seed,
            block_tokens=source.block_tokens,
        )
        return tuple(requests), ()
    path = local_path(source.trace)
    stats = TraceStats(path, source.trace_format)
    rows: Iterable[Request] = read_trace(path, source.trace_format, stats=stats)
    if source.requests:
        rows = (r for _, r in zip(range(source.requests), rows, strict=False))
    found = tuple(_within_memory(rows, source, path))
    return found, tuple(stats.caveats)


def _within_memory(rows: Iterable[Request], source: Source, path: str) -> Iterator[Request]:
    """The requests, until the memory they will take passes ``source.max_memory``."""
    budget = source.max_memory - BASE_BYTES
    block_tokens = source.block_tokens
    used = 0
    for request in rows:
        hashes = request.block_hashes
        blocks = len(hashes) if hashes is not None else -(-request.input_tokens // block_tokens)
        used += REQUEST_BYTES + REFERENCE_BYTES * max(1, blocks)
        if used > budget:
            limit = f"{source.max_memory / 1e6:,.0f}MB"
            raise InputError(
                f"the trace does not fit in --max-memory {limit}: a sweep holds every request "
                f"(about {REQUEST_BYTES} B each and {REFERENCE_BYTES} B a block at its peak); "
                "pass a larger --max-memory, or --requests to sweep the first ones",
                path=path, line=request.source_line or None,
            )  # fmt: skip
        yield request


def load_source(source: Source) -> tuple[Request, ...]:
    """The source's requests, read once per process."""
    return _load(source)[0]


def trace_caveats(source: Source) -> tuple[str, ...]:
    """What the source's trace cannot know (a watch recording's caveats), read with it."""
    return _load(source)[1]


def local_path(trace: str) -> str:
    """A path to read ``trace`` from: itself, or for a URL (``s3://``, ``http://``…) a local
    copy fetched once with fsspec (the Dask extra).
    """
    if "://" not in trace or trace.startswith("file://"):
        return trace.removeprefix("file://")
    return _fetched(trace)


@functools.lru_cache(maxsize=4)
def _fetched(url: str) -> str:
    import atexit
    import tempfile
    from pathlib import Path

    try:
        import fsspec
    except ImportError:
        raise UsageError(f"reading {url} needs fsspec: pip install 'kvreceipts[dask]'") from None
    handle, local = tempfile.mkstemp(prefix="kvreceipts-trace-", suffix=".jsonl")
    atexit.register(Path(local).unlink, missing_ok=True)  # the copy lives as long as the process
    with os.fdopen(handle, "wb") as out, fsspec.open(url, "rb") as remote:
        while chunk := remote.read(1 << 20):
            out.write(chunk)
    return local
