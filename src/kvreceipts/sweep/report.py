"""A sweep's rows and their renderings: table, CSV, JSON, JSON lines, plot and HTML page.

Nothing here measures time or reads the clock: the same rows render to the same bytes.
"""

from __future__ import annotations

import csv
import html
import io
from typing import TYPE_CHECKING, Any

from kvreceipts.config import MIB
from kvreceipts.errors import UsageError
from kvreceipts.sweep.grid import ROW_KEYS
from kvreceipts.sweep.methods import Counts
from kvreceipts.sweep.targets import Answer
from kvreceipts.units import human_bytes

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rich.table import Table

    from kvreceipts.sweep.grid import Result, Task, TraceFacts

__all__ = [
    "GIB",
    "build_answers",
    "build_rows",
    "ceiling",
    "check_plot_available",
    "render_csv",
    "render_html",
    "render_jsonl",
    "render_plot",
    "row_keys",
    "tables",
]

GIB = 1024**3


def row_keys(allocator: str, *, sized: bool = True, tiers: bool = False) -> tuple[str, ...]:
    """A row's keys for this allocator (paged rows count blocks and prefix tokens, arena rows
    MiB; bytes only with a KV sizing for paged rows).
    """
    if allocator == "paged":
        dropped = {"capacity_mb"} | (set() if sized else {"capacity_bytes"})
    else:
        dropped = {"capacity_blocks", "prefix_hit_tokens", "prompt_tokens", "token_hit_ratio"}
    keys = tuple(k for k in ROW_KEYS if k not in dropped)
    return (*keys, "reload_s", "prefill_saved_s", "tiers") if tiers else keys


def _ratio(part: int | None, whole: int | None) -> float | None:
    if part is None or whole is None:
        return None
    return round(part / whole, 6) if whole else 0.0


def build_rows(
    tasks: Sequence[Task], results: Sequence[Result], facts: Sequence[TraceFacts]
) -> list[dict[str, Any]]:
    """One row per (source, policy, capacity), in the grid's order."""
    by_name = {fact.name: fact for fact in facts}
    rows = []
    for task, counts in zip(tasks, results, strict=True):
        paged = task.spec.allocator == "paged"
        fact = by_name[task.source.label]
        tiered = bool(task.spec.tiers)
        keys = row_keys(task.spec.allocator, sized=fact.sized, tiers=tiered)
        for number, (capacity, c) in enumerate(zip(task.capacities, counts, strict=False)):
            assert isinstance(c, Counts)
            lookups = c.hits + c.misses
            if paged:
                blocks = int(capacity)
                size: dict[str, Any] = {
                    "capacity_blocks": blocks,
                    "capacity_bytes": fact.block_size(blocks),
                }
            else:
                size = {"capacity_mb": capacity, "capacity_bytes": round(capacity * MIB)}
            row: dict[str, Any] = {
                "trace": task.source.label,
                "policy": task.policy,
                **size,
                "hits": c.hits,
                "misses": c.misses,
                "hit_ratio": round(c.hits / lookups, 6) if lookups else 0.0,
                "miss_ratio": round(c.misses / lookups, 6) if lookups else 0.0,
                "evictions": c.evictions,
                "rejected": c.rejected,
                "method": task.method,
                "sample_rate": task.sample_rate,
                "sampled_refs": c.sampled_refs,
                "expected_error": c.expected_error,
                "prefix_hit_tokens": c.prefix_hit_tokens,
                "prompt_tokens": c.prompt_tokens,
                "token_hit_ratio": _ratio(c.prefix_hit_tokens, c.prompt_tokens),
            }
            if tiered:
                row.update(_tier_fields(task, task.tier_sizes[number], c, fact))
            rows.append({k: row[k] for k in keys})
    return rows


def _tier_fields(task: Task, sizes: Sequence[int], c: Counts, fact: TraceFacts) -> dict[str, Any]:
    """A tiered row's ``tiers`` (in tier order), its total reload time and the prefill time
    the saved tokens are worth.
    """
    tiers = []
    total: float | None = 0.0
    for number, (tier, size, hits) in enumerate(zip(task.spec.tiers, sizes, c.tier_hits,
                                                     strict=True)):  # fmt: skip
        reload_bytes = hits * fact.block_bytes if number else 0
        seconds = None if number and not tier.bandwidth else (
            reload_bytes / tier.bandwidth if number else 0.0)  # fmt: skip
        if seconds is None or total is None:
            total = None
        else:
            total += seconds
        tiers.append({"name": tier.name, "capacity_blocks": size,
                      "capacity_bytes": fact.block_size(size), "hits": hits,
                      "reload_bytes": reload_bytes,
                      "reload_s": None if seconds is None else round(seconds, 6)})  # fmt: skip
    rate = task.spec.prefill_tokens_per_s
    saved = c.prefix_hit_tokens
    return {
        "tiers": tiers,
        "reload_s": None if total is None else round(total, 6),
        "prefill_saved_s": None if saved is None or not rate else round(saved / rate, 6),
    }


def build_answers(
    tasks: Sequence[Task], results: Sequence[Result], facts: Sequence[TraceFacts]
) -> list[dict[str, Any]]:
    """One entry per (source, policy, target), in the order the targets were asked."""
    by_name = {fact.name: fact for fact in facts}
    found: list[tuple[Task, Answer]] = []
    for task, result in zip(tasks, results, strict=True):
        found += [(task, a) for a in result[len(task.capacities) :] if isinstance(a, Answer)]
    asked = list(dict.fromkeys((a.metric, a.target) for _, a in found))
    found.sort(key=lambda pair: (list(by_name).index(pair[0].source.label),
                                 asked.index((pair[1].metric, pair[1].target))))  # fmt: skip
    answers = []
    for task, answer in found:
        fact = by_name[task.source.label]
        c = answer.counts
        entry: dict[str, Any] = {
            "trace": fact.name,
            "policy": task.policy,
            "metric": answer.metric,
            "target": answer.target,
            "reachable": answer.capacity is not None,
            "capacity_blocks": answer.capacity,
            "capacity_bytes": None if answer.capacity is None else fact.block_size(answer.capacity),
            "hit_ratio": None
            if c is None or answer.capacity is None
            else _ratio(c.hits, c.hits + c.misses),
            "token_hit_ratio": None
            if c is None or answer.capacity is None
            else _ratio(c.prefix_hit_tokens, c.prompt_tokens),
            "method": "exact" if task.method == "exact" else "search",
            "simulations": answer.simulations,
        }
        answers.append(entry)
    return answers


def ceiling(fact: TraceFacts) -> dict[str, Any]:
    """The highest hit ratios the trace allows and the capacity where every policy reaches
    them (its distinct blocks: nothing is ever evicted).
    """
    return {
        "hit_ratio": round(fact.ceiling, 6),
        "token_hit_ratio": round(fact.token_ceiling, 6),
        "capacity_blocks": fact.unique_blocks,
        "capacity_bytes": fact.block_size(fact.unique_blocks),
        "first_touches": fact.unique_blocks,
        "lookups": fact.block_refs,
    }


def render_jsonl(rows: Sequence[dict[str, Any]]) -> bytes:
    """One JSON object a line."""
    import orjson

    return b"".join(orjson.dumps(row) + b"\n" for row in rows)


def render_csv(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> bytes:
    """A header line and one line per row; tiers flattened into ``NAME_hits``,
    ``NAME_capacity_blocks``, ``NAME_reload_bytes`` and ``NAME_reload_s`` columns.
    """
    flat = [_flat(row) for row in rows]
    fields = [k for k in keys if k != "tiers"]
    if "tiers" in keys and rows:
        fields += [k for k in flat[0] if k not in fields]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return buffer.getvalue().encode()


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    if "tiers" not in row:
        return row
    out = {k: v for k, v in row.items() if k != "tiers"}
    for tier in row["tiers"]:
        for key in ("capacity_blocks", "hits", "reload_bytes", "reload_s"):
            out[f"{tier['name']}_{key}"] = tier[key]
    return out


def _capacity_key(rows: Sequence[dict[str, Any]]) -> str:
    return "capacity_blocks" if rows and "capacity_blocks" in rows[0] else "capacity_mb"


def _size_text(capacity: float, key: str, fact: TraceFacts) -> str:
    """The human size of a capacity, or ``""`` when the sizing is not known."""
    if key == "capacity_blocks":
        size = fact.block_size(int(capacity))
        return "" if size is None else human_bytes(size)
    return human_bytes(capacity * MIB)


BEST_MARK = "*"
"""Marks the best (lowest) miss ratio of a table row; it survives without colour."""


def _lookups_text(rows: Sequence[dict[str, Any]], fact: TraceFacts) -> str:
    """What the rows were counted over, from the rows themselves (an arena looks up one
    entry per request; a paged cache one per block).
    """
    mine = [r for r in rows if r["trace"] == fact.name]
    lookups = max((r["hits"] + r["misses"] for r in mine), default=0)
    if mine and "capacity_blocks" in mine[0]:
        return f"{lookups:,} block lookups, {fact.unique_blocks:,} distinct blocks"
    return f"{lookups:,} lookups (one entry per request)"


def tables(rows: Sequence[dict[str, Any]], facts: Sequence[TraceFacts]) -> list[Table]:
    """One table per trace: a row per capacity, a column of miss ratios per policy; the best
    (lowest) miss ratio of each row is marked (and highlighted on a colour terminal).
    """
    from rich import box
    from rich.table import Table

    key = _capacity_key(rows)
    out = []
    for fact in facts:
        methods = ", ".join(dict.fromkeys(r["method"] for r in rows if r["trace"] == fact.name))
        policies, grid = _grid(rows, fact, key)
        sized = key != "capacity_blocks" or fact.sized
        table = Table(title=f"miss ratio · {fact.name}", title_justify="left",
                      box=box.SIMPLE_HEAD, pad_edge=False)  # fmt: skip
        table.add_column("blocks" if key == "capacity_blocks" else "MiB", justify="right",
                         no_wrap=True)  # fmt: skip
        if sized and key == "capacity_blocks":
            table.add_column("size", justify="right", no_wrap=True)
        for policy in policies:
            table.add_column(policy, justify="right", no_wrap=True)
        marked = False
        for capacity, found, best in grid:
            texts = [f"{int(capacity):,}" if key == "capacity_blocks" else f"{capacity:,g}"]
            if sized and key == "capacity_blocks":
                texts.append(_size_text(capacity, key, fact))
            for row in found:
                if row is None:
                    texts.append("-")
                    continue
                text = f"{row['miss_ratio']:.4f}"
                if len(policies) > 1 and row["miss_ratio"] == best:
                    marked = True
                    texts.append(f"[bold green]{text}{BEST_MARK}[/]")
                else:
                    texts.append(f"{text} ")
            table.add_row(*texts)
        caption = f"{fact.requests:,} requests, {_lookups_text(rows, fact)}; method {methods}"
        if marked:
            caption += f"; {BEST_MARK} best: the lowest miss ratio of the row"
        table.caption = caption
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


def _x_scale(key: str, fact: TraceFacts) -> tuple[float, str]:
    """What to multiply a row's capacity by for the x axis, and the axis' label: GiB when
    the size of a block is known, else blocks (or MiB for the arena).
    """
    if key == "capacity_blocks":
        if fact.sized:
            return fact.block_bytes / GIB, f"capacity (GiB of KV, {fact.sizing})"
        return 1.0, "capacity (blocks)"
    return 1 / 1024, "capacity (GiB)"


def _curves(
    rows: Sequence[dict[str, Any]], fact: TraceFacts
) -> dict[str, list[tuple[float, float]]]:
    key = _capacity_key(rows)
    scale, _ = _x_scale(key, fact)
    curves: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        if row["trace"] == fact.name:
            point = (float(row[key]) * scale, row["miss_ratio"])
            curves.setdefault(row["policy"], []).append(point)
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


def _figure(
    rows: Sequence[dict[str, Any]],
    facts: Sequence[TraceFacts],
    answers: Sequence[dict[str, Any]] = (),
) -> Any:
    plt = _pyplot()
    key = _capacity_key(rows)
    fig, axes = plt.subplots(1, len(facts), figsize=(7.5 * len(facts) + 1.5, 4.8), squeeze=False,
                             layout="constrained")  # fmt: skip
    colours: dict[str, str] = {}
    for ax, fact in zip(axes[0], facts, strict=True):
        scale, label = _x_scale(key, fact)
        for policy, points in _curves(rows, fact).items():
            xs, ys = zip(*points, strict=True)
            (line,) = ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.5, label=policy)
            colours[policy] = line.get_color()
        ax.set_xscale("log")
        ax.set_ylim(0, 1)
        ax.set_ylabel("miss ratio")
        ax.grid(True, which="major", alpha=0.3)
        if key == "capacity_blocks" and fact.block_refs:
            floor = 1 - fact.ceiling
            ax.axhline(floor, color="#555", linestyle="--", linewidth=1,
                       label=f"ceiling: hit ratio {fact.ceiling:.2%}")  # fmt: skip
        for answer in answers:
            if answer["trace"] != fact.name or not answer["reachable"]:
                continue
            x = answer["capacity_blocks"] * scale
            y = 1 - answer["hit_ratio"]
            colour = colours.get(answer["policy"], "#000")
            ax.plot([x], [y], marker="D", markersize=7, linestyle="none",
                    markerfacecolor="none", color=colour)  # fmt: skip
            what = "" if answer["metric"] == "hit_ratio" else " tokens"
            ax.annotate(f"{answer['policy']} {answer['target']:.0%}{what}", (x, y),
                        textcoords="offset points", xytext=(6, 6), fontsize=8)  # fmt: skip
        ax.set_title(f"{fact.name} ({fact.requests:,} requests)", fontsize=10)
        ax.set_xlabel(label)
        if key == "capacity_blocks" and scale != 1.0:
            top = ax.secondary_xaxis(
                "top", functions=(lambda g, k=scale: g / k, lambda b, k=scale: b * k)
            )
            tokens = fact.block_bytes // max(1, fact.bytes_per_token)
            top.set_xlabel(f"capacity (blocks of {tokens} tokens)")
    # One legend for every panel, outside the curves (to the right of the last panel).
    seen: dict[str, Any] = {}
    for ax in axes[0]:
        handles, labels = ax.get_legend_handles_labels()
        for handle, text in zip(handles, labels, strict=True):
            seen.setdefault(text, handle)
    fig.legend(list(seen.values()), list(seen), loc="outside right upper", title="policy")
    return fig


def render_plot(
    rows: Sequence[dict[str, Any]],
    facts: Sequence[TraceFacts],
    fmt: str,
    *,
    answers: Sequence[dict[str, Any]] = (),
) -> bytes:
    """The miss-ratio curves as PNG or SVG bytes."""
    plt = _pyplot()
    fig = _figure(rows, facts, answers)
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


_FACT_NAMES = {
    "name": "trace",
    "path": "file",
    "format": "format",
    "requests": "requests",
    "block_refs": "block lookups",
    "unique_blocks": "distinct blocks",
    "span_s": "time the trace spans",
    "block_bytes": "bytes of a block",
    "bytes_per_token": "KV bytes per token",
    "sizing": "KV sizing",
    "unique_entry_bytes": "working set (one entry per session)",
    "mean_entry_bytes": "mean entry",
    "prompt_tokens": "prompt tokens",
    "ceiling_prefix_tokens": "prompt tokens any cache can reuse",
    "caveats": "what the trace cannot know",
}


def _fact_rows(fact: TraceFacts, allocator: str) -> list[tuple[str, str]]:
    """The trace's facts as (human name, human value) pairs."""
    paged = allocator == "paged"
    arena_only = {"unique_entry_bytes", "mean_entry_bytes"}
    paged_only = {"unique_blocks", "block_bytes", "ceiling_prefix_tokens", "block_refs"}
    skip = {"sized"} | (arena_only if paged else paged_only)
    out = []
    for name, value in fact.to_dict().items():
        if name in skip or value == ():
            continue
        if name == "caveats":
            text = "; ".join(value)
        elif name == "span_s":
            text = f"{value:,.1f} s ({value / 3600:,.2f} h)"
        elif name.endswith("_bytes") and name != "bytes_per_token":
            text = f"{human_bytes(value)} ({value:,} bytes)"
        elif name == "sizing" and not fact.sized:
            text = f"{value} (the upstream default; give --model for real sizes)"
        elif isinstance(value, int):
            text = f"{value:,}"
        else:
            text = str(value)
        out.append((_FACT_NAMES.get(name, name.replace("_", " ")), text))
    if paged and fact.block_refs:
        touches = f"{fact.unique_blocks:,} of {fact.block_refs:,} lookups are first touches"
        out.append(("ceiling (highest hit ratio)", f"{fact.ceiling:.2%}: {touches}"))
        out.append(("ceiling (highest token hit ratio)", f"{fact.token_ceiling:.2%}"))
    return out


def render_html(
    rows: Sequence[dict[str, Any]],
    facts: Sequence[TraceFacts],
    command: str,
    *,
    answers: Sequence[dict[str, Any]] = (),
    pinned: bool | None = None,
) -> str:
    """One self-contained page: the curves (inline SVG), the table, the trace's facts, how
    the rows were computed and the command that made it. Nothing is fetched from the network.
    """
    svg = render_plot(rows, facts, "svg", answers=answers).decode()
    svg = svg[svg.index("<svg") :]  # inline: drop the XML prolog and doctype
    key = _capacity_key(rows)
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>kvreceipts sweep</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>kvreceipts sweep: miss-ratio curves</h1>",
        f"<p>Command: <code>{esc(command)}</code></p>",
        f'<figure id="curves">{svg}</figure>',
    ]
    allocator = "paged" if key == "capacity_blocks" else "arena"
    for fact in facts:
        mine = [r for r in rows if r["trace"] == fact.name]
        policies, grid = _grid(rows, fact, key)
        parts.append(f"<h2>{esc(fact.name)}</h2>")
        parts.append('<table class="facts">')
        for name, value in _fact_rows(fact, allocator):
            parts.append(f"<tr><th>{esc(name)}</th><td>{esc(value)}</td></tr>")
        parts.append("</table>")
        parts.append(f'<p class="how">{esc(_how(mine, fact, pinned))}</p>')
        found = [a for a in answers if a["trace"] == fact.name]
        if found:
            heads = ("target", "policy", "blocks", "size", "reaches", "how")
            parts.append('<table class="targets"><tr>'
                         + "".join(f"<th>{h}</th>" for h in heads) + "</tr>")  # fmt: skip
            parts.extend(_answer_row(answer, fact) for answer in found)
            parts.append("</table>")
        sized = key != "capacity_blocks" or fact.sized
        head = "".join(f"<th>{esc(p)}</th>" for p in policies)
        size_head = "<th>size</th>" if sized and key == "capacity_blocks" else ""
        unit = "blocks" if key == "capacity_blocks" else "MiB"
        parts.append(f'<table class="curves"><tr><th>{unit}</th>{size_head}{head}</tr>')
        for capacity, cells_found, best in grid:
            cells = []
            if size_head:
                cells.append(f"<td>{esc(_size_text(capacity, key, fact))}</td>")
            for row in cells_found:
                if row is None:
                    cells.append("<td>-</td>")
                    continue
                is_best = row["miss_ratio"] == best and len(policies) > 1
                css = ' class="best"' if is_best else ""
                mark = BEST_MARK if is_best else ""
                cells.append(f"<td{css}>{row['miss_ratio']:.4%}{mark}</td>")
            shown = f"{int(capacity):,}" if key == "capacity_blocks" else f"{capacity:,g}"
            parts.append(f"<tr><th>{shown}</th>{''.join(cells)}</tr>")
        parts.append("</table>")
    parts.append(f"<p>Miss ratio per policy; the lowest of each row is highlighted and marked "
                 f"{BEST_MARK}.</p>")  # fmt: skip
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _how(rows: Sequence[dict[str, Any]], fact: TraceFacts, pin: bool | None) -> str:
    """How the rows were computed: method, pinning, rejections, sizing."""
    methods = ", ".join(dict.fromkeys(f"{r['policy']}: {r['method']}" for r in rows))
    rejected = sum(r["rejected"] for r in rows)
    sizing = (f"KV sizing {fact.sizing} ({fact.bytes_per_token:,} bytes a token)" if fact.sized
              else "no KV sizing given: capacities in blocks only")  # fmt: skip
    pinning = (
        ""
        if pin is None
        else (
            "Pinning on: a request's blocks are not evicted while it is admitted. "
            if pin
            else "Pinning off (--no-pin): blocks are evicted as a block-level simulator does. "
        )
    )
    return f"Method: {methods}. {pinning}Rejected requests over all points: {rejected:,}. {sizing}."


def _answer_row(answer: dict[str, Any], fact: TraceFacts) -> str:
    what = "hit ratio" if answer["metric"] == "hit_ratio" else "token hit ratio"
    head = f"<tr><td>{what} {answer['target']:.2%}</td><td>{html.escape(answer['policy'])}</td>"
    if not answer["reachable"]:
        ceiling = fact.ceiling if answer["metric"] == "hit_ratio" else fact.token_ceiling
        return head + f'<td colspan="4">unreachable: the ceiling is {ceiling:.2%}</td></tr>'
    size = answer["capacity_bytes"]
    how = "exact" if answer["method"] == "exact" else f"{answer['simulations']} simulations"
    return (head + f"<td>{answer['capacity_blocks']:,}</td>"
            f"<td>{'' if size is None else human_bytes(size)}</td>"
            f"<td>{answer[answer['metric']]:.2%}</td><td>{how}</td></tr>")  # fmt: skip
