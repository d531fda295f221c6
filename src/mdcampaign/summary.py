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


# Observables with an equilibrated estimate per replica and across replicas
# (analysis.equilibrated_estimates, mdcampaign.uncertainty).
STATISTICS = ("rmsd_nm", "rg_nm", "helix_fraction", "strand_fraction", "temperature_K")
NOT_AVAILABLE = "n/a"


def statistics_columns(analysis: dict) -> dict:
    """A replica's equilibrated means and errors as table columns: a number, or n/a
    with its reason in ``statistics_notes`` (never NaN)."""
    stats = analysis.get("statistics")
    row, notes = {}, []
    for name in STATISTICS:
        record = (stats or {}).get(name)
        if not analysis:
            reason = "not analyzed"
        elif stats is None:
            reason = "analyzed by an earlier mdcampaign, without statistics: redo its analysis for them"
        elif record is None:
            reason = "not computed for this system (no protein residues)" if "fraction" in name else "not computed"
        else:
            reason = record.get("reason")
        record = record or {}
        row[f"{name}_eq_mean"] = _or_na(record.get("mean"))
        row[f"{name}_eq_error"] = _or_na(record.get("error"))
        row[f"{name}_eq_from_ps"] = _or_na(record.get("equilibrated_from_ps"))
        if reason and (record.get("mean") is None or record.get("error") is None):
            notes.append(f"{name}: {reason}")
    if stats is None:  # one reason for all
        notes = [f"{', '.join(STATISTICS)}: {notes[0].split(': ', 1)[1]}"] if notes else []
    row["statistics_notes"] = "; ".join(notes)
    return row


def system_statistics(analyses: dict[str, list[dict]]) -> pd.DataFrame:
    """One row per system (``analyses``: system -> its replicas' analysis records): the
    mean over replicas of each observable with its standard error, and whether the
    replicas agree within their own errors (chi-squared p >= 0.01)."""
    from .uncertainty import ReplicaEstimate, across_replicas

    rows = []
    for system, records in analyses.items():
        row, notes = {"system": system, "replicas_analyzed": sum(1 for r in records if r)}, []
        for name in STATISTICS:
            estimates = [
                ReplicaEstimate(
                    (r.get("statistics") or {}).get(name, {}).get("mean"),
                    (r.get("statistics") or {}).get(name, {}).get("error"),
                    0,
                    None,
                    (r.get("statistics") or {}).get(name, {}).get("reason")
                    or ("no statistics in its analysis" if r else "not analyzed"),
                )
                for r in records
            ]
            estimate = across_replicas(estimates)
            row[f"{name}_mean"] = _or_na(_rounded(estimate.mean))
            row[f"{name}_se"] = _or_na(_rounded(estimate.error))
            row[f"{name}_agreement_p"] = _or_na(_rounded(estimate.p_agree))
            agree = estimate.replicas_agree
            row[f"{name}_replicas_agree"] = NOT_AVAILABLE if agree is None else ("yes" if agree else "no")
            if estimate.reason:
                notes.append(f"{name}: {estimate.reason}")
        row["notes"] = "; ".join(notes)
        rows.append(row)
    return pd.DataFrame(rows)


def plot_convergence(replicas: dict[str, list[dict]], folder: Path) -> list[Path]:
    """Per system, ``<folder>/<system>.png``: each observable's running mean against
    simulated time, one line per replica, and the replicas' mean ± its standard error
    where every replica has reached that time. The figures written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for system, records in replicas.items():
        curves = {
            name: [
                r["statistics"][name]["running"]
                for r in records
                if ((r.get("statistics") or {}).get(name) or {}).get("running")
            ]
            for name in STATISTICS
        }
        curves = {name: lines for name, lines in curves.items() if lines}
        if not curves:
            continue
        fig, axes = plt.subplots(
            1, len(curves), figsize=(3.6 * len(curves), 3.2), constrained_layout=True, squeeze=False
        )
        for axis, (name, lines) in zip(axes[0], curves.items(), strict=True):
            for number, line in enumerate(lines, start=1):
                axis.plot(line["time_ps"], line["mean"], lw=1, alpha=0.8, label=f"replica {number}")
            if len(lines) >= 2:
                end = min(line["time_ps"][-1] for line in lines)
                grid = np.linspace(max(line["time_ps"][0] for line in lines), end, 50)
                values = np.array([np.interp(grid, line["time_ps"], line["mean"]) for line in lines])
                mean, error = values.mean(axis=0), values.std(axis=0, ddof=1) / np.sqrt(len(lines))
                axis.fill_between(grid, mean - error, mean + error, color="black", alpha=0.15, label="mean ± SE")
            axis.set_xlabel("simulated time (ps)")
            axis.set_ylabel(f"running mean of {name}")
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"{system}: does more time change the answer?")
        path = folder / f"{system}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def _rounded(value):
    return None if value is None else float(f"{value:.6g}")


def _or_na(value):
    return NOT_AVAILABLE if value is None else value


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
    row.update(statistics_columns(analysis))
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


def write_summary(
    rows: list[dict],
    table: Path,
    figure: Path,
    campaign: str,
    systems: tuple[Path, dict] | None = None,
    convergence: Path | None = None,
) -> pd.DataFrame:
    """The campaign table and figure; ``systems``: (its path, system -> replicas'
    analysis records) for the table of each system's statistics over its replicas;
    ``convergence``: the folder of each system's convergence figure."""
    frame = pd.DataFrame(rows)
    frame.to_csv(table, sep="\t", index=False)
    if systems is not None:
        system_statistics(systems[1]).to_csv(systems[0], sep="\t", index=False)
    if convergence is not None:
        plot_convergence(systems[1] if systems is not None else {}, convergence)
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
