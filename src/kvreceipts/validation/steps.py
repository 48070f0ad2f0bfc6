"""The validation steps, in upstream's order, and the nox sessions that run each one.

Steps 1-9 are upstream's ``ci-local.sh bitnet-server-receipts``; 10-14 are ours. A step runs
one or more sessions of ``noxfile.py`` and passes only when every one of them succeeded.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from kvreceipts.errors import UsageError

__all__ = ["DEFAULT_TARGET", "STEPS", "TARGETS", "Selection", "Step", "select"]


@dataclass(frozen=True, slots=True)
class Step:
    """One validation step."""

    number: int
    name: str
    title: str
    sessions: tuple[str, ...]
    """The nox sessions that make up the step, as ``nox --list`` names them."""
    python: str | None = None
    """The Python version its sessions pin (``None``: the one nox runs with)."""
    upstream: bool = True
    """One of upstream's nine steps."""
    required: bool = True
    """A failure fails the verdict (a step named on the command line is always required)."""
    default: bool = True
    """Part of the ``all`` target (nox's default set)."""


STEPS: tuple[Step, ...] = (
    Step(1, "baseline", "baseline check: no features, import smoke, feature-free tests",
         ("baseline",)),
    Step(2, "lint", "strict lint: ruff check and mypy --strict", ("lint",)),
    Step(3, "format", "format check: ruff format --check", ("format",)),
    Step(4, "docs", "docs build: mkdocs build --strict", ("docs",)),
    Step(5, "msrv", "MSRV: Python 3.11, lowest dependencies, vermin", ("msrv",),
         python="3.11"),
    Step(6, "combo-receipts", "feature combo receipts", ("features(receipts)",)),
    Step(7, "combo-receipts-tuning", "feature combo receipts,tuning (and tuning alone)",
         ("features(receipts,tuning)", "features(tuning)")),
    Step(8, "happy", "happy path: emits_eviction_receipt_with_correct_payload", ("happy",)),
    Step(9, "guard", "guard path: does_not_emit_receipt_when_disabled", ("guard",)),
    Step(10, "tests", "tests on the newest Python (3.13)", ("tests",), python="3.13",
         upstream=False),
    Step(11, "crosscheck", "libCacheSim oracle on the real traces", ("crosscheck",),
         upstream=False),
    Step(12, "engine-compat", "watch against vLLM's and SGLang's own publishers (wheels)",
         ("engine-compat",), upstream=False),
    Step(13, "fuzz", "fuzz: generated and mutated input at every reader (short run)",
         ("fuzz",), upstream=False),
    Step(14, "bench", "benchmarks (scripts/bench.py)", ("bench",), upstream=False,
         required=False, default=False),
)  # fmt: skip

TARGETS: dict[str, tuple[str, ...]] = {
    "receipts": tuple(step.name for step in STEPS if step.upstream),
    "all": tuple(step.name for step in STEPS if step.default),
    "quick": ("lint", "features(receipts,tuning)"),
}
"""What ``./ci-local.sh TARGET`` runs: upstream's nine, the default set, or lint and the tests
with every feature on, on the current Python."""

DEFAULT_TARGET = "all"


@dataclass(frozen=True, slots=True)
class Selection:
    """A step chosen to run, with the sessions of it that were asked for."""

    step: Step
    sessions: tuple[str, ...]
    required: bool


def _session_aliases() -> dict[str, tuple[Step, str]]:
    aliases: dict[str, tuple[Step, str]] = {}
    for step in STEPS:
        for session in step.sessions:
            aliases[session] = (step, session)
            if step.python:  # nox also answers to tests-3.13
                aliases[f"{session}-{step.python}"] = (step, session)
    return aliases


def _choices() -> list[str]:
    names = [str(step.number) for step in STEPS] + [step.name for step in STEPS]
    return [*names, *_session_aliases(), *TARGETS]


def select(words: list[str] | tuple[str, ...]) -> list[Selection]:
    """Resolve step numbers, step names, session names and targets to steps, in step order.

    No words means the default target. A step named directly (not through a target) is always
    required, even one that is advisory by default.

    Raises:
        UsageError: a word names no step, session or target.
    """
    by_number = {str(step.number): step for step in STEPS}
    by_name = {step.name: step for step in STEPS}
    aliases = _session_aliases()
    chosen: dict[str, set[str]] = {}
    named: set[str] = set()

    def add(word: str, *, direct: bool) -> None:
        step = by_number.get(word) or by_name.get(word)
        if step is not None:
            chosen.setdefault(step.name, set()).update(step.sessions)
            if direct:
                named.add(step.name)
            return
        if word in aliases:
            step, session = aliases[word]
            chosen.setdefault(step.name, set()).add(session)
            if direct:
                named.add(step.name)
            return
        if word in TARGETS:
            for item in TARGETS[word]:
                add(item, direct=False)
            return
        close = difflib.get_close_matches(word, _choices(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(
            f"unknown step {word!r}{hint}: give a step number (1-{len(STEPS)}), a step or "
            f"session name, or a target ({', '.join(TARGETS)}); see kvreceipts validate --list"
        )

    for word in words or (DEFAULT_TARGET,):
        add(word.strip(), direct=True)
    return [
        Selection(
            step=step,
            sessions=tuple(s for s in step.sessions if s in chosen[step.name]),
            required=step.required or step.name in named,
        )
        for step in STEPS
        if step.name in chosen
    ]
