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


def main(campaign: Path) -> int:
    summary = pd.read_csv(campaign / "results" / "summary.tsv", sep="\t")
    rows, failures = [], []
    for _, sim in summary.iterrows():
        name = sim["simulation"]
        segments = sorted((campaign / "results" / "sims" / name / "segments").glob("[0-9]*/energies.csv"))
        energies = pd.concat([pd.read_csv(p) for p in segments], ignore_index=True)
        folder = sorted((campaign / "results" / "sims" / name / "analysis").glob("[0-9]*"))[-1]
        analysis = json.loads((folder / "analysis.json").read_text())
        temperature = energies["temperature_K"]
        n = len(temperature)
        # standard error from 10 blocks (frames are correlated)
        blocks = [temperature[i * n // 10:(i + 1) * n // 10].mean() for i in range(10)]
        error = pd.Series(blocks).std() / len(blocks) ** 0.5
        row = {
            "simulation": name,
            "solvent": sim["solvent"],
            "ns": sim["simulated_ns"],
            "T mean (K)": f"{temperature.mean():.1f} ± {error:.1f}",
            "density (g/mL)": f"{energies['density_g_per_mL'].mean():.3f}" if energies["density_g_per_mL"].notna().any() else "",
            "backbone RMSD mean / max (nm)": f"{analysis['rmsd_mean_nm']:.3f} / "
                                             f"{pd.read_csv(folder / 'rmsd.csv')['rmsd_nm'].max():.3f}",
            "helix fraction": f"{analysis.get('helix_fraction', float('nan')):.2f}",
            "ns/day": sim["ns_per_day_mean"],
        }
        if abs(temperature.mean() - sim["temperature_target_K"]) > max(3.0, 3 * error):
            failures.append(f"{name}: mean temperature {temperature.mean():.1f} K")
        if sim["solvent"] == "explicit" and not 1.00 <= energies["density_g_per_mL"].mean() <= 1.04:
            failures.append(f"{name}: density {energies['density_g_per_mL'].mean():.3f} g/mL")
        if name.startswith("villin"):
            if analysis["rmsd_mean_nm"] > 0.3:
                failures.append(f"{name}: mean backbone RMSD {analysis['rmsd_mean_nm']:.3f} nm")
            if analysis.get("helix_fraction", 0) < 0.4:
                failures.append(f"{name}: helix fraction {analysis.get('helix_fraction')}")
        rows.append(row)
    table = pd.DataFrame(rows)
    try:
        print(table.to_markdown(index=False))
    except ImportError:  # to_markdown needs tabulate
        print(table.to_string(index=False))
    for failure in failures:
        print("FAIL:", failure)
    print("all physics checks passed" if not failures else f"{len(failures)} physics check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main(Path(sys.argv[1])))
