"""Structure files before setup: which formats are accepted, and a cheap look at a
file that rejects what cannot possibly work before anything runs."""

from __future__ import annotations

import re
from pathlib import Path

STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif", ".pdbx", ".gro")
# Any of these may also be gzipped (name.pdb.gz), as the PDB serves them.
GZIP_SUFFIX = ".gz"
# Residue names `setup` removes before anything else (crystallographic water unless
# keep_crystal_water, and monovalent salt: solvation adds the ions the protocol asks
# for). The one list for validation (here) and setup (repair.py); compare upper-cased
# names.
WATER_RESIDUES = frozenset({"HOH", "WAT", "H2O", "SOL", "TIP", "TIP3", "TIP4", "SPC", "DOD"})
SALT_ION_RESIDUES = frozenset({"NA", "CL", "K", "NA+", "CL-", "K+", "SOD", "CLA", "POT"})
# Crystallization additives, cryoprotectants and buffer molecules (PDB chemical
# component ids) that setup removes by default and lists in its log and setup.json;
# a system that needs one kept parameterizes it as a ligand. Documented in
# docs/guide/structures.md ("What setup does with the structure file").
ADDITIVE_RESIDUES = frozenset(
    {
        "GOL",
        "EDO",
        "PEG",
        "PGE",
        "PG4",
        "1PE",
        "P6G",
        "2PE",
        "MPD",
        "MRD",
        "IPA",
        "EOH",
        "MOH",
        "DMS",
        "BME",
        "ACT",
        "ACY",
        "FMT",
        "CIT",
        "FLC",
        "TAR",
        "TLA",
        "MLI",
        "MLA",
        "SIN",
        "SO4",
        "PO4",
        "NO3",
        "SCN",
        "TRS",
        "MES",
        "EPE",
        "MPO",
        "BTB",
        "B3P",
        "CAC",
        "IMD",
        "DTT",
        "DTU",
        "BU3",
        "AZI",
        "NH4",
        "UNX",
        "UNL",
    }
)
# Monatomic metal ions that setup keeps (where the force field has parameters for
# them; it says which one does otherwise), with the atoms that coordinate them.
METAL_ION_RESIDUES = frozenset({"ZN", "MG", "CA", "MN", "FE", "FE2", "CO", "NI", "CU", "CU1", "CD", "HG", "SR", "BA"})
HYDROGEN_ELEMENTS = ("H", "D")
MMCIF_COORDINATES = ("Cartn_x", "Cartn_y", "Cartn_z")

# An mmCIF value: a quoted string (the quote closes only before whitespace) or a word.
_CIF_TOKEN = re.compile(r"""'.*?'(?=\s|$)|".*?"(?=\s|$)|\S+""")


def inspect_structure(path: Path) -> tuple[str | None, int]:
    """A cheap check that a structure file is what its name says, and its number of
    non-water heavy atoms (first model only). Returns (problem or None, heavy atoms).

    Parsing waits for `setup`; this only rejects files that cannot possibly work (empty,
    binary, no atom records, nothing left once water and salt are removed, an mmCIF
    without coordinates) before anything runs. One pass over the lines, no parsing of
    coordinates: it runs for every system at every `snakemake` start.
    """
    try:
        data = read_structure_bytes(path)
    except ValueError as error:
        return str(error), 0
    if not data.strip():
        return "is empty", 0
    if b"\x00" in data[:65536]:
        return "is a binary file, not a text structure file", 0
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    suffix = content_format(text, path)
    lines = text.splitlines()
    if suffix in (".pdb", ".ent"):
        problem, atoms = _pdb_atoms(lines)
    elif suffix in (".cif", ".mmcif", ".pdbx"):
        problem, atoms = _mmcif_atoms(lines)
    else:  # .gro
        problem, atoms = _gro_atoms(lines)
    if problem:
        return problem, 0
    return _count(atoms)


def structure_suffix(path: Path) -> str:
    """The format suffix of a structure file name, under a .gz: '.pdb' for x.pdb.gz."""
    name = Path(path).name.lower()
    if name.endswith(GZIP_SUFFIX):
        name = name[: -len(GZIP_SUFFIX)]
    return Path(name).suffix


PDB_SUFFIXES = (".pdb", ".ent")
MMCIF_SUFFIXES = (".cif", ".mmcif", ".pdbx")
_MMCIF_START = re.compile(r"\A(?:\s*#[^\n]*\n|\s*\n)*\s*data_", re.IGNORECASE)
_MMCIF_ATOMS = re.compile(r"^\s*_atom_site\.", re.IGNORECASE | re.MULTILINE)
_PDB_ATOMS = re.compile(r"^(ATOM  |HETATM)[ 0-9A-Za-z]{5} ", re.MULTILINE)


def content_format(text: str, path: Path) -> str:
    """The format suffix a structure is read as: its name's, unless its content is the
    other of PDB and mmCIF (an mmCIF file saved as .pdb starts with ``data_`` and has an
    ``_atom_site`` loop; a PDB file saved as .cif has fixed-column atom records and no
    ``data_`` block)."""
    suffix = structure_suffix(path)
    if suffix not in PDB_SUFFIXES + MMCIF_SUFFIXES:
        return suffix
    if _MMCIF_START.match(text) and _MMCIF_ATOMS.search(text):
        return suffix if suffix in MMCIF_SUFFIXES else ".cif"
    if suffix in MMCIF_SUFFIXES and not _MMCIF_ATOMS.search(text) and _PDB_ATOMS.search(text):
        return ".pdb"
    return suffix


def read_structure_bytes(path: Path) -> bytes:
    """A structure file's content, uncompressed if it is gzipped (ValueError: a .gz
    that is not one, the message completing "'file' ...")."""
    import gzip

    data = Path(path).read_bytes()
    if Path(path).name.lower().endswith(GZIP_SUFFIX):
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise ValueError(f"is named .gz but could not be uncompressed ({error})") from None
    return data


def _count(atoms) -> tuple[str | None, int]:
    """(residue name, is hydrogen) pairs -> (problem, non-water heavy atoms)."""
    heavy = 0
    solute = False  # any atom, hydrogen or not, that setup keeps
    for residue, hydrogen in atoms:
        residue = residue.upper()
        if residue in WATER_RESIDUES:
            continue
        if not hydrogen:
            heavy += 1
        if residue not in SALT_ION_RESIDUES:
            solute = True
    if heavy == 0 and not solute:
        return "has no atoms besides water (nothing to simulate)", 0
    if not solute:
        return "has no atoms besides water and salt ions, which setup removes (nothing to simulate)", heavy
    return None, heavy


def _pdb_atoms(lines: list[str]):
    atoms = []
    for line in lines:
        if line.startswith(("ATOM  ", "HETATM")):
            atoms.append((line[17:20].strip(), line[76:78].strip().upper() in HYDROGEN_ELEMENTS))
        elif line.startswith("ENDMDL") and atoms:
            break  # setup uses the first model
    if not atoms:
        return "has no ATOM or HETATM records (is it really a PDB file?)", []
    return None, atoms


def _gro_atoms(lines: list[str]):
    try:
        count = int(lines[1].strip())
    except (IndexError, ValueError):
        return "does not start with a title line and an atom count (is it really a GRO file?)", []
    if count <= 0 or len(lines) < count + 3:
        return f"declares {count} atoms but is too short (truncated GRO file?)", []
    return None, [(line[5:10].strip(), line[10:15].strip().upper().startswith("H")) for line in lines[2 : count + 2]]


def _mmcif_atoms(lines: list[str]):
    """The `_atom_site` loop of the first data block, columns found by name as OpenMM
    does (tags are case-insensitive): residue from auth_comp_id or label_comp_id,
    hydrogen from type_symbol (or the atom name), first model only."""
    start = next((i for i, line in enumerate(lines) if line.lstrip()[:11].lower() == "_atom_site."), None)
    if start is None:
        return "has no _atom_site loop (is it really an mmCIF file?)", []
    columns = []
    i = start
    while i < len(lines) and lines[i].lstrip()[:11].lower() == "_atom_site.":
        columns.append(lines[i].split()[0][11:].lower())
        i += 1
    previous = next(
        (
            lines[k].strip()
            for k in range(start - 1, -1, -1)
            if lines[k].strip() and not lines[k].lstrip().startswith("#")
        ),
        "",
    )
    if previous.lower() != "loop_":
        # Key-value form: one atom, each line `_atom_site.name value`.
        values = [_tokens(line)[1:2] for line in lines[start:i]]
        rows = [[v[0] if v else "?" for v in values]]
    else:
        rows = _loop_rows(lines, i, len(columns))
    missing = [name for name in MMCIF_COORDINATES if name.lower() not in columns]
    if missing:
        names = " or ".join("_atom_site." + name for name in missing)
        return f"has no {names} column (its atoms have incomplete coordinates)", []
    if not rows:
        return "has an empty _atom_site loop (no atoms)", []
    index = {name: k for k, name in enumerate(columns)}
    residue_col = index.get("auth_comp_id", index.get("label_comp_id"))
    element_col = index.get("type_symbol")
    name_col = index.get("auth_atom_id", index.get("label_atom_id"))
    model_col = index.get("pdbx_pdb_model_num")
    first_model = rows[0][model_col] if model_col is not None else None
    atoms = []
    for row in rows:
        if model_col is not None and row[model_col] != first_model:
            break  # setup uses the first model
        residue = row[residue_col].strip("'\"") if residue_col is not None else ""
        if element_col is not None:
            hydrogen = row[element_col].strip("'\"").upper() in HYDROGEN_ELEMENTS
        elif name_col is not None:
            hydrogen = row[name_col].strip("'\"").lstrip("0123456789").upper().startswith("H")
        else:
            hydrogen = False
        atoms.append((residue, hydrogen))
    return None, atoms


def _tokens(line: str) -> list[str]:
    return _CIF_TOKEN.findall(line) if ("'" in line or '"' in line) else line.split()


def _loop_rows(lines: list[str], i: int, width: int) -> list[list[str]]:
    """The rows of a loop whose values start at line i (a row may span lines)."""
    rows = []
    row: list[str] = []
    for line in lines[i:]:
        stripped = line.lstrip()
        if not stripped:
            continue
        if stripped.startswith(("#", "_")) or stripped[:5].lower() in ("loop_", "data_"):
            break
        if stripped.startswith(";"):
            break  # multi-line text values do not occur in _atom_site; stop rather than guess
        row.extend(_tokens(line))
        while len(row) >= width:
            rows.append(row[:width])
            row = row[width:]
    return rows
