"""GROMACS setup: a structure (repaired as for OpenMM, repair.py) -> ``system.tpr`` (the
production input), ``start.cpt`` (the equilibrated state at step 0 and time 0),
``topology.pdb`` and ``trajectory_topology.pdb``: pdb2gmx, box, water, ions,
minimization, restrained NVT and free NPT equilibration."""

from __future__ import annotations

import csv
import logging
import math
import platform as host_platform
import re
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import CampaignError
from ...files import sha256_file
from ...protocol import Protocol
from ...structures import SALT_ION_RESIDUES, WATER_RESIDUES
from .energies import EDR_TERMS, gmx_energy, read_edr
from .forcefields import FORCEFIELDS, WATER_MODELS, problems
from .gmx import GromacsError, available, checkpoint_header, run_gmx, thread_options, write_index
from .inputs import grompp_production
from .mdp import barostat_settings, common_md_settings, mdp_text, nstcalcenergy, production_mdp

log = logging.getLogger(__name__)


# Protocol value -> GROMACS name. GROMACS 2022 ships amber99sb-ildn (not amber14 or
# charmm36) and, with it, these of the schema's water models (not tip3pfb or opc).
# The pre-equilibrated water box solvate fills the box with, per water model.
WATER_BOXES = {"tip3p": "spc216.gro", "spce": "spc216.gro", "tip4pew": "tip4p.gro"}


BOX_TYPES = {"cube": "cubic", "dodecahedron": "dodecahedron", "octahedron": "octahedron"}


# pdb2gmx assigns the standard protonation states (pH ~7): Asp/Glu charged,
# Lys/Arg charged, His neutral (tautomer from hydrogen bonds), Cys and Tyr neutral.
# PDBFixer gives the same states for pH between the pKa of His (6.04) and Cys (8.18).
HYDROGEN_MASS = 1.5  # amu, as the OpenMM setup's hydrogenMass


RESTRAINT_K = 1000.0  # kJ/mol/nm^2, pdb2gmx's posre.itp default and the OpenMM setup's


EQUILIBRATION_ENERGY_PS = 1.0


def check_protocol(protocol: Protocol) -> list[str]:
    """What the GROMACS engine cannot do with this protocol, one line each (empty: fine)."""
    return list(protocol.problems()) + list(problems(protocol))


@dataclass
class _Build:
    """One system's setup: its inputs, its folders and what setup.json records."""

    structure: Path
    protocol: Protocol
    out: Path  # the setup folder
    build: Path  # every intermediate file, and gromacs.log
    seed: int
    threads: int | None
    ligands: tuple = ()  # LigandSpec of each distinct ligand
    info: dict = field(default_factory=dict)

    @property
    def gmx_log(self) -> Path:
        return self.build / "gromacs.log"

    def gmx(self, tool, options, *, subject=None, stdin=None, error=GromacsError, nt=None):
        return run_gmx(
            tool, options, cwd=self.build, subject=subject, stdin=stdin, error=error, threads=nt, log_file=self.gmx_log
        )

    def grompp(
        self,
        stage: str,
        settings: dict,
        coordinates: Path,
        maxwarn: int = 0,
        restraints: Path | None = None,
        checkpoint: Path | None = None,
    ) -> Path:
        """Write ``<stage>.mdp`` and make ``<stage>.tpr`` from it in the build folder;
        grompp's error is one line naming the structure. The tpr."""
        (self.build / f"{stage}.mdp").write_text(mdp_text(settings))
        options = [
            ("-f", self.build / f"{stage}.mdp"),
            ("-c", coordinates),
            *([("-r", restraints)] if restraints else []),
            *([("-t", checkpoint)] if checkpoint else []),
            ("-p", self.build / "topol.top"),
            ("-o", self.build / f"{stage}.tpr"),
            ("-po", self.build / f"{stage}.out.mdp"),
            ("-maxwarn", maxwarn),
        ]
        self.gmx("grompp", options, subject=self.structure, error=CampaignError)
        return self.build / f"{stage}.tpr"

    def mdrun(self, stage: str) -> None:
        """Run ``<stage>.tpr``, its outputs named ``<stage>.*`` in the build folder."""
        self.gmx(
            "mdrun",
            [("-s", self.build / f"{stage}.tpr"), ("-deffnm", stage), *thread_options(self.threads)],
            nt=self.threads,
        )

    def done(self, what: str) -> None:
        """Say what setup did, in setup.json's steps."""
        self.info.setdefault("steps", []).append(what)


def prepare(
    structure: Path,
    protocol: Protocol,
    out_dir: Path,
    threads: int | None = None,
    seed: int | None = None,
    ligands: tuple = (),
) -> dict:
    """Set up a system with GROMACS; returns what setup.json records.

    Writes to ``out_dir``: ``system.tpr``, ``start.cpt``, ``topology.pdb``,
    ``trajectory_topology.pdb``, ``system.top`` (+ its ``.itp`` files),
    ``production.mdp``, ``index.ndx``, ``equilibration.csv``, ``fixed.pdb`` and, in
    ``out_dir/build``, every intermediate file and ``gromacs.log`` (all gmx output)."""
    problems = check_protocol(protocol)
    if problems:
        raise CampaignError("; ".join(problems))
    started = time.time()
    out = Path(out_dir).absolute()
    b = _Build(
        Path(structure).absolute(),
        protocol,
        out,
        out / "build",
        protocol.seed if seed is None else seed,
        threads,
        tuple(ligands),
    )
    b.build.mkdir(parents=True, exist_ok=True)
    b.gmx_log.write_text("")
    b.info.update(
        {
            "engine": "gromacs",
            "gmx_version": available(),
            "structure": str(b.structure),
            "structure_sha256": sha256_file(b.structure),
            "forcefield": FORCEFIELDS[protocol.forcefield],
            "water_model": WATER_MODELS[protocol.water_model],
        }
    )
    molecule_files = _topology(b)
    _solvate(b)
    _minimize(b)
    _equilibrate(b)
    atoms, solute, subset = _production_input(b, molecule_files)
    _analysis_topologies(b, subset)
    return _finish(b, atoms, solute, subset, started)


def _topology(b: _Build) -> list[Path]:
    """Structure repair (pdbfixer: water and salt removed, missing heavy atoms added) and
    the GROMACS names of caps; pdb2gmx then adds hydrogens itself (-ignh); hydrogen mass
    repartitioning. The topology's molecule files."""
    from ...repair import repair  # the same structure repair as the OpenMM setup

    fixer, fix_info = repair(b.structure, b.protocol, b.ligands, seed=b.seed)
    metals = fix_info.get("metal_ions", {})
    if metals:
        from .ligands import metal_ion_source, metal_ions_with_parameters

        lacking = sorted(set(metals) - metal_ions_with_parameters(b.protocol.water_model))
        if lacking:
            raise CampaignError(
                f"structure '{b.structure}': the GROMACS engine takes metal ions with the OpenMM engine's "
                f"parameters ({metal_ion_source(b.protocol.water_model)}), which has none for "
                f"{', '.join(lacking)}; drop them with remove_residues: {lacking[0]}"
            )
    b.info["fix"] = fix_info
    # the metal-binding Cys/His states setup chose must reach pdb2gmx too
    states = pdb2gmx_states(fixer.topology, b.structure) if b.protocol.protonation or metals else {}
    ligand_names = [spec.residue for spec in b.ligands]
    leave_out = [*ligand_names, *(r.name for r in fixer.topology.residues() if r.name.upper() in metals)]
    _write_gromacs_pdb(fixer.topology, fixer.positions, b.out / "fixed.pdb", states, leave_out=leave_out)
    b.done("pdbfixer: water and ions removed, missing heavy atoms added, caps renamed for GROMACS")
    if states:
        b.done(
            f"protonation states as setup chose them (pH {b.protocol.ph:g}"
            + (f", protonation {b.protocol.protonation}" if b.protocol.protonation else "")
            + (", metal sites" if metals else "")
            + "), given to pdb2gmx as residue names: "
            + ", ".join(f"{n} x{c}" for n, c in sorted(Counter(states.values()).items())),
        )

    b.gmx(
        "pdb2gmx",
        [
            ("-f", b.out / "fixed.pdb"),
            ("-o", b.build / "protein.gro"),
            ("-p", b.build / "topol.top"),
            ("-i", b.build / "posre.itp"),
            ("-ff", FORCEFIELDS[b.protocol.forcefield]),
            ("-water", WATER_MODELS[b.protocol.water_model]),
            ("-ignh", True),
        ],
        subject=b.structure,
        error=CampaignError,
    )
    b.done(f"pdb2gmx -ff {FORCEFIELDS[b.protocol.forcefield]} -water {b.protocol.water_model} -ignh")
    molecule_files = [b.build / "topol.top"] + sorted(b.build.glob("topol_*.itp"))
    if b.ligands:
        from .ligands import add_ligands

        molecule_files += add_ligands(
            b.build, fixer.topology, fixer.positions, ligand_names, fix_info["ligand_forcefield_file"], b.structure
        )
        b.done(
            "ligands "
            + ", ".join(f"{r['residue']} x{r['copies']}" for r in fix_info["ligands"])
            + ": GAFF2 + AM1-BCC, the OpenMM engine's parameters converted by ParmEd (ligand_*.itp)"
        )
    if metals:
        from openmm import unit

        from .ligands import add_metal_ions, metal_ion_source

        ions = [residue for residue in fixer.topology.residues() if residue.name.upper() in metals]
        water = b.protocol.water_model
        molecule_files += add_metal_ions(b.build, ions, fixer.positions.value_in_unit(unit.nanometer), water)
        b.done(
            "metal ions "
            + ", ".join(f"{name} x{count}" for name, count in sorted(metals.items()))
            + f" kept, non-bonded, with the OpenMM engine's parameters ({metal_ion_source(water)}: Li/Merz 12-6), "
            "their Cys/His states given to pdb2gmx"
        )
    if b.protocol.hmr:
        moved = sum(_repartition_hydrogen_masses(path, HYDROGEN_MASS) for path in molecule_files)
        b.info["hmr"] = {"hydrogen_mass_amu": HYDROGEN_MASS, "hydrogens": moved}
        b.done(
            f"hydrogen mass repartitioning: {moved} solute hydrogens set to {HYDROGEN_MASS} amu "
            "in the topology's [ atoms ] masses, taken from the bonded heavy atom (water untouched)",
        )
    return list(dict.fromkeys(molecule_files))  # ligands and ions share the atom types file


def _solvate(b: _Build) -> None:
    """Box, water, ions. The box is OpenMM's (Modeller.addSolvent): image distance =
    bounding-sphere diameter + padding, at least 2 * padding; GROMACS's box shapes have
    the same vectors as OpenMM's for the same image distance."""
    width = _box_width(b.build / "protein.gro", b.protocol.padding_nm)
    b.gmx(
        "editconf",
        [
            ("-f", b.build / "protein.gro"),
            ("-o", b.build / "box.gro"),
            ("-c", True),
            ("-bt", BOX_TYPES[b.protocol.box_shape]),
            ("-box", round(width, 4)),
        ],
    )
    b.gmx(
        "solvate",
        [
            ("-cp", b.build / "box.gro"),
            ("-cs", WATER_BOXES[b.protocol.water_model]),
            ("-p", b.build / "topol.top"),
            ("-o", b.build / "solvated.gro"),
        ],
    )
    ions = {
        "integrator": "steep",
        "nsteps": 0,
        "cutoff-scheme": "Verlet",
        "coulombtype": "PME",
        "rcoulomb": b.protocol.nonbonded_cutoff_nm,
        "rvdw": b.protocol.nonbonded_cutoff_nm,
    }
    # the one warning allowed: net charge (genion is about to neutralize it)
    b.grompp("ions", ions, b.build / "solvated.gro", maxwarn=1)
    genion = [
        ("-s", b.build / "ions.tpr"),
        ("-o", b.build / "ions.gro"),
        ("-p", b.build / "topol.top"),
        ("-pname", "NA"),
        ("-nname", "CL"),
        ("-neutral", True),
    ]
    if b.protocol.ionic_strength_molar > 0:
        genion.append(("-conc", float(b.protocol.ionic_strength_molar)))
    b.gmx("genion", genion + [("-seed", b.seed % 2147483646 + 1)], stdin="SOL\n")  # 0 would mean random
    b.done(
        f"editconf -bt {BOX_TYPES[b.protocol.box_shape]} -box {width:.3f} (padding {b.protocol.padding_nm} nm "
        f"as in OpenMM: bounding-sphere diameter + padding); solvate "
        f"({WATER_BOXES[b.protocol.water_model]}); genion -neutral -conc {b.protocol.ionic_strength_molar}",
    )
    _check_box(b.build / "ions.gro", b.protocol, b.structure)


def _minimize(b: _Build) -> None:
    """Steepest descent; 0 iterations means until converged, as in OpenMM."""
    em = {
        "integrator": "steep",
        "emtol": 10.0,
        "emstep": 0.01,
        "nsteps": b.protocol.minimization_max_iterations or -1,
        **{
            k: v
            for k, v in common_md_settings(b.protocol, b.seed).items()
            if k
            not in ("integrator", "dt", "tc-grps", "tau-t", "ref-t", "ld-seed", "constraints", "constraint-algorithm")
        },
        "nstenergy": 1,
    }
    b.grompp("em", em, b.build / "ions.gro")
    t0 = time.time()
    b.mdrun("em")
    em_energy = read_edr(b.build / "em.edr")
    potential = em_energy.get("Potential", [])
    b.info["minimization"] = {
        "energy_before_kJ_mol": round(float(potential[0]), 2) if len(potential) else None,
        "energy_after_kJ_mol": round(float(potential[-1]), 2) if len(potential) else None,
        "max_iterations": b.protocol.minimization_max_iterations,
        "seconds": round(time.time() - t0, 1),
    }
    limit = b.protocol.minimization_max_iterations or "unlimited"
    b.done(f"energy minimization: steepest descent, at most {limit} steps")


def _equilibrate(b: _Build) -> None:
    """Half restrained NVT (posre.itp, -DPOSRES), half free NPT. The free part runs from
    step -N to step 0 (init-step = -N) so that its final checkpoint is at step 0, time
    0: the production's start."""
    total = b.protocol.equilibration_steps
    restrained = total // 2
    free = total - restrained
    energy_steps = max(1, b.protocol.steps(EQUILIBRATION_ENERGY_PS))
    t0 = time.time()
    md = common_md_settings(b.protocol, b.seed)
    start_gro, start_cpt = b.build / "em.gro", None
    if restrained > 0:
        # t = tinit + dt * step: negative steps give negative times.
        nvt = {
            **md,
            "define": "-DPOSRES",
            "nsteps": restrained,
            "tinit": 0.0,
            "init-step": -total,
            "continuation": False,
            "gen-vel": True,
            "gen-temp": b.protocol.temperature_K,
            "gen-seed": b.seed,
            "pcoupl": "no",
            "refcoord-scaling": "no",
            "nstcalcenergy": nstcalcenergy(energy_steps),
            "nstenergy": energy_steps,
            "nstlog": energy_steps,
        }
        b.grompp("nvt", nvt, b.build / "em.gro", restraints=b.build / "em.gro")
        b.mdrun("nvt")
        start_gro, start_cpt = b.build / "nvt.gro", b.build / "nvt.cpt"
    npt = {
        **md,
        "nsteps": free,
        "tinit": 0.0,
        "init-step": -free,
        **barostat_settings(b.protocol),
        "nstcalcenergy": nstcalcenergy(energy_steps),
        "nstenergy": energy_steps,
        "nstlog": energy_steps,
    }
    if start_cpt is None:
        npt.update({"continuation": False, "gen-vel": True, "gen-temp": b.protocol.temperature_K, "gen-seed": b.seed})
    else:
        npt.update({"continuation": True, "gen-vel": False})
    b.grompp("npt", npt, start_gro, checkpoint=start_cpt)
    b.mdrun("npt")
    header = checkpoint_header(b.build / "npt.cpt")
    if header is None or header["step"] != 0:
        raise GromacsError(
            f"setup: the equilibration checkpoint {b.build / 'npt.cpt'} is not at step 0 "
            f"({header and header['step']}); see {b.gmx_log}"
        )
    b.done(
        f"equilibration: {restrained * b.protocol.timestep_ps:g} ps restrained NVT "
        f"(-DPOSRES, k = {RESTRAINT_K:g} kJ/mol/nm2 on heavy atoms), {free * b.protocol.timestep_ps:g} ps "
        f"free NPT (C-rescale), sd integrator at {b.protocol.temperature_K} K",
    )
    b.info["equilibration"] = _equilibration_summary(b.build, b.protocol, b.out / "equilibration.csv", time.time() - t0)


def _production_input(b: _Build, molecule_files: list[Path]) -> tuple[list, list[int], bool]:
    """Index groups, the mdp and the tpr (state from npt.cpt, exact). The atoms, the
    solute's indices, and whether the trajectory holds the solute only."""
    atoms = _read_gro_atoms(b.build / "npt.gro")
    solute = [
        i
        for i, (residue, _) in enumerate(atoms)
        if residue.upper() not in WATER_RESIDUES and residue.upper() not in SALT_ION_RESIDUES
    ]
    subset = b.protocol.trajectory_atoms == "solute" and len(solute) < len(atoms)
    write_index(b.out / "index.ndx", {"System": range(len(atoms)), "Solute": solute})
    for path in molecule_files + [b.build / "posre.itp"] + sorted(b.build.glob("posre_*.itp")):
        if path.exists():
            shutil.copy2(path, b.out / ("system.top" if path.name == "topol.top" else path.name))
    (b.out / "production.mdp").write_text(production_mdp(b.protocol, b.seed, "Solute" if subset else "System"))
    shutil.copy2(b.build / "npt.gro", b.out / "start.gro")
    shutil.copy2(b.build / "npt.cpt", b.out / "start.cpt")
    grompp_production(b.out, b.out / "system.tpr", b.seed, b.gmx_log, b.structure)
    b.done("production input: system.tpr (grompp -t start.cpt) and start.cpt (step 0, time 0)")
    return atoms, solute, subset


def _analysis_topologies(b: _Build, subset: bool) -> None:
    """Topologies for analysis: all atoms, and the atoms written to the trajectory."""
    for name, group in (("topology.pdb", "System"), ("trajectory_topology.pdb", "Solute" if subset else "System")):
        options = [("-s", b.out / "system.tpr"), ("-f", b.out / "start.gro"), ("-o", b.out / name)]
        b.gmx("trjconv", [*options, ("-n", b.out / "index.ndx")], stdin=f"{group}\n")


def _finish(b: _Build, atoms: list, solute: list[int], subset: bool, started: float) -> dict:
    b.info["atoms"] = len(atoms)
    b.info["solute_atoms"] = len(solute)
    b.info["waters"] = sum(1 for r, n in atoms if r.upper() in WATER_RESIDUES and n == "OW")
    b.info["ions"] = {name: sum(1 for r, _ in atoms if r.upper() == name) for name in ("NA", "CL")}
    b.info["trajectory_atoms"] = len(solute) if subset else len(atoms)
    b.info["ld_seed"] = b.seed
    b.info["host"] = host_platform.node()
    b.info["wall_seconds"] = round(time.time() - started, 1)
    log.info(
        "GROMACS setup: %d atoms (%d solute), %d waters, in %.0f s",
        b.info["atoms"],
        b.info["solute_atoms"],
        b.info["waters"],
        b.info["wall_seconds"],
    )
    return b.info


TITRATABLE = ("ASP", "GLU", "HIS", "LYS", "CYS")
# amber99sb-ildn.ff has chain-terminal building blocks of these states for His only
NO_TERMINAL_FORM = {"ASH", "GLH", "LYN", "CYM"}


def pdb2gmx_states(topology, structure: Path) -> dict:
    """Every titratable residue's state, as the residue name pdb2gmx is to read (ASH,
    GLH, HID, HIE, HIP, LYN, CYM or the standard name), from the hydrogens setup gave
    it: the states setup chose (pdbfixer at the pH, PROPKA, the protonation column), so
    that both engines simulate the same states. A state amber99sb-ildn.ff has no
    chain-terminal form of is refused in one line."""
    disulfide = {
        atom.residue
        for bond in topology.bonds()
        if bond[0].name == bond[1].name == "SG" and bond[0].residue is not bond[1].residue
        for atom in bond
    }
    states = {}
    for chain in topology.chains():
        amino = [residue for residue in chain.residues() if any(atom.name == "CA" for atom in residue.atoms())]
        ends = {amino[0], amino[-1]} if amino else set()
        for residue in (r for r in chain.residues() if r.name in TITRATABLE):
            hydrogens = {a.name for a in residue.atoms() if a.element is not None and a.element.symbol == "H"}
            state = _state(residue, hydrogens, residue in disulfide)
            if state in NO_TERMINAL_FORM and residue in ends:
                raise CampaignError(
                    f"structure '{structure}': protonation: {residue.name} {residue.id} (chain {chain.id}) in "
                    f"state {state} ends its chain, and GROMACS's amber99sb-ildn.ff has no chain-terminal form of "
                    "that state; use engine openmm for this system, or give it its standard state in protonation"
                )
            states[residue] = state
    return states


def _state(residue, hydrogens: set[str], in_disulfide: bool) -> str:
    if residue.name == "ASP":
        return "ASH" if "HD2" in hydrogens else "ASP"
    if residue.name == "GLU":
        return "GLH" if "HE2" in hydrogens else "GLU"
    if residue.name == "HIS":
        return {(True, True): "HIP", (True, False): "HID"}.get(("HD1" in hydrogens, "HE2" in hydrogens), "HIE")
    if residue.name == "LYS":
        return "LYN" if len({"HZ1", "HZ2", "HZ3"} & hydrogens) == 2 else "LYS"
    return "CYM" if "HG" not in hydrogens and not in_disulfide else "CYS"


def _write_gromacs_pdb(topology, positions, path: Path, states: dict | None = None, leave_out=()) -> None:
    """The structure as pdb2gmx reads it: heavy atoms only (pdb2gmx adds hydrogens),
    with the amber99sb-ildn.ff names of caps (NME's methyl carbon is CH3, the C-terminal
    amide cap is NHE) and, where given, of protonation states (``states``: residue ->
    name, see pdb2gmx_states); without the residues named in ``leave_out`` (ligands:
    not pdb2gmx's to build)."""
    from openmm import app

    renamed = {(r.chain.id, r.id, r.name): name for r, name in (states or {}).items()}
    modeller = app.Modeller(topology, positions)
    modeller.delete([residue for residue in modeller.topology.residues() if residue.name in leave_out])
    modeller.delete(
        [atom for atom in modeller.topology.atoms() if atom.element is not None and atom.element.symbol in ("H", "D")]
    )
    for residue in modeller.topology.residues():
        residue.name = renamed.get((residue.chain.id, residue.id, residue.name), residue.name)
        if residue.name == "NME":
            for atom in residue.atoms():
                if atom.name == "C":
                    atom.name = "CH3"
        elif residue.name == "NH2":
            residue.name = "NHE"
    with open(path, "w") as handle:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, handle, keepIds=True)


def _repartition_hydrogen_masses(path: Path, hydrogen_mass: float) -> int:
    """Hydrogen mass repartitioning in a GROMACS topology, as OpenMM's ``hydrogenMass``:
    every hydrogen bonded to a heavy atom gets ``hydrogen_mass`` and its heavy atom
    loses the difference. Per-atom masses in ``[ atoms ]`` are part of the topology
    format; molecules included from the force field (water, ions) are not touched."""
    lines = path.read_text().splitlines(keepends=True)
    section = None
    molecules: list[dict] = []
    for number, line in enumerate(lines):
        body = line.split(";", 1)[0].strip()
        header = re.match(r"^\[\s*(\w+)\s*\]$", body)
        if header:
            section = header.group(1).lower()
            if section == "moleculetype":
                molecules.append({"atoms": {}, "bonds": []})
            continue
        if not body or body.startswith("#") or not molecules:
            continue
        fields = body.split()
        if section == "atoms" and len(fields) >= 8:
            molecules[-1]["atoms"][int(fields[0])] = (number, float(fields[7]))
        elif section == "bonds" and len(fields) >= 2:
            molecules[-1]["bonds"].append((int(fields[0]), int(fields[1])))
    moved = 0
    for molecule in molecules:
        masses = {nr: mass for nr, (_, mass) in molecule["atoms"].items()}
        for a, b in molecule["bonds"]:
            if a not in masses or b not in masses:
                continue
            if masses[a] < 1.2 <= masses[b]:
                a, b = b, a
            if masses[b] < 1.2 <= masses[a]:
                transfer = hydrogen_mass - masses[b]
                masses[b] = hydrogen_mass
                masses[a] -= transfer
                moved += 1
        for nr, (number, original) in molecule["atoms"].items():
            if abs(masses[nr] - original) > 1e-9:
                lines[number] = _set_mass(lines[number], masses[nr])
    path.write_text("".join(lines))
    return moved


def _set_mass(line: str, mass: float) -> str:
    body, _, comment = line.rstrip("\n").partition(";")
    fields = body.split()
    fields[7] = f"{mass:.5f}"
    text = " ".join(f"{field:>10}" for field in fields)
    return text + (f"   ;{comment}" if comment else "") + "\n"


def _check_box(gro: Path, protocol: Protocol, structure: Path) -> None:
    """GROMACS needs the cutoff below half the shortest box vector and below the
    smallest diagonal element of the box; say so, with the fix, before grompp does."""
    numbers = [float(x) for x in gro.read_text().splitlines()[-1].split()]
    numbers += [0.0] * (9 - len(numbers))
    v1 = (numbers[0], numbers[3], numbers[4])
    v2 = (numbers[5], numbers[1], numbers[6])
    v3 = (numbers[7], numbers[8], numbers[2])
    shortest = min(math.sqrt(sum(x * x for x in v)) for v in (v1, v2, v3))
    limit = min(shortest / 2.0, numbers[0], numbers[1], numbers[2])
    if protocol.nonbonded_cutoff_nm >= limit:
        raise CampaignError(
            f"structure '{structure}': the solvated {protocol.box_shape} box allows a cutoff below {limit:.2f} nm "
            f"only, not nonbonded_cutoff_nm {protocol.nonbonded_cutoff_nm}; increase padding_nm "
            f"(now {protocol.padding_nm}) or lower nonbonded_cutoff_nm"
        )


def _box_width(gro: Path, padding: float) -> float:
    """OpenMM's box width for a padding: bounding-sphere diameter (around the centre of
    the coordinates' range) + padding, at least 2 * padding."""
    lines = gro.read_text().splitlines()
    count = int(lines[1].strip())
    xyz = [(float(line[20:28]), float(line[28:36]), float(line[36:44])) for line in lines[2 : 2 + count]]
    if not xyz:
        return 2 * padding
    center = [0.5 * (min(p[i] for p in xyz) + max(p[i] for p in xyz)) for i in range(3)]
    radius = max(math.dist(center, p) for p in xyz)
    return max(2 * radius + padding, 2 * padding)


def _read_gro_atoms(gro: Path) -> list[tuple[str, str]]:
    lines = gro.read_text().splitlines()
    count = int(lines[1].strip())
    return [(line[5:10].strip(), line[10:15].strip()) for line in lines[2 : 2 + count]]


def _equilibration_summary(build: Path, protocol: Protocol, csv_path: Path, seconds: float) -> dict:
    rows = []
    for phase in ("nvt", "npt"):
        path = build / f"{phase}.edr"
        if not path.exists():
            continue
        terms = [term for term, _ in EDR_TERMS.values() if phase == "npt" or term not in ("Volume", "Density")]
        data = gmx_energy(path, terms, build / "gromacs.log")
        for index, time_ps in enumerate(data["Time"]):
            row = {
                "step": round(time_ps / protocol.timestep_ps),
                "time_ps": round(float(time_ps), 6),
                "phase": "restrained" if phase == "nvt" else "free",
            }
            for column, (term, factor) in EDR_TERMS.items():
                row[column] = float(data[term][index]) * factor if term in data else None
            rows.append(row)
    with open(csv_path, "w", newline="") as handle:
        if rows:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in rows:
                writer.writerow(
                    {k: (f"{v:.6g}" if isinstance(v, float) else ("" if v is None else v)) for k, v in row.items()}
                )
    free = [r for r in rows if r["phase"] == "free"]
    tail = free[len(free) // 2 :] or rows[-1:]

    def mean(key):
        values = [r[key] for r in tail if r[key] is not None]
        return round(sum(values) / len(values), 4) if values else None

    return {
        "ps": protocol.equilibration_ps,
        "seconds": round(seconds, 1),
        "temperature_mean_K": mean("temperature_K"),
        "density_mean_g_per_mL": mean("density_g_per_mL"),
    }
