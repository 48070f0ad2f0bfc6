"""Every reader of a file, as a fuzz target: bytes in, a verdict on the answer out.

:func:`run_target` writes the bytes to a file, runs the command on it in this process
(Typer's runner) and raises :class:`Unanswered` unless the answer keeps the rules: an exit code
the docs name for that command, no traceback, exit 2 as one ``error: …`` line, and (with
``rss=True``) this process's peak RSS under the bound. The coverage-guided byte mutator
(tests/fuzz_atheris.py) calls it in its own process; the hypothesis tests
(tests/test_fuzz_readers.py) send their inputs to a :class:`Worker`, a process of its own, so
that its peak RSS is the readers' and not pytest's.
"""

from __future__ import annotations

import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from kvreceipts.cli import app

RSS_BOUND_MB = 150
"""The bound every reader keeps (docs/receipts.md)."""


@dataclass(frozen=True, slots=True)
class Target:
    """One reader: its command line (``{}`` is the file) and the exit codes its docs name."""

    name: str
    args: tuple[str, ...]
    codes: frozenset[int]
    suffix: str = ""


TARGETS: tuple[Target, ...] = (
    Target("stats", ("stats", "{}", "--format", "json"), frozenset({0, 1, 2})),
    Target("stats-table", ("stats", "{}"), frozenset({0, 1, 2})),
    Target("verify", ("verify", "{}", "--format", "json"), frozenset({0, 1, 2})),
    Target(
        "simulate-trace",
        ("simulate", "-q", "--format", "json", "--requests", "40", "--trace", "{}"),
        frozenset({0, 2}),
    ),
    Target(
        "simulate-mooncake",
        (
            "simulate",
            "-q",
            "--format",
            "json",
            "--requests",
            "40",
            "--skip-bad-lines",
            "--trace-format",
            "mooncake",
            "--trace",
            "{}",
        ),
        frozenset({0, 2}),
    ),
    Target(
        "simulate-azure",
        (
            "simulate",
            "-q",
            "--format",
            "json",
            "--requests",
            "40",
            "--trace-format",
            "azure",
            "--trace",
            "{}",
        ),
        frozenset({0, 2}),
    ),
    Target(
        "sweep-trace",
        ("sweep", "-q", "--format", "json", "--points", "2", "--requests", "40", "--trace", "{}"),
        frozenset({0, 2}),
    ),
    Target(
        "watch-from", ("watch", "--from", "{}", "-f", "jsonl", "-q"), frozenset({0, 1, 2}), ".kvrec"
    ),
    Target("config", ("config", "show", "--config", "{}"), frozenset({0, 2}), ".toml"),
    Target(
        "simulate-config",
        ("simulate", "-q", "--format", "json", "--requests", "20", "--config", "{}"),
        frozenset({0, 2}),
        ".toml",
    ),
)
BY_NAME = {target.name: target for target in TARGETS}


class Unanswered(AssertionError):  # noqa: N818 - what it is, not how it failed
    """A reader broke a rule (a traceback, an exit code its docs do not name, ...)."""


def peak_rss_mb() -> float:
    """This process's peak RSS so far, in MB: ``VmHWM`` of /proc/self/status, the high-water
    mark of this program's own memory. (``ru_maxrss`` would do elsewhere, but Linux carries it
    over an exec from the process that forked: a worker started by a big pytest would start
    at pytest's size.)
    """
    try:
        with Path("/proc/self/status").open(encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_RUNNER = CliRunner()


def run_target(target: Target, data: bytes, folder: str | None = None, *, rss: bool = True) -> int:
    """Run ``target`` on ``data``; its exit code, or :class:`Unanswered`."""
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        path = Path(tmp) / f"input{target.suffix}"
        path.write_bytes(data)
        args = [arg.replace("{}", str(path)) for arg in target.args]
        result = _RUNNER.invoke(app, args)
    exception = result.exception
    if exception is not None and not isinstance(exception, SystemExit):
        raise Unanswered(f"{target.name}: {type(exception).__name__}: {exception}") from exception
    stderr = result.stderr
    if "Traceback" in stderr:
        raise Unanswered(f"{target.name}: a traceback on stderr:\n{stderr[-2000:]}")
    if result.exit_code not in target.codes:
        raise Unanswered(f"{target.name}: exit {result.exit_code}, not one of "
                         f"{sorted(target.codes)}:\n{stderr[-2000:]}")  # fmt: skip
    if result.exit_code == 2:
        lines = stderr.strip().splitlines()
        if not lines or not lines[-1].startswith("error: "):
            raise Unanswered(f"{target.name}: exit 2 without an error line:\n{stderr[-2000:]}")
    peak = peak_rss_mb()
    if rss and peak > RSS_BOUND_MB:
        raise Unanswered(f"{target.name}: peak RSS {peak:.0f} MB, over {RSS_BOUND_MB} MB")
    return result.exit_code


_FRAME = struct.Struct(">I")


class Worker:
    """A process that runs targets on the inputs sent to it (``python fuzz_targets.py``),
    started on first use; :meth:`run` raises :class:`Unanswered` as :func:`run_target` does,
    and also if the process dies.
    """

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        here = Path(__file__).resolve().parent
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here.parent / "src"), str(here)])}
        return subprocess.Popen([sys.executable, str(Path(__file__).resolve())], env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip

    def run(self, target: Target, data: bytes) -> int:
        """``target``'s exit code on ``data``."""
        if self._process is None or self._process.poll() is not None:
            self._process = self._start()
        process = self._process
        assert process.stdin is not None
        assert process.stdout is not None
        name = json.dumps([target.name, target.args, sorted(target.codes), target.suffix]).encode()
        try:
            process.stdin.write(_FRAME.pack(len(name)) + name + _FRAME.pack(len(data)) + data)
            process.stdin.flush()
            answer = process.stdout.readline()
        except BrokenPipeError:
            answer = b""
        if not answer:
            self.close()
            raise Unanswered(f"{target.name}: the worker died (exit {process.wait()})")
        code, _, problem = answer.decode().rstrip("\n").partition(" ")
        if problem:
            raise Unanswered(problem.replace("\\n", "\n"))
        return int(code)

    def close(self) -> None:
        """Stop the process."""
        process, self._process = self._process, None
        if process is not None:
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()
            process.wait()


def _serve() -> None:
    """The worker's loop: (name, data) frames in, ``code [problem]`` lines out."""
    read, write = sys.stdin.buffer.read, sys.stdout.buffer
    while head := read(_FRAME.size):
        name, args, codes, suffix = json.loads(read(_FRAME.unpack(head)[0]))
        data = read(_FRAME.unpack(read(_FRAME.size))[0])
        try:
            line = f"{run_target(Target(name, tuple(args), frozenset(codes), suffix), data)}"
        except Unanswered as problem:
            line = "-1 " + str(problem).replace("\n", "\\n")
        write.write(line.encode() + b"\n")
        write.flush()


if __name__ == "__main__":
    _serve()
