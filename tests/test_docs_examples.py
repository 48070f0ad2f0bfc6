"""The examples in the README and docs/ run, and say what they print.

- Every command line with ``jq`` in a code block of README.md or docs/*.md (docs/cli.md carries
  each command's ``--help`` examples) runs in a sandbox against real output: it exits 0, prints
  something, and no line of what it prints is ``null`` (``jq '.eviction.required'`` once printed
  ``null``).
- Where a ``console`` block of docs/getting-started.md or docs/receipts.md shows what a command
  prints, the command is run (with the ones before it, in order) and the text must be its
  output, byte for byte (trailing spaces aside). ``KVRECEIPTS_UPDATE_DOCS=1 pytest
  tests/test_docs_examples.py`` writes the real output into the page instead.
- The README's sample table and ``verify`` verdict are lines of the real output (with
  ``KVRECEIPTS_UPDATE_DOCS=1``, the verdict and the table's chain head are rewritten).

The sandbox is a folder with ``../shared/traces`` beside it (the real traces), a ``kvreceipts``
on ``PATH`` that runs this checkout, every feature on, 80 columns, and the files the examples
name: ``run.jsonl`` (a default run), ``removals.jsonl`` and ``run.kvrec`` (the watch fixture),
``key.bin`` (made the README's way) and a stand-in nox for ``validate``. A live ``watch
tcp://...`` is replaced by a replay of the recorded fixture, the one substitution made.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
GENERATED = [DOCS / "getting-started.md", DOCS / "receipts.md"]
TRACES = Path(os.environ.get("KVRECEIPTS_TRACES", ROOT.parent / "shared" / "traces"))
WATCH = Path(__file__).resolve().parent / "fixtures" / "watch"
FAKE_NOX = Path(__file__).resolve().parent / "fixtures" / "nox" / "fake_nox.py"
UPDATE = os.environ.get("KVRECEIPTS_UPDATE_DOCS") == "1"
SKIPPED = ("python3 -m venv", "pip ", "uv ", "./ci-local.sh", "zstd ")
"""Command lines the sandbox does not run: installs, the whole CI, inputs it does not have."""
LIVE_WATCH = re.compile(r"kvreceipts watch tcp://\S+(?: --replay-endpoint \S+)?")

NO_JQ = "jq is not installed (.ci/run installs it: apt-get install jq)"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("jq") is None, reason=NO_JQ)]


@dataclass
class Example:
    """One command line of a page, and the output the page shows for it (if any)."""

    page: Path
    line: int
    """Where it starts (0-based line of the page)."""
    command: str
    output: list[str] | None = None
    output_lines: tuple[int, int] = (0, 0)
    """The page lines [start, end) that show its output."""
    lang: str = ""
    before: list[str] = field(default_factory=list)
    """The commands before it in its console block (they make the files it reads)."""

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line + 1}"


def _blocks(lines: list[str]) -> list[tuple[int, str, list[str]]]:
    """Fenced code blocks: (first line inside, language, lines)."""
    found: list[tuple[int, str, list[str]]] = []
    start: int | None = None
    lang = ""
    for number, line in enumerate(lines):
        if line.startswith("```"):
            if start is None:
                start, lang = number + 1, line[3:].strip()
            else:
                found.append((start, lang, lines[start:number]))
                start = None
    return found


def _joined(block: list[str], i: int) -> tuple[str, int]:
    """The command starting at block[i] with its continuation lines, and the next index."""
    parts = [block[i]]
    i += 1
    while i < len(block) and (parts[-1].rstrip().endswith("\\") or
                              block[i].lstrip().startswith("| ")):  # fmt: skip
        parts.append(block[i])
        i += 1
    return "\n".join(parts), i


def examples(page: Path) -> list[Example]:
    """Every command line of the page's shell blocks, with the output a console block shows."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Example] = []
    for start, lang, block in _blocks(lines):
        i = 0
        if lang == "console":
            while i < len(block):
                if not block[i].startswith("$ "):
                    i += 1
                    continue
                command, end = _joined([block[i][2:], *block[i + 1 :]], 0)
                i += end
                first = i
                while i < len(block) and not block[i].startswith("$ "):
                    i += 1
                shown = block[first:i] or None
                earlier = [e.command for e in found if e.lang == lang and e.output_lines[0]
                           and e.output_lines[0] >= start]  # fmt: skip
                found.append(Example(page, start + first - end, command, shown,
                                     (start + first, start + i), lang, earlier))  # fmt: skip
        elif lang in ("bash", "sh") or (lang == "text" and page.name == "cli.md"):
            made: list[str] = []  # a block's commands make the files its later ones read
            while i < len(block):
                text = block[i].strip()
                prose = lang == "text" and not text.startswith("kvreceipts ")
                if not text or text.startswith("#") or prose:
                    i += 1
                    continue
                command, end = _joined([b.strip() for b in block], i)
                found.append(Example(page, start + i, command, lang=lang, before=[*made]))
                made.append(command)
                i = end
    return found


def _runnable(example: Example) -> bool:
    return not example.command.startswith(SKIPPED)


def _sandbox(root: Path) -> tuple[Path, dict[str, str]]:
    work = root / "work"
    (root / "bin").mkdir(parents=True)
    work.mkdir()
    if TRACES.is_dir():
        (root / "shared").mkdir()
        (root / "shared" / "traces").symlink_to(TRACES)
    shim = root / "bin" / "kvreceipts"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m kvreceipts "$@"\n', encoding="utf-8")
    shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KVRECEIPTS_", "FAKE_NOX", "COLUMNS", "LINES"))}  # fmt: skip
    env.update({
        "PATH": f"{root / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
                f"{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "80", "TERM": "dumb",
        "KVRECEIPTS_NOX": f"{sys.executable} {FAKE_NOX}", "FAKE_NOX_REPORT": "one_failed.json",
    })  # fmt: skip
    return work, env


def sh(command: str, work: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """One command line, as a user's shell runs it (stderr beside stdout, as a terminal)."""
    command = LIVE_WATCH.sub(f"kvreceipts watch --from {work / 'run.kvrec'}", command)
    return subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True,
                          text=True, timeout=600, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    work, env = _sandbox(tmp_path_factory.mktemp("docs"))
    shutil.copyfile(WATCH / "engine.jsonl", work / "removals.jsonl")
    shutil.copyfile(WATCH / "engine.kvrec", work / "run.kvrec")
    (work / "noxfile.py").touch()  # validate looks for a checkout; the stand-in nox runs nothing
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (make_key,) = [line for line in readme.splitlines() if "token_hex(32)" in line]
    for setup in (make_key, "kvreceipts simulate -o run.jsonl -q > /dev/null"):
        done = sh(setup, work, env)
        assert done.returncode == 0, done.stderr
    return work, env


JQ = [e for page in PAGES for e in examples(page) if re.search(r"(^|[|\s])jq\s", e.command)]


def test_the_examples_are_found() -> None:
    pages = {e.page.name for e in JQ}
    assert {"README.md", "getting-started.md", "cli.md", "watch.md", "receipts.md"} <= pages
    assert any("'.eviction.required'" in e.command for e in JQ)
    assert len(JQ) >= 15


@pytest.mark.parametrize("example", JQ, ids=[e.where for e in JQ])
def test_every_jq_example_gives_a_real_answer(
    example: Example, sandbox: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    work, env = sandbox
    if "../shared/traces" in example.command and not TRACES.is_dir():
        pytest.skip("the traces are not beside the checkout")
    if example.before:  # in a copy of the sandbox, after the commands that lead up to it
        work, env = _sandbox(tmp_path)
        shutil.copytree(sandbox[0], work, dirs_exist_ok=True)
        for command in filter(lambda c: not c.startswith(SKIPPED), example.before):
            sh(command, work, env)
    done = sh(example.command, work, env)
    assert done.returncode == 0, f"{example.where}: {example.command}\n{done.stderr}"
    assert "jq: error" not in done.stderr, done.stderr
    redirected = re.search(r">\s*(\S+)\s*$", example.command)
    answer = (work / redirected.group(1)).read_text() if redirected else done.stdout
    assert answer.strip(), f"{example.where}: {example.command} printed nothing"
    assert "null" not in [line.strip() for line in answer.splitlines()], \
        f"{example.where}: {example.command} printed null"  # fmt: skip


def _page_outputs(page: Path, root: Path) -> list[tuple[Example, list[str]]]:
    """Every runnable command of the page, run in order; those that show output, with it."""
    work, env = _sandbox(root)
    results = []
    for example in examples(page):
        if example.lang != "console" or not _runnable(example):
            continue
        done = sh(example.command + " 2>&1", work, env)
        real = [line.rstrip() for line in done.stdout.splitlines()]
        if example.output is not None:
            results.append((example, real))
        elif done.returncode != 0:
            pytest.fail(f"{example.where}: {example.command} exited {done.returncode}: "
                        f"{done.stdout[-500:]}")  # fmt: skip
    return results


@pytest.mark.parametrize("page", GENERATED, ids=[p.name for p in GENERATED])
def test_shown_output_is_real_output(page: Path, tmp_path: Path) -> None:
    if not TRACES.is_dir():
        pytest.skip("the traces are not beside the checkout")
    results = _page_outputs(page, tmp_path)
    assert results, f"{page.name} shows no output"
    if UPDATE:
        lines = page.read_text(encoding="utf-8").splitlines()
        for example, real in sorted(results, key=lambda r: -r[0].output_lines[0]):
            start, end = example.output_lines
            lines[start:end] = real
        page.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return
    for example, real in results:
        shown = [line.rstrip() for line in example.output or []]
        assert shown == real, (f"{example.where}: `{example.command}` prints other text; "
                               "regenerate: KVRECEIPTS_UPDATE_DOCS=1 pytest "
                               "tests/test_docs_examples.py")  # fmt: skip


ELIDED = re.compile(r"^\s*⋮")


README = ROOT / "README.md"


def _readme_block(after: str) -> tuple[int, int]:
    """The lines [begin, end) of the ``text`` block that follows the line holding ``after``."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if after in line)
    begin = next(i for i in range(start, len(lines)) if lines[i].startswith("```text")) + 1
    end = next(i for i in range(begin, len(lines)) if lines[i].startswith("```"))
    return begin, end


def _in_order(shown: list[str], real: list[str]) -> None:
    """Every shown line is a line of the real output, in the same order (an elision line
    beginning with ⋮ stands for real lines left out)."""
    at = 0
    for line in shown:
        if ELIDED.match(line):
            continue
        assert line in real[at:], (f"README shows a line the real output lacks: {line!r}; the "
                                   "chain heads and the verdict regenerate with "
                                   "KVRECEIPTS_UPDATE_DOCS=1")  # fmt: skip
        at = real.index(line, at) + 1


def _check_block(after: str, real: list[str], *, whole: bool) -> None:
    """The README block after ``after`` against ``real``; with KVRECEIPTS_UPDATE_DOCS=1 it
    is rewritten: wholly (``whole``), or else its chain head line, the one fact of a
    sampled block that a change of the record format moves.
    """
    begin, end = _readme_block(after)
    lines = README.read_text(encoding="utf-8").splitlines()
    if UPDATE:
        if whole:
            lines[begin:end] = real
        else:
            head = next(line for line in real if line.startswith("chain head"))
            lines[begin:end] = [head if line.startswith("chain head") else line
                                for line in lines[begin:end]]  # fmt: skip
        README.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return
    _in_order([line.rstrip() for line in lines[begin:end]], real)


def test_the_readmes_table_and_verdict_are_real(sandbox: tuple[Path, dict[str, str]]) -> None:
    work, env = sandbox
    # The README's panel is 87 columns wide: the table as a terminal of 100 columns shows it.
    table = sh("kvreceipts simulate --format table 2>/dev/null", work, {**env, "COLUMNS": "100"})
    _check_block("On a terminal, `kvreceipts simulate` prints",
                 [line.rstrip() for line in table.stdout.splitlines()], whole=False)  # fmt: skip
    verdict = sh("kvreceipts verify run.jsonl 2>/dev/null", work, env)
    _check_block("`verify` names every violation",
                 [line.rstrip() for line in verdict.stdout.splitlines()], whole=True)  # fmt: skip
