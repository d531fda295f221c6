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

from . import layout
from .store import Store

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

    def of(self, name: str) -> SimulationClaims:
        return self.simulations.get(name) or SimulationClaims()

    def to_json(self) -> dict:
        return {"now": self.now, "simulations": {name: vars(claims) for name, claims in self.simulations.items()}}

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
        return cls(data["now"] + seconds_since, sims)


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


# The store's clock: the time a file created there now gets. Files and folders are only
# ever stamped by being created (or by an entry created in them), never by `touch`,
# whose "now" is the calling process's clock where that clock is faked or skewed
# (libfaketime fakes utimensat), while creation times come from the file system.
_CLOCK = f'mkdir -p {CLAIMS} && c=$(mktemp {CLAIMS}/.clock.XXXXXX) && now=$(stat -c %Y "$c") && rm -f "$c"'
# Renew the claim $d/$g: an entry created and removed in it stamps its folder.
_RENEW = 'r=$(mktemp "$d/$g/.renew.XXXXXX") && rm -f "$r"'

# The newest claim of simulation folder $d (empty if none).
_NEWEST = f"newest=$(ls -1 \"$d\" | grep -E '^[0-9]{{{GENERATION_DIGITS}}}$' | sort | tail -n 1 || true)"


def _mine(holder: str, lease_seconds: float) -> str:
    """Shell test: the claim $d/$g is the newest of $d, not ended, held by ``holder``
    and not expired (a holder never revives an expired claim: once a whole lease has
    passed, a taker may be counting the segments, so it has lost)."""
    holder = _file_name_part(holder, "holder")
    return (
        f'{_NEWEST}; [ "$newest" = "$g" ] && [ -e "$d/$g/"{shlex.quote("holder+" + holder)} ] && '
        '[ ! -e "$d/$g/released" ] && [ ! -e "$d/$g/failed" ] && '
        f'[ $((now - $(stat -c %Y "$d/$g"))) -lt {int(lease_seconds)} ]'
    )


class ClaimBoard:
    """The claims of one campaign's store, as seen by one site."""

    def __init__(self, store: Store, lease_seconds: float):
        self.store = store
        self.lease_seconds = float(lease_seconds)

    def _run(self, script: str, what: str) -> str:
        return self.store.run_script(script, what)

    def listing(self) -> Listing:
        """One listing of every claim in the store (one SSH call for a remote store)."""
        out = self._run(
            f'set -e; {_CLOCK}; echo "$now"; '
            # claims and markers come and go while we list: a vanished one is not an error
            f"find {CLAIMS} -ignore_readdir_race -mindepth 3 -maxdepth 4 ! -name '.*' -printf '%P\\t%T@\\n' || true",
            "listing the claims",
        )
        lines = out.splitlines()
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
        for name, rest, _ in entries:
            if len(rest) != 2:
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
        return Listing(now, sims, taken_at=time.time())

    def claim(
        self,
        simulation: str,
        segments: int,
        holder: str,
        info: str = "",
        migrate: bool = True,
        site: str = "",
        dead: tuple[str, ...] = (),
    ) -> ClaimResult:
        """Take ``simulation`` (``<system>/r<replica>``, ``segments`` long) for ``holder``,
        if nobody live holds it. ``dead``: holders known to have stopped (a killed job
        on this host), whose claims are taken without waiting for the lease time.
        Counts the segments in the store itself, so a stale listing cannot make a
        holder redo one. Idempotent: claiming what ``holder`` already holds renews it."""
        quote = shlex.quote
        holder, site = _file_name_part(holder, "holder"), _file_name_part(site, "site")
        d = simulation_dir(simulation)
        segment_dir = layout.store_segments(simulation)
        analysis = layout.store_analysis(simulation, segments)
        stale = " ".join(quote(f"holder+{h}") for h in dead)
        script = f"""set -e
{_CLOCK}
d={quote(d)}; mkdir -p "$d"
n=0
while [ -f {quote(segment_dir)}/"$(printf '%04d' "$n")"/manifest.json ]; do n=$((n + 1)); done
rm -f "$d"/segments-*; : > "$d/segments-$(printf '%04d' "$n")"
if [ "$n" -ge {int(segments)} ] && [ -f {quote(analysis)} ]; then
  rm -f "$d"/analyzed-*; : > "$d/analyzed-$(printf '%04d' "$n")"; echo "complete $n"; exit 0
fi
{_NEWEST}
if [ -n "$newest" ]; then
  holder=$(ls -1 "$d/$newest" | grep '^holder+' | head -n 1 || true)
  if [ ! -e "$d/$newest/released" ] && [ ! -e "$d/$newest/failed" ]; then
    age=$((now - $(stat -c %Y "$d/$newest")))
    if [ "$holder" = {quote(f"holder+{holder}")} ] && [ "$age" -lt {int(self.lease_seconds)} ]; then
      g=$newest; {_RENEW}; echo "claimed $newest $n"; exit 0
    fi
    dead=no
    for h in none {stale}; do [ "$holder" = "$h" ] && dead=yes; done
    if [ "$age" -lt {int(self.lease_seconds)} ] && [ "$dead" = no ]; then echo "held $n ${{holder#holder+}} $age"; exit 0; fi
  fi
  next=$(printf '%0{GENERATION_DIGITS}d' $((1$newest - 1{"0" * GENERATION_DIGITS} + 1)))
else
  next={"0" * GENERATION_DIGITS}
fi
failures=$(find "$d" -mindepth 2 -maxdepth 2 -name failed | wc -l)
if [ "$failures" -ge {MAX_FAILURES} ]; then echo "failed $n $failures"; exit 0; fi
origin=$(ls -1 "$d" | grep '^origin+' | head -n 1 || true)
if [ {quote("no" if not migrate else "yes")} = no ] && [ -n "$origin" ] && [ "$origin" != {quote(f"origin+{site}")} ]; then
  echo "pinned $n ${{origin#origin+}}"; exit 0
fi
mkdir "$d/$next" 2>/dev/null || {{ echo "lost $n"; exit 0; }}
printf '%s\\n' {quote(info)} > "$d/$next/"{quote("holder+" + holder)}
for g in $(ls -1 "$d" | grep -E '^[0-9]{{{GENERATION_DIGITS}}}$'); do
  if [ $((1$g)) -lt $((1$next - 1)) ] && [ ! -e "$d/$g/failed" ]; then rm -rf "${{d:?}}/$g"; fi
done
echo "claimed $next $n"
"""
        words = self._run(script, f"claiming {simulation}").split()
        outcome, done = words[0], int(words[1]) if len(words) > 1 else 0
        if outcome == "claimed":
            return ClaimResult(outcome, int(words[2]), Lease(simulation, words[1], holder))
        return ClaimResult(outcome, done, detail=" ".join(words[2:]))

    def renew(self, leases: list[Lease]) -> set[Lease]:
        """Renew every lease in one operation; the ones that were lost."""
        if not leases:
            return set()
        lines = [f"{_CLOCK} || exit 3"]
        for number, lease in enumerate(leases):
            d, g = shlex.quote(simulation_dir(lease.simulation)), shlex.quote(lease.generation)
            lines.append(
                f"d={d}; g={g}; if {_mine(lease.holder, self.lease_seconds)}; then {_RENEW}; else echo {number}; fi"
            )
        out = self._run("\n".join(lines), "renewing claims")
        return {leases[int(word)] for word in out.split()}

    def guard_script(self, lease: Lease) -> str:
        """A script that succeeds only while ``lease`` is held and was renewed less than
        half a lease ago (by the store's clock); run just before a rename into place."""
        d, g = shlex.quote(simulation_dir(lease.simulation)), shlex.quote(lease.generation)
        half = int(self.lease_seconds // 2)
        return (
            f"{_CLOCK} || exit 1; d={d}; g={g}; if {_mine(lease.holder, self.lease_seconds)} && "
            f'[ $((now - $(stat -c %Y "$d/$g"))) -lt {half} ]; then exit 0; fi; '
            f"echo 'lease lost: another site took over {lease.simulation} (claim {lease.generation} is no "
            "longer the newest, or was not renewed in time); this copy is discarded' >&2; exit 1"
        )

    def published(
        self, lease: Lease, done: int, site: str, ns_per_day: float | None = None, analyzed: bool = False
    ) -> bool:
        """After a segment (or, ``analyzed``, the analysis of ``done`` segments) reached
        the store: record progress, origin and speed, and renew. False if the lease
        was lost meanwhile."""
        d, g = shlex.quote(simulation_dir(lease.simulation)), shlex.quote(lease.generation)
        site = _file_name_part(site, "site")
        speed = (
            f'rm -f "$d"/{shlex.quote(f"speed+{site}+")}*; : > "$d/"{shlex.quote(f"speed+{site}+{ns_per_day:.3f}")}; '
            if ns_per_day
            else ""
        )
        marker = "analyzed" if analyzed else "segments"
        origin = f'if [ {int(done)} -eq 1 ]; then : > "$d/"{shlex.quote("origin+" + site)}; fi; ' if site else ""
        out = self._run(
            f"{_CLOCK} || exit 3; d={d}; g={g}; if {_mine(lease.holder, self.lease_seconds)}; then {_RENEW}; "
            f'rm -f "$d"/{marker}-*; : > "$d/{marker}-{done:04d}"; {origin}{speed}echo ok; else echo lost; fi',
            f"recording progress of {lease.simulation}",
        )
        return out.strip() == "ok"

    def release(self, lease: Lease, failed: bool = False) -> None:
        """End a claim: the simulation is free for anyone (``failed``: counted, see
        MAX_FAILURES)."""
        d, g = shlex.quote(simulation_dir(lease.simulation)), shlex.quote(lease.generation)
        mark = "failed" if failed else "released"
        self._run(
            f'{_CLOCK} || exit 3; d={d}; g={g}; if {_mine(lease.holder, self.lease_seconds)}; then : > "$d/$g/{mark}"; fi',
            f"releasing {lease.simulation}",
        )
