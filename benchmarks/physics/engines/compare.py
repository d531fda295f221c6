"""Compare the same system simulated on two engines (benchmarks/physics/engines/run).

Each simulation must pass the physics criteria of ../check.py; then the engines must
agree within the error bars: mean temperatures within three combined block standard
errors (at least 1.5 K), mean densities within three combined standard errors (at
least 0.01 g/mL: the two engines' setups add a different number of waters to the
same padding, and the barostats differ, Monte Carlo in OpenMM and C-rescale in
GROMACS), mean backbone RMSDs to each one's equilibrated start within 0.05 nm.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from check import failures_of, measure, print_table, table_row, verdict


def disagreements(a: dict, b: dict) -> list[str]:
    problems = []
    combined = lambda key: (a[f"{key}_error"] ** 2 + b[f"{key}_error"] ** 2) ** 0.5  # noqa: E731
    if abs(a["T"] - b["T"]) > max(1.5, 3 * combined("T")):
        problems.append(f"temperatures differ: {a['T']:.1f} vs {b['T']:.1f} K")
    if abs(a["density"] - b["density"]) > max(0.01, 3 * combined("density")):
        problems.append(f"densities differ: {a['density']:.3f} vs {b['density']:.3f} g/mL")
    if abs(a["rmsd_mean"] - b["rmsd_mean"]) > 0.05:
        problems.append(f"backbone RMSDs differ: {a['rmsd_mean']:.3f} vs {b['rmsd_mean']:.3f} nm")
    return problems


def main(campaign: Path) -> int:
    measures = {m["engine"]: m for m in measure(campaign)}
    print_table([table_row(m) for m in measures.values()])
    failures = [failure for m in measures.values() for failure in failures_of(m)]
    openmm, gromacs = measures["openmm"], measures["gromacs"]
    failures += [f"OpenMM vs GROMACS: {problem}" for problem in disagreements(openmm, gromacs)]
    print(
        f"\nGROMACS / OpenMM speed on this machine: {gromacs['ns_per_day'] / openmm['ns_per_day']:.1f}x "
        f"({gromacs['ns_per_day']:.1f} vs {openmm['ns_per_day']:.1f} ns/day)"
    )
    return verdict(failures, "the engines agree and pass the physics checks")


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1])))
