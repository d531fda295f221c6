"""Check a finished replicas campaign (benchmarks/physics/replicas/run) and print
Markdown tables.

1. Are the error bars honest? Per system, split its replicas into two halves (odd and
   even replica numbers); each half's mean over its replicas of an observable's
   equilibrated means, with the standard error of that mean; the halves should differ
   by at most 2 sigma (sigma = the halves' errors combined) in at least 80% of the
   (system, observable) pairs. Over every balanced split too, as a less lucky-draw view.
2. Continue until converged: where each system stopped, and its final error against
   the goal (at or below it, or at the cap).
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np

OBSERVABLES = ("rmsd_nm", "rg_nm", "helix_fraction", "strand_fraction", "temperature_K")


def replica_means(campaign: Path) -> dict[str, dict[str, list[float | None]]]:
    """system -> observable -> each replica's equilibrated mean (None: not estimable)."""
    found: dict[str, dict[str, list]] = {}
    for analysis in sorted((campaign / "results" / "sims").glob("*/r*/analysis/[0-9]*/analysis.json")):
        record = json.loads(analysis.read_text())
        system = analysis.parts[-5]
        for name in OBSERVABLES:
            value = ((record.get("statistics") or {}).get(name) or {}).get("mean")
            found.setdefault(system, {}).setdefault(name, []).append(value)
    return found


def half(values: np.ndarray) -> tuple[float, float]:
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))


def agrees(first: np.ndarray, second: np.ndarray) -> tuple[bool, float] | None:
    (m1, e1), (m2, e2) = half(first), half(second)
    sigma = float(np.hypot(e1, e2))
    if sigma == 0:  # a constant observable (no helix in a dipeptide): nothing to test
        return None
    return abs(m1 - m2) <= 2 * sigma, abs(m1 - m2) / sigma


def main(campaign: Path) -> None:
    means = replica_means(campaign)
    print(
        "| system | observable | replicas | half A (odd) | half B (even) | |A-B| / sigma | within 2 sigma | all balanced splits within 2 sigma |"
    )
    print("|---|---|---|---|---|---|---|---|")
    tested = passed = 0
    for system, observables in sorted(means.items()):
        for name, values in observables.items():
            if any(v is None for v in values) or len(values) < 4:
                print(f"| {system} | {name} | {len(values)} | n/a: a replica without an estimate | | | | |")
                continue
            x = np.array(values)
            odd, even = x[0::2], x[1::2]
            result = agrees(odd, even)
            if result is None:
                print(f"| {system} | {name} | {len(x)} | constant ({x[0]:g}) | | | not tested | |")
                continue
            ok, z = result
            tested += 1
            passed += ok
            splits = [
                agrees(x[list(a)], x[[i for i in range(len(x)) if i not in a]])
                for a in itertools.combinations(range(len(x)), len(x) // 2)
                if 0 in a  # each split once
            ]
            splits = [s for s in splits if s is not None]
            share = sum(s[0] for s in splits) / len(splits)
            (m1, e1), (m2, e2) = half(odd), half(even)
            print(
                f"| {system} | {name} | {len(x)} | {m1:.4g} ± {e1:.2g} | {m2:.4g} ± {e2:.2g} | {z:.2f} | "
                f"{'yes' if ok else 'no'} | {100 * share:.0f}% of {len(splits)} |"
            )
    print(f"\nwithin 2 sigma: {passed} of {tested} pairs ({100 * passed / max(tested, 1):.0f}%; expected >= 80%)\n")
    print("| system | stopped after | cap | final standard error of rg_nm | goal | converged |")
    print("|---|---|---|---|---|---|")
    for decision_dir in sorted((campaign / "results" / "decisions").glob("*")):
        system = decision_dir.name
        decisions = [p for p in decision_dir.glob("*.json") if ".progress" not in p.name]
        record = json.loads((decisions[0] if decisions else next(decision_dir.glob("*.progress.json"))).read_text())
        print(
            f"| {system} | {record['simulated_ns'] * 1000:g} ps | 100 ps | "
            f"{record['error'] if record['error'] is not None else 'n/a'} | {record['goal']} | "
            f"{'yes' if record['converged'] else 'no (at the cap)'} |"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/mdcampaign-replicas"))
