"""Pulling work across sites (issue 17): a discrete-event simulation of one campaign
spread over three sites, today's static assignment against pulling, both against a
lower bound. No MD runs; only `mdcampaign.sites` is used.

    python benchmarks/pulling.py [--seeds 5] [--simulations 500]

The model, in days:

- Campaign: --simulations simulations of 10 segments each, 50, 100 or 200 ns in all
  (equally likely), system size factor log-uniform in 0.3-3; work = ns x size. The
  campaign of seed s is drawn from random.Random(s); seeds 1..--seeds.
- Sites: a workstation (300 ns/day per simulation, 2 slots, no queue, always up),
  stampede (40 ns/day, 5 batch jobs x 8 slots) and frontera (200 ns/day, 4 jobs x 4
  slots). A simulation runs at the site's ns/day / size (`sites.days`).
- Batch jobs: each job stream (stampede 5, frontera 4) submits a job, which waits in
  the queue a lognormal time (median 2 h on stampede, 6 h on frontera; sigma 1.2 and
  1.0, so a day or two now and then; capped at 3 days), then runs until its 48 h wall
  time or until none of its slots has anything to do, and is submitted again while
  there is work left for it. The k-th job of a stream waits the k-th draw of that
  stream's own generator in every policy and in the bound, so all see the same queue.
- Scenario "frontera down": frontera runs and starts no job from day 2 to day 3; its
  running jobs are killed at day 2 (jobs due to start meanwhile start at day 3).
- A slot keeps a simulation until it finishes or the job ends; then the simulation is
  kept at its last finished segment (the current segment's progress is lost) and can
  be claimed again: at once after a job's end, 30 minutes (the lease) after a kill.
  Idle slots claim at every event, sites in the order above.
- STATIC: `assign(works, sites, largest_first=True)` binds every simulation to one
  site in advance; a site's slots take only its own simulations, largest first.
- PULLING: a free slot takes the first of `preferred_order(site, claimable, sites,
  live, free)`, claimable = neither running, finished nor leased; live = sites with a
  running job; free = idle slots of each live site. An empty list leaves it idle.
- LOWER BOUND: the availability integrated is that of job streams that never run out
  of work: the same queue-wait draws, every job running its full wall time (killed at
  day 2 on frontera in that scenario), the workstation always. The bound is the time at
  which that availability, at each site's ns/day per slot in work units, adds up to the
  campaign's work, or the longest simulation alone on the fastest site if later. It
  ignores segments lost at job ends, leases and that a simulation runs in one slot at a
  time, so no policy reaches it; it is exact only for the availability it integrates
  (a policy whose jobs end early re-queues them at other times than these streams).

Prints, per scenario, a Markdown table of the campaign's finish (days) per seed and the
median (min-max) over seeds, and where pulling's last simulation ran.
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

from mdcampaign.sites import Site, Work, assign, days, preferred_order

SITES = [Site("workstation", 300.0, 2), Site("stampede", 40.0, 40), Site("frontera", 200.0, 16)]


@dataclass(frozen=True)
class Batch:
    jobs: int
    slots: int
    queue_median: float  # days
    queue_sigma: float


BATCH = {"stampede": Batch(5, 8, 2 / 24, 1.2), "frontera": Batch(4, 4, 6 / 24, 1.0)}
WALL_TIME = 2.0
QUEUE_CAP = 3.0
LEASE = 0.5 / 24
SEGMENTS = 10
NS = (50, 100, 200)
SIZES = (0.3, 3.0)
SCENARIOS = {"all sites up": None, "frontera down from day 2 to day 3": ("frontera", 2.0, 3.0)}
# at one moment, simulation finishes before job ends (a segment ending at the wall time counts) before job starts
FINISH, END, DOWN, START, LEASED = range(5)


def campaign(seed: int, simulations: int) -> list[Work]:
    rng = random.Random(seed)
    return [Work(f"sim{i:04d}", f"sim{i:04d}", float(rng.choice(NS)),
                 math.exp(rng.uniform(math.log(SIZES[0]), math.log(SIZES[1])))) for i in range(simulations)]


class Queues:
    """Queue waits per job stream, the k-th draw the same whoever asks first."""

    def __init__(self, seed: int):
        self.seed = seed
        self.draws: dict[tuple[str, int], list[float]] = {}

    def wait(self, site: str, stream: int, number: int) -> float:
        draws = self.draws.setdefault((site, stream), [])
        if not draws:
            self.draws[(site, stream, "rng")] = random.Random(f"{self.seed}:{site}:{stream}")
        rng, batch = self.draws[(site, stream, "rng")], BATCH[site]
        while len(draws) <= number:
            draws.append(min(QUEUE_CAP, rng.lognormvariate(math.log(batch.queue_median), batch.queue_sigma)))
        return draws[number]

    def start(self, site: str, stream: int, number: int, submitted: float, outage) -> float:
        start = submitted + self.wait(site, stream, number)
        if outage and outage[0] == site and outage[1] <= start < outage[2]:
            start = outage[2]
        return start


@dataclass(eq=False)
class Sim:
    work: Work
    site: str | None = None  # STATIC only
    done: int = 0  # segments finished
    slot: Slot | None = None
    claimable_from: float = 0.0
    finished: float | None = None
    ran_on: list = field(default_factory=list)  # (site, day claimed)

    def remaining(self) -> Work:
        return replace(self.work, ns=self.work.ns * (SEGMENTS - self.done) / SEGMENTS)


@dataclass(eq=False)
class Slot:
    sim: Sim | None = None
    since: float = 0.0


@dataclass(eq=False)
class Job:
    site: Site
    stream: int
    number: int
    slots: list[Slot]
    running: bool = False


class Run:
    def __init__(self, works: list[Work], pulling: bool, outage, queues: Queues):
        self.sims = [Sim(work) for work in works]
        self.pulling, self.outage, self.queues = pulling, outage, queues
        if not pulling:
            plan = assign(works, SITES, largest_first=True)
            for sim in self.sims:
                sim.site = plan[sim.work.name]
        self.now = 0.0
        self.events: list = []
        self.order = itertools.count()
        self.jobs: list[Job] = []
        for site in SITES:
            if site.name in BATCH:
                for stream in range(BATCH[site.name].jobs):
                    self.submit(site, stream, 0)
            else:
                self.push(0.0, START, Job(site, 0, 0, [Slot() for _ in range(site.capacity)]))
        if outage:
            self.push(outage[1], DOWN, outage[0])

    def push(self, time: float, kind: int, what) -> None:
        heapq.heappush(self.events, (time, kind, next(self.order), what))

    def submit(self, site: Site, stream: int, number: int) -> None:
        start = self.queues.start(site.name, stream, number, self.now, self.outage)
        job = Job(site, stream, number, [Slot() for _ in range(BATCH[site.name].slots)])
        self.push(start, START, job)
        self.push(start + WALL_TIME, END, job)

    def unfinished(self, site: Site) -> bool:
        return any(sim.finished is None and (self.pulling or sim.site == site.name) for sim in self.sims)

    def stop(self, job: Job, claimable_from: float) -> None:
        job.running = False
        self.jobs.remove(job)
        for slot in job.slots:
            if slot.sim:
                segment = days(replace(slot.sim.work, ns=slot.sim.work.ns / SEGMENTS), job.site, {})
                slot.sim.done += int((self.now - slot.since) / segment + 1e-9)
                slot.sim.slot, slot.sim.claimable_from, slot.sim = None, claimable_from, None
                if claimable_from > self.now:
                    self.push(claimable_from, LEASED, None)
        if self.unfinished(job.site):
            self.submit(job.site, job.stream, job.number + 1)

    def claim(self, site: Site, live: set[str], free: dict[str, int]) -> Sim | None:
        claimable = [sim for sim in self.sims if sim.finished is None and sim.slot is None
                     and sim.claimable_from <= self.now and (self.pulling or sim.site == site.name)]
        if not claimable:
            return None
        if not self.pulling:
            return max(claimable, key=lambda sim: (sim.work.ns * sim.work.size, sim.work.name))
        by_name = {sim.work.name: sim for sim in claimable}
        order = preferred_order(site, [sim.remaining() for sim in claimable], SITES, live, free)
        return by_name[order[0].name] if order else None

    def fill(self) -> None:
        """Every idle slot claims; a batch job none of whose slots has work ends."""
        for site in SITES:
            for job in [job for job in self.jobs if job.site is site]:
                for slot in job.slots:
                    if slot.sim:
                        continue
                    live = {other.site.name for other in self.jobs}
                    free = {name: sum(idle.sim is None for other in self.jobs if other.site.name == name
                                      for idle in other.slots) for name in live}
                    sim = self.claim(site, live, free)
                    if sim is None:
                        break  # nothing changed for this site's other slots either
                    slot.sim, slot.since, sim.slot = sim, self.now, slot
                    sim.ran_on.append((site.name, self.now))
                    self.push(self.now + days(sim.remaining(), site, {}), FINISH, (slot, sim, self.now))
        for job in list(self.jobs):
            if job.site.name in BATCH and all(slot.sim is None for slot in job.slots):
                self.stop(job, self.now)

    def finish(self) -> float:
        """Runs the campaign to its end; returns the day its last simulation finished."""
        while any(sim.finished is None for sim in self.sims):
            self.now = self.events[0][0]
            while self.events and self.events[0][0] == self.now:
                _, kind, _, what = heapq.heappop(self.events)
                if kind == START:
                    what.running = True
                    self.jobs.append(what)
                elif kind == FINISH:
                    slot, sim, since = what
                    if slot.sim is sim and slot.since == since:  # not ended or killed meanwhile
                        sim.done, sim.finished, sim.slot, slot.sim = SEGMENTS, self.now, None, None
                elif kind == END and what.running:
                    self.stop(what, self.now)
                elif kind == DOWN:
                    for job in [job for job in self.jobs if job.site.name == what]:
                        self.stop(job, self.now + LEASE)
            self.fill()
        return max(sim.finished for sim in self.sims)


def lower_bound(works: list[Work], queues: Queues, outage) -> float:
    """The first day at which always-busy job streams could have done the campaign's work."""
    total = sum(work.ns * work.size for work in works)
    longest = max(min(days(work, site, {}) for site in SITES) for work in works)
    # the sites without a queue alone would be done by then
    horizon = total / sum(site.capacity * site.ns_per_day for site in SITES if site.name not in BATCH)
    changes = []  # (day, change of work units per day)
    for site in SITES:
        if site.name not in BATCH:
            changes.append((0.0, site.capacity * site.ns_per_day))
            continue
        rate = BATCH[site.name].slots * site.ns_per_day
        for stream in range(BATCH[site.name].jobs):
            submitted, number = 0.0, 0
            while submitted < horizon:
                start = queues.start(site.name, stream, number, submitted, outage)
                end = start + WALL_TIME
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


def spread(values: list[float], digits: int = 1) -> str:
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--simulations", type=int, default=500)
    args = parser.parse_args()
    for scenario, outage in SCENARIOS.items():
        rows = []
        for seed in range(1, args.seeds + 1):
            works, queues = campaign(seed, args.simulations), Queues(seed)
            static = Run(works, False, outage, queues).finish()
            pulling = Run(works, True, outage, queues)
            bound = lower_bound(works, queues, outage)
            rows.append((seed, static, pulling.finish(), bound, max(pulling.sims, key=lambda sim: sim.finished)))
        print(f"\n### {scenario}\n")
        print("| seed | static | pulling | lower bound | pulling / bound | static / bound "
              "| pulling's last simulation: work, where it ran (site, day claimed) |")
        print("|---|---|---|---|---|---|---|")
        for seed, static, pulled, bound, last in rows:
            where = ", ".join(f"{site} {day:.1f}" for site, day in last.ran_on)
            print(f"| {seed} | {static:.1f} | {pulled:.1f} | {bound:.1f} | {pulled / bound:.2f} | {static / bound:.2f} "
                  f"| {last.work.ns:.0f} ns × {last.work.size:.2f}: {where} |")
        columns = list(zip(*rows))
        print(f"| median (min–max) | {spread(columns[1])} | {spread(columns[2])} | {spread(columns[3])} "
              f"| {spread([p / b for p, b in zip(columns[2], columns[3])], 2)} "
              f"| {spread([s / b for s, b in zip(columns[1], columns[3])], 2)} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
