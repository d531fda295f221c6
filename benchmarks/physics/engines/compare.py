"""Compare the same systems simulated on two engines (benchmarks/physics/engines/run,
benchmarks/physics/bound/run): simulations pair by system id, `<name>-openmm` with
`<name>-gromacs` (or, with one system per engine, the two).

Each simulation must pass the physics criteria of ../check.py; then the engines must
agree within the error bars: mean temperatures within three combined block standard
errors (at least 1.5 K), mean densities within three combined standard errors (at
least 0.01 g/mL: the two engines' setups add a different number of waters to the
same padding, and the barostats differ, Monte Carlo in OpenMM and C-rescale in
GROMACS), mean backbone RMSDs to each one's equilibrated start within 0.05 nm. Bound systems:
the ligand in its pocket (centre within 0.5 nm of its start after fitting the protein)
in at least 90% of the frames, and the metal site's donors within 0.3 nm in at least
80%, on both engines.
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


def bound_failures(m: dict) -> list[str]:
    problems = []
    if m.get("ligand_in_pocket") is not None and m["ligand_in_pocket"] < 0.9:
        problems.append(f"{m['simulation']}: ligand in its pocket in {m['ligand_in_pocket']:.0%} of frames")
    if m.get("metal_kept") is not None and m["metal_kept"] < 0.8:
        problems.append(f"{m['simulation']}: metal site kept in {m['metal_kept']:.0%} of frames")
    return problems


def pairs(measures: list[dict]) -> dict[str, dict[str, dict]]:
    """Per system name, its simulation on each engine."""
    paired: dict[str, dict[str, dict]] = {}
    for m in measures:
        system = m["simulation"].split("/")[0]
        name = system.removesuffix(f"-{m['engine']}") if len(measures) > 2 else "system"
        paired.setdefault(name, {})[m["engine"]] = m
    return paired


def main(campaign: Path) -> int:
    measures = measure(campaign)
    print_table([table_row(m) for m in measures])
    failures = [failure for m in measures for failure in failures_of(m) + bound_failures(m)]
    for name, engines in pairs(measures).items():
        openmm, gromacs = engines["openmm"], engines["gromacs"]
        failures += [f"{name}, OpenMM vs GROMACS: {problem}" for problem in disagreements(openmm, gromacs)]
        print(
            f"\n{name}: GROMACS / OpenMM speed on this machine: {gromacs['ns_per_day'] / openmm['ns_per_day']:.1f}x "
            f"({gromacs['ns_per_day']:.1f} vs {openmm['ns_per_day']:.1f} ns/day)"
        )
    return verdict(failures, "the engines agree and pass the physics checks")


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1])))
