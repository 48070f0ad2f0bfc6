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
    # A store is a receipt only through the removal that ends it: the file can count those.
    grid.add_row("stores", f"{residency['known']:,} of the removed blocks were stored while "
                 "watched; stores of blocks still held are in no receipt (the watch's "
                 "kvreceipts_engine_stores_total counts every one)")  # fmt: skip
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
    for label, counts in (("by group", figures.removals_by_group),
                          ("by tenant", figures.removals_by_tenant)):  # fmt: skip
        if len(counts) > 1 or (counts and "-" not in counts):
            grid.add_row(f"  {label}", ", ".join(f"{k} {n:,}" for k, n in counts.most_common(8)))
    by_medium_p50 = data["residency_p50_ms_by_medium"]
    if len(by_medium_p50) > 1:
        grid.add_row("  p50 by medium", ", ".join(f"{m} {_ms(v)}" for m, v in
                                                  by_medium_p50.items()))  # fmt: skip
    reuse = data["reuse"]
    rate = data["hit_rate"]
    grid.add_row("reuse", f"{reuse['blocks']:,} blocks reported reused (hits)"
                 + ("" if rate is None else f", hit rate {rate:.1%}")
                 + ("" if reuse["blocks"] else " (vLLM reports reuse only with "
                    "kv_cache_report_mode=full)"))  # fmt: skip
    if reuse["blocks"]:
        for label in ("by_medium", "by_group", "by_tenant"):
            grid.add_row(f"  {label.replace('_', ' ')}", ", ".join(
                f"{k} {n:,}" for k, n in sorted(reuse[label].items(), key=lambda kv: -kv[1])[:8]
            ))  # fmt: skip
    grid.add_row("clears", f"{data['clears']:,} ({data['cleared_blocks']:,} blocks)")
    grid.add_row("restarts", f"{data['restarts']:,}")
    causes = ", ".join(f"{c} {n:,}" for c, n in figures.loss_causes.most_common())
    grid.add_row("lost", f"{data['lost_batches']:,} batches" + (f" ({causes})" if causes else ""))
    for name, folded in figures.folded().items():  # past the names counted one by one
        grid.add_row("", f"{name} {folded}")
    return grid
