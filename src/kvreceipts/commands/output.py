"""The one way commands print: data on stdout, people-facing text on stderr.

``Output`` writes data (receipt lines, JSON documents, tables) through one buffered writer
that survives a closed pipe (``| head -1``): on ``BrokenPipeError`` it points stdout at
``/dev/null`` and stops, so nothing is left to fail at exit.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import orjson

from kvreceipts.units import human_bytes

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

__all__ = ["Output", "human_bytes"]


class Output:
    """Human mode prints tables and notes; JSON mode prints one document and no decoration."""

    def __init__(self, *, json_mode: bool = False, quiet: bool = False) -> None:
        self.json_mode = json_mode
        self.quiet = quiet
        self.closed = False
        """Set once stdout's reader has gone away (later data is dropped quietly)."""
        self._err: Console | None = None

    @property
    def err(self) -> Console:
        """The console on stderr (rich is imported on first use: start-up stays fast)."""
        if self._err is None:
            from rich.console import Console

            self._err = Console(stderr=True, highlight=False, soft_wrap=True)
        return self._err

    @property
    def shows_progress(self) -> bool:
        """Whether a progress bar belongs on stderr: a terminal, and not ``--quiet``."""
        return not self.quiet and self.err.is_terminal

    @property
    def stdout_is_terminal(self) -> bool:
        """Whether stdout is a terminal (the default format depends on it)."""
        return sys.stdout.isatty()

    def _stdout_closed(self) -> None:
        self.closed = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):  # no real file descriptor (tests)
            pass

    def write(self, data: bytes) -> bool:
        """Write raw data to stdout; ``False`` once the reader has gone."""
        if self.closed:
            return False
        try:
            sys.stdout.buffer.write(data)
        except BrokenPipeError:
            self._stdout_closed()
            return False
        return True

    def flush(self) -> None:
        """Push buffered data out (call before exiting)."""
        if self.closed:
            return
        try:
            sys.stdout.flush()
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            self._stdout_closed()

    def json(self, document: Any) -> None:
        """One JSON document on stdout."""
        self.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
        self.flush()

    def show(self, *renderables: RenderableType) -> None:
        """Rich renderables (tables, panels) on stdout: the data view of human mode."""
        if self.closed:
            return
        from rich.console import Console

        console = Console(highlight=False)
        try:
            for renderable in renderables:
                console.print(renderable)
            sys.stdout.flush()
        except BrokenPipeError:
            self._stdout_closed()

    def note(self, message: RenderableType) -> None:
        """People-facing text on stderr (silenced by ``--quiet``)."""
        if not self.quiet:
            self.err.print(message)

    def warn(self, message: str) -> None:
        """A warning on stderr, even when quiet."""
        self.err.print(f"warning: {message}", markup=False, style="yellow")

    def error(self, message: str) -> None:
        """The one-line error, on stderr: control characters (a newline in a file name) are
        escaped, so that it stays one line.
        """
        if not message.isprintable():
            message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
        self.err.print(f"error: {message}", markup=False, style="bold red", soft_wrap=True)
