"""What setup does to a structure before either engine sees it, and records.

In order: read it (PDB, mmCIF or GRO, each also gzipped; a PDB that OpenMM's reader
rejects is read again through mdtraj, or fails naming the line); choose the model
(``model``), the alternate locations (highest occupancy, per residue) and the chains
(``chains``); remove water (unless ``keep_crystal_water``), monovalent salt,
crystallization additives (structures.ADDITIVE_RESIDUES) and the residues named in
``remove_residues``; keep metal ions; apply ``mutations``; replace modified residues
by their standard parent (pdbfixer's table: MSE -> MET, CSO -> CYS, ...); add
missing heavy atoms and hydrogens at the protocol's pH, with metal-bound cysteines
deprotonated and metal-bound histidines protonated on their other nitrogen. What was
decided is returned for setup.json and logged.

Nothing here downloads anything: pdbfixer would fetch definitions of unknown residues
from the PDB, which a compute node cannot reach; an unknown residue is instead
reported by the engine's template check, naming the column that removes it.
"""

from __future__ import annotations

import logging
import os
import random
import re
import tempfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import openmm
from openmm import app, unit

from . import layout
from .errors import CampaignError
from .ligand_spec import LigandSpec
from .protocol import Protocol
from .protonation import choose as choose_protonation
from .structures import (
    ADDITIVE_RESIDUES,
    METAL_ION_RESIDUES,
    MMCIF_SUFFIXES,
    SALT_ION_RESIDUES,
    WATER_RESIDUES,
    content_format,
    inspect_structure,
    read_structure_bytes,
    structure_suffix,
)

log = logging.getLogger(__name__)

# Atoms closer than this are duplicates or on top of each other (minimization turns them
# into NaN). Far below any real interatomic distance (H-H contacts are > 0.1 nm).
OVERLAP_NM = 0.01
# A cysteine SG or histidine ND1/NE2 this close to a metal ion coordinates it (Zn-S is
# about 0.23 nm, Zn-N about 0.21 nm in crystal structures).
COORDINATION_NM = {"SG": 0.30, "ND1": 0.26, "NE2": 0.26}
# Up to this far past those cutoffs an atom is a near miss: said, not decided on.
NEAR_MISS_NM = 0.05
ONE_LETTER = {
    "A": "ALA",
    "C": "CYS",
    "D": "ASP",
    "E": "GLU",
    "F": "PHE",
    "G": "GLY",
    "H": "HIS",
    "I": "ILE",
    "K": "LYS",
    "L": "LEU",
    "M": "MET",
    "N": "ASN",
    "P": "PRO",
    "Q": "GLN",
    "R": "ARG",
    "S": "SER",
    "T": "THR",
    "V": "VAL",
    "W": "TRP",
    "Y": "TYR",
}


def repair(
    structure: Path,
    protocol: Protocol,
    ligands: tuple[LigandSpec, ...] = (),
    ligand_cache: Path | None = None,
    seed: int = 0,
):
    """The structure made ready for an engine: (PDBFixer with the result, what was done).

    ``seed``: of the dynamics that place missing heavy atoms, so that the same row set
    up again gives the same system (atoms placed alike, so the same box and water).

    With ``ligands``, every copy of their residues is taken out of the structure first
    and the parameterized ligands (ligands.py; parameters cached in ``ligand_cache``) are
    put back last; ``info["ligands"]`` records each, ``info["ligand_forcefield_file"]``
    is their force-field file."""
    structure = Path(structure)
    fixer, info = read_structure(structure, protocol.model, protocol.altloc)
    _keep_chains(fixer, protocol.chains, structure, info)
    ligand_copies = {spec.residue: _take_out(fixer, spec.residue) for spec in ligands}
    _remove_residues(fixer, protocol, structure, info)
    check_overlapping_atoms(fixer.topology, fixer.positions, structure)
    _mutate(fixer, protocol.mutations, structure, info)
    fixer.findMissingResidues()
    info["missing_residues_not_modelled"] = sum(len(v) for v in fixer.missingResidues.values())
    fixer.missingResidues = {}
    fixer.findNonstandardResidues()
    info["replaced_nonstandard"] = [
        f"{r.name} {r.id} (chain {r.chain.id}) -> {name}" for r, name in fixer.nonstandardResidues
    ]
    if info["replaced_nonstandard"]:
        log.info("modified residues replaced by their standard parent: %s", ", ".join(info["replaced_nonstandard"]))
    fixer.replaceNonstandardResidues()
    fixer.findMissingAtoms()
    _drop_hydrogens_of_incomplete_residues(fixer)
    info["added_heavy_atoms"] = sum(len(v) for v in fixer.missingAtoms.values()) + sum(
        len(v) for v in fixer.missingTerminals.values()
    )
    # Reference: its minimizations give the same result every time (the CPU platform's
    # threads sum forces in varying order); they cost little: only new atoms move
    reference = openmm.Platform.getPlatformByName("Reference")
    fixer.platform = reference
    fixer.addMissingAtoms(seed=seed)
    info["seed"] = seed
    variants, info["metal_sites"], near = _metal_site_variants(fixer.topology, fixer.positions)
    if near:
        info["metal_site_near_misses"] = near
    ph = protocol.ph
    if protocol.protonation:
        variants, info["protonation"], ph = choose_protonation(
            fixer.topology, fixer.positions, protocol.protonation, protocol.ph, variants, structure
        )
    modeller = app.Modeller(fixer.topology, fixer.positions)
    with seeded(seed):  # Modeller places some hydrogens at random before minimizing them
        modeller.addHydrogens(pH=ph, variants=variants, platform=reference)
    if ligands:
        from .ligands import place_ligands

        placed = place_ligands(
            ligands, ligand_copies, Path(ligand_cache or layout.LIGAND_CACHE), f"structure '{structure}'"
        )
        for topology, positions in placed.copies:
            modeller.add(topology, positions)
        info["ligands"] = placed.info
        info["ligand_forcefield_file"] = str(placed.forcefield_file)
    fixer.topology, fixer.positions = modeller.topology, modeller.positions
    return fixer, info


@contextmanager
def seeded(seed: int):
    """OpenMM's Modeller draws from Python's global random numbers (hydrogens it cannot
    place by geometry, the waters it replaces with ions): drawn from ``seed`` here, so
    that setting up the same row again gives the same system; the caller's state kept."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def _take_out(fixer, name: str) -> list[list]:
    """Remove a residue (every copy) from the structure; each copy's atoms as (name,
    element symbol, (x, y, z) in nm), in the structure's order (none: an empty list)."""
    residues = [residue for residue in fixer.topology.residues() if residue.name == name]
    if not residues:
        return []
    positions = fixer.positions.value_in_unit(unit.nanometer)
    copies = [
        [
            (atom.name, atom.element.symbol if atom.element else atom.name[:1], tuple(positions[atom.index]))
            for atom in residue.atoms()
        ]
        for residue in residues
    ]
    modeller = app.Modeller(fixer.topology, fixer.positions)
    modeller.delete(residues)
    fixer.topology, fixer.positions = modeller.topology, modeller.positions
    return copies


def _drop_hydrogens_of_incomplete_residues(fixer) -> None:
    """A residue with missing heavy atoms may carry hydrogens where those atoms belong
    (a cysteine modelled without SG, three hydrogens on its CB): drop its hydrogens, and
    add them all again with the missing atoms."""
    incomplete = set(fixer.missingAtoms) | set(fixer.missingTerminals)
    hydrogens = [atom for residue in incomplete for atom in residue.atoms() if atom.element == app.element.hydrogen]
    if not hydrogens:
        return
    modeller = app.Modeller(fixer.topology, fixer.positions)
    modeller.delete(hydrogens)
    fixer.topology, fixer.positions = modeller.topology, modeller.positions
    fixer.findMissingAtoms()


# --------------------------------------------------------------------------- reading


def read_structure(structure: Path, model: int = 1, altloc: str = ""):
    """A PDBFixer of the chosen model (and alternate locations) of a structure file,
    and what reading decided."""
    from pdbfixer import PDBFixer

    # The validation-time check again: setup may run where the campaign was not validated.
    problem, _ = inspect_structure(structure)
    if problem:
        raise CampaignError(f"structure '{structure}' {problem}")
    text = read_structure_bytes(structure).decode("utf-8", errors="replace")
    suffix = content_format(text, structure)
    info: dict = {}
    if suffix != structure_suffix(structure):
        info["read_as"] = "mmCIF" if suffix in MMCIF_SUFFIXES else "PDB"
        log.info("the file is named %s but holds %s: read as %s", structure.name, info["read_as"], info["read_as"])
    if suffix in (".pdb", ".ent"):
        text, info["alternate_locations"] = choose_alternate_locations(text, altloc)
    with tempfile.TemporaryDirectory(prefix="mdcampaign-structure-") as tmp:
        path = Path(tmp) / f"structure{suffix}"
        path.write_text(text)
        try:
            if suffix == ".gro":
                fixer, reader = _fixer_through_mdtraj(path), "mdtraj"
            else:
                with open(path) as handle:
                    if suffix in (".cif", ".mmcif", ".pdbx"):
                        fixer = PDBFixer(pdbxfile=handle)
                    else:
                        fixer = PDBFixer(pdbfile=handle)
                reader = "openmm"
        except Exception as error:  # noqa: BLE001 - parsers raise anything on garbage
            if suffix not in (".pdb", ".ent"):
                raise CampaignError(f"structure '{structure}' could not be read: {_one_line(error)}") from None
            fixer, reader = _read_pdb_elsewhere(path, structure, error)
        models = _model_count(path, suffix) if reader == "openmm" else 1
        if model > models:
            raise CampaignError(
                f"structure '{structure}': model {model} was asked for (column model) but the file "
                f"has {models} model{'s' if models > 1 else ''}"
            )
        if model > 1:
            fixer.positions = _model_positions(path, suffix, model)
            info["model"] = model
    if models > 1:
        info["models_in_file"] = models
    info["reader"] = reader
    if fixer.topology.getNumAtoms() == 0:
        raise CampaignError(f"structure '{structure}' contains no atoms")
    return fixer, info


def choose_alternate_locations(text: str, preferred: str = "") -> tuple[str, dict]:
    """Keep, per residue, the ``preferred`` alternate location where the residue has
    it, else the one with the highest occupancy (the first one on a tie), and blank the
    altLoc column; returns the text and what was chosen."""
    lines = text.splitlines(keepends=True)
    occupancy: dict[tuple, Counter] = {}
    for line in lines:
        if line.startswith(("ATOM  ", "HETATM")) and len(line) > 16 and line[16] != " ":
            key = (line[21:22], line[22:27])
            try:
                value = float(line[54:60])
            except ValueError:
                value = 0.0
            occupancy.setdefault(key, Counter())
            occupancy[key][line[16]] += value
    if not occupancy:
        return text, {}
    chosen = {
        key: preferred if preferred in counts else max(counts, key=lambda loc: (counts[loc], -ord(loc)))
        for key, counts in occupancy.items()
    }
    kept = []
    for line in lines:
        if line.startswith(("ATOM  ", "HETATM", "ANISOU")) and len(line) > 16 and line[16] != " ":
            key = (line[21:22], line[22:27])
            if chosen.get(key) != line[16]:
                continue
            line = line[:16] + " " + line[17:]
        kept.append(line)
    summary = {
        f"{key[1].strip()}{'' if key[0] == ' ' else ' (chain ' + key[0] + ')'}": loc for key, loc in chosen.items()
    }
    log.info("alternate locations: kept the one with the highest occupancy in %d residues", len(chosen))
    return "".join(kept), {"residues": len(chosen), "chosen": dict(list(summary.items())[:50])}


def _fixer_through_mdtraj(path: Path):
    """A structure mdtraj reads (GRO files carry no elements or chains; other MD tools'
    PDB files) written again as a plain PDB for PDBFixer."""
    import mdtraj
    from pdbfixer import PDBFixer

    traj = mdtraj.load(str(path))
    with tempfile.TemporaryDirectory() as tmp:
        pdb = os.path.join(tmp, "structure.pdb")
        traj[0].save_pdb(pdb)
        with open(pdb) as handle:
            return PDBFixer(pdbfile=handle)


def _read_pdb_elsewhere(path: Path, structure: Path, error: Exception):
    """OpenMM's PDB reader rejected the file: try mdtraj's; else say which line is wrong."""
    try:
        return _fixer_through_mdtraj(path), "mdtraj"
    except Exception:  # noqa: BLE001 - fall through to the line-level diagnosis
        pass
    where = first_bad_pdb_line(path.read_text())
    detail = where or f"OpenMM's reader said: {_one_line(error)}"
    raise CampaignError(f"structure '{structure}' could not be read: {detail}") from None


_PDB_FIELDS = (
    ("atom serial number", 6, 11, int),
    ("residue number", 22, 26, int),
    ("x", 30, 38, float),
    ("y", 38, 46, float),
    ("z", 46, 54, float),
)


def first_bad_pdb_line(text: str) -> str | None:
    """'line N: <field> is '<text>', not a number (columns a-b)' for the first ATOM or
    HETATM record whose fixed-column fields cannot be read, or None."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.startswith(("ATOM  ", "HETATM")):
            continue
        for name, start, end, kind in _PDB_FIELDS:
            field = line[start:end]
            if name == "atom serial number" and re.fullmatch(r"\s*[0-9A-Za-z]+", field or " "):
                continue  # hybrid-36 serials of large files
            try:
                kind(field)
            except ValueError:
                return (
                    f"line {number}: the {name} is '{field}', not a number (PDB columns {start + 1}-{end}); "
                    "is the file in the fixed-column PDB format?"
                )
    return None


def _model_count(path: Path, suffix: str) -> int:
    reader = app.PDBxFile if suffix in (".cif", ".mmcif", ".pdbx") else app.PDBFile
    return reader(str(path)).getNumFrames()


def _model_positions(path: Path, suffix: str, model: int):
    reader = app.PDBxFile if suffix in (".cif", ".mmcif", ".pdbx") else app.PDBFile
    return reader(str(path)).getPositions(frame=model - 1)


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text[:300] or type(error).__name__


# --------------------------------------------------------------------------- choosing


def _keep_chains(fixer, chains: str, structure: Path, info: dict) -> None:
    if not chains:
        return
    wanted = chains.split(",")
    present = [chain.id for chain in fixer.topology.chains()]
    missing = [chain for chain in wanted if chain not in present]
    if missing:
        raise CampaignError(
            f"structure '{structure}': chains asks for chain {', '.join(missing)}, which the file "
            f"does not have (its chains: {', '.join(dict.fromkeys(present)) or 'none'})"
        )
    modeller = app.Modeller(fixer.topology, fixer.positions)
    modeller.delete([chain for chain in fixer.topology.chains() if chain.id not in wanted])
    fixer.topology, fixer.positions = modeller.topology, modeller.positions
    info["chains"] = wanted


def _remove_residues(fixer, protocol: Protocol, structure: Path, info: dict) -> None:
    named = {name.upper() for name in protocol.remove_residues.split(",") if name}
    reasons = {}
    for residue in fixer.topology.residues():
        name = residue.name.upper()
        if name in named:
            reasons[residue] = "remove_residues"
        elif name in WATER_RESIDUES and not protocol.keep_crystal_water:
            reasons[residue] = "water"
        elif name in SALT_ION_RESIDUES:
            reasons[residue] = "salt"
        elif name in ADDITIVE_RESIDUES:
            reasons[residue] = "additive"
    absent = named - {residue.name.upper() for residue in reasons}
    if absent:  # a campaign-wide list need not match every structure
        log.info("remove_residues: %s not in this structure", ", ".join(sorted(absent)))
    if reasons:
        modeller = app.Modeller(fixer.topology, fixer.positions)
        modeller.delete(list(reasons))
        fixer.topology, fixer.positions = modeller.topology, modeller.positions
        removed: dict[str, Counter] = {}
        for residue, why in reasons.items():
            removed.setdefault(why, Counter())[residue.name] += 1
        info["removed"] = {why: dict(sorted(counts.items())) for why, counts in removed.items()}
        info["removed_residues"] = sorted({residue.name for residue in reasons})
        for why, counts in removed.items():
            log.info("removed (%s): %s", why, ", ".join(f"{n} x{c}" for n, c in sorted(counts.items())))
    if fixer.topology.getNumAtoms() == 0:
        raise CampaignError(f"structure '{structure}' has no atoms besides water and salt ions (nothing to simulate)")
    ions = Counter(r.name.upper() for r in fixer.topology.residues() if r.name.upper() in METAL_ION_RESIDUES)
    if ions:
        info["metal_ions"] = dict(ions)
        log.info("metal ions kept: %s", ", ".join(f"{n} x{c}" for n, c in sorted(ions.items())))


def _mutate(fixer, mutations: str, structure: Path, info: dict) -> None:
    if not mutations:
        return
    by_chain: dict[str, list[str]] = {}
    residues = {(r.chain.id, r.id.strip()): r for r in fixer.topology.residues()}
    for text in mutations.split(";"):
        chain, change = text.split(":")
        before, number, after = change[0], change[1:-1], change[-1]
        residue = residues.get((chain, number))
        if residue is None:
            raise CampaignError(f"structure '{structure}': mutation {text}: chain {chain} has no residue {number}")
        if residue.name != ONE_LETTER[before]:
            raise CampaignError(
                f"structure '{structure}': mutation {text}: residue {number} of chain {chain} is "
                f"{residue.name}, not {ONE_LETTER[before]} ({before})"
            )
        by_chain.setdefault(chain, []).append(f"{ONE_LETTER[before]}-{number}-{ONE_LETTER[after]}")
    for chain, changes in by_chain.items():
        fixer.applyMutations(changes, chain)
    info["mutations"] = mutations.split(";")
    log.info("mutations applied: %s", mutations)


def _metal_site_variants(topology: app.Topology, positions) -> tuple[list, list, list]:
    """Protonation variants for residues that coordinate a metal ion: a cysteine bound
    through SG is deprotonated (CYM); a histidine bound through ND1 carries its
    hydrogen on NE2 (HIE), bound through NE2 on ND1 (HID). Others: None (by pH).
    Also the sites, and the near misses: atoms just past the cutoff (a cryo-EM Cys
    0.32 nm from its zinc), left by pH and said in the log, so that nobody is surprised."""
    import numpy as np

    xyz = np.asarray(positions.value_in_unit(unit.nanometer))
    ions = [
        atom
        for atom in topology.atoms()
        if atom.residue.name.upper() in METAL_ION_RESIDUES and len(list(atom.residue.atoms())) == 1
    ]
    variants: list = [None] * topology.getNumResidues()
    sites: list = []
    near: list = []
    if not ions:
        return variants, sites, near
    ion_xyz = xyz[[ion.index for ion in ions]]
    bound: dict = {}
    for atom in topology.atoms():
        limit = COORDINATION_NM.get(atom.name)
        if limit is None or atom.residue.name not in ("CYS", "HIS"):
            continue
        distances = np.linalg.norm(ion_xyz - xyz[atom.index], axis=1)
        nearest = int(distances.argmin())
        if limit < distances[nearest] <= limit + NEAR_MISS_NM:
            near.append(
                {
                    "ion": _label(ions[nearest].residue),
                    "residue": _label(atom.residue),
                    "atom": atom.name,
                    "distance_nm": round(float(distances[nearest]), 3),
                    "cutoff_nm": limit,
                }
            )
            log.warning(
                "metal site near miss: %s %s is %.3f nm from %s, just past the %.2f nm cutoff: not treated as "
                "bound (it keeps its protonation by pH); if it binds the metal, check the structure",
                _label(atom.residue),
                atom.name,
                distances[nearest],
                _label(ions[nearest].residue),
                limit,
            )
        if distances[nearest] <= limit:
            bound.setdefault(atom.residue, set()).add(atom.name)
            sites.append(
                {
                    "ion": _label(ions[nearest].residue),
                    "residue": _label(atom.residue),
                    "atom": atom.name,
                    "distance_nm": round(float(distances[nearest]), 3),
                }
            )
    for residue, atoms in bound.items():
        if residue.name == "CYS":
            # Modeller's name for a cysteine without HG (its disulfide form); with no
            # disulfide bond the force field then matches the deprotonated CYM template.
            variants[residue.index] = "CYX"
        elif atoms == {"ND1"}:
            variants[residue.index] = "HIE"
        elif atoms == {"NE2"}:
            variants[residue.index] = "HID"
    for site in sites:
        residue = next(r for r in bound if _label(r) == site["residue"])
        site["protonation"] = {"CYX": "CYM (deprotonated)"}.get(
            variants[residue.index], variants[residue.index]
        ) or "by pH"
    if sites:
        log.info(
            "metal sites: %s", "; ".join(f"{s['residue']} {s['atom']} - {s['ion']}: {s['protonation']}" for s in sites)
        )
    return variants, sites, near


def _label(residue) -> str:
    return f"{residue.name} {residue.id} (chain {residue.chain.id})"


def check_overlapping_atoms(topology: app.Topology, positions, structure: Path) -> None:
    """Refuse atoms on top of each other (a duplicated ATOM line, coordinates pasted
    twice) before pdbfixer and the minimizer turn them into NaN. O(N log N)."""
    import numpy as np
    from scipy.spatial import cKDTree  # scipy comes with mdtraj

    xyz = np.asarray(
        positions.value_in_unit(unit.nanometer) if unit.is_quantity(positions) else positions, dtype=float
    ).reshape(-1, 3)
    bad = np.flatnonzero(~np.isfinite(xyz).all(axis=1))
    if len(bad):
        atom = list(topology.atoms())[int(bad[0])]
        more = f" ({len(bad)} such atoms)" if len(bad) > 1 else ""
        raise CampaignError(
            f"structure '{structure}': atom {_atom_label(atom)} has coordinates that are not numbers{more}"
        )
    if len(xyz) < 2:
        return
    pairs = cKDTree(xyz).query_pairs(OVERLAP_NM, output_type="ndarray")
    if len(pairs) == 0:
        return
    distances = np.linalg.norm(xyz[pairs[:, 0]] - xyz[pairs[:, 1]], axis=1)
    closest = int(np.lexsort((pairs[:, 1], pairs[:, 0], distances))[0])
    atoms = list(topology.atoms())
    first, second = (atoms[int(k)] for k in sorted(pairs[closest]))
    more = f" ({len(pairs)} such pairs)" if len(pairs) > 1 else ""
    raise CampaignError(
        f"structure '{structure}': atoms {_atom_label(first)} and {_atom_label(second)} are "
        f"{distances[closest]:.3f} nm apart, closer than {OVERLAP_NM} nm{more}: duplicated or overlapping atoms; "
        "remove the duplicates or fix their coordinates"
    )


def _atom_label(atom) -> str:
    residue = atom.residue
    return f"{residue.name} {residue.id}{residue.insertionCode.strip()} {atom.name} (chain {residue.chain.id})"
