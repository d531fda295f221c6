"""Pulling work across sites (issue 17): a discrete-event simulation of one campaign
spread over three sites, today's static assignment against pulling, both against a
lower bound. No MD runs; the decisions are `mdcampaign.sites`' own.

    python benchmarks/pulling.py [--seeds 5] [--simulations 500] [--no-parking]

The model (times in days):

- Campaign: --simulations simulations of 10 segments each, 50, 100 or 200 ns in all
  (equally likely), system size factor log-uniform in 0.3-3; work = ns x size. The
  campaign of seed s is drawn from random.Random(s), seeds 1 to --seeds.
- Sites: a workstation (300 ns/day per simulation, 1 job of 2 slots, no queue, no
  wall time, always up), stampede (40 ns/day, 5 workers of 8-slot jobs) and frontera
  (200 ns/day, 4 workers of 4-slot jobs). A simulation runs at the site's ns/day /
  size (`sites.days`), the speed the rule is given too (no measurement noise).
- Jobs, as the `pull` and `await_work` rules run them (in both policies): each worker
  waits until its site has more simulations to take than its other workers' queued
  and running jobs have slots, then submits a job (looking at every event, where the
  rule looks every minute; setting up systems is not modelled). A batch job waits in the queue a lognormal time
  (median 2 h on stampede, 6 h on frontera; sigma 1.2 and 1.0, so a day or two now and
  then; capped at 3 days) and runs until its 48 h wall time or until every slot has
  found nothing to take: a slot takes a simulation, runs it to its end, takes the
  next, and stops for the rest of the job when there is none. The k-th job of a worker
  waits the k-th draw of that worker's own generator in both policies and the bound.
- Scenario "frontera down": frontera runs and starts no job from day 2 to day 3; its
  running jobs are killed at day 2 (jobs due to start meanwhile start at day 3), their
  claims held until the 30-minute lease expires.
- A job's end (wall time or kill) leaves each simulation it ran at its last finished
  segment; the current segment's progress is a checkpoint in that site's scratch,
  which the same site resumes. A job that reaches its wall time parks that progress in
  the store (parking.py), and any site continues it; a killed job cannot, and any other
  site redoes its segment (counted as "redone").
- STATIC: `assign(works, sites, largest_first=True)` binds every simulation to one
  site in advance; a site's slots take only its own simulations, largest first (more
  freedom than today's packed jobs have: each of those runs a batch fixed in advance).
- PULLING: a slot takes the first of `preferred_order(site, claimable, sites, live,
  free)` as `pulling.SiteView` calls it: claimable = neither running, finished nor
  under an unexpired lease; live = sites holding claims; free = each site's capacity
  minus the claims it holds (queued jobs' slots count as free).
- PULLING + HAND-OVER (issue 24; `pulljob.StoreClaimer` and `await_work` do it): as pulling, and a slot with
  nothing to claim asks for the simulation running on another site that it would
  finish soonest relative to its holder, if `sites.handover_gain` (its start, 2.5
  minutes, included) reaches `HANDOVER_GAIN`; it waits for the end of the holder's
  current segment (nothing redone) and continues it. A worker of a site with nothing
  to claim submits a job for such hand-overs when they pay after its median queue wait.
- --no-parking: as before parking was built, every site but the one that ran it redoes
  a segment's progress left at a job's end.
- LOWER BOUND: the availability integrated is that of workers that never run out of
  work: the same queue-wait draws, every job running its full wall time (killed at day
  2 on frontera in that scenario), the workstation always. The bound is the day at
  which that availability, at each site's ns/day per slot, adds up to the campaign's
  work, or the longest simulation alone on the fastest site if later. It ignores
  redone segments, leases and that a simulation runs in one slot at a time, so no
  policy reaches it; and it holds only for the availability it integrates (a policy
  whose jobs end early queues its next ones at other times than these workers do).

Prints, per scenario, a Markdown table of the campaign's finish (days) per seed and the
median (min-max) over seeds, with pulling's redone work (% of the campaign's) and where
its last simulation ran.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import math
import random
import statistics
import sys
from dataclasses import dataclass, field, replace

from mdcampaign.sites import (
    HANDOVER_GAIN,
    HANDOVER_START_SECONDS,
    Site,
    Work,
    assign,
    days,
    handover_gain,
    preferred_order,
)

SITES = [Site("workstation", 300.0, 2), Site("stampede", 40.0, 40), Site("frontera", 200.0, 16)]


@dataclass(frozen=True)
class Batch:
    slots: int
    queue_median: float = 0.0  # days; 0: no queue
    queue_sigma: float = 0.0
    wall_time: float = math.inf


# per site: slots of one job; workers = capacity / slots, as pulling.workers() counts them
BATCH = {"workstation": Batch(2), "stampede": Batch(8, 2 / 24, 1.2, 2.0), "frontera": Batch(4, 6 / 24, 1.0, 2.0)}
QUEUE_CAP = 3.0
LEASE = 0.5 / 24
SEGMENTS = 10
NS = (50, 100, 200)
SIZES = (0.3, 3.0)
SCENARIOS = {"all sites up": None, "frontera down from day 2 to day 3": ("frontera", 2.0, 3.0)}
# Events at one moment: a simulation finishing at its job's wall time finishes, a
# hand-over at a segment's end happens before the job ends; starts come last.
FINISH, HANDOVER, END, DOWN, LEASED, START, NEXT = range(7)
# Starting a handed-over simulation: two polls of the store (a minute each, as the
# profiles poll) and the start itself, as `pulling.SiteView.handover_candidates` counts it.
HANDOVER_OVERHEAD = (2 * 60 + HANDOVER_START_SECONDS) / 86400


def campaign(seed: int, simulations: int) -> list[Work]:
    rng = random.Random(seed)
    return [
        Work(
            f"sim{i:04d}",
            f"sim{i:04d}",
            float(rng.choice(NS)),
            math.exp(rng.uniform(math.log(SIZES[0]), math.log(SIZES[1]))),
        )
        for i in range(simulations)
    ]


def workers(site: Site) -> int:
    return math.ceil(site.capacity / BATCH[site.name].slots)


class Queues:
    """Queue waits per worker; the k-th draw is the same whoever asks for it first."""

    def __init__(self, seed: int):
        self.seed = seed
        self.draws: dict[tuple[str, int], tuple[random.Random, list[float]]] = {}

    def start(self, site: str, worker: int, number: int, submitted: float, outage) -> float:
        """When the worker's job number ``number``, submitted then, starts."""
        batch = BATCH[site]
        if not batch.queue_median:
            return submitted
        rng, draws = self.draws.setdefault((site, worker), (random.Random(f"{self.seed}:{site}:{worker}"), []))
        while len(draws) <= number:
            draws.append(min(QUEUE_CAP, rng.lognormvariate(math.log(batch.queue_median), batch.queue_sigma)))
        start = submitted + draws[number]
        if outage and outage[0] == site and outage[1] <= start < outage[2]:
            start = outage[2]
        return start


@dataclass(eq=False)
class Sim:
    work: Work
    site: str | None = None  # STATIC: where it runs
    done: int = 0  # segments finished
    # (site, part of the next segment done there, parked in the store for any site)
    checkpoint: tuple[str, float, bool] | None = None
    slot: Slot | None = None
    lease: tuple[str, float] | None = None  # (site, expiry) of a killed job's claim
    finished: float | None = None
    ran_on: list = field(default_factory=list)  # (site, day claimed)
    requested: bool = False  # a faster site asked for it at its current segment's end

    def remaining(self) -> Work:
        """What the claims show: the segments finished, not the checkpoints."""
        return replace(self.work, ns=self.work.ns * (SEGMENTS - self.done) / SEGMENTS)


@dataclass(eq=False)
class Slot:
    job: Job
    sim: Sim | None = None
    since: float = 0.0
    progress: float = 0.0  # segments of its simulation finished or checkpointed when it took it
    stopped: bool = False
    waiting: Sim | None = None  # asked for that one, until its holder's segment ends


@dataclass(eq=False)
class Job:
    site: Site
    worker: int
    slots: list[Slot] = field(default_factory=list)
    running: bool = False
    ends: float = math.inf  # its wall time


class Run:
    def __init__(
        self, works: list[Work], pulling: bool, outage, queues: Queues, handover: bool = False, parking: bool = True
    ):
        self.sims = [Sim(work) for work in works]
        self.pulling, self.outage, self.queues, self.handover = pulling, outage, queues, handover
        self.parking = parking  # a job at its wall time parks its segment's progress for any site
        self.handovers = 0
        if not pulling:
            plan = assign(works, SITES, largest_first=True)
            for sim in self.sims:
                sim.site = plan[sim.work.name]
        self.now = 0.0
        self.events: list = []
        self.order = itertools.count()
        self.jobs: list[Job] = []  # running
        self.pending: dict[tuple[str, int], Job | None] = {(s.name, w): None for s in SITES for w in range(workers(s))}
        self.submitted = {key: 0 for key in self.pending}
        self.redone = 0.0  # work units of checkpoints left behind by simulations that moved
        if outage:
            self.push(outage[1], DOWN, outage[0])

    def push(self, time: float, kind: int, what) -> None:
        heapq.heappush(self.events, (time, kind, next(self.order), what))

    def segment_days(self, sim: Sim, site: Site) -> float:
        return days(replace(sim.work, ns=sim.work.ns / SEGMENTS), site, {})

    def held(self, sim: Sim) -> str | None:
        """The site holding a claim on it, if any."""
        if sim.slot:
            return sim.slot.job.site.name
        return sim.lease[0] if sim.lease and sim.lease[1] > self.now else None

    def preferred(self, site: Site) -> list[Sim]:
        claimable = [
            sim
            for sim in self.sims
            if sim.finished is None and self.held(sim) is None and (self.pulling or sim.site == site.name)
        ]
        if not self.pulling:
            return sorted(claimable, key=lambda sim: (-sim.work.ns * sim.work.size, sim.work.name))
        holding: dict[str, int] = {}
        for sim in self.sims:
            if (holder := self.held(sim)) is not None:
                holding[holder] = holding.get(holder, 0) + 1
        free = {other.name: max(0, other.capacity - holding.get(other.name, 0)) for other in SITES}
        by_name = {sim.work.name: sim for sim in claimable}
        # what the claims tell: the site that released a simulation mid-segment can resume it
        resumable = frozenset(sim.work.name for sim in claimable if sim.checkpoint and sim.checkpoint[0] == site.name)
        elsewhere = {
            sim.work.name: sim.checkpoint[0]
            for sim in claimable
            if sim.checkpoint and sim.checkpoint[0] != site.name and sim.checkpoint[0] in holding
        }
        order = preferred_order(
            site,
            [sim.remaining() for sim in claimable],
            SITES,
            set(holding),
            free,
            resumable=resumable,
            elsewhere=elsewhere,
        )
        return [by_name[work.name] for work in order]

    def take(self, slot: Slot) -> None:
        """The slot takes the site's first preferred simulation, or stops for the rest of the job."""
        site = slot.job.site
        choice = self.preferred(site)
        if not choice and self.handover and (asked := self.handover_candidate(slot)):
            holder, sim, at = asked
            sim.requested, slot.waiting = True, sim
            self.push(at, HANDOVER, (holder, sim, slot))
            return
        if not choice:
            slot.stopped = True
            if all(other.stopped for other in slot.job.slots):
                self.end(slot.job, killed=False)
            return
        self.start(slot, choice[0])

    def start(self, slot: Slot, sim: Sim) -> None:
        site = slot.job.site
        if sim.checkpoint and sim.checkpoint[2]:  # parked: continued wherever it is taken
            sim.checkpoint = (site.name, sim.checkpoint[1], True)
        if sim.checkpoint and sim.checkpoint[0] != site.name:
            self.redone += sim.checkpoint[1] * sim.work.ns / SEGMENTS * sim.work.size
        part = sim.checkpoint[1] if sim.checkpoint and sim.checkpoint[0] == site.name else 0.0
        slot.sim, slot.since, slot.progress, sim.slot, sim.lease = sim, self.now, sim.done + part, slot, None
        sim.ran_on.append((site.name, self.now))
        self.push(self.now + (SEGMENTS - slot.progress) * self.segment_days(sim, site), FINISH, (slot, sim))

    def handover_candidate(self, slot: Slot) -> tuple[Slot, Sim, float] | None:
        """The running simulation of another site that this slot's site would finish the
        soonest relative to its holder (`sites.handover_gain`), taken over at the end of
        the holder's current segment within this job's wall time; None if none pays."""
        found = self.handover_candidates(slot.job.site, slot.job.ends, HANDOVER_OVERHEAD)
        return max(found, key=lambda item: item[0])[1:] if found else None

    def handover_candidates(self, site: Site, until: float, overhead: float) -> list[tuple[float, Slot, Sim, float]]:
        """(days saved, holder's slot, simulation, when its segment ends) of every
        simulation running elsewhere worth handing over to ``site``."""
        found = []
        for job in self.jobs:
            if job.site is site:
                continue
            for holder in job.slots:
                sim = holder.sim
                if sim is None or sim.requested:
                    continue
                segment = self.segment_days(sim, job.site)
                boundary = math.floor(holder.progress + (self.now - holder.since) / segment + 1e-9) + 1
                at = holder.since + (boundary - holder.progress) * segment
                if boundary >= SEGMENTS or at >= min(job.ends, until):
                    continue
                rest = replace(sim.work, ns=sim.work.ns * (SEGMENTS - boundary) / SEGMENTS)
                gain = handover_gain(rest, job.site, site, {}, overhead)
                if gain >= HANDOVER_GAIN:
                    found.append((gain * days(rest, job.site, {}), holder, sim, at))
        return found

    def handed_over(self, holder: Slot, sim: Sim, taker: Slot) -> None:
        """The holder's segment ended: it stores it and releases the simulation, which
        the waiting slot takes (or, if the holder lost it meanwhile, looks again)."""
        sim.requested, taker.waiting = False, None
        if not taker.job.running:
            return
        if holder.sim is not sim:
            self.take(taker)
            return
        sim.done = int(holder.progress + (self.now - holder.since) / self.segment_days(sim, holder.job.site) + 0.5)
        sim.checkpoint, sim.slot, holder.sim = None, None, None
        self.handovers += 1
        self.start(taker, sim)
        self.push(self.now, NEXT, holder)  # the holder's slot looks for its next one

    def end(self, job: Job, killed: bool) -> None:
        """The job ends; its simulations are left at their last segment, a killed job's
        still claimed until the lease expires."""
        job.running = False
        self.jobs.remove(job)
        self.pending[(job.site.name, job.worker)] = None
        for slot in job.slots:
            sim = slot.sim
            if sim is None:
                continue
            progress = slot.progress + (self.now - slot.since) / self.segment_days(sim, job.site)
            sim.done = int(progress + 1e-9)
            part = progress - sim.done
            sim.checkpoint = (job.site.name, part, self.parking and not killed) if part > 1e-9 else None
            sim.slot, slot.sim = None, None
            if killed:
                sim.lease = (job.site.name, self.now + LEASE)
                self.push(self.now + LEASE, LEASED, None)

    def submit_waiting(self) -> None:
        """Each idle worker submits a job when its site has more to take than its other
        workers' jobs have slots (`await_work`)."""
        for site in SITES:
            idle = [key for key, job in self.pending.items() if key[0] == site.name and job is None]
            if not idle:
                continue
            wanted = len(self.preferred(site))
            if self.handover and not wanted:  # the tail: a job to take over what runs slower elsewhere
                wait = BATCH[site.name].queue_median  # what the driver can expect of the queue
                wanted = len(self.handover_candidates(site, math.inf, wait + HANDOVER_OVERHEAD))
            for key in idle:
                others = sum(job is not None for (name, _), job in self.pending.items() if name == site.name)
                if wanted <= others * BATCH[site.name].slots:
                    break
                job = Job(site, key[1])
                job.slots = [Slot(job) for _ in range(BATCH[site.name].slots)]
                start = self.queues.start(site.name, key[1], self.submitted[key], self.now, self.outage)
                self.submitted[key] += 1
                self.pending[key] = job
                self.push(start, START, job)

    def finish(self) -> float:
        """Runs the campaign to its end; returns the day its last simulation finished."""
        self.submit_waiting()
        while any(sim.finished is None for sim in self.sims):
            if not self.events:
                raise RuntimeError(f"day {self.now:.2f}: simulations left and no site will take them")
            self.now, kind, _, what = heapq.heappop(self.events)
            if kind == START:
                what.running = True
                self.jobs.append(what)
                if BATCH[what.site.name].wall_time < math.inf:
                    what.ends = self.now + BATCH[what.site.name].wall_time
                    self.push(what.ends, END, what)
                for slot in what.slots:
                    if what.running:
                        self.take(slot)
            elif kind == FINISH:
                slot, sim = what
                if slot.sim is sim:  # not ended or killed meanwhile
                    sim.done, sim.finished, sim.checkpoint, sim.slot, slot.sim = SEGMENTS, self.now, None, None, None
                    self.take(slot)
            elif kind == HANDOVER:
                self.handed_over(*what)
            elif kind == NEXT:
                if what.job.running and what.sim is None and not what.stopped:
                    self.take(what)
            elif kind == END and what.running:
                self.end(what, killed=False)
            elif kind == DOWN:
                for job in [job for job in self.jobs if job.site.name == what]:
                    self.end(job, killed=True)
            # after every event (a lease expiring among them) the waiting workers look again
            self.submit_waiting()
        return max(sim.finished for sim in self.sims)


def lower_bound(works: list[Work], queues: Queues, outage) -> float:
    """The first day at which workers that never run out of work could have done the campaign's work."""
    total = sum(work.ns * work.size for work in works)
    longest = max(min(days(work, site, {}) for site in SITES) for work in works)
    always = [site for site in SITES if BATCH[site.name].wall_time == math.inf]
    horizon = total / sum(site.capacity * site.ns_per_day for site in always)  # they alone are done by then
    changes = []  # (day, change of work units per day)
    for site in SITES:
        rate = BATCH[site.name].slots * site.ns_per_day
        if site in always:
            changes += [(0.0, rate)] * workers(site)
            continue
        for worker in range(workers(site)):
            submitted, number = 0.0, 0
            while submitted < horizon:
                start = queues.start(site.name, worker, number, submitted, outage)
                end = start + BATCH[site.name].wall_time
                if outage and outage[0] == site.name and start < outage[1] < end:
                    end = outage[1]
                changes += [(start, rate), (end, -rate)]
                submitted, number = end, number + 1
    done = rate = last = 0.0
    for day, change in sorted(changes):
        if rate and done + rate * (day - last) >= total:
            break
        done, rate, last = done + rate * (day - last), rate + change, day
    return max(longest, last + (total - done) / rate)


def spread(values: list[float], digits: int = 1, unit: str = "") -> str:
    return f"{statistics.median(values):.{digits}f}{unit} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--simulations", type=int, default=500)
    parser.add_argument(
        "--no-parking",
        action="store_true",
        help="as before parking: a segment's progress left at a job's end is redone by any other site",
    )
    args = parser.parse_args()
    parking = not args.no_parking
    for scenario, outage in SCENARIOS.items():
        rows = []
        for seed in range(1, args.seeds + 1):
            works, queues = campaign(seed, args.simulations), Queues(seed)
            static = Run(works, False, outage, queues, parking=parking).finish()
            pulling = Run(works, True, outage, queues, parking=parking)
            pulled = pulling.finish()
            tail = Run(works, True, outage, queues, handover=True, parking=parking)
            handed = tail.finish()
            total = sum(work.ns * work.size for work in works)
            rows.append(
                (
                    seed,
                    static,
                    pulled,
                    handed,
                    lower_bound(works, queues, outage),
                    pulling.redone / total,
                    tail.redone / total,
                    tail.handovers,
                    max(tail.sims, key=lambda sim: sim.finished),
                )
            )
        print(f"\n### {scenario}\n")
        print(
            "| seed | static | pulling | pulling + hand-over | lower bound | static / bound | pulling / bound "
            "| + hand-over / bound | work redone: pulling, + hand-over | hand-overs "
            "| last simulation (hand-over): ns × size, claims (site, day) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for seed, static, pulled, handed, bound, redone, redone_tail, handovers, last in rows:
            claims = ", ".join(f"{site} {day:.1f}" for site, day in last.ran_on)
            print(
                f"| {seed} | {static:.1f} | {pulled:.1f} | {handed:.1f} | {bound:.1f} | {static / bound:.2f} "
                f"| {pulled / bound:.2f} | {handed / bound:.2f} | {100 * redone:.1f}%, {100 * redone_tail:.1f}% "
                f"| {handovers} | {last.work.ns:.0f} × {last.work.size:.2f}: {claims} |"
            )
        _, static, pulled, handed, bound, redone, redone_tail, handovers, _ = zip(*rows, strict=True)

        def ratio(values, bound=bound):
            return spread([v / b for v, b in zip(values, bound, strict=True)], 2)

        print(
            f"| median (min–max) | {spread(static)} | {spread(pulled)} | {spread(handed)} | {spread(bound)} "
            f"| {ratio(static)} | {ratio(pulled)} | {ratio(handed)} "
            f"| {spread([100 * r for r in redone], unit='%')}, {spread([100 * r for r in redone_tail], unit='%')} "
            f"| {spread(handovers, 0)} | |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
