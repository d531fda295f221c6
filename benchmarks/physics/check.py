"""Check the physics of a finished validation campaign and print a Markdown table.

Criteria (production segments only, all frames):
- mean kinetic temperature within 3 K of the thermostat's, or within three standard
  errors where that is wider: a 22-atom peptide's instantaneous temperature swings
  by +-20% (2/N_dof), so its mean over 1 ns is known to +-2 K only;
- explicit solvent: mean density within 1.00-1.04 g/mL (TIP3P water is 0.98 g/mL at
  300 K and 1 bar; the protein and 0.15 M NaCl raise it by a few percent);
- folded proteins stay folded: backbone RMSD to the equilibrated start below 0.3 nm
  on average, and the DSSP helix fraction of villin (a three-helix bundle) above 0.4.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd


def block_error(values: pd.Series, blocks: int = 10) -> float:
    """Standard error of the mean from ``blocks`` consecutive blocks (frames are correlated)."""
    n = len(values)
    means = [values[i * n // blocks : (i + 1) * n // blocks].mean() for i in range(blocks)]
    return float(pd.Series(means).std() / blocks**0.5)


def measure(campaign: Path) -> list[dict]:
    """Per simulation: mean temperature and density with block errors, backbone RMSD,
    helix fraction and speed, from the campaign's own records and analyses."""
    summary = pd.read_csv(campaign / "results" / "summary.tsv", sep="\t")
    results = []
    for _, sim in summary.iterrows():
        name = sim["simulation"]
        segments = sorted((campaign / "results" / "sims" / name / "segments").glob("[0-9]*/energies.csv"))
        energies = pd.concat([pd.read_csv(p) for p in segments], ignore_index=True)
        folder = sorted((campaign / "results" / "sims" / name / "analysis").glob("[0-9]*"))[-1]
        analysis = json.loads((folder / "analysis.json").read_text())
        setup = json.loads((campaign / "results" / "systems" / sim["system"] / "setup.json").read_text())
        density = energies["density_g_per_mL"]
        results.append(
            {
                "simulation": name,
                "engine": sim.get("engine", "openmm"),
                "solvent": sim["solvent"],
                "atoms": setup.get("atoms"),
                "ns": sim["simulated_ns"],
                "target_K": sim["temperature_target_K"],
                "T": energies["temperature_K"].mean(),
                "T_error": block_error(energies["temperature_K"]),
                "density": density.mean() if density.notna().any() else None,
                "density_error": block_error(density) if density.notna().any() else None,
                "rmsd_mean": analysis["rmsd_mean_nm"],
                "rmsd_max": float(pd.read_csv(folder / "rmsd.csv")["rmsd_nm"].max()),
                "helix": analysis.get("helix_fraction", float("nan")),
                "ns_per_day": sim["ns_per_day_mean"],
                # bound systems (analysis.ligand_metrics, metal_sites): None where there is none
                "ligand_in_pocket": min(
                    (r["in_pocket_fraction"] for r in analysis.get("ligands", {}).values()), default=None
                ),
                "ligand_rmsd_max": max((r["rmsd_max_nm"] for r in analysis.get("ligands", {}).values()), default=None),
                "metal_kept": min(
                    (s["kept_fraction"] for s in analysis.get("metal_sites", []) if s["ligands"]), default=None
                ),
            }
        )
    return results


def failures_of(m: dict) -> list[str]:
    """The criteria of the module docstring for one simulation's measures."""
    failures = []
    name = m["simulation"]
    if abs(m["T"] - m["target_K"]) > max(3.0, 3 * m["T_error"]):
        failures.append(f"{name}: mean temperature {m['T']:.1f} K")
    if m["solvent"] == "explicit" and not 1.00 <= m["density"] <= 1.04:
        failures.append(f"{name}: density {m['density']:.3f} g/mL")
    if name.startswith("villin"):
        if m["rmsd_mean"] > 0.3:
            failures.append(f"{name}: mean backbone RMSD {m['rmsd_mean']:.3f} nm")
        if not m["helix"] >= 0.4:
            failures.append(f"{name}: helix fraction {m['helix']}")
    return failures


def table_row(m: dict) -> dict:
    return {
        "simulation": m["simulation"],
        "engine": m["engine"],
        "solvent": m["solvent"],
        "atoms": m["atoms"],
        "ns": m["ns"],
        "T mean (K)": f"{m['T']:.1f} ± {m['T_error']:.1f}",
        "density (g/mL)": f"{m['density']:.3f} ± {m['density_error']:.3f}" if m["density"] is not None else "",
        "backbone RMSD mean / max (nm)": f"{m['rmsd_mean']:.3f} / {m['rmsd_max']:.3f}",
        "helix fraction": f"{m['helix']:.2f}",
        **({"ligand in pocket": f"{m['ligand_in_pocket']:.2f}"} if m.get("ligand_in_pocket") is not None else {}),
        **({"metal site kept": f"{m['metal_kept']:.2f}"} if m.get("metal_kept") is not None else {}),
        "ns/day": m["ns_per_day"],
    }


def print_table(rows: list[dict]) -> None:
    table = pd.DataFrame(rows)
    try:
        print(table.to_markdown(index=False))
    except ImportError:  # to_markdown needs tabulate
        print(table.to_string(index=False))


def verdict(failures: list[str], passed: str) -> int:
    """Print each failure and the outcome; the exit status."""
    for failure in failures:
        print("FAIL:", failure)
    print(passed if not failures else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


def main(campaign: Path) -> int:
    measures = measure(campaign)
    print_table([table_row(m) for m in measures])
    return verdict([failure for m in measures for failure in failures_of(m)], "all physics checks passed")


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1])))
