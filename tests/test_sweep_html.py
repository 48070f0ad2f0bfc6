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


SIZED = ("sweep", "--workload", "chat", "--allocator", "paged", "--requests", "300",
         "--points", "6", "--workers", "1", "-q", "-f", "csv", "--model", "llama-3-8b",
         "--target-hit-rate", "0.5,0.99")  # fmt: skip


def _rect(svg: str, group: str) -> tuple[float, float, float, float]:
    """The bounding box (left, top, right, bottom) of a group's first path, in SVG units."""
    start = svg.index(f'<g id="{group}">')
    path = re.search(r'\sd="([^"]+)"', svg[start:])
    assert path is not None
    numbers = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", path.group(1))]
    xs, ys = numbers[0::2], numbers[1::2]
    return min(xs), min(ys), max(xs), max(ys)


def test_the_report_states_sizes_ceiling_targets_and_keeps_the_legend_off_the_curves(
    tmp_path: Path,
) -> None:
    page = tmp_path / "report.html"
    subprocess.run([KVRECEIPTS, *SIZED, "--html", str(page)], check=True, capture_output=True)
    text = page.read_text(encoding="utf-8")
    for shown in ("<th>block lookups</th>", "<th>distinct blocks</th>",
                  "<th>time the trace spans</th>", "ceiling (highest hit ratio)",
                  "KV sizing llama-3-8b", "Pinning on", "Rejected requests over all points",
                  "capacity (GiB of KV, llama-3-8b)", "ceiling: hit ratio 89.55%",
                  "unreachable: the ceiling is 89.55%", "<th>size</th>"):  # fmt: skip
        assert shown in text, shown
    assert re.search(r"<td>hit ratio 50\.00%</td><td>lru</td><td>[\d,]+</td><td>[\d.]+ GiB</td>",
                     text)  # fmt: skip
    assert re.search(r'<td class="best">\d+\.\d{4}%\*</td>', text)  # four decimals, marked
    svg = text[text.index("<svg") :]
    legend = _rect(svg, "legend_1")
    axes = _rect(svg, "axes_1")
    assert legend[0] > axes[2]  # the legend starts right of the plot area: off the curves


@pytest.mark.slow
def test_headless_chromium_shows_the_sized_report(tmp_path: Path) -> None:
    chromium = _chromium()
    page = tmp_path / "report.html"
    subprocess.run([KVRECEIPTS, *SIZED, "--html", str(page)], check=True, capture_output=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--host-resolver-rules=MAP * ~NOTFOUND",
             f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()], capture_output=True,
                         check=True, timeout=120, text=True).stdout  # fmt: skip
    # What a reader sees, as the browser parsed it: the figure, the targets, the ceiling.
    assert "capacity (GiB of KV, llama-3-8b)" in dom
    assert "ceiling: hit ratio 89.55%" in dom
    assert "unreachable: the ceiling is 89.55%" in dom
    assert 'class="best"' in dom
    assert "<th>block lookups</th>" in dom
    assert "unique_entry_bytes" not in dom
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, *flags, "--hide-scrollbars", f"--screenshot={shot}",
                    "--window-size=1200,1600", page.as_uri()], capture_output=True,
                   check=True, timeout=120)  # fmt: skip
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n")
    assert len(data) > 20_000  # a page with a figure, not a blank one
