"""`summary`: the campaign table (one row per simulation) and the campaign figure."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from . import layout
from .analysis import COORDINATION_NM

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


def system_estimates(analyses: dict[str, list[dict]]) -> dict[str, dict]:
    """Per system (``analyses``: system -> its replicas' analysis records), each
    observable's estimate over its replicas (uncertainty.SystemEstimate)."""
    from .uncertainty import ReplicaEstimate, across_replicas

    found = {}
    for system, records in analyses.items():
        found[system] = {}
        for name in STATISTICS:
            estimates = []
            for record in records:
                stats = (record.get("statistics") or {}).get(name) or {}
                reason = stats.get("reason") or ("no statistics in its analysis" if record else "not analyzed")
                estimates.append(ReplicaEstimate(stats.get("mean"), stats.get("error"), 0, None, reason))
            found[system][name] = across_replicas(estimates)
    return found


def system_statistics(analyses: dict[str, list[dict]], groups: dict | None = None) -> pd.DataFrame:
    """One row per system (``analyses``: system -> its replicas' analysis records): the
    mean over replicas of each observable with its standard error, and whether the
    replicas agree within their own errors (chi-squared p >= 0.01)."""
    groups = groups or {}
    rows = []
    for system, by_name in system_estimates(analyses).items():
        records = analyses[system]
        group, reference = groups.get(system, (None, False))
        row = {"system": system, "group": group or "", "reference": "yes" if reference else ""}
        row["replicas_analyzed"] = sum(1 for r in records if r)
        notes = []
        for name, estimate in by_name.items():
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


# Two estimates differ when their difference is at least this many standard errors.
DIFFERS_Z = 2.0


def residue_estimates(records: list[dict]) -> dict[int, tuple[str, float, float | None]]:
    """Per residue index (CA atoms): (residue, mean RMSF over replicas, its standard
    error or None with one replica), where every analyzed replica has that residue."""
    tables = [r["rmsf_per_residue"] for r in records if r.get("rmsf_per_residue")]
    if not tables:
        return {}
    common = set.intersection(*(set(t["residue_index"]) for t in tables))
    found = {}
    for index in sorted(common):
        values = [t["rmsf_nm"][t["residue_index"].index(index)] for t in tables]
        label = tables[0]["residue"][tables[0]["residue_index"].index(index)]
        error = float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) >= 2 else None
        found[index] = (label, float(np.mean(values)), error)
    return found


def comparisons(analyses: dict[str, list[dict]], groups: dict) -> pd.DataFrame:
    """Each group's systems against its reference: for every observable and every
    residue's RMSF, the difference with its standard error (the two systems' standard
    errors over replicas, combined), z = difference / error, and whether they differ
    (|z| >= 2), or n/a with the reason."""
    columns = ["group", "system", "reference", "observable", "residue", "difference", "error", "z", "differs", "note"]
    estimates = system_estimates(analyses)
    rows = []
    references = {group: system for system, (group, reference) in groups.items() if reference}
    for system, (group, reference) in sorted(groups.items(), key=lambda item: (item[1][0], item[0])):
        base = references.get(group)
        if reference or base is None or system not in estimates or base not in estimates:
            continue
        pairs = [
            (
                name,
                "",
                (estimates[system][name].mean, estimates[system][name].error),
                (base_estimate.mean, base_estimate.error),
            )
            for name, base_estimate in estimates[base].items()
        ]
        ours, theirs = residue_estimates(analyses[system]), residue_estimates(analyses[base])
        for index in sorted(set(ours) & set(theirs)):
            pairs.append(("rmsf_nm", f"{ours[index][0]} ({index + 1})", ours[index][1:], theirs[index][1:]))
        for name, residue, (mean, error), (base_mean, base_error) in pairs:
            row = {"group": group, "system": system, "reference": base, "observable": name, "residue": residue}
            if mean is None or base_mean is None:
                row.update(difference=NOT_AVAILABLE, error=NOT_AVAILABLE, z=NOT_AVAILABLE, differs=NOT_AVAILABLE)
                row["note"] = "no estimate of one of the two"
            elif error is None or base_error is None or error + base_error <= 0:
                row.update(difference=_rounded(mean - base_mean), error=NOT_AVAILABLE, z=NOT_AVAILABLE)
                row.update(differs=NOT_AVAILABLE, note="no error bar: each needs at least two replicas")
            else:
                combined = float(np.hypot(error, base_error))
                z = (mean - base_mean) / combined
                row.update(difference=_rounded(mean - base_mean), error=_rounded(combined), z=_rounded(z))
                row.update(differs="yes" if abs(z) >= DIFFERS_Z else "no", note="")
            rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def plot_comparisons(table: pd.DataFrame, path: Path) -> None:
    """Per group: each system's RMSF difference from the reference along the chain
    (± its error), and every observable's z against the reference (|z| >= 2: differs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(table["group"])) if len(table) else []
    if not groups:
        fig, axis = plt.subplots(figsize=(6, 1.5))
        axis.axis("off")
        axis.text(0.5, 0.5, "no group with a reference in the systems table", ha="center", va="center")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return
    fig, axes = plt.subplots(len(groups), 2, figsize=(11, 3.4 * len(groups)), squeeze=False, constrained_layout=True)
    for (left, right), group in zip(axes, groups, strict=True):
        rows = table[table["group"] == group]
        reference = rows["reference"].iloc[0]
        for system in dict.fromkeys(rows["system"]):
            mine = rows[rows["system"] == system]
            per_residue = mine[(mine["observable"] == "rmsf_nm") & (mine["residue"] != "")]
            numbers = pd.to_numeric(per_residue["difference"], errors="coerce")
            errors = pd.to_numeric(per_residue["error"], errors="coerce").fillna(0)
            x = np.arange(len(per_residue))
            line = left.plot(x, numbers, lw=1, marker="o", ms=2, label=system)[0]
            left.fill_between(x, numbers - errors, numbers + errors, color=line.get_color(), alpha=0.2)
            overall = mine[mine["residue"] == ""]
            z = pd.to_numeric(overall["z"], errors="coerce")
            right.scatter(z, np.arange(len(overall)), color=line.get_color(), label=system)
            right.set_yticks(np.arange(len(overall)), overall["observable"].tolist(), fontsize=7)
        left.axhline(0, color="gray", lw=0.8)
        left.set_xlabel("residue (CA), in chain order")
        left.set_ylabel(f"RMSF − {reference}'s (nm)")
        left.set_title(f"group {group}: against {reference}", fontsize=9)
        left.legend(fontsize=7)
        for bound in (-DIFFERS_Z, DIFFERS_Z):
            right.axvline(bound, color="gray", ls="--", lw=0.8)
        right.set_xlabel(f"z = difference / error (|z| ≥ {DIFFERS_Z:g}: differs)")
    fig.savefig(path, dpi=90)
    plt.close(fig)


def system_tables(replicas: dict[str, list[dict]], folder: Path, goals: dict | None = None) -> None:
    """Per system, its page's table (layout.PER_SYSTEM_TABLE): one row per observable,
    the mean over replicas with its standard error and agreement, then each replica's
    equilibrated mean ± error and where its equilibration was cut; and where the
    system has a goal, where it stands (``goals``: system -> status.goal_state)."""
    folder.mkdir(parents=True, exist_ok=True)
    estimates = system_estimates(replicas)
    for system, records in replicas.items():
        rows = []
        for name, estimate in estimates[system].items():
            row = {
                "observable": name,
                "mean": _or_na(_rounded(estimate.mean)),
                "se": _or_na(_rounded(estimate.error)),
                "replicas_agree": NOT_AVAILABLE
                if estimate.replicas_agree is None
                else ("yes" if estimate.replicas_agree else "no"),
                "note": estimate.reason or "",
            }
            for number, record in enumerate(records, start=1):
                stats = (record.get("statistics") or {}).get(name) or {}
                if stats.get("mean") is None:
                    row[f"r{number}"] = f"n/a: {stats.get('reason') or 'not analyzed'}"
                    continue
                error = f" ± {stats['error']:.3g}" if stats.get("error") is not None else ""
                cut = stats.get("equilibrated_from_ps")
                row[f"r{number}"] = f"{stats['mean']:.4g}{error}" + (f" (from {cut:g} ps)" if cut is not None else "")
            rows.append(row)
        goal = (goals or {}).get(system)
        if goal:
            state = "converged, stopped" if goal["converged"] else "going on"
            rows.append(
                {
                    "observable": f"goal: {goal['observable']} se <= {goal['goal']:g}",
                    "note": f"{state}: {goal['reason']}",
                }
            )
        pd.DataFrame(rows).to_csv(folder / layout.fill(layout.PER_SYSTEM_TABLE, system=system), sep="\t", index=False)


def plot_convergence(replicas: dict[str, list[dict]], folder: Path) -> list[Path]:
    """Per system, its page's figure (layout.PER_SYSTEM_FIGURE): each observable's running mean against
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
        path = folder / layout.fill(layout.PER_SYSTEM_FIGURE, system=system)
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def _goal_text(goal: dict | None) -> str:
    if not goal:
        return ""
    at = f" at {goal['judged_at_ns']:g} ns" if goal.get("judged_at_ns") is not None else ""
    return f"{'converged' if goal['converged'] else 'going on'}{at}: {goal['reason']}"


def _rounded(value):
    return None if value is None else float(f"{value:.6g}")


def _or_na(value):
    return NOT_AVAILABLE if value is None else value


def setup_columns(setup: dict) -> dict:
    """What setup decided about a system's structure (setup.json), as table columns:
    empty where nothing was decided, so that plain systems keep plain rows."""
    fix = setup.get("fix", {})
    removed = {name: count for counts in fix.get("removed", {}).values() for name, count in counts.items()}
    # setups before several ligands per system recorded one, under "ligand"
    ligands = fix.get("ligands") or ([fix["ligand"]] if fix.get("ligand") else [])
    return {
        "setup_removed": ", ".join(f"{name} x{count}" for name, count in sorted(removed.items())),
        "setup_replaced": ", ".join(fix.get("replaced_nonstandard", [])),
        "setup_metal_sites": ", ".join(
            f"{site['residue']} {site['atom']}: {site['protonation']}" for site in fix.get("metal_sites", [])
        ),
        "setup_mutations": ";".join(fix.get("mutations", [])),
        "setup_protonation": "; ".join(
            f"{c['residue']}: {c['state']} ({c['why']})" for c in fix.get("protonation", [])
        ),
        "setup_chains": ",".join(fix.get("chains", [])),
        "setup_model": fix.get("model", ""),
        "ligand": "; ".join(
            f"{ligand['residue']} {ligand['smiles']} (charge {ligand['net_charge']:+d}"
            + (f", {ligand['copies']} copies)" if ligand.get("copies", 1) > 1 else ")")
            for ligand in ligands
        ),
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
    row.update(binding_columns(analysis))
    return row


# Contacts listed per ligand in the table (analysis.json has them all).
TABLE_CONTACTS = 6


def binding_columns(analysis: dict) -> dict:
    """Ligands and metal sites (analysis.ligand_metrics, metal_sites) as table columns:
    empty where a system has none; a number for one ligand, `NAME value; ...` for several."""
    ligands = analysis.get("ligands") or {}

    def per_ligand(value):
        values = {name: value(record) for name, record in ligands.items()}
        if len(values) == 1:
            return next(iter(values.values()))
        return "; ".join(f"{name} {v}" for name, v in values.items())

    sites = analysis.get("metal_sites") or []
    return {
        "ligand_rmsd_mean_nm": per_ligand(lambda r: r["rmsd_mean_nm"]) if ligands else "",
        "ligand_in_pocket_fraction": per_ligand(lambda r: r["in_pocket_fraction"]) if ligands else "",
        "ligand_contacts": per_ligand(
            lambda r: ", ".join(f"{c['residue']} {c['occupancy']:.2f}" for c in r["contacts"][:TABLE_CONTACTS])
        )
        if ligands
        else "",
        "metal_sites_kept": "; ".join(
            f"{site['metal']} {site['kept_fraction']:.2f} ({len(site['ligands'])} donors, max "
            f"{max(d['max_nm'] for d in site['ligands']):.3f} nm)"
            if site["ligands"]
            else f"{site['metal']}: no donor atom within {COORDINATION_NM} nm at the start"
            for site in sites
        ),
    }


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
    per_system: Path | None = None,
    compared: tuple[Path, Path, dict] | None = None,
    goals: dict | None = None,
) -> pd.DataFrame:
    """The campaign table and figure; ``systems``: (its path, system -> replicas'
    analysis records) for the table of each system's statistics over its replicas;
    ``per_system``: the folder of each system's convergence figure and table;
    ``compared``: (table, figure, system -> (group, is reference)) for the comparisons
    of groups; ``goals``: system -> where it stands against its goal (continue until
    converged: status.goal_state)."""
    frame = pd.DataFrame(rows)
    frame.to_csv(table, sep="\t", index=False)
    analyses = systems[1] if systems is not None else {}
    groups = compared[2] if compared is not None else {}
    if systems is not None:
        table_of_systems = system_statistics(analyses, groups)
        if goals:
            table_of_systems["until"] = [_goal_text(goals.get(system)) for system in table_of_systems["system"]]
        table_of_systems.to_csv(systems[0], sep="\t", index=False)
    if per_system is not None:
        plot_convergence(analyses, per_system)
        system_tables(analyses, per_system, goals)
    if compared is not None:
        differences = comparisons(analyses, groups)
        differences.to_csv(compared[0], sep="\t", index=False)
        plot_comparisons(differences, compared[1])
    plot_campaign(frame, figure, campaign, analyses)
    log.info("summary of %d simulations written to %s", len(frame), table)
    return frame


# The overview's panels: equilibrated observables (over replicas), then the speed.
OVERVIEW = (
    ("rmsd_nm", "RMSD to start (nm)"),
    ("rg_nm", "radius of gyration (nm)"),
    ("helix_fraction", "helix fraction"),
    ("temperature_K", "temperature (K)"),
)


def plot_campaign(frame: pd.DataFrame, path: Path, campaign: str, analyses: dict | None = None) -> None:
    """The campaign overview: per system and observable, each replica's equilibrated
    mean (dots) and the mean over replicas with its standard error (bar), side by side;
    and each simulation's speed. ``analyses``: system -> its replicas' analysis records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(dict.fromkeys(frame["system"]))
    estimates = system_estimates(analyses or {system: [] for system in systems})
    fig, axes = plt.subplots(1, len(OVERVIEW) + 1, figsize=(3.6 * (len(OVERVIEW) + 1), 3.8), constrained_layout=True)
    for axis, (name, label) in zip(axes, OVERVIEW, strict=False):
        for x, system in enumerate(systems):
            means = [
                ((r.get("statistics") or {}).get(name) or {}).get("mean") for r in (analyses or {}).get(system, [])
            ]
            means = [m for m in means if m is not None]
            axis.scatter(np.full(len(means), x), means, s=14, alpha=0.6, color="tab:blue")
            estimate = estimates.get(system, {}).get(name)
            if estimate is not None and estimate.mean is not None:
                axis.errorbar(
                    x + 0.15, estimate.mean, yerr=estimate.error or 0, fmt="o", color="black", capsize=3, ms=4
                )
        if name == "temperature_K":
            for target in frame["temperature_target_K"].unique():
                axis.axhline(target, ls="--", color="gray", lw=0.8)
        axis.set_xticks(range(len(systems)))
        axis.set_xticklabels(systems, rotation=30, ha="right", fontsize=8)
        axis.set_ylabel(label)
    speed = axes[-1]
    for x, system in enumerate(systems):
        values = pd.to_numeric(frame.loc[frame["system"] == system, "ns_per_day_mean"], errors="coerce").dropna()
        speed.scatter(np.full(len(values), x), values, s=14, alpha=0.6, color="tab:green")
    speed.set_xticks(range(len(systems)))
    speed.set_xticklabels(systems, rotation=30, ha="right", fontsize=8)
    speed.set_ylabel("speed (ns/day)")
    fig.suptitle(
        f"Campaign {campaign}: {len(systems)} systems, {len(frame)} simulations. Dots: replicas' equilibrated "
        "means; black: mean over replicas +- standard error",
        fontsize=9,
    )
    fig.savefig(path, dpi=100)
    plt.close(fig)


def read_json(path) -> dict:
    return json.loads(Path(path).read_text())
