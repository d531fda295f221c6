"""`summary`: the campaign table (one row per simulation) and the campaign figure."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

ANALYSIS_COLUMNS = (
    "frames",
    "rmsd_mean_nm",
    "rmsd_final_nm",
    "rg_mean_nm",
    "rmsf_mean_nm",
    "helix_fraction",
    "strand_fraction",
    "coil_fraction",
    "temperature_mean_K",
    "temperature_std_K",
    "density_mean_g_per_mL",
)


def setup_columns(setup: dict) -> dict:
    """What setup decided about a system's structure (setup.json), as table columns:
    empty where nothing was decided, so that plain systems keep plain rows."""
    fix = setup.get("fix", {})
    removed = {name: count for counts in fix.get("removed", {}).values() for name, count in counts.items()}
    ligand = fix.get("ligand")
    return {
        "setup_removed": ", ".join(f"{name} x{count}" for name, count in sorted(removed.items())),
        "setup_replaced": ", ".join(fix.get("replaced_nonstandard", [])),
        "setup_metal_sites": ", ".join(
            f"{site['residue']} {site['atom']}: {site['protonation']}" for site in fix.get("metal_sites", [])
        ),
        "setup_mutations": ";".join(fix.get("mutations", [])),
        "setup_chains": ",".join(fix.get("chains", [])),
        "setup_model": fix.get("model", ""),
        "ligand": f"{ligand['residue']} {ligand['smiles']} (charge {ligand['net_charge']:+d})" if ligand else "",
    }


def summary_row(simulation: dict, analysis: dict) -> dict:
    """One row of the campaign table: the simulation's identity (``simulation``, see
    :func:`simulation_identity`) followed by its analysis numbers."""
    row = dict(simulation)
    row.update(
        {
            "simulated_ns": analysis.get("segment_simulated_ns"),
            "segments": analysis.get("segments"),
            "ns_per_day_mean": analysis.get("ns_per_day_mean"),
            "platforms": ",".join(analysis.get("platforms") or []),
        }
    )
    row.update({column: analysis.get(column) for column in ANALYSIS_COLUMNS})
    return row


def simulation_identity(simulation) -> dict:
    return {
        "simulation": simulation.name,
        "system": simulation.system,
        "replica": simulation.replica,
        "seed": simulation.seed,
        "engine": simulation.protocol.engine,
        "solvent": simulation.protocol.solvent,
        "temperature_target_K": simulation.protocol.temperature_K,
        "target_ns": simulation.protocol.target_ns,
    }


def write_summary(rows: list[dict], table: Path, figure: Path, campaign: str) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame.to_csv(table, sep="\t", index=False)
    plot_campaign(frame, figure, campaign)
    log.info("summary of %d simulations written to %s", len(frame), table)
    return frame


def plot_campaign(frame: pd.DataFrame, path: Path, campaign: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("rmsd_mean_nm", "mean RMSD to start (nm)"),
        ("rg_mean_nm", "mean radius of gyration (nm)"),
        ("temperature_mean_K", "mean temperature (K)"),
        ("ns_per_day_mean", "speed (ns/day)"),
    ]
    systems = list(dict.fromkeys(frame["system"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6), constrained_layout=True)
    for axis, (column, label) in zip(axes, panels, strict=True):
        for x, system in enumerate(systems):
            values = pd.to_numeric(frame.loc[frame["system"] == system, column], errors="coerce").dropna()
            axis.scatter(np.full(len(values), x), values, s=30, alpha=0.8)
            if len(values):
                axis.hlines(values.mean(), x - 0.25, x + 0.25, color="black", lw=1)
        if column == "temperature_mean_K":
            for target in frame["temperature_target_K"].unique():
                axis.axhline(target, ls="--", color="gray", lw=0.8)
        axis.set_xticks(range(len(systems)))
        axis.set_xticklabels(systems, rotation=30, ha="right", fontsize=8)
        axis.set_ylabel(label)
    fig.suptitle(f"Campaign {campaign}: {len(frame)} simulations")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def read_json(path) -> dict:
    return json.loads(Path(path).read_text())
