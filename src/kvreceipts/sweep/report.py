"""A sweep's rows and their renderings: table, CSV, JSON, JSON lines, plot and HTML page.

Nothing here measures time or reads the clock: the same rows render to the same bytes.
"""

from __future__ import annotations

import csv
import html
import io
from typing import TYPE_CHECKING, Any

from kvreceipts.errors import UsageError
from kvreceipts.sweep.grid import ROW_KEYS
from kvreceipts.units import human_bytes

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rich.table import Table

    from kvreceipts.sweep.grid import Task, TraceFacts
    from kvreceipts.sweep.methods import Counts

__all__ = [
    "GIB",
    "build_rows",
    "check_plot_available",
    "render_csv",
    "render_html",
    "render_jsonl",
    "render_plot",
    "row_keys",
    "tables",
]

GIB = 1024**3


def row_keys(allocator: str) -> tuple[str, ...]:
    """A row's keys for this allocator (paged rows count blocks, arena rows MiB)."""
    dropped = "capacity_mb" if allocator == "paged" else "capacity_blocks"
    return tuple(k for k in ROW_KEYS if k != dropped)


def build_rows(tasks: Sequence[Task], results: Sequence[Sequence[Counts]]) -> list[dict[str, Any]]:
    """One row per (source, policy, capacity), in the grid's order."""
    rows = []
    for task, counts in zip(tasks, results, strict=True):
        paged = task.spec.allocator == "paged"
        for capacity, c in zip(task.capacities, counts, strict=True):
            lookups = c.hits + c.misses
            row: dict[str, Any] = {
                "trace": task.source.label,
                "policy": task.policy,
                "capacity_blocks" if paged else "capacity_mb": int(capacity) if paged else capacity,
                "hits": c.hits,
                "misses": c.misses,
                "hit_ratio": round(c.hits / lookups, 6) if lookups else 0.0,
                "miss_ratio": round(c.misses / lookups, 6) if lookups else 0.0,
                "evictions": c.evictions,
                "rejected": c.rejected,
                "method": task.method,
                "sample_rate": task.sample_rate,
                "sampled_refs": c.sampled_refs,
            }
            rows.append(row)
    return rows


def render_jsonl(rows: Sequence[dict[str, Any]]) -> bytes:
    """One JSON object a line."""
    import orjson

    return b"".join(orjson.dumps(row) + b"\n" for row in rows)


def render_csv(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> bytes:
    """A header line and one line per row."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(keys), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


def _capacity_key(rows: Sequence[dict[str, Any]]) -> str:
    return "capacity_blocks" if rows and "capacity_blocks" in rows[0] else "capacity_mb"


def _capacity_text(capacity: float, key: str, block_bytes: int) -> str:
    if key == "capacity_blocks":
        return f"{int(capacity):,} ({human_bytes(capacity * block_bytes)})"
    return f"{capacity:,g} MiB"


def tables(rows: Sequence[dict[str, Any]], facts: Sequence[TraceFacts]) -> list[Table]:
    """One table per trace: a row per capacity, a column of miss ratios per policy; the best
    (lowest) miss ratio of each row is highlighted.
    """
    from rich import box
    from rich.table import Table

    key = _capacity_key(rows)
    out = []
    for fact in facts:
        methods = ", ".join(dict.fromkeys(r["method"] for r in rows if r["trace"] == fact.name))
        policies, grid = _grid(rows, fact, key)
        table = Table(title=f"miss ratio · {fact.name}", title_justify="left",
                      box=box.SIMPLE_HEAD, pad_edge=False)  # fmt: skip
        table.add_column("capacity", justify="right", no_wrap=True)
        for policy in policies:
            table.add_column(policy, justify="right", no_wrap=True)
        for capacity, found, best in grid:
            texts = [_capacity_text(capacity, key, fact.block_bytes)]
            for row in found:
                if row is None:
                    texts.append("-")
                    continue
                text = f"{row['miss_ratio']:.4f}"
                texts.append(f"[bold green]{text}[/]" if len(policies) > 1 and
                             row["miss_ratio"] == best else text)  # fmt: skip
            table.add_row(*texts)
        refs = f"{fact.block_refs:,} block lookups, {fact.unique_blocks:,} distinct blocks"
        table.caption = (
            f"{fact.requests:,} requests, {refs}; method {methods}; lowest miss ratio in green"
        )
        out.append(table)
    return out


def _grid(
    rows: Sequence[dict[str, Any]], fact: TraceFacts, key: str
) -> tuple[list[str], list[tuple[float, list[dict[str, Any] | None], float | None]]]:
    """A trace's rows as a grid: its policies, and per capacity (ascending) each policy's row
    (``None`` where there is none) and the lowest miss ratio among them.
    """
    mine = [r for r in rows if r["trace"] == fact.name]
    policies = list(dict.fromkeys(r["policy"] for r in mine))
    cell = {(r["policy"], r[key]): r for r in mine}
    grid = []
    for capacity in sorted(dict.fromkeys(r[key] for r in mine)):
        found = [cell.get((policy, capacity)) for policy in policies]
        ratios = [row["miss_ratio"] for row in found if row is not None]
        grid.append((capacity, found, min(ratios) if ratios else None))
    return policies, grid


def _curves(
    rows: Sequence[dict[str, Any]], fact: TraceFacts
) -> dict[str, list[tuple[float, float]]]:
    key = _capacity_key(rows)
    curves: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        if row["trace"] == fact.name:
            curves.setdefault(row["policy"], []).append((float(row[key]), row["miss_ratio"]))
    return {policy: sorted(points) for policy, points in curves.items()}


def _pyplot() -> Any:
    try:
        import matplotlib as mpl
    except ImportError:
        raise UsageError("plots need matplotlib: pip install 'kvreceipts[plot]'") from None
    mpl.use("Agg")
    # The same rows must give the same bytes: no random ids or dates in SVG output.
    mpl.rcParams["svg.hashsalt"] = "kvreceipts"
    mpl.rcParams["svg.fonttype"] = "none"
    import matplotlib.pyplot as plt

    return plt


def check_plot_available() -> None:
    """Fail early, before the sweep runs, when the plot extra is missing."""
    _pyplot()


def _figure(rows: Sequence[dict[str, Any]], facts: Sequence[TraceFacts]) -> Any:
    plt = _pyplot()
    key = _capacity_key(rows)
    fig, axes = plt.subplots(1, len(facts), figsize=(7 * len(facts), 4.5), squeeze=False)
    for ax, fact in zip(axes[0], facts, strict=True):
        for policy, points in _curves(rows, fact).items():
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.5, label=policy)
        ax.set_xscale("log")
        ax.set_ylim(0, 1)
        ax.set_ylabel("miss ratio")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(title="policy")
        ax.set_title(f"{fact.name} ({fact.requests:,} requests)", fontsize=10)
        if key == "capacity_blocks":
            ax.set_xlabel(f"capacity (blocks of {fact.block_bytes:,} bytes)")
            per_block = fact.block_bytes / GIB
            top = ax.secondary_xaxis(
                "top", functions=(lambda b, k=per_block: b * k, lambda g, k=per_block: g / k)
            )
            top.set_xlabel(f"capacity (GiB, {fact.sizing})")
        else:
            ax.set_xlabel("capacity (MiB)")
    fig.tight_layout()
    return fig


def render_plot(rows: Sequence[dict[str, Any]], facts: Sequence[TraceFacts], fmt: str) -> bytes:
    """The miss-ratio curves as PNG or SVG bytes."""
    plt = _pyplot()
    fig = _figure(rows, facts)
    buffer = io.BytesIO()
    metadata: dict[str, Any] = {"Software": None} if fmt == "png" else {"Date": None}
    fig.savefig(buffer, format=fmt, dpi=110, metadata=metadata)
    plt.close(fig)
    return buffer.getvalue()


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{padding:.25em .7em;border-bottom:1px solid #ddd}
td{text-align:right;font-variant-numeric:tabular-nums}.best{background:#d9f2d9;font-weight:600}
code,pre{background:#f4f4f4;padding:.2em .4em}pre{white-space:pre-wrap}
"""


def render_html(rows: Sequence[dict[str, Any]], facts: Sequence[TraceFacts], command: str) -> str:
    """One self-contained page: the curves (inline SVG), the table, the trace's facts and the
    command that made it. Nothing is fetched from the network.
    """
    svg = render_plot(rows, facts, "svg").decode()
    svg = svg[svg.index("<svg") :]  # inline: drop the XML prolog and doctype
    key = _capacity_key(rows)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>kvreceipts sweep</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>kvreceipts sweep: miss-ratio curves</h1>",
        f"<p>Command: <code>{html.escape(command)}</code></p>",
        f'<figure id="curves">{svg}</figure>',
    ]
    for fact in facts:
        policies, grid = _grid(rows, fact, key)
        parts.append(f"<h2>{html.escape(fact.name)}</h2>")
        parts.append('<table class="facts">')
        for name, value in fact.to_dict().items():
            parts.append(f"<tr><th>{html.escape(name)}</th>"
                         f"<td>{html.escape(str(value))}</td></tr>")  # fmt: skip
        parts.append("</table>")
        head = "".join(f"<th>{html.escape(p)}</th>" for p in policies)
        parts.append(f'<table class="curves"><tr><th>{key}</th>{head}</tr>')
        for capacity, found, best in grid:
            cells = []
            for row in found:
                if row is None:
                    cells.append("<td>-</td>")
                    continue
                css = ' class="best"' if row["miss_ratio"] == best and len(policies) > 1 else ""
                cells.append(f"<td{css}>{row['miss_ratio']:.4f}</td>")
            parts.append(f"<tr><th>{capacity:,}</th>{''.join(cells)}</tr>")
        parts.append("</table>")
    parts.append("<p>Miss ratio per policy; the lowest of each row is highlighted.</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
