"""Claims on the store: which site and job holds which simulation, with no server.

A job's slot takes a simulation by creating the next *claim* of it in the store, an
exclusive ``mkdir`` (atomic on a local or network file system, and run over SSH as
one remote command). The claim is a lease: the job renews it while it runs (it
creates and removes an entry in the claim's folder, which stamps the folder); a claim not renewed for the lease time is expired, and anyone may
take the simulation over by creating the next claim. Ages are measured with the
store's clock only (the modification time the store's file system gives a claim,
against a file created there just before), never with a site's clock, since sites'
clocks disagree (a site hours ahead or behind neither takes a live claim nor keeps a dead one).

In the store, per simulation::

    claims/<system>/r<replica>/
        000004/                       the newest claim; its mtime is the last renewal
            holder+<site>+<job>       who holds it (content: host, pid, time)
            released | failed         how it ended, once it has (absent while held)
        segments-0007                 segments in the store, as its last holder saw them
        analyzed-0007                 the analysis of that many segments is in the store
        origin+<site>                 where segment 0 ran (for migrate: false)
        speed+<site>+<ns/day>         the last measured speed there
        parked-0007+<step>            segment 7's progress up to that step is parked in
                                      the store, for any site to continue (parking.py)
        handover+<claim>+<site>/      a site asks to take that claim over at the end of
                                      its holder's segment; once released, it is
                                      that site's for a lease (the tail hand-over)

A holder that lost its claim (a newer claim exists, or its own was released) stops
and discards: publishing a segment runs `guard_script` in the same step as the
rename into place, which refuses unless the holder's claim is the newest and was
renewed less than half a lease ago. A taker creates a claim only after finding the
old one at least a whole lease old, in the same script; so a segment is never
published by two holders (see docs/guide/many-machines.md).

Every operation is one POSIX shell script run in the store's root (GNU ``find`` and
``stat``, as on Linux file servers and clusters), so a remote store costs one SSH
call per operation and a local one a ``sh`` process, with the same code.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import layout
from .store import Store, shell_program

CLAIMS = layout.STORE_CLAIMS
GENERATION_DIGITS = 6
# A simulation whose segments failed this many times (each time in a claim of its
# own) is not taken again until its claims are cleared (docs/operations/when-things-go-wrong.md).
MAX_FAILURES = 3
# A holder renews every LEASE / RENEWALS_PER_LEASE; it publishes only while its claim
# is younger than LEASE / 2 (see guard_script).
RENEWALS_PER_LEASE = 6

HOLDER_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _file_name_part(text: str, what: str) -> str:
    """``text`` as part of one file name in the store: refused if it could name another
    folder (a '/', or a NUL or newline a shell script would split on); everything else
    is quoted where it enters a script."""
    if any(c in text for c in "/\0\n"):
        raise ValueError(f"{what} {text!r} cannot be part of a file name in the store")
    return text


def simulation_dir(name: str) -> str:
    """The claims folder of a simulation ``<system>/r<replica>``, relative to the store."""
    return f"{CLAIMS}/{name}"


def holder_name(site: str, slot: int | None = None) -> str:
    """This process's name in claims: its site, its Slurm job if any, host and pid."""
    job = os.environ.get("SLURM_JOB_ID")
    # host and pid always: two jobs of one Slurm allocation are two holders
    who = (f"slurm{job}_" if job else "") + f"{socket.gethostname().split('.')[0]}-{os.getpid()}"
    if slot is not None:
        who += f".s{slot}"
    return f"{HOLDER_UNSAFE.sub('_', site)}+{HOLDER_UNSAFE.sub('_', who)}"


@dataclass
class SimulationClaims:
    """What the store says about one simulation's claims."""

    done: int = 0  # segments in the store, as its last holder recorded
    analyzed: int = 0  # segments the analysis in the store covers
    origin: str | None = None  # site where segment 0 ran
    generation: str | None = None  # the newest claim
    holder: str | None = None  # "<site>+<job>" of the newest claim
    ended: str | None = None  # "released" or "failed"; None while held
    age: float | None = None  # seconds since the newest claim was renewed (store clock)
    failures: int = 0
    speeds: dict = field(default_factory=dict)  # site -> last measured ns/day
    requests: list = field(default_factory=list)  # [claim, site] of each hand-over request
    parked: list | None = None  # [segment, step] of the progress parked in the store, if any

    @property
    def asked_by(self) -> str | None:
        """The site that asked to take over the newest claim (the first by name)."""
        sites = sorted(site for generation, site in self.requests if generation == self.generation)
        return sites[0] if sites else None

    def reserved_for(self, lease_seconds: float) -> str | None:
        """The site a hand-over released the newest claim to, for a lease after its release."""
        if self.ended == "released" and self.age is not None and self.age < lease_seconds:
            return self.asked_by
        return None

    @property
    def holder_site(self) -> str | None:
        return self.holder.split("+", 1)[0] if self.holder else None

    @property
    def holder_job(self) -> str | None:
        return self.holder.split("+", 1)[1] if self.holder else None

    def held(self, lease_seconds: float, dead: set[str] = frozenset()) -> bool:
        """Whether a live holder has it: claimed, not ended, renewed within the lease."""
        return (
            self.generation is not None
            and self.ended is None
            and self.age is not None
            and self.age < lease_seconds
            and self.holder not in dead
        )


@dataclass
class Listing:
    """Every simulation's claims, from one listing of the store."""

    now: float  # the store's clock when listed
    simulations: dict[str, SimulationClaims]
    taken_at: float | None = None  # this process's clock then (None for a listing read back from a file)
    # decisions to stop (convergence.py): "<system>/<goal key>" -> the segments it stopped at
    stops: dict[str, int] = field(default_factory=dict)

    def of(self, name: str) -> SimulationClaims:
        return self.simulations.get(name) or SimulationClaims()

    def stopped_systems(self, goals: dict) -> dict[str, int]:
        """Of ``goals`` (system -> its convergence.Goal), the systems that stopped, with
        the segment count each stopped at."""
        found = {}
        for system, goal in goals.items():
            stop = self.stops.get(f"{system}/{goal.key}")
            if stop is not None:
                found[system] = stop
        return found

    def to_json(self) -> dict:
        return {
            "now": self.now,
            "simulations": {name: vars(claims) for name, claims in self.simulations.items()},
            "stops": self.stops,
        }

    @classmethod
    def from_json(cls, data: dict, seconds_since: float = 0.0) -> Listing:
        """A listing saved ``seconds_since`` ago (by this host's clock: only the
        difference counts), its ages advanced by as much."""
        sims = {}
        for name, fields_ in data["simulations"].items():
            claims = SimulationClaims(**fields_)
            if claims.age is not None:
                claims.age += seconds_since
            sims[name] = claims
        return cls(data["now"] + seconds_since, sims, stops=dict(data.get("stops", {})))


@dataclass(frozen=True)
class Lease:
    """A claim this process holds."""

    simulation: str
    generation: str
    holder: str

    @property
    def directory(self) -> str:
        return f"{simulation_dir(self.simulation)}/{self.generation}"

    def to_json(self) -> dict:
        return {"simulation": self.simulation, "generation": self.generation, "holder": self.holder}


@dataclass(frozen=True)
class ClaimResult:
    outcome: str  # claimed, held, complete, failed, pinned, lost
    done: int = 0  # segments in the store
    lease: Lease | None = None
    detail: str = ""


SCRIPTS = Path(__file__).resolve().parent / "store_scripts" / "claims.sh"


class ClaimBoard:
    """The claims of one campaign's store, as seen by one site."""

    def __init__(self, store: Store, lease_seconds: float):
        self.store = store
        self.lease_seconds = float(lease_seconds)

    def _script(self, call: str, **values) -> str:
        """The claims library with the layout's values and ``values`` set (each quoted,
        whatever it is), then ``call``."""
        settings = {
            "claims": CLAIMS,
            "lease": int(self.lease_seconds),
            "gen_digits": GENERATION_DIGITS,
            "seg_digits": layout.SEGMENT_DIGITS,
            "record": layout.MANIFEST,
            "max_failures": MAX_FAILURES,
            "decisions": layout.STORE_DECISIONS,
            **values,
        }
        return shell_program(SCRIPTS, call, settings)

    def _run(self, call: str, what: str, **values) -> str:
        return self.store.run_script(self._script(call, **values), what)

    def listing(self) -> Listing:
        """One listing of every claim in the store (one SSH call for a remote store)."""
        out = self._run("listing", "listing the claims")
        head, _, decisions = out.partition("\ndecisions\n")
        lines = head.splitlines()
        now = float(lines[0])
        sims: dict[str, SimulationClaims] = {}
        newest: dict[str, float] = {}  # simulation -> mtime of its newest claim
        entries: list[tuple[str, list[str], float]] = []
        for line in lines[1:]:
            path, _, stamp = line.partition("\t")
            parts = path.split("/")
            if len(parts) < 3:
                continue
            entries.append(("/".join(parts[:2]), parts[2:], float(stamp or 0)))
        for name, rest, stamp in entries:
            claims = sims.setdefault(name, SimulationClaims())
            if len(rest) == 1:
                entry = rest[0]
                if entry.isdigit():
                    if claims.generation is None or entry > claims.generation:
                        claims.generation = entry
                        newest[name] = stamp
                elif entry.startswith("segments-"):
                    claims.done = max(claims.done, int(entry.split("-", 1)[1]))
                elif entry.startswith("analyzed-"):
                    claims.analyzed = max(claims.analyzed, int(entry.split("-", 1)[1]))
                elif entry.startswith("origin+"):
                    claims.origin = entry.split("+", 1)[1]
                elif entry.startswith("speed+"):
                    _, site, speed = entry.split("+", 2)
                    claims.speeds[site] = float(speed)
                elif entry.startswith("handover+") and entry.count("+") == 2:
                    claims.requests.append(entry.split("+", 2)[1:])
                elif entry.startswith("parked-") and entry.count("+") == 1:
                    segment, _, step = entry[len("parked-") :].partition("+")
                    if segment.isdigit() and step.isdigit():
                        claims.parked = [int(segment), int(step)]
        for name, rest, _ in entries:
            if len(rest) != 2 or rest[0].startswith("handover+"):
                continue
            claims = sims[name]
            generation, entry = rest
            if entry == "failed":
                claims.failures += 1
            if generation != claims.generation:
                continue
            if entry.startswith("holder+"):
                claims.holder = entry.split("+", 1)[1]
            elif entry in ("released", "failed"):
                claims.ended = entry
        for name, stamp in newest.items():
            sims[name].age = max(0.0, now - stamp)
        return Listing(now, sims, taken_at=time.time(), stops=_stops(decisions))

    def claim(
        self,
        simulation: str,
        segments: int,
        holder: str,
        info: str = "",
        migrate: bool = True,
        site: str = "",
        dead: tuple[str, ...] = (),
        planned: int | None = None,
    ) -> ClaimResult:
        """Take ``simulation`` (``<system>/r<replica>``, ``segments`` long) for ``holder``,
        if nobody live holds it. ``dead``: holders known to have stopped (a killed job
        on this host), whose claims are taken without waiting for the lease time.
        ``planned``: the segments its analysis is named after, when its system stopped
        before them (convergence.py). Counts the segments in the store itself, so a
        stale listing cannot make a holder redo one. Idempotent: claiming what
        ``holder`` already holds renews it."""
        holder, site = _file_name_part(holder, "holder"), _file_name_part(site, "site")
        values = {
            "d": simulation_dir(simulation),
            "holder": holder,
            "segments": layout.store_segments(simulation),
            "total": int(segments),
            "analysis": layout.store_analysis(simulation, planned or segments),
            "info": info,
            "migrate": "yes" if migrate else "no",
            "origin_here": f"origin+{site}",
            "dead": " ".join(f"holder+{_file_name_part(h, 'holder')}" for h in dead),
        }
        words = self._run("claim", f"claiming {simulation}", **values).split()
        outcome, done = words[0], int(words[1]) if len(words) > 1 else 0
        if outcome == "claimed":
            return ClaimResult(outcome, int(words[2]), Lease(simulation, words[1], holder))
        return ClaimResult(outcome, done, detail=" ".join(words[2:]))

    def renew(self, leases: list[Lease], asked: dict | None = None) -> set[Lease]:
        """Renew every lease in one operation; the ones that were lost. The ones another
        site asked to take over (`ask`) are put in ``asked``: lease -> that site."""
        if not leases:
            return set()
        calls = ["clock || exit 3"]
        for number, lease in enumerate(leases):
            values = {"d": simulation_dir(lease.simulation), "g": lease.generation, "holder": lease.holder}
            calls.append("; ".join(f"{k}={shlex.quote(v)}" for k, v in values.items()) + f"; renew {number}")
        out = self.store.run_script(self._script("\n".join(calls)), "renewing claims")
        lost = set()
        for word in out.split():
            if word.startswith("h"):
                number, _, site = word[1:].partition("+")
                if asked is not None:
                    asked[leases[int(number)]] = site
            else:
                lost.add(leases[int(word)])
        return lost

    def ask(self, simulation: str, generation: str, site: str) -> bool:
        """Ask, for ``site``, to take over ``simulation``'s claim ``generation`` at the end
        of its holder's current segment; False if that claim is no longer held."""
        out = self._run(
            "ask",
            f"asking for {simulation}",
            d=simulation_dir(simulation),
            g=_file_name_part(generation, "claim"),
            site=_file_name_part(site, "site"),
        )
        return out.strip() == "asked"

    def withdraw(self, simulation: str, generation: str, site: str) -> None:
        self._run(
            "withdraw",
            f"withdrawing the request for {simulation}",
            d=simulation_dir(simulation),
            g=_file_name_part(generation, "claim"),
            site=_file_name_part(site, "site"),
        )

    def guard_script(self, lease: Lease) -> str:
        """A script that succeeds only while ``lease`` is held and was renewed less than
        half a lease ago (by the store's clock); run just before a rename into place."""
        return self._script("guard", **self._lease_values(lease), simulation=lease.simulation)

    def _lease_values(self, lease: Lease) -> dict:
        return {
            "d": simulation_dir(lease.simulation),
            "g": lease.generation,
            "holder": _file_name_part(lease.holder, "holder"),
        }

    def published(
        self, lease: Lease, done: int, site: str, ns_per_day: float | None = None, analyzed: bool = False
    ) -> bool:
        """After a segment (or, ``analyzed``, the analysis of ``done`` segments) reached
        the store: record progress, origin and speed, and renew. False if the lease
        was lost meanwhile."""
        site = _file_name_part(site, "site")
        out = self._run(
            "clock || exit 3; published",
            f"recording progress of {lease.simulation}",
            **self._lease_values(lease),
            kind="analyzed" if analyzed else "segments",
            done=int(done),
            origin_here=f"origin+{site}" if site else "",
            speed=f"speed+{site}+{ns_per_day:.3f}" if ns_per_day else "",
            parked_dir=layout.store_parked(lease.simulation),
        )
        return out.strip() == "ok"

    def parked(self, lease: Lease, segment: int, step: int) -> bool:
        """After a paused segment's progress reached the store (parking.py): say so in
        the claims (replacing an older one). False if the lease was lost meanwhile."""
        out = self._run(
            "clock || exit 3; parked",
            f"recording the parked progress of {lease.simulation}",
            **self._lease_values(lease),
            segment=int(segment),
            step=int(step),
        )
        return out.strip() == "ok"

    def release(self, lease: Lease, failed: bool = False) -> None:
        """End a claim: the simulation is free for anyone (``failed``: counted, see
        MAX_FAILURES)."""
        self._run(
            "clock || exit 3; release",
            f"releasing {lease.simulation}",
            **self._lease_values(lease),
            end="failed" if failed else "released",
        )


def _stops(lines: str) -> dict[str, int]:
    """The listing's decisions to stop ("<folder>/<system>/<goal>.json:"segments": N"
    lines): "<system>/<goal>" -> N. Another name in the folder (a site's own
    <goal>.progress.json, where the store is its results/) is not a decision."""
    stops = {}
    for line in lines.splitlines():
        path, _, count = line.rpartition(':"segments": ')
        parts = path.split("/")
        if len(parts) < 3 or not count.isdigit() or not parts[-1].endswith(".json"):
            continue
        goal = parts[-1][: -len(".json")]
        if "." not in goal:
            stops[f"{parts[-2]}/{goal}"] = int(count)
    return stops
