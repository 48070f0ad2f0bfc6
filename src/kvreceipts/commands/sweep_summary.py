"""What ``kvreceipts sweep`` tells people on stderr after the rows: the trace's ceiling, the
targets' answers, and which point to re-run with receipts (and why).
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kvreceipts.commands.output import Output
    from kvreceipts.sweep.grid import SweepSpec, Task, TraceFacts

__all__ = ["rerun_hint", "summary", "trace_dict"]


def spec_block_bytes(spec: SweepSpec) -> int:
    """Bytes of one block under the sweep's sizing."""
    from kvreceipts.sizing import resolve_sizing

    return resolve_sizing(spec.model, spec.bytes_per_token).block_bytes(spec.block_tokens)


def trace_dict(fact: TraceFacts, *, paged: bool) -> dict[str, Any]:
    """A trace's facts for JSON, with its ceiling (paged)."""
    from kvreceipts.sweep.report import ceiling

    found = fact.to_dict()
    if paged:
        found["ceiling"] = ceiling(fact)
    return found


def _pct(ratio: float) -> str:
    return f"{ratio * 100:.2f}%"


def _blocks_text(blocks: int, fact: TraceFacts) -> str:
    from kvreceipts.commands.output import human_bytes

    size = fact.block_size(blocks)
    return f"{blocks:,} blocks" + (f" ({human_bytes(size)})" if size is not None else "")


def summary(
    out: Output,
    tasks: list[Task],
    facts: list[TraceFacts],
    rows: list[dict[str, Any]],
    answers: list[dict[str, Any]],
    total: int,
    elapsed: float,
) -> None:
    """The methods, the time, each trace's ceiling and each target's answer."""
    methods = ", ".join(dict.fromkeys(f"{t.policy}: {t.method}" for t in tasks if t.capacities))
    out.note(f"[dim]{total:,} grid points ({methods}) in {elapsed:.2f} s[/dim]")
    shards = next((t for t in tasks if t.method == "shards"), None)
    if shards is not None:
        size = f", at most {shards.sample_max_blocks:,} blocks" if shards.sample_max_blocks else ""
        how = "SHARDS-adj" if shards.shards_adj else "divided by the sample's weight"
        refs = facts[0].block_refs
        out.note(f"shards: sample rate {shards.sample_rate:g}{size} of {refs:,} block lookups "
                 f"({how}; sampled_refs in the rows gives each sample's size)")  # fmt: skip
    errors = {(r["trace"], r["policy"]): r["expected_error"] for r in rows
              if r.get("expected_error") is not None}  # fmt: skip
    for (trace, policy), error in errors.items():
        name = f" ({trace})" if len(facts) > 1 else ""
        out.note(f"shards{name}, {policy}: expected error ±{error:.4f} in hit ratio (mean "
                 "absolute; split-half: two half-rate samples differ by twice it)")  # fmt: skip
    paged = tasks[0].spec.allocator == "paged"
    for fact in facts if paged else ():
        name = f" ({fact.name})" if len(facts) > 1 else ""
        out.note(f"ceiling{name}: hit ratio {_pct(fact.ceiling)} ({fact.unique_blocks:,} of "
                 f"{fact.block_refs:,} lookups are first touches), token hit ratio "
                 f"{_pct(fact.token_ceiling)}; every policy reaches it at "
                 f"{_blocks_text(fact.unique_blocks, fact)}, the distinct blocks")  # fmt: skip
    by_name = {fact.name: fact for fact in facts}
    for answer in answers:
        out.note(_answer_text(answer, by_name[answer["trace"]], len(facts) > 1))


def _answer_text(answer: dict[str, Any], fact: TraceFacts, named: bool) -> str:
    what = "hit ratio" if answer["metric"] == "hit_ratio" else "token hit ratio"
    head = f"target {what} {_pct(answer['target'])}, {answer['policy']}"
    if named:
        head += f" ({fact.name})"
    if not answer["reachable"]:
        if answer["metric"] == "hit_ratio":
            touches = f"{fact.unique_blocks:,} of {fact.block_refs:,} lookups are first touches"
            why = f"the highest hit ratio this trace allows is {_pct(fact.ceiling)} ({touches})"
        else:
            why = (f"the highest token hit ratio this trace allows is "
                   f"{_pct(fact.token_ceiling)} (prompts whose leading blocks were never seen "
                   "before)")  # fmt: skip
        return f"{head}: unreachable: {why}"
    how = ("exact, read off the LRU stack distances" if answer["method"] == "exact"
           else f"search by full simulation, {answer['simulations']} simulations")  # fmt: skip
    got = answer[answer["metric"]]
    return (f"{head}: {_blocks_text(answer['capacity_blocks'], fact)} reach "
            f"{_pct(got)} ({how})")  # fmt: skip


def rerun_hint(tasks: list[Task], rows: list[dict[str, Any]], answers: list[dict[str, Any]]) -> str:
    """The point a user most likely wants with receipts: the first target reached, else the
    best hit ratio per byte among the points that reach half the grid's best hit ratio.
    """
    by_policy = {(t.source.label, t.policy): t for t in tasks}
    reached = next((a for a in answers if a["reachable"]), None)
    if reached is not None:
        task = by_policy[(reached["trace"], reached["policy"])]
        capacity = float(reached["capacity_blocks"])
        what = "hit ratio" if reached["metric"] == "hit_ratio" else "token hit ratio"
        why = (f"the first target reached: {what} {_pct(reached['target'])} with "
               f"{task.policy} at {int(capacity):,} blocks")  # fmt: skip
        return f"re-run {why}, with receipts: {_rerun(task, capacity)}"
    key = "capacity_blocks" if "capacity_blocks" in rows[0] else "capacity_mb"
    best = max(r["hit_ratio"] for r in rows)
    if best <= 0:
        smallest = min(rows, key=lambda r: r[key])
        task = by_policy[(smallest["trace"], smallest["policy"])]
        return ("re-run the smallest point (no point of the grid hits at all), with receipts: "
                + _rerun(task, float(smallest[key])))  # fmt: skip
    useful = [r for r in rows if r["hit_ratio"] > 0 and r["hit_ratio"] >= best / 2] or rows
    pick = max(useful, key=lambda r: (r["hit_ratio"] / r[key], -r[key]))
    task = by_policy[(pick["trace"], pick["policy"])]
    unit = "blocks" if key == "capacity_blocks" else "MiB"
    why = (f"the best hit ratio per byte among the points reaching half the best hit ratio "
           f"({_pct(best / 2)}): {pick['policy']} at {pick[key]:,g} {unit}, "
           f"{_pct(pick['hit_ratio'])}")  # fmt: skip
    return f"re-run {why}, with receipts: {_rerun(task, float(pick[key]))}"


def _rerun(task: Task, capacity: float) -> str:
    source, spec = task.source, task.spec
    tiers: list[str] = []
    if spec.tiers:  # simulate takes the tiers as they are: the point's sizes, in bytes
        index = task.capacities.index(capacity) if capacity in task.capacities else 0
        block = spec_block_bytes(spec)
        for tier, size in zip(spec.tiers, task.tier_sizes[index], strict=True):
            bandwidth = f",bw={tier.bandwidth:.0f}B/s" if tier.bandwidth else ""
            tiers += ["--tier", f"{tier.name}={size * block}B{bandwidth}"]
    args = ["kvreceipts", "simulate"]
    if source.trace:
        args += ["--trace", source.trace.removeprefix("file://")]
    else:
        args += ["--workload", source.workload, "--seed", str(source.seed)]
    if source.requests:
        args += ["--requests", str(source.requests)]
    args += ["--allocator", spec.allocator, "--policy", task.policy]
    if tiers:
        args += [*tiers, "--block-tokens", str(spec.block_tokens)]
    elif spec.allocator == "paged":
        args += ["--capacity-blocks", str(int(capacity)), "--block-tokens", str(spec.block_tokens)]
    else:
        args += ["--capacity-mb", f"{capacity:g}"]
    if spec.model:
        args += ["--model", spec.model]
    if spec.bytes_per_token:
        args += ["--bytes-per-token", str(spec.bytes_per_token)]
    if spec.allocator == "paged":
        args.append("--pin" if spec.pin else "--no-pin")
    args += ["-o", "point.jsonl"]
    return shlex.join(args)
