"""`setup`: structure file -> fixed, solvated (or implicit), minimized and equilibrated
OpenMM system.

Outputs (in one directory): ``system.xml`` (the production System, barostat included
for explicit solvent), ``state.xml`` (equilibrated positions, velocities and box),
``topology.pdb`` (all atoms), ``trajectory_topology.pdb`` (the atoms written to
trajectories), ``fixed.pdb`` (the structure after repair, before solvation),
``equilibration.csv`` and ``setup.json`` (what was done and measured).
"""

from __future__ import annotations

import csv
import logging
import math
import platform as host_platform
import time
from pathlib import Path

import openmm
from openmm import app, unit

from ...errors import CampaignError, SegmentError
from ...files import sha256_file
from ...ligand_spec import LigandSpec
from ...protocol import Protocol
from ...repair import repair, seeded
from ...structures import METAL_ION_RESIDUES, SALT_ION_RESIDUES, WATER_RESIDUES
from . import plumbing
from .forcefields import BAROSTAT_INTERVAL_STEPS, MODELLER_WATER
from .forcefields import forcefield_files as _files_for

log = logging.getLogger(__name__)

CAP_NAMES = {"ACE", "NME", "NH2"}
RESTRAINT_K = 1000.0  # kJ/mol/nm^2 on solute heavy atoms during the first equilibration phase
MINIMIZATION_TOLERANCE = 10.0  # kJ/mol/nm
THERMO_EVERY_PS = 1.0


def solute_atom_indices(topology: app.Topology) -> list[int]:
    """Atoms that are neither water nor salt ions: what `trajectory_atoms: solute` keeps."""
    return [
        atom.index
        for atom in topology.atoms()
        if atom.residue.name.upper() not in WATER_RESIDUES and atom.residue.name.upper() not in SALT_ION_RESIDUES
    ]


def trajectory_atom_indices(topology: app.Topology, mode: str) -> list[int] | None:
    """Indices written to trajectories, or None for all atoms."""
    if mode == "all":
        return None
    indices = solute_atom_indices(topology)
    return None if len(indices) == topology.getNumAtoms() else indices


def prepare(
    structure: Path,
    protocol: Protocol,
    out_dir: Path,
    platform: str = "auto",
    threads: int | None = None,
    seed: int = 1,
    ligands: tuple[LigandSpec, ...] = (),
) -> dict:
    """Run the whole setup; returns the content written to setup.json."""
    started = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info: dict = {"structure": str(structure), "structure_sha256": sha256_file(structure)}

    fixer, fix_info = repair(structure, protocol, ligands, seed=seed)
    info["fix"] = fix_info
    info["seed"] = seed  # the same inputs, versions and seed give the same system
    with open(out_dir / "fixed.pdb", "w") as handle:
        app.PDBFile.writeFile(fixer.topology, fixer.positions, handle, keepIds=True)

    forcefield_files = _forcefield_files(protocol) + ([fix_info["ligand_forcefield_file"]] if ligands else [])
    forcefield = app.ForceField(*forcefield_files)
    check_templates(forcefield, fixer.topology, structure, protocol)
    modeller = app.Modeller(fixer.topology, fixer.positions)
    if protocol.explicit:
        with seeded(seed):  # which waters become ions
            modeller.addSolvent(
                forcefield,
                model=MODELLER_WATER[protocol.water_model],
                padding=protocol.padding_nm * unit.nanometer,
                boxShape=protocol.box_shape,
                ionicStrength=protocol.ionic_strength_molar * unit.molar,
                neutralize=True,
            )
    topology, positions = modeller.topology, modeller.positions
    if protocol.explicit:
        check_box(topology, protocol, structure)
    system = create_system(forcefield, topology, protocol)
    info["atoms"] = topology.getNumAtoms()
    info["solute_atoms"] = len(solute_atom_indices(topology))
    info["waters"] = sum(1 for r in topology.residues() if r.name in WATER_RESIDUES)
    info["forcefield_files"] = forcefield_files

    platform_name = plumbing.choose_platform(platform)
    info["platform"] = platform_name
    log.info("setup: %d atoms (%d solute), platform %s", info["atoms"], info["solute_atoms"], platform_name)

    positions, minimization = minimize(system, positions, protocol, platform_name, threads)
    info["minimization"] = minimization
    state, equilibration = equilibrate(
        system, topology, positions, protocol, platform_name, threads, seed, out_dir / "equilibration.csv"
    )
    info["equilibration"] = equilibration

    plumbing.write_xml(out_dir / "system.xml", system)
    plumbing.write_xml(out_dir / "state.xml", state)
    final_positions = state.getPositions()
    topology.setPeriodicBoxVectors(state.getPeriodicBoxVectors() if protocol.explicit else None)
    write_pdb(out_dir / "topology.pdb", topology, final_positions)
    subset = trajectory_atom_indices(topology, protocol.trajectory_atoms)
    if subset is None:
        write_pdb(out_dir / "trajectory_topology.pdb", topology, final_positions)
    else:
        sub = app.Modeller(topology, final_positions)
        keep = set(subset)
        sub.delete([atom for atom in topology.atoms() if atom.index not in keep])
        sub.topology.setPeriodicBoxVectors(topology.getPeriodicBoxVectors())
        write_pdb(out_dir / "trajectory_topology.pdb", sub.topology, sub.positions)
    info["trajectory_atoms"] = len(subset) if subset is not None else topology.getNumAtoms()
    info["openmm_version"] = openmm.__version__
    info["host"] = host_platform.node()
    info["wall_seconds"] = round(time.time() - started, 1)
    return info


def _forcefield_files(protocol: Protocol) -> list[str]:
    return _files_for(protocol.forcefield, protocol.solvent, protocol.water_model, protocol.implicit_model)


def write_pdb(path: Path, topology: app.Topology, positions) -> None:
    with open(path, "w") as handle:
        app.PDBFile.writeFile(topology, positions, handle, keepIds=True)


def check_templates(forcefield: app.ForceField, topology: app.Topology, structure: Path, protocol: Protocol):
    """Every residue has a template in the force field, or one line saying what to do."""
    unmatched = forcefield.getUnmatchedResidues(topology)
    if not unmatched:
        return
    ions = [r for r in unmatched if r.name.upper() in METAL_ION_RESIDUES]
    if ions:
        names = sorted({r.name for r in ions})
        where = ", ".join(ion_forcefields(names[0])) or "none of the force fields offered here"
        solvent = f"{protocol.solvent} solvent" + (f" ({protocol.water_model})" if protocol.explicit else "")
        raise CampaignError(
            f"structure '{structure}': metal ion {names[0]} ({_residue_label(ions[0])}) has no parameters in "
            f"forcefield '{protocol.forcefield}' with {solvent}; it has with: {where}; choose one of those "
            f"(forcefield, solvent and water_model columns), or drop the ion with remove_residues: {names[0]}"
        )
    names = sorted({_residue_label(r) for r in unmatched})
    shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
    first = sorted({r.name for r in unmatched})[0]
    raise CampaignError(
        f"structure '{structure}': residue(s) {shown} have no template in forcefield '{protocol.forcefield}'; "
        f"drop them with the column remove_residues (e.g. remove_residues: {first}), or, for a modified residue "
        "without a standard parent or a ligand, parameterize it first"
    )


def ion_forcefields(ion: str) -> list[str]:
    """The (forcefield, water model) pairs, explicit solvent, that have parameters for a
    metal ion: asked of the force fields themselves (only when an ion is missing)."""
    from .forcefields import PROTEIN_FILES, WATER_FILES

    found = []
    for forcefield, waters in WATER_FILES.items():
        probe = app.Topology()
        residue = probe.addResidue(ion, probe.addChain())
        probe.addAtom(ion, app.Element.getBySymbol(ion[:2].capitalize()), residue)
        for water, water_file in waters.items():
            try:
                if not app.ForceField(PROTEIN_FILES[forcefield], water_file).getUnmatchedResidues(probe):
                    found.append(f"{forcefield} + {water}")
            except Exception:  # noqa: BLE001 - several templates match (FE/FE2): counts as having parameters
                found.append(f"{forcefield} + {water}")
    return found


def _residue_label(residue) -> str:
    return f"{residue.name} {residue.id} (chain {residue.chain.id})"


def check_box(topology: app.Topology, protocol: Protocol, structure: Path) -> None:
    """PME needs every box width to exceed twice the cutoff; say so before OpenMM does."""
    a, b, c = topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer)
    width = min(a[0], b[1], c[2])
    if width < 2 * protocol.nonbonded_cutoff_nm:
        raise CampaignError(
            f"structure '{structure}': the solvated box is {width:.2f} nm wide, less than twice "
            f"nonbonded_cutoff_nm ({protocol.nonbonded_cutoff_nm}); increase padding_nm "
            f"(now {protocol.padding_nm}) or lower nonbonded_cutoff_nm"
        )


def create_system(forcefield: app.ForceField, topology: app.Topology, protocol: Protocol) -> openmm.System:
    kwargs = dict(
        constraints=app.HBonds,
        rigidWater=True,
        hydrogenMass=1.5 * unit.amu if protocol.hmr else None,
    )
    if protocol.explicit:
        system = forcefield.createSystem(
            topology,
            nonbondedMethod=app.PME,
            nonbondedCutoff=protocol.nonbonded_cutoff_nm * unit.nanometer,
            **kwargs,
        )
        system.addForce(
            openmm.MonteCarloBarostat(
                protocol.pressure_bar * unit.bar, protocol.temperature_K * unit.kelvin, BAROSTAT_INTERVAL_STEPS
            )
        )
    else:
        system = forcefield.createSystem(topology, nonbondedMethod=app.NoCutoff, **kwargs)
    return system


def minimize(system, positions, protocol: Protocol, platform_name: str, threads: int | None):
    context = plumbing.make_context(
        system,
        plumbing.langevin(protocol.temperature_K, protocol.friction_per_ps, protocol.timestep_fs),
        platform_name,
        threads,
    )
    context.setPositions(positions)
    before = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    started = time.time()
    openmm.LocalEnergyMinimizer.minimize(context, MINIMIZATION_TOLERANCE, protocol.minimization_max_iterations)
    state = context.getState(getEnergy=True, getPositions=True)
    after = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    log.info("minimized: %.1f -> %.1f kJ/mol in %.1f s", before, after, time.time() - started)
    return state.getPositions(), {
        "energy_before_kJ_mol": round(before, 2),
        "energy_after_kJ_mol": round(after, 2),
        "max_iterations": protocol.minimization_max_iterations,
        "seconds": round(time.time() - started, 1),
    }


def _restrained_copy(system: openmm.System, topology: app.Topology, positions) -> openmm.System:
    """The system without barostat and with solute heavy atoms held near `positions`."""
    restrained = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    for index in reversed(range(restrained.getNumForces())):
        if isinstance(restrained.getForce(index), openmm.MonteCarloBarostat):
            restrained.removeForce(index)
    expression = (
        "k*periodicdistance(x, y, z, x0, y0, z0)^2"
        if system.usesPeriodicBoundaryConditions()
        else ("k*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
    )
    force = openmm.CustomExternalForce(expression)
    force.addGlobalParameter("k", RESTRAINT_K)
    for name in ("x0", "y0", "z0"):
        force.addPerParticleParameter(name)
    solute = set(solute_atom_indices(topology))
    xyz = positions.value_in_unit(unit.nanometer) if unit.is_quantity(positions) else positions
    for atom in topology.atoms():
        if atom.index in solute and atom.element is not None and atom.element.symbol != "H":
            force.addParticle(atom.index, list(xyz[atom.index]))
    restrained.addForce(force)
    return restrained


def equilibrate(
    system, topology, positions, protocol: Protocol, platform_name: str, threads, seed: int, thermo_csv: Path
):
    """Half the equilibration restrained at constant volume, half free (at constant
    pressure in explicit solvent). Returns the final State and a summary."""
    total = protocol.equilibration_steps
    restrained_steps = (total // 2) // BAROSTAT_INTERVAL_STEPS * BAROSTAT_INTERVAL_STEPS
    free_steps = total - restrained_steps
    report_steps = max(1, protocol.steps(THERMO_EVERY_PS))
    dof = plumbing.degrees_of_freedom(system)
    mass_g = plumbing.total_mass_grams(system)
    rows = []
    started = time.time()

    def run(context, steps, phase, first_step):
        done = 0
        while done < steps:
            chunk = min(report_steps, steps - done)
            try:
                context.getIntegrator().step(chunk)
            except openmm.OpenMMException as error:
                raise _unstable(first_step + done + chunk, phase, str(error).split("\n")[0]) from None
            done += chunk
            state = context.getState(getEnergy=True)
            row = _thermo_row(state, first_step + done, protocol, dof, mass_g, phase)
            if not math.isfinite(row["potential_energy_kJ_mol"]) or not math.isfinite(row["kinetic_energy_kJ_mol"]):
                raise _unstable(first_step + done, phase, "the energy is NaN or infinite")
            rows.append(row)
        return first_step + done

    def _unstable(step, phase, what):
        return SegmentError(
            f"setup: the system became unstable during {phase} equilibration at t = {step * protocol.timestep_ps:g} ps "
            f"({what}); check the structure for clashes and the protocol (timestep_fs {protocol.timestep_fs}, "
            f"temperature_K {protocol.temperature_K}, minimization_max_iterations {protocol.minimization_max_iterations})"
        )

    restrained = _restrained_copy(system, topology, positions)
    context = plumbing.make_context(
        restrained,
        plumbing.langevin(protocol.temperature_K, protocol.friction_per_ps, protocol.timestep_fs, seed),
        platform_name,
        threads,
    )
    context.setPositions(positions)
    context.setVelocitiesToTemperature(protocol.temperature_K * unit.kelvin, seed)
    step = run(context, restrained_steps, "restrained", 0)
    state = context.getState(getPositions=True, getVelocities=True)
    del context

    context = plumbing.make_context(
        system,
        plumbing.langevin(protocol.temperature_K, protocol.friction_per_ps, protocol.timestep_fs, seed + 1),
        platform_name,
        threads,
    )
    context.setPeriodicBoxVectors(*state.getPeriodicBoxVectors())
    context.setPositions(state.getPositions())
    context.setVelocities(state.getVelocities())
    run(context, free_steps, "free", step)
    context.setTime(0.0)
    context.setStepCount(0)
    final = context.getState(getPositions=True, getVelocities=True, enforcePeriodicBox=False)
    _write_rows(thermo_csv, rows)
    free_rows = [r for r in rows if r["phase"] == "free"]
    tail = free_rows[len(free_rows) // 2 :] or rows[-1:]
    summary = {
        "ps": protocol.equilibration_ps,
        "seconds": round(time.time() - started, 1),
        "temperature_mean_K": _mean(r["temperature_K"] for r in tail),
    }
    if protocol.explicit:
        summary["density_mean_g_per_mL"] = _mean(r["density_g_per_mL"] for r in tail)
    log.info("equilibrated %.1f ps: %s", protocol.equilibration_ps, summary)
    return final, summary


def _mean(values):
    values = [v for v in values if v is not None and v != ""]
    return round(sum(values) / len(values), 4) if values else None


def thermo_values(state, dof: int, mass_g: float, explicit: bool) -> dict:
    potential = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
    temperature = 2 * kinetic / (dof * unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin))
    values = {
        "potential_energy_kJ_mol": potential,
        "kinetic_energy_kJ_mol": kinetic,
        "total_energy_kJ_mol": potential + kinetic,
        "temperature_K": temperature,
        "volume_nm3": None,
        "density_g_per_mL": None,
    }
    if explicit:
        a, b, c = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
        volume = float(a[0] * b[1] * c[2])
        values["volume_nm3"] = volume
        values["density_g_per_mL"] = mass_g / (volume * 1e-21)
    return values


def _thermo_row(state, step, protocol: Protocol, dof, mass_g, phase):
    return {
        "step": step,
        "time_ps": step * protocol.timestep_ps,
        "phase": phase,
        **thermo_values(state, dof, mass_g, protocol.explicit),
    }


def _write_rows(path: Path, rows: list[dict]) -> None:
    if not rows:
        Path(path).write_text("")
        return
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
