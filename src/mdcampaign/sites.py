"""Which site (machine) runs which simulation.

Every simulation belongs to exactly one site. In order of precedence:

1. the frozen plan ``config/assignment.tsv`` (written by ``mdcampaign plan --write``),
2. the systems table's ``site`` column,
3. automatic assignment: simulations taken in the order of the systems table, each
   given to the site where it would finish earliest, counting the work already
   given to that site. Expected work is atoms x ns / the site's speed, divided over
   the simulations the site runs at once (its capacity). Appending systems to the
   table never moves simulations that were already assigned.

``mdcampaign plan --write`` re-balances the simulations that have not started,
largest first (longest-processing-time rule), using the speeds segments measured on
each site where there are any, and freezes the result so that every site reads the
same plan. Simulations that have started stay where they are.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import layout
from .errors import CampaignError

if TYPE_CHECKING:
    from .systems import Simulation, System

ASSIGNMENT_FILE = "config/assignment.tsv"


@dataclass(frozen=True)
class Site:
    name: str
    ns_per_day: float  # one simulation of a typical system of this campaign
    capacity: int  # simulations running at once
    scratch: str | None = None
    profile: str | None = None
    # where it lives, when it is another machine (mdcampaign sites deploy/start)
    host: str | None = None  # its login node, as ssh reaches it
    path: str | None = None  # the campaign folder there
    setup: tuple[str, ...] = ()  # shell lines that prepare a login shell there
    python: str = "python3"  # the Python that makes the campaign's environment there

    @property
    def profile_name(self) -> str | None:
        """The profile's name, as `snakemake --profile NAME` finds it once installed."""
        return self.profile.rstrip("/").rsplit("/", 1)[-1] if self.profile else None


@dataclass(frozen=True)
class Work:
    """One simulation's remaining work, for planning."""

    name: str
    system: str
    ns: float  # still to simulate
    size: float  # relative cost per ns (atoms relative to the campaign's typical system)


def days(work: Work, site: Site, speeds: dict[tuple[str, str], float]) -> float:
    """Days one simulation needs on a site: measured speed of its system there if
    known, else the site's configured speed scaled by the system's size."""
    measured = speeds.get((site.name, work.system))
    speed = measured if measured else site.ns_per_day / work.size
    return work.ns / speed


def assign(
    works: list[Work],
    sites: list[Site],
    fixed: dict[str, str] | None = None,
    speeds: dict[tuple[str, str], float] | None = None,
    largest_first: bool = False,
) -> dict[str, str]:
    """Map each simulation to a site so that all sites finish at about the same time.

    ``fixed``: simulations whose site is already decided (they count towards that
    site's load). Deterministic: ties go to the site listed first.
    """
    fixed = dict(fixed or {})
    speeds = speeds or {}
    by_name = {site.name: site for site in sites}
    load = {site.name: 0.0 for site in sites}  # days of work, before dividing by capacity
    for work in works:
        if work.name in fixed:
            load[fixed[work.name]] += days(work, by_name[fixed[work.name]], speeds)
    free = [w for w in works if w.name not in fixed]
    if largest_first:
        free.sort(key=lambda w: (-w.ns * w.size, w.name))
    result = dict(fixed)
    for work in free:
        best = min(
            sites, key=lambda site: ((load[site.name] + days(work, site, speeds)) / site.capacity, sites.index(site))
        )
        load[best.name] += days(work, best, speeds)
        result[work.name] = best.name
    return result


def projected_days(
    assignment: dict[str, str], works: list[Work], sites: list[Site], speeds: dict[tuple[str, str], float] | None = None
) -> dict[str, float]:
    """Days until each site finishes its share (its work spread over its capacity)."""
    speeds = speeds or {}
    by_name = {site.name: site for site in sites}
    total = {site.name: 0.0 for site in sites}
    for work in works:
        site = by_name[assignment[work.name]]
        total[site.name] += days(work, site, speeds)
    return {name: total[name] / by_name[name].capacity for name in total}


# A site leaves a simulation to another live site that would run it at least this many
# times faster, when that site has a free slot for it (see `preferred_order`).
LEAVE_TO_FASTER = 2.0


# A site asks for another site's running simulation only when it would finish the rest
# this much sooner, the hand-over included (the tail of a campaign; `handover_gain`).
HANDOVER_GAIN = 0.25
# What starting a handed-over simulation costs besides the polls (a pull job's start,
# taking its records from the store).
HANDOVER_START_SECONDS = 30


def handover_gain(
    rest: Work, holder: Site, taker: Site, speeds: dict[tuple[str, str], float], overhead_days: float = 0.0
) -> float:
    """The share of the time a simulation's ``rest`` (what is left after the holder's
    current segment) would take on its ``holder`` that ``taker`` saves by taking it
    over at that segment's end, its ``overhead_days`` (starting it there) included:
    0.25 means it finishes in three quarters of the time. Worth asking for at
    ``HANDOVER_GAIN`` or more."""
    there = days(rest, holder, speeds)
    if there <= 0:
        return 0.0
    return 1.0 - (days(rest, taker, speeds) + overhead_days) / there


def preferred_order(
    site: Site,
    claimable: list[Work],
    sites: list[Site],
    live: set[str],
    free: dict[str, int],
    speeds: dict[tuple[str, str], float] | None = None,
    resumable: frozenset = frozenset(),
    elsewhere: dict[str, str] | None = None,
    only_here: frozenset = frozenset(),
) -> list[Work]:
    """The order in which ``site`` takes claimable simulations (pulling), without those
    it should leave to a faster site.

    The rule: a site takes first the simulations it is best suited to, judged by its
    expected days for a simulation divided by the fewest days any live site (``live``:
    sites holding a lease now, and this one) would need; among equals the largest
    first (the longest-processing-time rule, so that the campaign does not end waiting
    for a large simulation started last). A simulation is left alone when a live site
    would run it ``LEAVE_TO_FASTER`` times faster and has a free slot (``free``: site ->
    slots not holding a lease): this site leaves the simulations it is least suited
    to, and among those the largest, up to the free slots of the faster sites; those
    start there about as soon and finish much sooner. Deterministic: ties go by name.

    Before all that, a site takes back what it can resume (``resumable``: simulations
    it released mid-segment, whose checkpoint is in its scratch) and takes last what
    another live site can resume (``elsewhere``: simulation -> that site), since a
    move costs the segment in flight; but not where a site at least
    ``LEAVE_TO_FASTER`` times faster could take it: then moving pays. Nothing is
    left that only this site may run (``only_here``: pinned to it, or started here and
    not allowed to move).
    """
    speeds = speeds or {}
    elsewhere = elsewhere or {}
    by_name = {s.name: s for s in sites}
    alive = [s for s in sites if s.name in live or s.name == site.name]
    ranked = []
    for work in claimable:
        here = days(work, site, speeds)
        fastest = min(days(work, other, speeds) for other in alive)
        # rounded: equal speed ratios must compare equal whatever the floating-point noise
        ranked.append((round(here / fastest, 6) if fastest > 0 else 1.0, -work.ns * work.size, work.name, work))
    others = [s for s in alive if s.name != site.name]

    def faster_site(work: Work) -> bool:
        return work.name not in only_here and any(
            days(work, site, speeds) >= LEAVE_TO_FASTER * days(work, other, speeds) for other in others
        )

    def resume_first(work: Work) -> int:
        if work.name in resumable and not faster_site(work):
            return 0
        there = by_name.get(elsewhere.get(work.name, ""))
        if there is not None and LEAVE_TO_FASTER * days(work, site, speeds) > days(work, there, speeds):
            return 2
        return 1

    ranked.sort(key=lambda item: (resume_first(item[3]), *item[:3]))

    # the faster sites' free slots, each filled with what this site is least suited to,
    # the largest first (a slow site should not be the one to run the largest)
    budget = sum(
        free.get(other.name, 0)
        for other in others
        if any(days(w, site, speeds) >= LEAVE_TO_FASTER * days(w, other, speeds) for w in claimable)
    )
    leavable = sorted((item for item in ranked if faster_site(item[3])), key=lambda item: (-item[0], item[1], item[2]))
    left = {item[2] for item in leavable[:budget]}
    return [work for *_, work in ranked if work.name not in left]


def read_assignment(path: Path, sites: dict) -> dict[str, str]:
    """The frozen plan: simulation -> site."""
    if not path.exists():
        return {}
    plan = {}
    with open(path, newline="") as handle:
        lines = [line for line in handle if not line.startswith("#")]
        for number, row in enumerate(csv.DictReader(lines, delimiter="\t"), start=3):
            simulation, site = (row.get("simulation") or "").strip(), (row.get("site") or "").strip()
            if not simulation or not site:
                raise CampaignError(f"{path}, line {number}: needs columns 'simulation' and 'site'")
            if site not in sites:
                raise CampaignError(
                    f"{path}, line {number}: site '{site}' is not one of the sites in the config ({', '.join(sites)})"
                )
            plan[simulation] = site
    return plan


def write_assignment(path: Path, assignment: dict[str, str]) -> None:
    with open(path, "w", newline="") as handle:
        handle.write("# Written by `mdcampaign plan --write`; copy it to every site.\n")
        handle.write("simulation\tsite\n")
        for simulation in sorted(assignment):
            handle.write(f"{simulation}\t{assignment[simulation]}\n")


def check_sites(sites: dict, site: str | None, systems: dict, config_file: str, systems_file: str) -> None:
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


def planning_work(
    simulations: list[Simulation],
    systems: dict[str, System],
    done_ns: dict | None = None,
    stopped: dict[str, int] | None = None,
) -> list[Work]:
    """Remaining work per simulation, with sizes relative to the campaign's median system.
    ``stopped``: system -> the segments it stopped at (continue until converged); the
    others count to their cap."""
    sizes = sorted(system.estimated_atoms for system in systems.values()) or [1.0]
    typical = sizes[len(sizes) // 2] or 1.0
    done_ns = done_ns or {}
    works = []
    for simulation in simulations:
        name = layout.sim_name(simulation.system, simulation.replica)
        segments = min(simulation.n_segments, (stopped or {}).get(simulation.system, simulation.n_segments))
        total = segments * simulation.protocol.segment_ns
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
