"""The campaign definition: config.yaml plus the systems table, validated and expanded
into simulations (one per system and replica)."""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path

from . import __version__, layout
from .configuration import expand_path, read_user_text
from .errors import CampaignError, DataError
from .forcefields import ENGINE_PROBLEMS, forcefield_files
from .records import read_manifest
from .sites import ASSIGNMENT_FILE, Site, Work, assign, read_assignment
from .slots import Packing
from .structures import STRUCTURE_SUFFIXES, inspect_structure, structure_suffix
from .validation import coerce_cell, load_schema, suggest, validate

# Segment names have layout.SEGMENT_DIGITS digits; more segments also mean more jobs
# than any allocation would want.
MAX_SEGMENTS = 10**layout.SEGMENT_DIGITS
# Above this timestep, hydrogen mass repartitioning is required for stable dynamics.
MAX_TIMESTEP_WITHOUT_HMR_FS = 2.5


def engine_of(record: dict) -> str:
    """The engine of a protocol record (Protocol.record, a segment manifest's protocol)."""
    return record.get("engine", ADDED_KEYS["engine"])


def engine_files(record: dict) -> layout.EngineFiles:
    """The engine's file names for a protocol record."""
    return layout.ENGINE_FILES[engine_of(record)]


@dataclass(frozen=True)
class Protocol:
    """Simulation protocol of one system. Field names are the schema's keys."""

    forcefield: str
    solvent: str
    water_model: str
    implicit_model: str
    box_shape: str
    padding_nm: float
    ionic_strength_molar: float
    ph: float
    temperature_K: float
    pressure_bar: float
    friction_per_ps: float
    timestep_fs: float
    hmr: bool
    nonbonded_cutoff_nm: float
    minimization_max_iterations: int
    equilibration_ps: float
    segment_ns: float
    target_ns: float
    frame_interval_ps: float
    checkpoint_interval_ps: float
    trajectory_atoms: str
    seed: int
    # Keys added after campaigns existed; their defaults (ADDED_KEYS) mean "as before".
    engine: str = "openmm"
    chains: str = ""
    model: int = 1
    altloc: str = ""
    remove_residues: str = ""
    keep_crystal_water: bool = False
    mutations: str = ""

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def record(self) -> dict:
        """The protocol as rule params and records carry it (``Protocol(**record)``
        restores it): keys added later are left out at their as-before value, so that
        upgrading does not change existing jobs' params (Snakemake reruns a job whose
        params changed) and records read the same as before."""
        return {
            key: value for key, value in self.__dict__.items() if not (key in ADDED_KEYS and value == ADDED_KEYS[key])
        }

    @property
    def explicit(self) -> bool:
        return self.solvent == "explicit"

    @property
    def timestep_ps(self) -> float:
        return self.timestep_fs / 1000.0

    def steps(self, picoseconds: float) -> int:
        return round(picoseconds / self.timestep_ps)

    @property
    def segment_steps(self) -> int:
        return self.steps(self.segment_ns * 1000.0)

    @property
    def frame_steps(self) -> int:
        return self.steps(self.frame_interval_ps)

    @property
    def checkpoint_steps(self) -> int:
        return self.steps(self.checkpoint_interval_ps)

    @property
    def equilibration_steps(self) -> int:
        return self.steps(self.equilibration_ps)

    @property
    def n_segments(self) -> int:
        # A tiny tolerance so that 0.3 / 0.1 counts as 3 segments, not 4.
        return max(1, math.ceil(self.target_ns / self.segment_ns - 1e-9))

    @property
    def forcefield_files(self) -> list[str]:
        return forcefield_files(self.forcefield, self.solvent, self.water_model, self.implicit_model)

    def problems(self, engine: str | None = None, own_inputs: bool = False) -> Iterator[str]:
        """Inconsistencies between keys that the schema cannot express, and what the
        engine (``engine``, or the protocol's own) cannot do with them; with a lab's
        own engine inputs (``own_inputs``) the inputs decide the force field, water
        and preparation, so only the segmenting keys are checked here."""
        if self.segment_ns > self.target_ns + 1e-12:
            yield f"segment_ns ({self.segment_ns}) must not exceed target_ns ({self.target_ns})"
        if self.n_segments > MAX_SEGMENTS:
            yield (
                f"target_ns ({self.target_ns}) / segment_ns ({self.segment_ns}) makes {self.n_segments} segments per "
                f"simulation; at most {MAX_SEGMENTS} (use longer segments)"
            )
        if self.timestep_fs > MAX_TIMESTEP_WITHOUT_HMR_FS and not self.hmr:
            yield (
                f"timestep_fs {self.timestep_fs} needs hmr: true (without hydrogen mass "
                f"repartitioning use at most {MAX_TIMESTEP_WITHOUT_HMR_FS} fs)"
            )
        for key, value, picoseconds in (
            ("frame_interval_ps", self.frame_interval_ps, self.frame_interval_ps),
            ("checkpoint_interval_ps", self.checkpoint_interval_ps, self.checkpoint_interval_ps),
            ("segment_ns", self.segment_ns, self.segment_ns * 1000.0),
            ("equilibration_ps", self.equilibration_ps, self.equilibration_ps),
        ):
            if picoseconds and not _is_multiple(picoseconds, self.timestep_ps):
                yield f"{key} ({value}) must be a whole number of timesteps ({self.timestep_fs} fs)"
                return
        if self.frame_steps > self.segment_steps or self.segment_steps % self.frame_steps:
            yield (
                f"segment_ns ({self.segment_ns}) must be a whole number of frame intervals "
                f"(frame_interval_ps {self.frame_interval_ps})"
            )
        if self.checkpoint_steps % self.frame_steps:
            yield (
                f"checkpoint_interval_ps ({self.checkpoint_interval_ps}) must be a whole number "
                f"of frame intervals (frame_interval_ps {self.frame_interval_ps})"
            )
        if not own_inputs:
            yield from ENGINE_PROBLEMS[engine or self.engine](self)


ADDED_KEYS = {field.name: field.default for field in fields(Protocol) if field.default is not MISSING}


def _is_multiple(value: float, unit: float) -> bool:
    ratio = value / unit
    return abs(ratio - round(ratio)) < 1e-6 and round(ratio) > 0


@dataclass(frozen=True)
class LigandSpec:
    """A system's small-molecule ligand, as the systems table gives it (see ligands.py)."""

    residue: str  # its residue name in the structure
    chemistry_file: Path | None = None  # SDF/MOL2 with bond orders (and the pose)
    smiles: str | None = None
    charge: int | None = None

    def record(self) -> dict:
        return {
            "residue": self.residue,
            "file": str(self.chemistry_file) if self.chemistry_file else None,
            "smiles": self.smiles,
            "charge": self.charge,
        }

    @classmethod
    def from_record(cls, record: dict) -> LigandSpec:
        return cls(
            record["residue"],
            Path(record["file"]) if record.get("file") else None,
            record.get("smiles"),
            record.get("charge"),
        )


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
    ligand: LigandSpec | None = None
    migrate: bool | None = None  # the systems table's `migrate` column (None: pulling.migrate)

    @property
    def input_files(self) -> list[Path]:
        """Every file setup reads for this system."""
        files = list(self.own_inputs.values()) if self.own_inputs else [self.structure]
        return files + ([self.ligand.chemistry_file] if self.ligand and self.ligand.chemistry_file else [])

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


@dataclass(frozen=True)
class Pulling:
    """``pulling:`` of the config (see claims.py and README "Many machines, one campaign")."""

    enabled: bool = True
    lease_minutes: float = 30.0
    poll_seconds: float = 60.0
    migrate: bool = True

    @property
    def lease_seconds(self) -> float:
        return 60.0 * self.lease_minutes


@dataclass
class Campaign:
    name: str
    config_file: str
    systems_file: str
    store: str  # with ~ and $VARIABLES expanded (a local store)
    scratch: str  # as configured
    platform: str
    defaults: Protocol
    systems: dict[str, System]
    expected_ns_per_day: dict = field(default_factory=dict)
    max_runtime_minutes: int = 2880
    local_rules: tuple = ()
    sites: dict = field(default_factory=dict)  # name -> sites.Site
    site: str | None = None  # the site this run is
    scratch_here: str = "scratch"  # this run's scratch (the site's, or `scratch`), expanded
    packing: Packing = field(default_factory=Packing)
    pulling: Pulling = field(default_factory=Pulling)
    simulations: list[Simulation] = field(default_factory=list)
    _by_key: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self._by_key = {(s.system, s.replica): s for s in self.simulations}

    def simulation(self, system: str, replica) -> Simulation:
        return self._by_key[(system, int(replica))]

    @property
    def pulls(self) -> bool:
        """Whether this run's site takes work from the store (claims) rather than a fixed share."""
        return bool(self.sites) and self.pulling.enabled

    @property
    def share(self) -> list[Simulation]:
        """The simulations this run may run: all of them; or this site's share; or,
        when sites pull, every simulation not pinned to another site."""
        if self.site is None:
            return self.simulations
        return [s for s in self.simulations if s.site == self.site or (self.pulls and s.site is None)]

    def may_migrate(self, simulation: Simulation) -> bool:
        """Whether a started simulation may continue on another site."""
        own = self.systems[simulation.system].migrate
        return self.pulling.migrate if own is None else own


def replica_seed(system: str, replica: int, salt: int) -> int:
    """Deterministic per-replica seed: stable across runs, machines and Python versions."""
    digest = hashlib.sha256(f"{system}/r{replica}/{salt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF or 1


ACCOUNT_PLACEHOLDER = "FILL-IN-YOUR-ALLOCATION"


def account_problem(config: dict) -> str | None:
    """A message if a cluster profile's Slurm account is still the placeholder."""
    if str(config.get("slurm_account", "")).startswith(ACCOUNT_PLACEHOLDER):
        return (
            f"the profile's Slurm account is still the placeholder '{ACCOUNT_PLACEHOLDER}': put your "
            "allocation (e.g. TG-MCB123456; `sacctmgr show assoc user=$USER` or TACC's `/usr/local/etc/taccinfo` "
            "lists yours) on the `slurm_account: &account` line of the profile's config.yaml"
        )
    return None


def load_campaign(
    config: dict, config_file: str = "config/config.yaml", base_dir: Path | str = ".", schema_dir: str | None = None
) -> Campaign:
    """Validate the config (filling defaults in place) and the systems table it names.

    Raises CampaignError with a one-line message on the first problem found.
    """
    base_dir = Path(base_dir)
    validate(config, load_schema("config.schema.yaml", schema_dir), config_file)
    protocol_schema = load_schema("config.schema.yaml", schema_dir)["properties"]["protocol"]
    defaults = _protocol(config["protocol"], config_file + ": protocol")
    systems_file = config["systems"]
    rows = read_systems_table(base_dir / systems_file, systems_file)
    row_schema = load_schema("systems.schema.yaml", schema_dir)
    systems: dict[str, System] = {}
    folded_ids: dict[str, System] = {}
    for line, row in rows:
        systems_entry = _system(row, line, systems_file, row_schema, protocol_schema, config["protocol"], base_dir)
        if systems_entry.id in systems:
            raise CampaignError(
                f"{systems_file}, line {line}: duplicate system id '{systems_entry.id}' "
                f"(first defined on line {systems[systems_entry.id].line}); ids must be unique"
            )
        first = folded_ids.setdefault(systems_entry.id.casefold(), systems_entry)
        if first is not systems_entry:
            raise CampaignError(
                f"{systems_file}, line {line}: system id '{systems_entry.id}' differs from '{first.id}' (line "
                f"{first.line}) only in case; ids name folders, which collide on case-insensitive file systems "
                "(macOS, Windows shares)"
            )
        systems[systems_entry.id] = systems_entry
    if not systems:
        raise CampaignError(f"{systems_file}: no systems defined (add one row per system below the header)")
    simulations = [
        Simulation(s.id, replica, replica_seed(s.id, replica, s.protocol.seed), s.protocol)
        for s in systems.values()
        for replica in range(1, s.replicas + 1)
    ]
    sites = {
        name: Site(name, spec["ns_per_day"], spec["capacity"], spec.get("scratch"), spec.get("profile"))
        for name, spec in config["sites"].items()
    }
    site = config.get("site")
    _check_sites(sites, site, systems, config_file, systems_file)
    store = _store_location(config["store"], config_file, base_dir)
    scratch_key = f"sites.{site}.scratch" if site and sites[site].scratch else "scratch"
    scratch_here = expand_path(
        sites[site].scratch if scratch_key != "scratch" else config["scratch"], f"{config_file}: {scratch_key}"
    )
    pulling = Pulling(**config["pulling"])
    if sites:
        plan = read_assignment(base_dir / ASSIGNMENT_FILE, sites)
        placed = (
            pinned_sites(simulations, systems, plan)
            if pulling.enabled
            else site_assignment(simulations, systems, sites, plan)
        )
        simulations = [replace(s, site=placed.get(layout.sim_name(s.system, s.replica))) for s in simulations]
    return Campaign(
        name=config["campaign"],
        config_file=config_file,
        systems_file=systems_file,
        store=store,
        scratch=config["scratch"],
        scratch_here=scratch_here,
        packing=Packing(**config["packing"]),
        pulling=pulling,
        platform=config["platform"],
        defaults=defaults,
        systems=systems,
        expected_ns_per_day={
            "explicit": config["expected_ns_per_day_explicit"],
            "implicit": config["expected_ns_per_day_implicit"],
        },
        max_runtime_minutes=config["max_runtime_minutes"],
        local_rules=tuple(config["local_rules"]),
        sites=sites,
        site=site,
        simulations=simulations,
    )


def _store_location(text: str, config_file: str, base_dir: Path) -> str:
    """The store as configured, with ~ and $VARIABLES expanded where it is local; a
    location that can never work is refused here, before anything runs."""
    from .locations import check_location, split_remote

    store = text if split_remote(text, base_dir) else expand_path(text, f"{config_file}: store")
    problem = check_location(store, base_dir)
    if problem:
        raise CampaignError(f"{config_file}: store: '{text}' {problem}")
    return store


def _check_sites(sites: dict, site: str | None, systems: dict, config_file: str, systems_file: str) -> None:
    if site is not None and site not in sites:
        known = f"one of: {', '.join(sites)}" if sites else "defined under `sites:` in the config (there are none)"
        raise CampaignError(
            f"{config_file}: site {site!r} (this run's site, from the profile or --config) must be {known}"
        )
    if sites and site is None:
        raise CampaignError(
            f"{config_file}: this campaign has sites ({', '.join(sites)}): say which one this run is, with "
            f"`site: NAME` under `config:` in this machine's profile or --config site=NAME"
        )
    for system in systems.values():
        if system.site is not None and system.site not in sites:
            raise CampaignError(
                f"{systems_file}, line {system.line} (id '{system.id}'), column site: '{system.site}' is not one of "
                f"the sites in {config_file} ({', '.join(sites) or 'none defined'})"
            )


def planning_work(simulations: list[Simulation], systems: dict[str, System], done_ns: dict | None = None) -> list[Work]:
    """Remaining work per simulation, with sizes relative to the campaign's median system."""
    sizes = sorted(system.estimated_atoms for system in systems.values()) or [1.0]
    typical = sizes[len(sizes) // 2] or 1.0
    done_ns = done_ns or {}
    works = []
    for simulation in simulations:
        name = layout.sim_name(simulation.system, simulation.replica)
        total = simulation.n_segments * simulation.protocol.segment_ns
        works.append(
            Work(
                name,
                simulation.system,
                max(0.0, total - done_ns.get(name, 0.0)),
                max(systems[simulation.system].estimated_atoms, 1.0) / typical,
            )
        )
    return works


def pinned_sites(simulations: list[Simulation], systems: dict[str, System], plan: dict[str, str]) -> dict[str, str]:
    """The simulations pinned to a site (the frozen plan, then the table's site column):
    with pulling, every other simulation may run on any site."""
    pinned = {}
    for simulation in simulations:
        name = layout.sim_name(simulation.system, simulation.replica)
        site = plan.get(name) or systems[simulation.system].site
        if site:
            pinned[name] = site
    return pinned


def site_assignment(
    simulations: list[Simulation], systems: dict[str, System], sites: dict, plan: dict[str, str]
) -> dict[str, str]:
    """Site of every simulation: frozen plan, then the table's site column, then
    automatic assignment in table order (see mdcampaign.sites)."""
    fixed = {}
    for simulation in simulations:
        name = layout.sim_name(simulation.system, simulation.replica)
        if name in plan:
            fixed[name] = plan[name]
        elif systems[simulation.system].site:
            fixed[name] = systems[simulation.system].site
    return assign(planning_work(simulations, systems), list(sites.values()), fixed)


# Keys that may change after a simulation started: extending it is the point of
# target_ns, and checkpoint frequency does not change the trajectory.
MUTABLE_KEYS = ("target_ns", "checkpoint_interval_ps")


# Segment records written before they named the version were written by this one.
FIRST_VERSION = "0.1.0"


def series(version: str) -> str:
    """The part of a version that a compatible release keeps (semantic versioning: the
    major number, or major.minor before 1.0)."""
    parts = version.split(".")
    return ".".join(parts[:2]) if parts[0] == "0" else parts[0]


def same_series(a: str, b: str) -> bool:
    return series(a) == series(b)


def check_started(campaign: Campaign, base_dir: Path | str = ".") -> None:
    """Refuse protocol changes for simulations that already have segments, and a major
    upgrade of mdcampaign for a campaign started with an earlier version.

    A simulation continues from the system and state it started with; changing, say,
    its temperature or timestep half-way would silently mix two protocols in one
    trajectory. Reads the manifest of segment 0 of every started simulation.
    """
    for simulation in campaign.simulations:
        record = Path(base_dir) / layout.fill(
            layout.SEGMENT_RECORD, **simulation.wildcards, segment=layout.segment_name(0)
        )
        try:
            manifest = read_manifest(record, missing_ok=True)
        except DataError as error:
            raise CampaignError(str(error)) from None
        if manifest is None:
            continue
        started_with = manifest.get("mdcampaign_version", FIRST_VERSION)
        if not same_series(started_with, __version__):
            raise CampaignError(
                f"{simulation.name} was started with mdcampaign {started_with} ({record}) and this is mdcampaign "
                f"{__version__}, a major change: finish this campaign with mdcampaign {series(started_with)}.x "
                f"(pip install 'mdcampaign=={series(started_with)}.*'), or start a new campaign folder "
                "(mdcampaign init) for this version"
            )
        # Records leave out keys at their as-before value (Protocol.record).
        recorded = {**ADDED_KEYS, **manifest["protocol"]} if manifest.get("protocol") else {}
        started_at = manifest.get("site")
        if campaign.sites and not campaign.pulls and started_at and simulation.site != started_at:
            raise CampaignError(
                f"{simulation.name} was started on site '{started_at}' ({record}) but is now assigned to site "
                f"'{simulation.site}'; a started simulation stays where it is: put it back with the systems "
                f"table's site column or {ASSIGNMENT_FILE} (`mdcampaign plan --write` keeps started ones in place)"
            )
        current = simulation.protocol.__dict__
        for key, value in recorded.items():
            if key in MUTABLE_KEYS or key not in current or current[key] == value:
                continue
            system = campaign.systems[simulation.system]
            raise CampaignError(
                f"{campaign.systems_file}, line {system.line} (id '{system.id}'): {key} is {current[key]!r} "
                f"but {simulation.name} was started with {value!r}; only {' and '.join(MUTABLE_KEYS)} may "
                "change once a simulation has started. Use a new system id for the new protocol, or move "
                f"{layout.RESULTS}/sims/{system.id} away to start these simulations over"
            )


def _protocol(values: dict, where: str, own_inputs: bool = False) -> Protocol:
    protocol = Protocol(**{key: values[key] for key in Protocol.keys()})  # noqa: SIM118 - Protocol.keys() is its fields
    for problem in protocol.problems(own_inputs=own_inputs):
        raise CampaignError(f"{where}: {problem}")
    return protocol


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


def _system(
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
    own_inputs = _own_inputs(own, overrides.get("engine", defaults["engine"]), where, base_dir)
    protocol = _protocol({**defaults, **overrides}, where, own_inputs=bool(own_inputs))
    if own_inputs.get("tpr"):
        if own["replicas"] > 1:
            raise CampaignError(
                f"{where}, column replicas: a .tpr runs as given, so its {own['replicas']} replicas would be "
                "identical; give the .gro, .top and .mdp (columns gromacs_topology, gromacs_mdp) to run replicas "
                "with their own random seeds"
            )
        return System(
            own["id"],
            own_inputs["tpr"],
            own["replicas"],
            protocol,
            line,
            own.get("site"),
            0,
            own_inputs,
            migrate=own.get("migrate"),
        )
    structure, heavy_atoms = _structure_path(own["structure"], where, base_dir)
    ligand = _ligand(own, protocol, where, base_dir)
    return System(
        own["id"],
        structure,
        own["replicas"],
        protocol,
        line,
        own.get("site"),
        heavy_atoms,
        own_inputs,
        ligand,
        own.get("migrate"),
    )


def _ligand(own: dict, protocol: Protocol, where: str, base_dir: Path) -> LigandSpec | None:
    """The row's ligand columns, checked (None without a ligand)."""
    given = [column for column in ("ligand_file", "ligand_smiles", "ligand_charge") if own.get(column) is not None]
    if not own.get("ligand"):
        if given:
            raise CampaignError(
                f"{where}, column {given[0]}: also give the column ligand (the ligand's residue name in the structure)"
            )
        return None
    if ("ligand_file" in given) == ("ligand_smiles" in given):
        raise CampaignError(
            f"{where}, column ligand: give the ligand's chemistry in exactly one of ligand_file "
            "(SDF/MOL2 with bond orders and its pose) or ligand_smiles (the pose is then the "
            "structure's residue)"
        )
    if protocol.engine != "openmm":
        raise CampaignError(
            f"{where}, column ligand: the {protocol.engine} engine does not parameterize ligands yet; "
            "use engine openmm for this system"
        )
    if not protocol.explicit:
        raise CampaignError(
            f"{where}, column ligand: ligands need solvent explicit (the implicit-solvent models "
            "have no parameters for GAFF2 atom types)"
        )
    chemistry = None
    if own.get("ligand_file"):
        chemistry = Path(own["ligand_file"])
        if chemistry.suffix.lower() not in LIGAND_CHEMISTRY_SUFFIXES:
            raise CampaignError(
                f"{where}, column ligand_file: expected {', '.join(LIGAND_CHEMISTRY_SUFFIXES)} (got '{chemistry.name}')"
            )
        resolved = chemistry if chemistry.is_absolute() else base_dir / chemistry
        if not resolved.is_file():
            raise CampaignError(f"{where}, column ligand_file: file '{chemistry}' does not exist")
    return LigandSpec(own["ligand"], chemistry, own.get("ligand_smiles"), own.get("ligand_charge"))


# A lab's own GROMACS inputs: column -> (key in System.own_inputs, file suffix).
GROMACS_INPUT_COLUMNS = {
    "gromacs_topology": ("top", ".top"),
    "gromacs_mdp": ("mdp", ".mdp"),
    "gromacs_index": ("ndx", ".ndx"),
}
TPR_MAGIC = b"VERSION"  # near the start of every .tpr


def _own_inputs(own: dict, engine: str, where: str, base_dir: Path) -> dict:
    """The lab's own engine inputs a row names, checked to exist ({} if none)."""
    structure = Path(own["structure"])
    given = {column: own[column] for column in GROMACS_INPUT_COLUMNS if own.get(column)}
    if structure.suffix.lower() != ".tpr" and not given:
        return {}
    if engine != "gromacs":
        what = "a .tpr" if structure.suffix.lower() == ".tpr" else "GROMACS inputs (" + ", ".join(given) + ")"
        raise CampaignError(f"{where}, column engine: {what} can only run with engine gromacs (got '{engine}')")
    inputs = {}
    if structure.suffix.lower() == ".tpr":
        if given:
            raise CampaignError(
                f"{where}, column {next(iter(given))}: give either a .tpr structure or a .gro "
                "with gromacs_topology and gromacs_mdp, not both"
            )
        inputs["tpr"] = structure
    else:
        missing = [c for c in ("gromacs_topology", "gromacs_mdp") if c not in given]
        if missing or structure.suffix.lower() != ".gro":
            problem = (
                f"{' and '.join(missing)} missing"
                if missing
                else f"the structure must be the .gro these inputs go with (got '{structure.name}')"
            )
            raise CampaignError(
                f"{where}, column {missing[0] if missing else 'structure'}: a lab's own GROMACS "
                f"inputs are a .gro structure, gromacs_topology and gromacs_mdp: {problem}"
            )
        inputs["gro"] = structure
        for column, text in given.items():
            key, suffix = GROMACS_INPUT_COLUMNS[column]
            if Path(text).suffix.lower() != suffix:
                raise CampaignError(f"{where}, column {column}: expected a {suffix} file (got '{text}')")
            inputs[key] = Path(text)
    for key, path in inputs.items():
        resolved = path if path.is_absolute() else base_dir / path
        column = next((c for c, (k, _) in GROMACS_INPUT_COLUMNS.items() if k == key), "structure")
        if not resolved.is_file():
            state = "is a directory" if resolved.is_dir() else "does not exist"
            raise CampaignError(f"{where}, column {column}: file '{path}' {state}")
        if key == "tpr":
            with open(resolved, "rb") as handle:
                if TPR_MAGIC not in handle.read(256):
                    raise CampaignError(f"{where}, column structure: '{path}' is not a GROMACS run input (.tpr)")
    return inputs


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
