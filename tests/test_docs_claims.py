"""What the docs tell a newcomer to type works after the README's install, and the timings they
quote say when and where they were measured.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "ci-local.sh"]
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")
SECONDS = re.compile(r"\b\d+(?:\.\d+)? s\b")


def test_nox_is_named_by_a_path_that_exists_after_the_install() -> None:
    # The README installs kvreceipts alone; ./ci-local.sh (or kvreceipts validate) puts nox in
    # .venv-ci/bin, which is not on PATH: a bare `nox -s` would be "command not found".
    bare = [
        f"{page.name}:{number}: {line.strip()}"
        for page in PAGES
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1)
        for match in re.finditer(r"(\S*)nox -s\b", line)
        if not match.group(1).endswith(".venv-ci/bin/")
    ]
    assert bare == []


def _paragraphs(text: str) -> list[str]:
    """Prose paragraphs (code blocks and table rows left out)."""
    prose, inside = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
            prose.append("")
        elif not inside and not line.startswith("|"):
            prose.append(line)
    return [p for p in "\n".join(prose).split("\n\n") if p.strip()]


def test_validation_timings_name_the_machine_and_the_date() -> None:
    text = (ROOT / "docs" / "validation.md").read_text(encoding="utf-8")
    undated = [p for p in _paragraphs(text) if SECONDS.search(p) and not DATE.search(p)]
    assert undated == []
    assert "116 s" not in text  # measured at 252 s on 2026-12-03; the old figure is gone
