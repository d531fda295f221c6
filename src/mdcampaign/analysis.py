"""`analyze`: per-simulation analysis over all segments joined (mdtraj + pandas).

RMSD to the starting structure, radius of gyration, per-residue RMSF and, for
proteins, DSSP secondary-structure fractions; plus the mean temperature (and density
in explicit solvent) from the energies tables. One CSV per quantity, a JSON of
summary numbers and one PNG figure per simulation.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError
from .files import atomic_write_json

log = logging.getLogger(__name__)


class TrajectoryError(DataError):
    """Joined segments do not form one continuous trajectory."""


def load_segments(trajectories: list[Path], topology: Path, frame_interval_ps: float):
    """Join segment trajectories and check that time is continuous: every frame one
    frame interval after the previous one, no gap and no duplicate."""
    import mdtraj

    traj = mdtraj.load([str(p) for p in trajectories], top=str(topology))
    steps = np.diff(traj.time)
    if len(steps) and not np.allclose(steps, frame_interval_ps, atol=1e-3 * max(frame_interval_ps, 1.0)):
        bad = int(np.argmax(~np.isclose(steps, frame_interval_ps, atol=1e-3 * max(frame_interval_ps, 1.0))))
        raise TrajectoryError(
            f"time is not continuous between frames {bad} and {bad + 1} "
            f"({traj.time[bad]:g} ps -> {traj.time[bad + 1]:g} ps, expected +{frame_interval_ps:g} ps)"
        )
    return traj


def _selection(topology, expression: str, fallback: str) -> np.ndarray:
    atoms = topology.select(expression)
    return atoms if len(atoms) >= 3 else topology.select(fallback)


def analyze(
    trajectories: list[Path],
    energies: list[Path],
    topology: Path,
    frame_interval_ps: float,
    out: dict[str, Path],
    title: str,
) -> dict:
    """Compute everything and write the files named in ``out`` (keys: rmsd, rg, rmsf,
    dssp, json, png)."""
    import mdtraj

    traj = load_segments(trajectories, topology, frame_interval_ps)
    traj, per_frame, dssp = frame_observables(traj, mdtraj.load(str(topology)))
    top = traj.topology
    heavy = _selection(top, "not element H and not water", "all")
    time_ps = traj.time
    rmsd, rg = per_frame["rmsd_nm"], per_frame["rg_nm"]
    ca = top.select("name CA")
    rmsf_atoms = ca if len(ca) else heavy
    rmsf = mdtraj.rmsf(traj, None, atom_indices=rmsf_atoms, precentered=False)
    rmsf_table = pd.DataFrame(
        {
            "residue_index": [top.atom(i).residue.index for i in rmsf_atoms],
            "residue": [str(top.atom(i).residue) for i in rmsf_atoms],
            "atom": [top.atom(i).name for i in rmsf_atoms],
            "rmsf_nm": rmsf,
        }
    )
    pd.DataFrame({"time_ps": time_ps, "rmsd_nm": rmsd}).to_csv(out["rmsd"], index=False)
    pd.DataFrame({"time_ps": time_ps, "rg_nm": rg}).to_csv(out["rg"], index=False)
    rmsf_table.to_csv(out["rmsf"], index=False)
    dssp.to_csv(out["dssp"], index=False)
    thermo = pd.concat([pd.read_csv(p) for p in energies], ignore_index=True)
    half = len(time_ps) // 2
    summary = {
        "simulation": title,
        "frames": int(traj.n_frames),
        "simulated_ns": round(float(time_ps[-1] - time_ps[0] + frame_interval_ps) / 1000.0, 6),
        "rmsd_mean_nm": _round(rmsd.mean()),
        "rmsd_final_nm": _round(rmsd[-1]),
        "rmsd_second_half_mean_nm": _round(rmsd[half:].mean()),
        "rg_mean_nm": _round(rg.mean()),
        "rmsf_mean_nm": _round(rmsf.mean()),
        "temperature_mean_K": _round(thermo["temperature_K"].mean(), 2),
        "temperature_std_K": _round(thermo["temperature_K"].std(), 2),
        "density_mean_g_per_mL": _round(thermo["density_g_per_mL"].mean())
        if thermo["density_g_per_mL"].notna().any()
        else None,
        "potential_energy_mean_kJ_mol": _round(thermo["potential_energy_kJ_mol"].mean(), 2),
    }
    if len(dssp):
        for column in ("helix", "strand", "coil"):
            summary[f"{column}_fraction"] = _round(dssp[column].mean())
    if len(ca):  # per residue, for comparisons across systems (summary.comparisons)
        summary["rmsf_per_residue"] = {
            "residue_index": rmsf_table["residue_index"].tolist(),
            "residue": rmsf_table["residue"].tolist(),
            "rmsf_nm": [round(float(v), 5) for v in rmsf],
        }
    reference = mdtraj.load(str(topology))
    binding = {"time_ps": time_ps}
    if ligands := ligand_metrics(traj, reference, binding):
        summary["ligands"] = ligands
    if sites := metal_sites(traj, reference, binding):
        summary["metal_sites"] = sites
    if len(binding) > 1 and "binding" in out:
        pd.DataFrame(binding).to_csv(out["binding"], index=False, float_format="%.5g")
    series = {name: (time_ps, values) for name, values in per_frame.items()}
    series["temperature_K"] = (thermo["time_ps"], thermo["temperature_K"])
    summary["statistics"] = equilibrated_estimates(series)
    if "features" in out:
        write_features(out["features"], traj, per_frame)
    atomic_write_json(out["json"], summary)
    plot(time_ps, rmsd, rg, rmsf_table, dssp, thermo, title, out["png"])
    log.info("analyzed %s: %d frames, RMSD %.3f nm, Rg %.3f nm", title, traj.n_frames, rmsd.mean(), rg.mean())
    return summary


# A ligand is in its pocket while its centre is within this of where it started.
POCKET_NM = 0.5
# A protein residue is in contact with a ligand with a heavy atom within this of one of its.
CONTACT_NM = 0.4
# A metal's first shell: heavy atoms within this of it (in the starting structure); the
# site is kept in a frame where each of them still is.
COORDINATION_NM = 0.3
METALS = frozenset({"Zn", "Mg", "Ca", "Fe", "Cu", "Mn", "Co", "Ni", "Cd", "Hg"})
DONORS = frozenset({"N", "O", "S", "Se"})  # the atoms that coordinate them


def ligand_residues(topology) -> list:
    """Molecules other than polymer, water and ions: the ligands and cofactors setup
    kept (by their residues of at least two heavy atoms)."""
    return [
        residue
        for residue in topology.residues
        if not (residue.is_protein or residue.is_nucleic or residue.is_water)
        and not {"N", "CA", "C"} <= {atom.name for atom in residue.atoms}  # GROMACS's NALA, CLYS: amino acids
        and sum(1 for atom in residue.atoms if atom.element.symbol != "H") >= 2
    ]


def ligand_metrics(traj, reference, per_frame: dict) -> dict:
    """Per ligand, with the frames already fitted on the protein (frame_observables):
    its heavy-atom RMSD to its starting pose, the fraction of frames its centre stays
    within POCKET_NM of where it started, and the protein residues within CONTACT_NM
    with their occupancy (fraction of frames). Adds each ligand's RMSD and centre shift
    per frame to ``per_frame``."""
    import mdtraj

    found = {}
    protein = traj.topology.select("protein and not element H")
    for residue in ligand_residues(traj.topology):
        heavy = np.array([a.index for a in residue.atoms if a.element.symbol != "H"])
        start = reference.xyz[0, heavy]
        rmsd = np.sqrt(((traj.xyz[:, heavy] - start) ** 2).sum(axis=2).mean(axis=1))
        shift = np.linalg.norm(traj.xyz[:, heavy].mean(axis=1) - start.mean(axis=0), axis=1)
        occupancy: dict[int, int] = {}
        if len(protein):
            for atoms in mdtraj.compute_neighbors(traj, CONTACT_NM, heavy, haystack_indices=protein, periodic=False):
                for index in {traj.topology.atom(int(a)).residue.index for a in atoms}:
                    occupancy[index] = occupancy.get(index, 0) + 1
        name = f"{residue.name}{residue.resSeq}"
        per_frame[f"{name}_rmsd_nm"], per_frame[f"{name}_centre_shift_nm"] = rmsd, shift
        contacts = sorted(occupancy.items(), key=lambda item: (-item[1], item[0]))
        found[name] = {
            "residue": residue.name,
            "rmsd_mean_nm": _round(rmsd.mean()),
            "rmsd_max_nm": _round(rmsd.max()),
            "in_pocket_fraction": _round(float(np.mean(shift <= POCKET_NM))),
            "centre_shift_max_nm": _round(shift.max()),
            "contacts": [
                {"residue": str(traj.topology.residue(index)), "occupancy": _round(count / traj.n_frames, 3)}
                for index, count in contacts
            ],
        }
    return found


def metal_sites(traj, reference, per_frame: dict) -> list[dict]:
    """Per metal ion: the donor atoms (N, O, S) of its first shell in the starting structure
    (within COORDINATION_NM, water excluded: waters exchange), their distances over
    time, and the fraction of frames in which every one of them is still within
    COORDINATION_NM: a site that falls apart is visible. Adds each distance per frame
    to ``per_frame``."""
    import mdtraj

    top = traj.topology
    sites = []
    candidates = np.array([a.index for a in top.atoms if a.element.symbol in DONORS and not a.residue.is_water])
    for metal in (a for a in top.atoms if a.element.symbol in METALS):
        others = candidates[candidates != metal.index]
        if not len(others):
            continue
        near = mdtraj.compute_neighbors(reference, COORDINATION_NM, np.array([metal.index]), others, periodic=False)[0]
        if not len(near):
            sites.append({"metal": f"{metal.residue}", "ligands": [], "kept_fraction": None})
            continue
        pairs = np.array([[metal.index, int(a)] for a in near])
        distances = mdtraj.compute_distances(traj, pairs, periodic=False)
        names = [f"{top.atom(int(a)).residue}-{top.atom(int(a)).name}" for a in near]
        for name, column in zip(names, distances.T, strict=True):
            per_frame[f"{metal.residue}_{name}_nm"] = column
        sites.append(
            {
                "metal": f"{metal.residue}",
                "ligands": [
                    {
                        "atom": name,
                        "start_nm": _round(float(d0), 4),
                        "mean_nm": _round(col.mean(), 4),
                        "max_nm": _round(col.max(), 4),
                    }
                    for name, d0, col in zip(
                        names, mdtraj.compute_distances(reference, pairs, periodic=False)[0], distances.T, strict=True
                    )
                ],
                "kept_fraction": _round(float(np.mean((distances <= COORDINATION_NM).all(axis=1))), 4),
            }
        )
    return sites


def frame_observables(traj, reference) -> tuple:
    """The observables of every frame, the same for a whole simulation (analyze) and
    for one segment (segment_observables): molecules made whole, frames fitted on the
    reference's backbone; RMSD to the reference, radius of gyration of the heavy
    atoms (no water), helix and strand fractions (proteins). Returns the fitted
    trajectory, {name: per-frame values} and the DSSP table."""
    import mdtraj

    top = traj.topology
    if traj.unitcell_vectors is not None and np.any(traj.unitcell_lengths):
        traj = _make_whole(traj)
    fit_atoms = _selection(top, "backbone", "not element H")
    heavy = _selection(top, "not element H and not water", "all")
    traj.superpose(reference, atom_indices=fit_atoms)
    per_frame = {
        "rmsd_nm": mdtraj.rmsd(traj, reference, atom_indices=fit_atoms),
        "rg_nm": mdtraj.compute_rg(traj.atom_slice(heavy)),
    }
    dssp = secondary_structure(traj)
    if len(dssp):
        per_frame.update({f"{column}_fraction": dssp[column].to_numpy() for column in ("helix", "strand")})
    return traj, per_frame, dssp


def segment_observables(trajectory: Path, topology: Path, path: Path) -> None:
    """One segment's observables per frame (frame_observables), as the CSV stored
    beside it for the decision to stop (convergence.py): time_ps and one column each."""
    import mdtraj

    traj = mdtraj.load(str(trajectory), top=str(topology))
    traj, per_frame, _ = frame_observables(traj, mdtraj.load(str(topology)))
    table = pd.DataFrame({"time_ps": traj.time, **per_frame})
    partial = Path(path).with_name(f".{Path(path).name}.partial")
    table.to_csv(partial, index=False, float_format="%.6g")
    os.replace(partial, path)


def write_features(path: Path, traj, observables: dict) -> None:
    """Per frame, what Markov-model tools start from, in one NPZ that NumPy alone reads:
    ``time_ps``, ``dihedrals`` (sin and cos of every backbone phi and psi, frames x
    features), ``dihedral_names`` and each per-frame observable (``rmsd_nm``, ...)."""
    import mdtraj

    columns, names = [], []
    for kind, compute in (("phi", mdtraj.compute_phi), ("psi", mdtraj.compute_psi)):
        indices, angles = compute(traj)
        for column, atoms in enumerate(indices):
            residue = traj.topology.atom(int(atoms[1])).residue
            for function in (np.sin, np.cos):
                columns.append(function(angles[:, column]))
                names.append(f"{function.__name__}({kind} {residue})")
    dihedrals = np.column_stack(columns).astype(np.float32) if columns else np.zeros((traj.n_frames, 0), np.float32)
    arrays = {name: np.asarray(values, dtype=np.float32) for name, values in observables.items()}
    partial = Path(path).with_name(f".{Path(path).name}.partial")
    with open(partial, "wb") as handle:  # np.savez would add ".npz" to a name that lacks it
        np.savez_compressed(
            handle,
            time_ps=np.asarray(traj.time, dtype=np.float64),
            dihedrals=dihedrals,
            dihedral_names=np.array(names, dtype=str),
            **arrays,
        )
    os.replace(partial, path)


def equilibrated_estimates(series: dict[str, tuple]) -> dict[str, dict]:
    """Per observable (name: (times in ps, values)): the mean after the equilibration
    cut, its autocorrelation-corrected error, and where the cut fell."""
    from .uncertainty import replica_estimate, running_mean

    estimates = {}
    for name, (times, values) in series.items():
        values = np.asarray(values, dtype=float)
        estimate = replica_estimate(values)
        record = estimate.to_json()
        record["mean"], record["error"] = _round(estimate.mean, 6), _round(estimate.error, 6)
        times = np.asarray(times, dtype=float)
        if estimate.mean is not None and estimate.cut < len(times):
            record["equilibrated_from_ps"] = _round(float(times[estimate.cut]), 3)
        record["running"] = running_mean(times, values)
        estimates[name] = record
    return estimates


def _make_whole(traj):
    """Make molecules whole across periodic boundaries before any geometry (GROMACS
    writes atoms wrapped into the box; OpenMM's frames are whole already). The largest
    molecule is the anchor: mdtraj's own guess wants one larger than every other, and a
    solute-only trajectory of one protein has only that one."""
    try:
        molecules = sorted(traj.topology.find_molecules(), key=len, reverse=True)
        return traj.image_molecules(inplace=False, anchor_molecules=molecules[:1], other_molecules=molecules[1:])
    except Exception as error:  # noqa: BLE001 - mdtraj needs bonds; keep raw frames
        log.warning("could not image molecules (%s); using raw coordinates", error)
        return traj


def secondary_structure(traj) -> pd.DataFrame:
    """Per-frame fractions of helix (H), strand (E) and coil (C) over protein residues."""
    import mdtraj

    protein = traj.topology.select("protein")
    if len(protein) == 0:
        return pd.DataFrame(columns=["time_ps", "helix", "strand", "coil"])
    codes = mdtraj.compute_dssp(traj.atom_slice(protein), simplified=True)
    valid = codes != "NA"
    counts = np.maximum(valid.sum(axis=1), 1)
    return pd.DataFrame(
        {
            "time_ps": traj.time,
            "helix": (codes == "H").sum(axis=1) / counts,
            "strand": (codes == "E").sum(axis=1) / counts,
            "coil": (codes == "C").sum(axis=1) / counts,
        }
    )


def _round(value, digits: int = 4):
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


def plot(time_ps, rmsd, rg, rmsf_table, dssp, thermo, title, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    time_ns = np.asarray(time_ps) / 1000.0
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
    axes[0, 0].plot(time_ns, rmsd, lw=1)
    axes[0, 0].set(xlabel="time (ns)", ylabel="RMSD to start (nm)", title="RMSD")
    axes[0, 1].plot(time_ns, rg, lw=1, color="tab:green")
    axes[0, 1].set(xlabel="time (ns)", ylabel="radius of gyration (nm)", title="Radius of gyration")
    axes[1, 0].plot(np.arange(len(rmsf_table)), rmsf_table["rmsf_nm"], marker=".", lw=1, color="tab:orange")
    axes[1, 0].set(xlabel="residue", ylabel="RMSF (nm)", title="Per-residue RMSF")
    if len(dssp):
        for column, color in (("helix", "tab:red"), ("strand", "tab:blue"), ("coil", "tab:gray")):
            axes[1, 1].plot(time_ns, dssp[column], lw=1, label=column, color=color)
        axes[1, 1].set(
            xlabel="time (ns)", ylabel="fraction of residues", title="Secondary structure (DSSP)", ylim=(-0.02, 1.02)
        )
        axes[1, 1].legend(loc="upper right", fontsize=8)
    else:
        axes[1, 1].plot(thermo["time_ps"] / 1000.0, thermo["temperature_K"], lw=1, color="tab:purple")
        axes[1, 1].set(xlabel="time (ns)", ylabel="temperature (K)", title="Temperature")
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
