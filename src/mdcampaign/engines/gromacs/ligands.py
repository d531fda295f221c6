"""A system's ligands (and metal ions) in a GROMACS topology: the same GAFF2 + AM1-BCC
parameters the OpenMM engine uses (mdcampaign.ligands' force-field file), converted by
ParmEd from the OpenMM system of each ligand, so that both engines simulate one force
field.

pdb2gmx builds the protein; each distinct ligand becomes a molecule type of its own
(``ligand_<NAME>.itp``, position restraints on its heavy atoms for the restrained
equilibration), its atom types in ``ligand_atomtypes.itp`` (renamed ``<NAME>_<type>``:
ParmEd names them after atoms, which would collide with amber99sb-ildn's ``H1`` or
``C``), and its copies' coordinates, hydrogens included, are appended to pdb2gmx's
structure in the order of ``[ molecules ]``; metal ions likewise, with the OpenMM
engine's parameters (``metal_ions.itp``)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from ...errors import CampaignError

ATOMTYPES_FILE = "ligand_atomtypes.itp"
RESTRAINT_K = 1000.0  # kJ/mol/nm^2, as pdb2gmx's posre.itp for the protein


def add_ligands(build: Path, topology, positions, names: list[str], forcefield_file: str, structure: Path) -> list:
    """Add the ligand residues ``names`` of the set-up ``topology`` (OpenMM, positions in
    nm) to pdb2gmx's ``topol.top`` and ``protein.gro`` in ``build``. The files written
    (molecule types and atom types), for the topology's list of molecule files."""
    from openmm import unit

    xyz = positions.value_in_unit(unit.nanometer)
    copies = {name: [r for r in topology.residues() if r.name == name] for name in names}
    written, atomtypes = [], []
    for name in names:
        if not copies[name]:
            continue
        text = _molecule_text(copies[name][0], xyz, forcefield_file, name, structure)
        types, molecule = _split(text)
        atomtypes += types
        itp = build / f"ligand_{name}.itp"
        itp.write_text(molecule + _restraints_include(name, build, copies[name][0]))
        written.append(itp)
    _add_atomtypes(build, atomtypes)
    _include(build / "topol.top", written)
    append_residues(build, [residue for name in names for residue in copies[name]], xyz)
    return [build / ATOMTYPES_FILE, *written]


# Metal ions get the OpenMM engine's parameters (amber14's Li/Merz 12-6 set for the
# water model), not amber99sb-ildn.ff/ions.itp's older zinc: with that one the zinc
# finger's Cys2His2 site came apart within 40 ps (benchmarks/physics/bound), with these
# it holds, and both engines simulate the same ion.
METAL_IONS_FILE = "metal_ions.itp"


def metal_ion_source(water_model: str) -> str:
    """OpenMM's amber14 ion set fitted with ``water_model`` (tip3p, spce, tip4pew)."""
    return f"amber14/{water_model}.xml"


def add_metal_ions(build: Path, ions: list, xyz, water_model: str) -> list:
    """Add metal ion residues (OpenMM residues, positions ``xyz`` in nm) as molecule
    types ``<NAME>_ion`` with the parameters OpenMM gives them with ``water_model``.
    The files written."""
    from openmm import app, unit

    first = {}
    for residue in ions:
        first.setdefault(residue.name.upper(), residue)
    names = sorted(first)
    single = app.Topology()
    chain = single.addChain("M")
    for name in names:
        (atom,) = first[name].atoms()
        single.addAtom(atom.name, atom.element, single.addResidue(name, chain))
    system = app.ForceField(metal_ion_source(water_model)).createSystem(single, nonbondedMethod=app.NoCutoff)
    (nonbonded,) = [f for f in system.getForces() if type(f).__name__ == "NonbondedForce"]
    types, molecules = [], []
    for index, name in enumerate(names):
        charge, sigma, epsilon = nonbonded.getParticleParameters(index)
        mass = system.getParticleMass(index).value_in_unit(unit.dalton)
        number = next(first[name].atoms()).element.atomic_number
        types.append(
            f"{name}_ion {number:6d} {mass:10.4f} 0.0000 A {sigma.value_in_unit(unit.nanometer):.8f} "
            f"{epsilon.value_in_unit(unit.kilojoule_per_mole):.8f}\n"
        )
        molecules.append(
            f"[ moleculetype ]\n{name}_ion 1\n\n[ atoms ]\n"
            f"1 {name}_ion 1 {name} {name} 1 {charge.value_in_unit(unit.elementary_charge):.4f} {mass:.4f}\n\n"
        )
    _add_atomtypes(build, types)
    itp = build / METAL_IONS_FILE
    source = metal_ion_source(water_model)
    itp.write_text(f"; metal ions with the OpenMM engine's parameters ({source})\n" + "".join(molecules))
    _include(build / "topol.top", [itp])
    append_residues(build, ions, xyz, {name: f"{name}_ion" for name in names})
    return [build / ATOMTYPES_FILE, itp]


def metal_ions_with_parameters(water_model: str) -> set[str]:
    """The metal ion residues the ion set of ``water_model`` has parameters for."""
    from openmm import app

    return {name.upper() for name in app.ForceField(metal_ion_source(water_model))._templates}


def _add_atomtypes(build: Path, lines: list[str]) -> None:
    """Atom types in ATOMTYPES_FILE, included right after the force field's own (once)."""
    path = build / ATOMTYPES_FILE
    if path.exists():
        path.write_text(path.read_text() + "".join(lines))
        return
    path.write_text("[ atomtypes ]\n" + "".join(lines))
    top = build / "topol.top"
    lines_of_top = top.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines_of_top) if line.startswith("#include") and "forcefield.itp" in line)
    lines_of_top.insert(at + 1, f'\n#include "{ATOMTYPES_FILE}"\n')
    top.write_text("".join(lines_of_top))


def _molecule_text(residue, xyz, forcefield_file: str, name: str, structure: Path) -> str:
    """One copy of a ligand as a standalone GROMACS topology (ParmEd), from its OpenMM
    system: the parameters OpenMM simulates, term by term."""
    import parmed
    from openmm import app, unit

    single = app.Topology()
    chain = single.addChain("L")
    copy = single.addResidue(name, chain)
    mapped = {atom: single.addAtom(atom.name, atom.element, copy) for atom in residue.atoms()}
    for first, second in residue.internal_bonds():
        single.addBond(mapped[first], mapped[second])
    try:
        system = app.ForceField(forcefield_file).createSystem(
            single, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False, removeCMMotion=False
        )
    except ValueError as error:
        raise CampaignError(
            f"structure '{structure}': ligand {name}: its parameters do not match its atoms for GROMACS "
            f"({str(error).splitlines()[0]})"
        ) from None
    positions = [xyz[atom.index] for atom in residue.atoms()] * unit.nanometer
    molecule = parmed.openmm.load_topology(single, system, xyz=positions)
    for atom_type in {id(a.atom_type): a.atom_type for a in molecule.atoms}.values():
        atom_type.name = f"{name}_{atom_type.name}"
    for atom in molecule.atoms:
        atom.type = atom.atom_type.name
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / f"{name}.top"
        parmed.gromacs.GromacsTopologyFile.from_structure(molecule).write(str(out))
        return out.read_text()


def _split(text: str) -> tuple[list[str], str]:
    """A standalone topology's atom types (lines) and its molecule type (text up to
    ``[ system ]``); its ``[ defaults ]`` are amber99sb-ildn's own (comb-rule 2, LJ 1-4
    pairs given explicitly by ParmEd, fudgeQQ 0.8333)."""
    sections = re.split(r"^(?=\[ )", text, flags=re.MULTILINE)
    types = [
        line + "\n"
        for section in sections
        if section.startswith("[ atomtypes ]")
        for line in section.splitlines()[1:]
        if line.strip() and not line.startswith(";")
    ]
    start = next(i for i, section in enumerate(sections) if section.startswith("[ moleculetype ]"))
    end = next(i for i, section in enumerate(sections) if section.startswith("[ system ]"))
    return types, "".join(sections[start:end])


def _restraints_include(name: str, build: Path, residue) -> str:
    """Position restraints on the ligand's heavy atoms, for ``define = -DPOSRES``."""
    heavy = [i for i, atom in enumerate(residue.atoms(), 1) if atom.element is not None and atom.element.symbol != "H"]
    posre = build / f"posre_{name}.itp"
    posre.write_text(
        "[ position_restraints ]\n"
        + "".join(f"{i:6d}     1 {RESTRAINT_K:g} {RESTRAINT_K:g} {RESTRAINT_K:g}\n" for i in heavy)
    )
    return f'\n#ifdef POSRES\n#include "{posre.name}"\n#endif\n\n'


def _include(top: Path, itps: list[Path]) -> None:
    """Each molecule type before the water's."""
    lines = top.read_text().splitlines(keepends=True)
    water = next(
        (i for i, line in enumerate(lines) if line.startswith("; Include water topology")),
        next(i for i, line in enumerate(lines) if line.strip().startswith("[ system ]")),
    )
    lines[water:water] = [f'#include "{itp.name}"\n' for itp in itps] + ["\n"]
    top.write_text("".join(lines))


def append_residues(build: Path, residues: list, xyz, molecule_names: dict | None = None) -> None:
    """Molecules that are one residue each (ligand copies, metal ions: OpenMM residues,
    positions ``xyz`` in nm) after pdb2gmx's chains: their coordinates in
    ``protein.gro`` (numbers wrap at 100000, as GROMACS writes them; the box line stays
    last) and their counts at the end of ``topol.top``'s ``[ molecules ]``, in order."""
    gro = build / "protein.gro"
    lines = gro.read_text().splitlines()
    count = int(lines[1])
    body, box = lines[2 : 2 + count], lines[2 + count]
    number = int(body[-1][:5]) if body else 0
    for residue in residues:
        number += 1
        for atom in residue.atoms():
            x, y, z = xyz[atom.index]
            body.append(
                f"{number % 100000:5d}{residue.name:<5.5}{atom.name:>5.5}{(len(body) + 1) % 100000:5d}"
                f"{x:8.3f}{y:8.3f}{z:8.3f}"
            )
    gro.write_text("\n".join([lines[0], f"{len(body):5d}", *body, box]) + "\n")
    molecules: list[list] = []
    for residue in residues:
        molecule = (molecule_names or {}).get(residue.name.upper(), residue.name)
        if molecules and molecules[-1][0] == molecule:
            molecules[-1][1] += 1
        else:
            molecules.append([molecule, 1])
    top = build / "topol.top"
    text = top.read_text().rstrip("\n") + "\n" + "".join(f"{name:<20}{n}\n" for name, n in molecules)
    top.write_text(text)
