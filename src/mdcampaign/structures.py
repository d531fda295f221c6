"""Structure files before setup: which formats are accepted, and a cheap look at a
file that rejects what cannot possibly work before anything runs."""

from __future__ import annotations

from pathlib import Path

STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif", ".pdbx", ".gro")
WATER_RESIDUES = ("HOH", "WAT", "SOL", "TIP3")


def inspect_structure(path: Path) -> tuple[str | None, int]:
    """A cheap check that a structure file is what its name says, and its number of
    non-water heavy atoms. Returns (problem or None, heavy atoms).

    Parsing waits for `setup`; this only rejects files that cannot possibly work (empty,
    binary, no atom records) before anything runs.
    """
    data = path.read_bytes()
    if not data.strip():
        return "is empty", 0
    if b"\x00" in data[:65536]:
        return "is a binary file, not a text structure file", 0
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    suffix = path.suffix.lower()
    lines = text.splitlines()
    if suffix in (".pdb", ".ent"):
        atoms = [line for line in lines if line.startswith(("ATOM  ", "HETATM"))]
        if not atoms:
            return "has no ATOM or HETATM records (is it really a PDB file?)", 0
        heavy = sum(1 for line in atoms if line[17:20].strip() not in WATER_RESIDUES and line[76:78].strip() != "H")
    elif suffix in (".cif", ".mmcif", ".pdbx"):
        if "_atom_site." not in text:
            return "has no _atom_site loop (is it really an mmCIF file?)", 0
        atoms = [line.split() for line in lines if line.startswith(("ATOM ", "HETATM "))]
        heavy = sum(1 for fields in atoms if len(fields) > 5 and fields[2] != "H" and fields[5] not in WATER_RESIDUES)
    else:  # .gro
        try:
            count = int(lines[1].strip())
        except (IndexError, ValueError):
            return "does not start with a title line and an atom count (is it really a GRO file?)", 0
        if count <= 0 or len(lines) < count + 3:
            return f"declares {count} atoms but is too short (truncated GRO file?)", 0
        heavy = sum(1 for line in lines[2:count + 2] if line[5:10].strip() not in WATER_RESIDUES
                    and not line[10:15].strip().startswith("H"))
    return None, heavy
