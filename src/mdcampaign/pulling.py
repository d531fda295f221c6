"""Pulling: what a site takes from the store, and when it has nothing left to do.

Every decision here is a function of the campaign and one listing of the claims
(claims.Listing), so planning, the jobs that wait for work, the jobs that take it and
`mdcampaign status` decide alike. Plain data and arithmetic: planning imports this.
"""

from __future__ import annotations

import hashlib
import json
import math
import socket
import statistics
from dataclasses import dataclass, replace
from functools import cached_property

from . import layout
from .campaign import Campaign
from .claims import MAX_FAILURES, Listing
from .convergence import Goal, goals_of
from .runlock import process_exists
from .sites import HANDOVER_GAIN, HANDOVER_START_SECONDS, days, handover_gain, planning_work, preferred_order
from .systems import Simulation


def workers(campaign: Campaign) -> int:
    """Jobs this site runs at once: its capacity (simulations) over the slots of a job."""
    site = campaign.sites[campaign.site]
    return max(1, math.ceil(site.capacity / slots_per_job(campaign)))


def slots_per_job(campaign: Campaign) -> int:
    return campaign.packing.slots if campaign.packing.enabled else 1


def campaign_digest(campaign: Campaign, config: dict) -> str:
    """Names this site's work as configured (its simulations, their lengths, and the
    config its jobs are given): a new target, new systems or a changed setting give a
    new name, so that a finished site looks again and rounds that ran under other
    settings are not redone."""
    text = "\n".join(f"{s.name}\t{s.n_segments}" for s in campaign.share)
    text += "\n" + json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def dead_holders(listing: Listing, site: str, host: str | None = None) -> set[str]:
    """This site's holders on this host whose process is gone (a killed job, a run
    interrupted by a reboot): the site takes their claims back at once instead of
    waiting for the lease time. Other sites' claims always wait for it."""
    host = host or socket.gethostname().split(".")[0]
    dead = set()
    for claims in listing.simulations.values():
        job = claims.holder_job
        if not job or claims.ended or claims.holder_site != site:
            continue
        who = job.split(".s", 1)[0]
        owner, _, pid = who.rpartition("-")
        if owner.rsplit("_", 1)[-1] == host and pid.isdigit() and not process_exists(int(pid)):
            dead.add(claims.holder)
    return dead


@dataclass(frozen=True)
class SiteView:
    """One site's view of the campaign at one listing."""

    campaign: Campaign
    listing: Listing
    dead: frozenset = frozenset()

    @cached_property
    def goals(self) -> dict[str, Goal]:
        """The systems that stop when converged (convergence.py), with their goals."""
        return goals_of(self.campaign.systems)

    @cached_property
    def stops(self) -> dict[str, int]:
        """The systems that stopped when converged, as the store says: system -> segments."""
        return self.listing.stopped_systems(self.goals)

    def segments(self, simulation: Simulation) -> int:
        """Its segments: the cap, or fewer once its system stopped."""
        return min(simulation.n_segments, self.stops.get(simulation.system, simulation.n_segments))

    def complete(self, simulation: Simulation) -> bool:
        claims = self.listing.of(simulation.name)
        segments = self.segments(simulation)
        return claims.done >= segments and claims.analyzed >= segments

    @cached_property
    def slowest_replicas(self) -> dict[str, int]:
        """Per system judged at segment boundaries and not stopped yet: the segments its
        least advanced replica has in the store (given-up replicas aside)."""
        slowest: dict[str, int] = {}
        for simulation in self.campaign.simulations:
            system = simulation.system
            if system in self.goals and system not in self.stops and not self.given_up(simulation):
                done = self.listing.of(simulation.name).done
                slowest[system] = min(slowest.get(system, done), done)
        return slowest

    def in_step(self, simulation: Simulation) -> bool:
        """Whether its next segment keeps its system's replicas in step. A system that
        stops when converged is judged at the boundary all its replicas reached, so a
        replica ahead of the others waits for them: what it ran past a decision at
        that boundary would be wasted, and its analysis would cover more than theirs."""
        slowest = self.slowest_replicas.get(simulation.system)
        return slowest is None or self.listing.of(simulation.name).done <= slowest

    def given_up(self, simulation: Simulation) -> bool:
        return self.listing.of(simulation.name).failures >= MAX_FAILURES

    def held(self, simulation: Simulation) -> bool:
        return self.listing.of(simulation.name).held(self.campaign.pulling.lease_seconds, self.dead)

    def bound_elsewhere(self, simulation: Simulation) -> bool:
        """Started on another site, and not allowed to move."""
        origin = self.listing.of(simulation.name).origin
        return bool(origin) and origin != self.campaign.site and not self.campaign.may_migrate(simulation)

    def unfinished(self) -> list[Simulation]:
        """What this site waits for: its share, not complete, not given up."""
        return [
            s
            for s in self.campaign.share
            if not self.complete(s) and not self.given_up(s) and not self.bound_elsewhere(s)
        ]

    def reserved_elsewhere(self, simulation: Simulation) -> bool:
        """Released by a hand-over to another site, which takes it within a lease."""
        reserved = self.listing.of(simulation.name).reserved_for(self.campaign.pulling.lease_seconds)
        return reserved is not None and reserved != self.campaign.site

    def claimable(self) -> list[Simulation]:
        return [s for s in self.unfinished() if not self.held(s) and not self.reserved_elsewhere(s) and self.in_step(s)]

    def handover_candidates(self) -> list[tuple[Simulation, float]]:
        """What this site, with nothing left to claim, may ask for (the tail of a
        campaign): simulations another live site runs that this one would finish at
        least ``HANDOVER_GAIN`` sooner from the end of the holder's current segment, by
        the recorded speeds (`sites.handover_gain`; its start here included); never
        one pinned to a site or kept where it started by ``migrate: false``. Each with
        the seconds a segment takes its holder; the largest saving first."""
        campaign = self.campaign
        here = campaign.sites[campaign.site]
        speeds = self.measured_speeds()
        start_days = (2 * campaign.pulling.poll_seconds + HANDOVER_START_SECONDS) / 86400
        found = []
        for simulation in self.unfinished():
            claims = self.listing.of(simulation.name)
            holder = campaign.sites.get(claims.holder_site or "")
            if (
                holder is None
                or holder.name == campaign.site
                or not self.held(simulation)
                or claims.asked_by is not None
                or simulation.site is not None
                or not campaign.may_migrate(simulation)
            ):
                continue
            after = (claims.done + 1) * simulation.protocol.segment_ns  # its holder ends the segment it runs
            (rest,) = planning_work([simulation], campaign.systems, {simulation.name: after})
            if rest.ns <= 0:
                continue
            gain = handover_gain(rest, holder, here, speeds, start_days)
            if gain >= HANDOVER_GAIN:
                segment = replace(rest, ns=simulation.protocol.segment_ns)
                found.append((-gain * days(rest, holder, speeds), simulation, days(segment, holder, speeds) * 86400))
        return [(simulation, seconds) for _, simulation, seconds in sorted(found, key=lambda item: item[0])]

    def live_sites(self) -> dict[str, int]:
        """Sites holding live claims, and how many each holds."""
        held: dict[str, int] = {}
        for claims in self.listing.simulations.values():
            if claims.held(self.campaign.pulling.lease_seconds, self.dead):
                held[claims.holder_site] = held.get(claims.holder_site, 0) + 1
        return held

    def measured_speeds(self) -> dict[tuple[str, str], float]:
        """Median ns/day per (site, system), as the claims recorded them."""
        samples: dict[tuple[str, str], list[float]] = {}
        for name, claims in self.listing.simulations.items():
            system = layout.SimulationId.parse(name).system
            for site, speed in claims.speeds.items():
                samples.setdefault((site, system), []).append(speed)
        return {key: statistics.median(values) for key, values in samples.items()}

    def preferred(self) -> list[Simulation]:
        """The claimable simulations in the order this site takes them (sites.preferred_order)."""
        claimable = self.claimable()
        if not claimable:
            return []
        campaign = self.campaign
        done_ns = {s.name: self.listing.of(s.name).done * s.protocol.segment_ns for s in claimable}
        works = planning_work(claimable, campaign.systems, done_ns)
        live = self.live_sites()
        free = {name: max(0, site.capacity - live.get(name, 0)) for name, site in campaign.sites.items()}
        by_name = {s.name: s for s in claimable}
        # released mid-way by a site (its last holder) that may resume it from a checkpoint
        last = {
            s.name: self.listing.of(s.name).holder_site
            for s in claimable
            if self.listing.of(s.name).ended == "released"
        }
        resumable = frozenset(name for name, site in last.items() if site == campaign.site)
        elsewhere = {name: site for name, site in last.items() if site != campaign.site and site in live}
        only_here = frozenset(
            s.name
            for s in claimable
            if s.site == campaign.site
            or (not campaign.may_migrate(s) and self.listing.of(s.name).origin == campaign.site)
        )
        order = preferred_order(
            campaign.sites[campaign.site],
            works,
            list(campaign.sites.values()),
            set(live),
            free,
            self.measured_speeds(),
            resumable,
            elsewhere,
            only_here,
        )
        return [by_name[work.name] for work in order]
