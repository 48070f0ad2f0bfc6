"""The engine part of ``kvreceipts stats`` as a table (figures from a watched engine)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import RenderableType

    from kvreceipts.engine.figures import EngineFigures

__all__ = ["render_engine"]


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:,.2f} s" if value >= 1000 else f"{value:,.1f} ms"


def render_engine(figures: EngineFigures) -> RenderableType:
    """Removals per medium, residency percentiles, churn, regret, clears, restarts, losses."""
    from rich.table import Table

    data = figures.to_dict()
    grid = Table(title="engine (kvreceipts watch)", title_justify="left", show_header=False,
                 box=None, padding=(0, 2))  # fmt: skip
    grid.add_column(style="bold")
    grid.add_column()
    by_medium = ", ".join(f"{m} {n:,}" for m, n in figures.removals.most_common())
    grid.add_row("removals", f"{data['removals']:,}" + (f" ({by_medium})" if by_medium else ""))
    residency = data["residency_ms"]
    grid.add_row("residency", f"p50 {_ms(residency['p50'])}, p90 {_ms(residency['p90'])}, "
                 f"p99 {_ms(residency['p99'])}, max {_ms(residency['max'])} "
                 f"({residency['known']:,} known, {residency['unknown']:,} stored before the "
                 "watch)")  # fmt: skip
    churn, span = data["churn"]["removals_per_s"], data["churn"]["engine_seconds"]
    grid.add_row("churn", "-" if churn is None else
                 f"{churn:,.3g} removals/s over {span:,.1f} engine s")  # fmt: skip
    regret = data["regret"]
    share = regret["fraction_of_removals"]
    grid.add_row("regret", f"{regret['restores']:,} stored again within the window"
                 + ("" if share is None else f" ({share:.1%} of removals, median gap "
                    f"{_ms(regret['gap_ms_p50'])})"))  # fmt: skip
    grid.add_row("clears", f"{data['clears']:,} ({data['cleared_blocks']:,} blocks)")
    grid.add_row("restarts", f"{data['restarts']:,}")
    causes = ", ".join(f"{c} {n:,}" for c, n in figures.loss_causes.most_common())
    grid.add_row("lost", f"{data['lost_batches']:,} batches" + (f" ({causes})" if causes else ""))
    for name, folded in figures.folded().items():  # past the names counted one by one
        grid.add_row("", f"{name} {folded}")
    return grid
