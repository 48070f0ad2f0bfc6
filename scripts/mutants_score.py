"""Each mutated module's mutation score, from mutmut's results in ``mutants/``.

    python scripts/mutants_score.py [MODULE ...]   # e.g. chain policies verify; default: all

Run it where mutmut ran (the checkout): it reads ``mutants/``.
A mutant is killed when a test failed (or timed out) with it; the score is killed / checked.
Mutants not checked yet (a run cut short) are counted apart, as are those no test reaches.
Prints one line per module and a JSON document (``--json``) for the bench output.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

MUTANTS = Path("mutants")
"""Where mutmut keeps its results: in the folder it ran from (the checkout)."""
KILLED = {1: "killed", 3: "killed", 36: "timeout", 24: "timeout", -24: "timeout",
          152: "timeout", 255: "timeout", 37: "type check"}  # fmt: skip
STATUS = {0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", None: "not checked"}


def module_of(meta: Path) -> str:
    """``mutants/src/kvreceipts/verify/runs.py.meta`` -> ``verify.runs``."""
    relative = meta.relative_to(MUTANTS / "src" / "kvreceipts")
    return ".".join(relative.with_suffix("").with_suffix("").parts)


def scores(selected: list[str]) -> dict[str, dict[str, int]]:
    """Counts per status, per module (those whose name starts with a selected one)."""
    out: dict[str, dict[str, int]] = {}
    for meta in sorted((MUTANTS / "src").rglob("*.py.meta")):
        name = module_of(meta)
        if selected and not any(name == s or name.startswith(s + ".") for s in selected):
            continue
        codes = json.loads(meta.read_text(encoding="utf-8")).get("exit_code_by_key", {})
        counts: Counter[str] = Counter()
        for code in codes.values():
            status = "killed" if code in KILLED else STATUS.get(code, "suspicious")
            counts[status] += 1
        if counts:
            out[name] = dict(counts)
    return out


def main() -> None:
    """Print the scores."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    found = scores(args.modules)
    if args.json:
        json.dump(found, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    if not found:
        sys.exit("no mutmut results in mutants/ (run nox -s mutants first)")
    for name, counts in found.items():
        killed, survived = counts.get("killed", 0), counts.get("survived", 0)
        checked = killed + survived + counts.get("suspicious", 0)
        score = f"{killed / checked:.1%}" if checked else "-"
        rest = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())
                         if s not in ("killed", "survived"))  # fmt: skip
        line = f"{name:20} {score:>6} killed ({killed}/{checked})" + (f"; {rest}" if rest else "")
        print(line)


if __name__ == "__main__":
    main()
