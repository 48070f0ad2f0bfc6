"""``sweep --html``: one self-contained page, opened in headless Chromium and screenshotted."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

KVRECEIPTS = str(Path(sys.executable).parent / "kvreceipts")
GRID = ("sweep", "--workload", "chat", "--allocator", "paged", "--requests", "300",
        "--points", "6", "--workers", "1", "-q", "-f", "csv")  # fmt: skip


def write(page: Path) -> None:
    subprocess.run([KVRECEIPTS, *GRID, "--html", str(page)], check=True, capture_output=True)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("headless Chromium not installed (Debian: apt-get install chromium)")


def test_the_page_is_self_contained(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    write(page)
    text = page.read_text(encoding="utf-8")
    assert "<svg" in text
    command = shlex.join(["kvreceipts", *GRID, "--html", str(page)])
    assert f"<code>{command}</code>" in text  # the exact command line
    assert re.search(r"<th>requests</th><td>300</td>", text)
    assert "unique_entry_bytes" not in text
    assert "span_s" not in text
    # Nothing to fetch: no external scripts, styles, images or links.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "<script" not in text
    for policy in ("lru", "fifo", "lfu", "s3fifo"):
        assert f"<th>{policy}</th>" in text


@pytest.mark.slow
def test_headless_chromium_renders_the_page(tmp_path: Path) -> None:
    chromium = _chromium()
    page = tmp_path / "report.html"
    write(page)
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--no-first-run", "--disable-background-networking",
             "--host-resolver-rules=MAP * ~NOTFOUND",  # any network use would fail
             f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1200,1600",
                    page.as_uri()], capture_output=True, check=True, timeout=120)  # fmt: skip
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1200, 1600)
    dump = [chromium, *flags, "--dump-dom", page.as_uri()]
    dom = subprocess.run(dump, capture_output=True, check=True, timeout=120, text=True).stdout
    assert "<svg" in dom
    assert 'class="best"' in dom
    assert "miss-ratio curves" in dom
