"""The progress bar of ``simulate``: a total and an ETA, in at most 80 columns."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from rich.console import Console

from kvreceipts.commands.simulate_report import progress_bar
from kvreceipts.config import CachingConfig, SimulationConfig
from kvreceipts.simulation import plan_simulation

if TYPE_CHECKING:
    from pathlib import Path

ROW = b'{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1]}\n'


def _frame(plan_args: dict[str, object], bytes_read: int = 0) -> str:
    plan = plan_simulation(CachingConfig(), SimulationConfig(**plan_args))  # type: ignore[arg-type]
    console = Console(file=io.StringIO(), width=200, force_terminal=True, color_system=None)
    bar, update = progress_bar(console, plan)
    if plan.trace_stats is not None:
        plan.trace_stats.bytes_read = bytes_read
    update(1024)
    console.print(bar.get_renderable())
    text: str = console.file.getvalue()  # type: ignore[attr-defined]
    assert max(len(line) for line in text.splitlines()) <= 80, text
    return text


def test_a_trace_bar_shows_its_size_and_an_eta(tmp_path: Path) -> None:
    trace = tmp_path / "a_rather_long_trace_file_name.jsonl"
    trace.write_bytes(ROW * 20_000)  # 1.5 MB
    text = _frame({"trace": str(trace)}, bytes_read=300_000)
    assert "/1.5 MB" in text  # the total
    assert "20%" in text
    assert "1,024 req" in text
    assert "-:--:--" in text or ":" in text.split("req")[-1]  # the time-remaining column
    assert "a_rather_long_trace…" in text


def test_a_synthetic_bar_counts_requests_against_the_total() -> None:
    assert "1024/2000" in _frame({"workload": "chat"})
