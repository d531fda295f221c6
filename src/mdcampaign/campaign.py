"""The campaign definition: config.yaml plus the systems table, validated and expanded
into simulations (one per system and replica), with the sites that share it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from . import layout
from .configuration import expand_path
from .engines import unknown_engine
from .errors import CampaignError
from .protocol import Protocol, flatten_until
from .sites import ASSIGNMENT_FILE, Site, check_sites, pinned_sites, read_assignment, site_assignment
from .slots import Packing
from .systems import (
    Simulation,
    System,
    check_groups,
    checked_protocol,
    parse_system,
    read_systems_table,
    replica_seed,
)
from .validation import load_schema, validate


@dataclass(frozen=True)
class Pulling:
    """``pulling:`` of the config (see claims.py and docs/guide/many-machines.md)."""

    enabled: bool
    lease_minutes: float
    poll_seconds: float
    migrate: bool

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
    expected_ns_per_day: dict  # solvent -> ns/day
    max_runtime_minutes: int
    local_rules: tuple
    sites: dict  # name -> sites.Site
    site: str | None  # the site this run is
    scratch_here: str  # this run's scratch (the site's, or `scratch`), expanded
    packing: Packing
    pulling: Pulling
    simulations: list[Simulation]
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


def load_campaign(
    config: dict, config_file: str = "config/config.yaml", base_dir: Path | str = ".", schema_dir: str | None = None
) -> Campaign:
    """Validate the config (filling defaults in place) and the systems table it names.

    Raises CampaignError with a one-line message on the first problem found.
    """
    base_dir = Path(base_dir)
    if isinstance(config.get("protocol"), dict):
        flatten_until(config["protocol"], config_file)
    validate(config, load_schema("config.schema.yaml", schema_dir), config_file)
    protocol_schema = load_schema("config.schema.yaml", schema_dir)["properties"]["protocol"]
    if problem := unknown_engine(config["protocol"]["engine"]):
        raise CampaignError(f"{config_file}: protocol.engine: {problem}")
    defaults = checked_protocol(config["protocol"], config_file + ": protocol")
    systems_file = config["systems"]
    rows = read_systems_table(base_dir / systems_file, systems_file)
    row_schema = load_schema("systems.schema.yaml", schema_dir)
    systems: dict[str, System] = {}
    folded_ids: dict[str, System] = {}
    for line, row in rows:
        systems_entry = parse_system(row, line, systems_file, row_schema, protocol_schema, config["protocol"], base_dir)
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
    check_groups(systems, systems_file)
    simulations = [
        Simulation(s.id, replica, replica_seed(s.id, replica, s.protocol.seed), s.protocol)
        for s in systems.values()
        for replica in range(1, s.replicas + 1)
    ]
    sites = {
        name: Site(
            name,
            spec["ns_per_day"],
            spec["capacity"],
            spec.get("scratch"),
            spec.get("profile"),
            spec.get("host"),
            spec.get("path"),
            (spec["setup"],) if isinstance(spec.get("setup"), str) else tuple(spec.get("setup") or ()),
            spec["python"],
        )
        for name, spec in config["sites"].items()
    }
    site = config.get("site")
    check_sites(sites, site, systems, config_file, systems_file)
    store = _store_location(config["store"], config_file, base_dir)
    scratch_key = f"sites.{site}.scratch" if site and sites[site].scratch else "scratch"
    scratch_here = expand_path(
        sites[site].scratch if scratch_key != "scratch" else config["scratch"], f"{config_file}: {scratch_key}"
    )
    pulling = Pulling(**config["pulling"])
    check_goals(systems, systems_file)
    if sites:
        plan = read_assignment(base_dir / ASSIGNMENT_FILE, sites)
        placed = (
            pinned_sites(simulations, systems, plan)
            if pulling.enabled
            else site_assignment(simulations, systems, sites, plan)
        )
        simulations = [replace(s, site=placed.get(layout.sim_name(s.system, s.replica))) for s in simulations]
        if not pulling.enabled:
            check_goal_sites(systems, simulations, systems_file)
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


def check_goals(systems: dict[str, System], systems_file: str) -> None:
    """Continue until converged needs an error across replicas, so two of them."""
    for system in systems.values():
        observable = system.protocol.until_observable
        if not observable:
            continue
        where = f"{systems_file}, line {system.line} (id '{system.id}')"
        if system.replicas < 2:
            raise CampaignError(
                f"{where}: until_observable ({observable}) needs at least 2 replicas (the error it stops at is "
                f"the spread across replicas; this system has {system.replicas})"
            )


def check_goal_sites(systems: dict[str, System], simulations: list[Simulation], systems_file: str) -> None:
    """A system that stops when converged is judged from all its replicas at once: with
    fixed shares they run on one site (each site keeps its own replicas in step)."""
    for system in systems.values():
        if not system.protocol.until_observable:
            continue
        places = sorted({s.site or "" for s in simulations if s.system == system.id})
        if len(places) > 1:
            raise CampaignError(
                f"{systems_file}, line {system.line} (id '{system.id}'): until_observable needs all its replicas on "
                f"one site, and the assignment spreads them over {', '.join(places)}: give the system a site column"
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
