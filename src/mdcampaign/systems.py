"""The systems table: one row per system, read, checked and turned into systems
(structure, replicas, protocol overrides, ligands or a lab's own engine inputs) and
their simulations (one per replica, with a seed of its own)."""

from __future__ import annotations

import csv
import hashlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

from . import layout
from .configuration import read_user_text
from .engines import ENGINES, engine_for, engine_problems, unknown_engine
from .errors import CampaignError
from .ligand_spec import LigandSpec
from .protocol import Protocol, protocol_from
from .structures import STRUCTURE_SUFFIXES, inspect_structure, structure_suffix
from .validation import coerce_cell, suggest, validate

LIGAND_CHEMISTRY_SUFFIXES = (".sdf", ".mol", ".mol2")


@dataclass(frozen=True)
class System:
    id: str
    structure: Path
    replicas: int
    protocol: Protocol
    line: int  # line of the systems table that defines it
    site: str | None = None  # the systems table's `site` column
    heavy_atoms: int = 0  # counted in the structure file (water excluded)
    # A lab's own engine inputs, run as given instead of set up from the structure:
    # {"tpr": path} or {"gro", "top", "mdp"[, "ndx"]} (paths as in the systems table).
    own_inputs: dict = field(default_factory=dict)
    ligands: tuple[LigandSpec, ...] = ()  # each distinct ligand; copies are its residues
    migrate: bool | None = None  # the systems table's `migrate` column (None: pulling.migrate)
    group: str | None = None  # a series compared with its reference system (summary.comparisons)
    reference: bool = False

    @property
    def input_files(self) -> list[Path]:
        """Every file setup reads for this system."""
        files = list(self.own_inputs.values()) if self.own_inputs else [self.structure]
        return files + [ligand.chemistry_file for ligand in self.ligands if ligand.chemistry_file]

    @property
    def estimated_atoms(self) -> float:
        """Atoms after setup, estimated from the structure alone (so that every site
        computes the same number): hydrogens roughly double the heavy atoms; in
        explicit solvent, add water filling a cube around a globule of the solute's
        volume (0.017 nm3 per heavy atom) with the protocol's padding."""
        solute = 2.0 * self.heavy_atoms
        if not self.protocol.explicit:
            return solute
        diameter = (6.0 * 0.017 * self.heavy_atoms / math.pi) ** (1.0 / 3.0)
        side = diameter + 2.0 * self.protocol.padding_nm
        return solute + 100.0 * side**3  # water: about 100 atoms per nm3


@dataclass(frozen=True)
class Simulation:
    system: str
    replica: int
    seed: int
    protocol: Protocol
    site: str | None = None

    @property
    def name(self) -> str:
        return layout.sim_name(self.system, self.replica)

    @property
    def n_segments(self) -> int:
        return self.protocol.n_segments

    @property
    def wildcards(self) -> dict:
        return {"system": self.system, "replica": self.replica}


def replica_seed(system: str, replica: int, salt: int) -> int:
    """Deterministic per-replica seed: stable across runs, machines and Python versions."""
    digest = hashlib.sha256(f"{system}/r{replica}/{salt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF or 1


NAME_COLUMNS = ("id", "structure")


def read_systems_table(path: Path, label: str) -> list[tuple[int, dict]]:
    """Rows of the TSV systems table as (line number, {column: text}).

    Blank lines and lines starting with '#' are skipped; line numbers are those an
    editor shows.
    """
    text = read_user_text(
        path, label, "a UTF-8 tab-separated table", "systems table not found (set 'systems' in the config to its path)"
    )
    numbered = [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not numbered:
        raise CampaignError(f"{label}: empty table (expected a header line with columns id, structure, replicas)")
    header_line, header_text = numbered[0]
    header = next(csv.reader(io.StringIO(header_text), delimiter="\t"))
    header = [column.strip() for column in header]
    # Spreadsheets export empty columns after the last one with a name: ignore them.
    while header and not header[-1]:
        header.pop()
    if "id" not in header or "structure" not in header:
        hint = ""
        if len(header) == 1 and ("," in header_text or ";" in header_text or " " in header_text.strip()):
            hint = " (columns must be separated by tabs, not commas or spaces)"
        missing = [c for c in ("id", "structure") if c not in header]
        raise CampaignError(
            f"{label}, line {header_line}: header lacks column(s) {', '.join(repr(c) for c in missing)}{hint}; "
            f"found {', '.join(repr(c) for c in header)}"
        )
    if "" in header:
        raise CampaignError(
            f"{label}, line {header_line}: column {header.index('') + 1} of the header has no name "
            "(name it, or delete the empty column)"
        )
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise CampaignError(f"{label}, line {header_line}: column '{duplicated[0]}' appears twice in the header")
    rows = []
    for number, line in numbered[1:]:
        cells = next(csv.reader(io.StringIO(line), delimiter="\t"))
        while len(cells) > len(header) and not cells[-1].strip():
            cells.pop()  # the empty trailing columns of a spreadsheet export
        if len(cells) > len(header):
            raise CampaignError(
                f"{label}, line {number}: {len(cells)} fields but the header has {len(header)} columns "
                "(columns must be separated by single tabs)"
            )
        if len(cells) == 1 and len(header) > 1 and len(cells[0].split()) > 1:
            raise CampaignError(
                f"{label}, line {number}: one field where the header has {len(header)} columns: columns must be "
                "separated by tabs, not spaces (does your editor turn tabs into spaces?)"
            )
        # 'NA' is how R and some spreadsheets write an empty cell; an id or a file name
        # 'NA' (or 'nan') is a name, though.
        row = {
            column: cell.strip()
            for column, cell in zip(header, cells, strict=False)
            if cell.strip() and (cell.strip() != "NA" or column in NAME_COLUMNS)
        }
        rows.append((number, row))
    return rows


def parse_system(
    row: dict, line: int, label: str, row_schema: dict, protocol_schema: dict, defaults: dict, base_dir: Path
) -> System:
    system_id = row.get("id", "")
    where = f"{label}, line {line}" + (f" (id '{system_id}')" if system_id else "")
    protocol_keys = protocol_schema["properties"]
    own_keys = row_schema["properties"]
    values = {}
    for column, text in row.items():
        if column in own_keys:
            values[column] = coerce_cell(text, own_keys[column])
        elif column in protocol_keys:
            values[column] = coerce_cell(text, protocol_keys[column])
        else:
            allowed = list(own_keys) + list(protocol_keys)
            raise CampaignError(
                f"{where}: unknown column '{column}'{suggest(column, allowed)}; allowed columns: "
                f"{', '.join(own_keys)} and the protocol keys ({', '.join(protocol_keys)})"
            )
    own = {key: value for key, value in values.items() if key in own_keys}
    validate(own, row_schema, where, key_word="column")
    overrides = {key: value for key, value in values.items() if key in protocol_keys}
    overrides_schema = {"type": "object", "properties": {k: _without_default(v) for k, v in protocol_keys.items()}}
    validate(overrides, overrides_schema, where, fill_defaults=False, key_word="column")
    if ".." in own["id"]:
        raise CampaignError(f"{where}, column id: must not contain '..' (got {own['id']!r})")
    engine = overrides.get("engine", defaults["engine"])
    if problem := unknown_engine(engine):
        raise CampaignError(f"{where}, column engine: {problem}")
    own_inputs = _own_inputs(own, engine, where, base_dir)
    protocol = checked_protocol({**defaults, **overrides}, where, own_inputs=bool(own_inputs))
    if own_inputs and structure_suffix(Path(own["structure"])) not in STRUCTURE_SUFFIXES:
        # the structure is itself an engine's run input (a .tpr): nothing to inspect
        return System(
            own["id"],
            Path(own["structure"]),
            own["replicas"],
            protocol,
            line,
            own.get("site"),
            0,
            own_inputs,
            migrate=own.get("migrate"),
            group=own.get("group"),
            reference=bool(own.get("reference")),
        )
    structure, heavy_atoms = _structure_path(own["structure"], where, base_dir)
    ligands = _ligands(own, protocol, where, base_dir)
    return System(
        own["id"],
        structure,
        own["replicas"],
        protocol,
        line,
        own.get("site"),
        heavy_atoms,
        own_inputs,
        ligands,
        own.get("migrate"),
        own.get("group"),
        bool(own.get("reference")),
    )


def check_groups(systems: dict[str, System], systems_file: str) -> None:
    """Every group has exactly one reference system, and a reference has a group."""
    references: dict[str, System] = {}
    for system in systems.values():
        if system.reference and system.group is None:
            raise CampaignError(
                f"{systems_file}, line {system.line} (id '{system.id}'), column reference: a reference needs a "
                "group (the column group names the series it is the reference of)"
            )
        if system.reference:
            first = references.setdefault(system.group, system)
            if first is not system:
                raise CampaignError(
                    f"{systems_file}, line {system.line} (id '{system.id}'), column reference: group "
                    f"'{system.group}' already has its reference '{first.id}' (line {first.line}); one per group"
                )
    for group in sorted({s.group for s in systems.values() if s.group} - set(references)):
        members = [s for s in systems.values() if s.group == group]
        raise CampaignError(
            f"{systems_file}, line {members[0].line} (id '{members[0].id}'), column group: group '{group}' has no "
            f"reference system: put true in the column reference of one of {', '.join(s.id for s in members)}"
        )


LIGAND_COLUMNS = ("ligand_file", "ligand_smiles", "ligand_charge")  # one entry per name in ligand


def _ligands(own: dict, protocol: Protocol, where: str, base_dir: Path) -> tuple[LigandSpec, ...]:
    """The row's ligand columns, checked: one LigandSpec per name in ``ligand``
    (``XK2;HEM``), its chemistry and charge at the same place in the other columns."""
    given = [column for column in LIGAND_COLUMNS if own.get(column) is not None]
    if not own.get("ligand"):
        if given:
            raise CampaignError(
                f"{where}, column {given[0]}: also give the column ligand (the ligand's residue name in the structure)"
            )
        return ()
    names = str(own["ligand"]).split(";")
    if len(set(names)) < len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise CampaignError(
            f"{where}, column ligand: {twice} is named twice; name each ligand once (every residue of that name "
            "in the structure is a copy of it, sharing its parameters)"
        )
    entries = {column: _per_ligand(own, column, names, where) for column in given}
    if not engine_for(protocol.engine).supports_ligands:
        able = ", ".join(name for name, engine in ENGINES.items() if engine.supports_ligands)
        raise CampaignError(
            f"{where}, column ligand: the {protocol.engine} engine does not parameterize ligands yet; "
            f"use engine {able} for this system"
        )
    if not protocol.explicit:
        raise CampaignError(
            f"{where}, column ligand: ligands need solvent explicit (the implicit-solvent models "
            "have no parameters for GAFF2 atom types)"
        )
    ligands = []
    for number, name in enumerate(names):
        file, smiles, charge = (entries.get(column, [""] * len(names))[number] for column in LIGAND_COLUMNS)
        if bool(file) == bool(smiles):
            several = f" for {name} (entry {number + 1} of each, ';'-separated)" if len(names) > 1 else ""
            raise CampaignError(
                f"{where}, column ligand: give the ligand's chemistry in exactly one of ligand_file "
                "(SDF/MOL2 with bond orders and its pose) or ligand_smiles (the pose is then the "
                f"structure's residue){several}"
            )
        ligands.append(
            LigandSpec(
                name,
                _chemistry_file(file, where, base_dir) if file else None,
                smiles or None,
                int(charge) if charge else None,
            )
        )
    return tuple(ligands)


def _per_ligand(own: dict, column: str, names: list[str], where: str) -> list[str]:
    """A ligand column's entries, one per name of the column ligand (empty where
    another column gives that ligand's chemistry, or a charge is left to its formula)."""
    entries = [entry.strip() for entry in str(own[column]).split(";")]
    if len(entries) != len(names):
        raise CampaignError(
            f"{where}, column {column}: {len(entries)} entries for {len(names)} ligands ({';'.join(names)}); give one "
            "per ligand, in the same order, separated by ';' (empty where another column gives it)"
        )
    if column == "ligand_charge":
        for entry in entries:
            if entry and not (entry.lstrip("+-").isdigit() and -10 <= int(entry) <= 10):
                raise CampaignError(f"{where}, column ligand_charge: '{entry}' is not a net charge from -10 to 10")
    return entries


def _chemistry_file(file: str, where: str, base_dir: Path) -> Path:
    chemistry = Path(file)
    if chemistry.suffix.lower() not in LIGAND_CHEMISTRY_SUFFIXES:
        raise CampaignError(
            f"{where}, column ligand_file: expected {', '.join(LIGAND_CHEMISTRY_SUFFIXES)} (got '{chemistry.name}')"
        )
    resolved = chemistry if chemistry.is_absolute() else base_dir / chemistry
    if not resolved.is_file():
        raise CampaignError(f"{where}, column ligand_file: file '{chemistry}' does not exist")
    return chemistry


def _own_inputs(own: dict, engine: str, where: str, base_dir: Path) -> dict:
    """The lab's own engine inputs a row names, checked by the engine they are for
    ({} if none)."""
    for name, candidate in ENGINES.items():
        what = candidate.names_own_inputs(own)
        if what and name != engine:
            raise CampaignError(f"{where}, column engine: {what} can only run with engine {name} (got '{engine}')")
    return engine_for(engine).own_inputs(own, where, base_dir)


def checked_protocol(values: dict, where: str, own_inputs: bool = False) -> Protocol:
    """A protocol from its keys, with the problems of its keys and of its engine (with a
    lab's own engine inputs, the inputs decide what the engine is given) as one line."""
    protocol = protocol_from(values, where)
    for problem in engine_problems(protocol, own_inputs):
        raise CampaignError(f"{where}: {problem}")
    return protocol


def _without_default(subschema: dict) -> dict:
    return {key: value for key, value in subschema.items() if key != "default"}


def _structure_path(text: str, where: str, base_dir: Path) -> tuple[Path, int]:
    path = Path(text)
    resolved = path if path.is_absolute() else base_dir / path
    if structure_suffix(path) not in STRUCTURE_SUFFIXES:
        raise CampaignError(
            f"{where}, column structure: unsupported file type '{path.suffix or path.name}' "
            f"(allowed: {', '.join(STRUCTURE_SUFFIXES)}, each also gzipped (.gz))"
        )
    if not resolved.is_file():
        state = "is a directory" if resolved.is_dir() else "does not exist"
        raise CampaignError(f"{where}, column structure: file '{text}' {state}")
    problem, heavy_atoms = inspect_structure(resolved)
    if problem:
        raise CampaignError(f"{where}, column structure: '{text}' {problem}")
    return path, heavy_atoms
