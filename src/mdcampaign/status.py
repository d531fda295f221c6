"""`mdcampaign status`: what is done, what runs where, what failed and why.

Reads files only, in one pass per simulation (no database, no running Snakemake
needed): the local segment records, the scratch area, the job logs, Snakemake's
markers of incomplete jobs, and one `squeue` call for the whole campaign where Slurm
is present.
"""

from __future__ import annotations

import glob
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import layout, slurm
from .campaign import Campaign
from .claims import MAX_FAILURES, Listing, SimulationClaims
from .convergence import Goal, goals_of, segments_wanted, standing
from .engines import engine_for
from .errors import DataError
from .files import file_system_now
from .records import read_manifest
from .resources import expected_speed
from .runlock import alive_here
from .runs import RUNNER_RECORD
from .systems import Simulation

# Simulation states, in the order a simulation goes through them.
SETTING_UP = "setting up"
WAITING, SET_UP, STAGED, RUNNING, PAUSED, FAILED, FETCHED, ANALYZED, DONE, OTHER_SITE = (
    "waiting",
    "set up",
    "staged",
    "running",
    "paused",
    "failed",
    "fetched",
    "analyzed",
    "done",
    "other site",
)
LOG_TAIL_LINES = 5
# A segment that wrote a frame this recently is taken to be running.
ACTIVE_SECONDS = 600
# status says so when this machine's clock and the store's differ by more than this
CLOCK_NOTE_SECONDS = 60


@dataclass
class SimulationStatus:
    simulation: str
    site: str | None
    state: str
    segment: int | None  # the segment being worked on (1-based in the text), if any
    segments: int
    simulated_ns: float
    target_ns: float
    ns_per_day: float | None
    eta_days: float | None
    slurm: dict | None = None  # job id and state of a queued/running Slurm job
    failure: dict | None = None  # rule, reason, log, last lines
    slot: int | None = None  # the slot of a packed job running it
    claim: dict | None = None  # pulling sites: the site and job holding it, and the lease's age


@dataclass
class CampaignStatus:
    campaign: str
    site: str | None
    simulations: list[SimulationStatus] = field(default_factory=list)
    # this machine's clock minus the store's (when sites pull: measured by the listing)
    clock_offset_s: float | None = None
    # each site's driver, by its heartbeat in the store (heartbeat.SiteState)
    sites: list = field(default_factory=list)
    # systems with a goal (continue until converged): where they stand against it
    goals: list = field(default_factory=list)

    @property
    def totals(self) -> dict:
        sims = [s for s in self.simulations if s.state != OTHER_SITE]
        counts: dict[str, int] = {}
        for s in sims:
            counts[s.state] = counts.get(s.state, 0) + 1
        running = max(1, sum(1 for s in sims if s.state == RUNNING))
        remaining = sum(s.eta_days or 0.0 for s in sims)
        return {
            "simulations": len(sims),
            "states": counts,
            "simulated_ns": round(sum(s.simulated_ns for s in sims), 6),
            "target_ns": round(sum(s.target_ns for s in sims), 6),
            # work left spread over what runs at once now (at least one at a time)
            "eta_days": round(remaining / running, 3) if remaining else 0.0,
        }

    def to_json(self) -> dict:
        data = {key: value for key, value in vars(self).items() if key not in ("simulations", "sites")}
        data["sites"] = [dict(vars(site)) for site in self.sites]
        return {**data, "totals": self.totals, "simulations": [dict(vars(s)) for s in self.simulations]}


def _slurm_comment(rule: str, simulation: Simulation, segment: str | None = None) -> str:
    values = [simulation.system, str(simulation.replica)] + ([segment] if segment is not None else [])
    return f"rule_{rule}_wildcards_{'_'.join(values)}"


REASONS = (
    ("became unstable", "NaN energies (the simulation exploded)"),
    ("time budget", "time limit (paused; continues on the next run)"),
    ("PAUSED", "time limit (paused; continues on the next run)"),
    ("No space left", "disk full"),
    ("disk full", "disk full"),
    ("MemoryError", "out of memory"),
    ("Out Of Memory", "out of memory"),
    ("is missing", "missing input"),
    ("not found", "missing input"),
    ("no template", "unsupported residue in the structure"),
    ("Permission denied", "permission denied"),
    ("permission denied", "permission denied"),
    ("host key", "SSH host key problem"),
    ("not usable here", "requested OpenMM platform not available"),
)


def failure_of(log: Path) -> dict | None:
    """If a job log ends in failure, the reason in words and the last lines."""
    try:
        with open(log, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 8192))
            tail = handle.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return None
    failed = [line for line in tail if " FAILED" in line or "ERROR" in line or " PAUSED:" in line]
    if not failed:
        return None
    last = failed[-1]
    reason = next((words for needle, words in REASONS if needle in last), "non-zero exit")
    return {
        "reason": reason,
        "log": str(log),
        "message": last.split("FAILED:", 1)[-1].strip(),
        "last_lines": tail[-LOG_TAIL_LINES:],
    }


def _setup_progress(log: Path) -> tuple[str, str | None]:
    """A system not set up yet: (SETTING_UP, None) while its setup runs, (WAITING,
    why) when a setup started and its process is gone without a word (killed, a
    reboot), else (WAITING, None). A setup that failed says so in its log (failure_of)."""
    try:
        tail = log.read_bytes()[-8192:].decode(errors="replace").splitlines()
    except FileNotFoundError:
        return WAITING, None
    started = [line for line in tail if " started (pid " in line]
    if not started or failure_of(log):
        return WAITING, None
    pid_host = started[-1].rsplit("(pid ", 1)[1].rstrip(")")
    pid, _, host = pid_host.partition(", host ")
    if host != platform.node():  # on a cluster node: its log moves while it runs
        return (SETTING_UP if _recently_written(log) else WAITING), None
    if pid.isdigit() and alive_here({"pid": int(pid)}):
        return SETTING_UP, None
    return WAITING, f"the setup (pid {pid} on {host}) stopped without finishing or failing: killed, or a reboot"


def _runner(work: Path) -> dict | None:
    """The runner working on a segment: alive True/False on this host, None elsewhere."""
    runner = _read_json(str(work / RUNNER_RECORD))
    if not runner:
        return None
    if runner.get("host") != platform.node():
        runner["alive"] = None
        return runner
    try:
        os.kill(int(runner["pid"]), 0)
        runner["alive"] = _same_process(int(runner["pid"]), work)
    except (ProcessLookupError, ValueError):
        runner["alive"] = False
    except PermissionError:
        runner["alive"] = True
    return runner


def _same_process(pid: int, work: Path) -> bool:
    """Guard against a recycled pid: the process must be a Python running a segment."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return True  # no /proc: trust the pid
    return "python" in command or "snakemake" in command


def _recently_written(path: Path) -> bool:
    """Whether anything wrote ``path`` lately: a file (a setup's log), or any file in a
    folder (a segment's work folder: each engine writes its own files, OpenMM the
    energies table, GROMACS its part files)."""
    try:
        if path.is_dir():
            with os.scandir(path) as entries:
                newest = max((entry.stat().st_mtime for entry in entries if entry.is_file()), default=0.0)
        else:
            newest = path.stat().st_mtime
    except OSError:
        return False
    try:
        now = file_system_now(path if path.is_dir() else path.parent)  # file times against the clock that made them
    except OSError:  # a folder we cannot write in: this process's clock it is
        now = time.time()
    return now - newest < ACTIVE_SECONDS


def collect(
    campaign: Campaign, directory: Path | str = ".", use_slurm: bool = True, listing: Listing | None = None
) -> CampaignStatus:
    """Every simulation's status. ``listing``: when sites pull, the store's claims (one
    listing, see claims.py), which say what other sites hold and have done."""
    directory = Path(directory)
    queue = slurm.queued_jobs() if use_slurm else {}
    scratch = Path(campaign.scratch_here)
    if not scratch.is_absolute():
        scratch = directory / scratch
    status = CampaignStatus(campaign.name, campaign.site)
    if listing is not None and listing.taken_at is not None:
        status.clock_offset_s = round(listing.taken_at - listing.now, 1)
    goals = goals_of(campaign.systems)
    # decisions to stop filed by any site (the store's), where this one has not learned them yet
    stops = listing.stopped_systems(goals) if listing is not None else {}
    setups = {}
    for simulation in campaign.simulations:
        if simulation.system not in setups:
            setups[simulation.system] = (directory / layout.setup_info(simulation.system)).exists()
        claims = listing.of(simulation.name) if listing is not None else None
        status.simulations.append(
            _one(
                simulation,
                campaign,
                directory,
                scratch,
                setups[simulation.system],
                queue,
                claims,
                goals.get(simulation.system),
                stops.get(simulation.system),
            )
        )
    status.goals = [goal_state(system, goal, directory, stops.get(system)) for system, goal in goals.items()]
    return status


def goal_state(system: str, goal: Goal, directory: Path, stop: int | None = None) -> dict:
    """Where a system with a goal stands (convergence.standing); ``stop``: the segments
    the store says it stopped at (a decision another site filed)."""
    state = standing(system, goal, directory)
    if stop is not None and not state["converged"]:
        state.update(
            converged=True,
            judged_at_ns=round(stop * goal.segment_ns, 9),
            reason=f"stopped at {stop} segments, decided at another site",
        )
    return state


def render_goals(goals: list[dict]) -> list[str]:
    lines = ["convergence (until_observable):"]
    for g in goals:
        where = f" at {g['judged_at_ns']:g} ns" if g["judged_at_ns"] is not None else ""
        verdict = "converged, stopped" if g["converged"] else "going on"
        lines.append(f"  {g['system']}: {g['observable']} {verdict}{where}: {g['reason']}")
    return lines


def _segment_speed(record: str) -> float | None:
    try:
        manifest = read_manifest(record, missing_ok=True)
        return manifest.info.ns_per_day if manifest else None
    except DataError:
        return None  # status shows what it can; the job that needs it says what is wrong


def _read_json(path: str) -> dict:
    try:
        with open(path) as handle:
            value = json.load(handle)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _one(
    simulation: Simulation,
    campaign: Campaign,
    directory: Path,
    scratch: Path,
    set_up: bool,
    queue: dict,
    claims: SimulationClaims | None = None,
    goal: Goal | None = None,
    stop: int | None = None,
) -> SimulationStatus:
    wildcards = simulation.wildcards
    protocol = simulation.protocol
    root = str(directory)
    # the cap, or fewer once its system stopped (convergence), as this site or the store knows
    segments_total = segments_wanted(simulation.system, simulation.n_segments, goal, root)
    segments_total = min(segments_total, stop or segments_total)
    target_ns = segments_total * protocol.segment_ns
    # A finished, analyzed simulation is one file; others count their manifests.
    complete = os.path.join(root, layout.completion_record(simulation.system, simulation.replica, segments_total))
    analyzed = os.path.exists(complete)
    if analyzed:
        n_done = segments_total
        speed = _read_json(complete).get("ns_per_day_mean")
    else:
        n_done = layout.segments_fetched(simulation.system, simulation.replica, segments_total, root)
        speed = None
        if n_done:
            last = os.path.join(root, layout.segment_record(simulation.system, simulation.replica, n_done - 1))
            speed = _segment_speed(last)
    if claims is not None:  # other sites' progress, from the claims
        n_done = max(n_done, min(claims.done, segments_total))
        analyzed = analyzed or claims.analyzed >= segments_total
        speed = speed or (max(claims.speeds.values()) if claims.speeds else None)
    simulated = n_done * protocol.segment_ns
    speed_here = expected_speed(campaign, simulation, n_done, root, known=speed)
    remaining = max(0.0, target_ns - simulated)
    eta = remaining / speed_here if remaining else 0.0
    result = SimulationStatus(
        simulation.name,
        simulation.site,
        WAITING,
        None,
        segments_total,
        round(simulated, 6),
        round(target_ns, 6),
        speed,
        round(eta, 4),
    )
    if claims is not None:
        held = claims.held(campaign.pulling.lease_seconds)
        if claims.holder:
            result.claim = {
                "site": claims.holder_site,
                "job": claims.holder_job,
                "claim": claims.generation,
                "state": claims.ended or ("held" if held else "expired"),
                "renewed_seconds_ago": round(claims.age, 1) if claims.age is not None else None,
            }
        result.site = claims.holder_site if held else (claims.origin or simulation.site)
        if n_done >= segments_total and analyzed:
            result.state = DONE
            return result
        if claims.failures >= MAX_FAILURES:
            result.state = FAILED
            result.failure = {
                "rule": "pull",
                "reason": f"failed {claims.failures} times, on any site; given up",
                "log": str(directory / layout.LOGS),
                "message": f"remove {layout.STORE_CLAIMS}/{simulation.name} in the store to try again "
                "after fixing the cause (the failing site's logs say why)",
                "last_lines": [],
            }
            return result
        if held and claims.holder_site != campaign.site:
            result.state = RUNNING
            return result
    elif campaign.site is not None and simulation.site != campaign.site:
        result.state = OTHER_SITE
        result.eta_days = None
        return result
    if n_done >= segments_total:
        result.state = DONE if analyzed else FETCHED
        return result
    current = layout.segment_name(n_done)
    result.segment = n_done
    result.state = SET_UP if set_up else WAITING
    if not set_up:
        setup_log = directory / layout.fill(layout.log_path("setup"), system=simulation.system)
        result.state, interrupted = _setup_progress(setup_log)
        if interrupted:
            result.failure = {
                "rule": "setup",
                "reason": "interrupted (run again to set it up)",
                "log": str(setup_log),
                "message": interrupted,
                "last_lines": [],
            }
    segment_dir = scratch / layout.fill(layout.SCRATCH_SEGMENT, **wildcards, segment=current)
    if (segment_dir / "input" / layout.STAGE_RECORD).exists():
        result.state = STAGED
    work = segment_dir / "work"
    progress_ns = 0.0
    step = engine_for(protocol.engine).checkpoint_step(work) if work.is_dir() else None
    if claims is not None and claims.parked and claims.parked[0] == n_done:
        step = max(step or 0, claims.parked[1])  # parked in the store: any site goes on from there
    if step is not None:
        progress_ns = (step - n_done * protocol.segment_steps) * protocol.timestep_ps / 1000.0
        result.state = PAUSED
    if (segment_dir / "output" / "segment.json").exists():
        result.state = FETCHED  # simulated, waiting for fetch
        progress_ns = protocol.segment_ns
    result.simulated_ns = round(simulated + progress_ns, 6)
    runner = _runner(work)
    if runner is not None:
        if runner["alive"]:
            result.state = RUNNING
        elif runner["alive"] is False:
            result.state = PAUSED
            result.failure = {
                "rule": "simulate",
                "reason": "interrupted (run again to resume)",
                "log": str(directory / layout.fill(layout.log_path("simulate"), **wildcards, segment=current)),
                "message": f"the runner (pid {runner['pid']} on {runner['host']}) stopped without finishing; "
                "the segment resumes from its last checkpoint",
                "last_lines": [],
            }
        else:  # on another host: trust Slurm, below, or recent progress
            result.state = RUNNING if _recently_written(work) else PAUSED
    if runner is not None and runner.get("slot"):
        result.slot = runner["slot"]["slot"]
        job_id = runner.get("slurm_job_id")
        job = next((job for job in queue.values() if job["job_id"] == job_id), None) if job_id else None
        if job:  # a packed job: its slots run the batch's segments
            result.slurm = {"rule": "pack", **job}
    for rule in ("setup", "stage", "simulate", "fetch"):
        job = queue.get(_slurm_comment(rule, simulation, None if rule == "setup" else current))
        if rule == "setup":
            job = queue.get(f"rule_setup_wildcards_{simulation.system}")
        if job:
            result.slurm = {"rule": rule, **job}
            result.state = RUNNING if job["state"] == "RUNNING" else result.state
    logs = [
        directory / layout.fill(layout.log_path("simulate"), **wildcards, segment=current),
        directory / layout.fill(layout.log_path("stage"), **wildcards, segment=current),
        directory / layout.fill(layout.log_path("fetch"), **wildcards, segment=current),
        directory / layout.fill(layout.log_path("setup"), system=simulation.system),
    ]
    if result.state not in (RUNNING,) and result.failure is None:
        for log in logs:
            failure = failure_of(log)
            if failure:
                failure["rule"] = log.relative_to(directory).parts[1]
                result.failure = failure
                result.state = PAUSED if failure["reason"].startswith("time limit") else FAILED
                break
    if result.state in (WAITING, SET_UP, STAGED) and glob.glob(
        str(directory / layout.fill(layout.COMPLETION_RECORD, **wildcards, segments="*"))
    ):
        result.state = ANALYZED  # an analysis of fewer segments; more are coming
    result.eta_days = round(max(0.0, target_ns - result.simulated_ns) / speed_here, 4)
    return result


# -- rendering ----------------------------------------------------------------------------------

COLOURS = {
    DONE: "32",
    ANALYZED: "32",
    FETCHED: "36",
    RUNNING: "34;1",
    PAUSED: "33",
    FAILED: "31;1",
    STAGED: "36",
    SET_UP: "37",
    SETTING_UP: "36",
    WAITING: "37",
    OTHER_SITE: "90",
}


SITE_COLOURS = {"alive": "32", "finished": "36", "silent": "31", "failed": "31", "never": "33"}


def render_sites(sites: list, paint) -> list[str]:
    """A line per site's driver (alive or silent, its last beat's age by the store's
    clock, where it runs, its jobs, its last error), and how to restart a silent one."""
    rows = []
    for site in sites:
        jobs = f"{site.jobs.get('running', 0)} running, {site.jobs.get('waiting', 0)} waiting" if site.jobs else ""
        where = f"{site.host} pid {site.pid}" if site.host else ""
        beat = f"{_seconds(site.age_s)} ago" if site.age_s is not None else "never"
        rows.append((site.site, site.state, beat, where, jobs, site))
    headers = ("site", "driver", "last beat", "where", "jobs")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for *cells, site in rows:
        text = "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
        lines.append(paint(text, SITE_COLOURS.get(site.state, "0")))
        if site.last_error and site.state != "finished":
            lines.append(f"  last error: {site.last_error}")
        if site.restart and site.state != "never":
            lines.append(f"  its driver is {site.state}: restart it with `{site.restart}`")
    return lines


def _duration(days: float | None) -> str:
    if not days:
        return "-"
    hours = days * 24
    if hours < 1:
        return f"{hours * 60:.0f} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{days:.1f} d"


def _seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _clock_difference(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else _seconds(seconds)


def _bar(fraction: float, width: int = 12) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "█" * filled + "░" * (width - filled)


def render(status: CampaignStatus, colour: bool) -> str:
    def paint(text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if colour else text

    rows = []
    for s in status.simulations:
        state = s.state
        if s.state in (RUNNING, PAUSED, STAGED) and s.segment is not None:
            state = f"{s.state} segment {s.segment + 1} of {s.segments}"
        progress = f"{s.simulated_ns:g} / {s.target_ns:g} ns"
        if colour:
            progress = f"{_bar(s.simulated_ns / s.target_ns if s.target_ns else 1)} {progress}"
        speed = f"{s.ns_per_day:g}" if s.ns_per_day else "-"
        slurm = f"{s.slurm['job_id']} {s.slurm['state']}" if s.slurm else ""
        if s.slot is not None:
            slurm = f"{slurm} slot {s.slot}".strip()
        claim = ""
        if s.claim and s.claim["state"] in ("held", "expired"):
            claim = f"{s.claim['site']} {s.claim['job']}, renewed {_seconds(s.claim['renewed_seconds_ago'])} ago"
            claim += " (expired)" if s.claim["state"] == "expired" else ""
        rows.append((s.simulation, s.site or "", state, progress, speed, _duration(s.eta_days), slurm, claim, s.state))
    headers = ("simulation", "site", "state", "simulated / target", "ns/day", "ETA", "slurm job / slot", "held by")
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    for column in (1, 6, 7):  # no empty columns
        if rows and not any(r[column] for r in rows):
            widths[column] = 0
    lines = []

    def line(cells, state=None):
        text = "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True) if width).rstrip()
        return paint(text, COLOURS.get(state, "0")) if state and colour else text

    lines.append(line(headers, None))
    for row in rows:
        lines.append(line(row[:8], row[8]))
    for s in status.simulations:
        if s.failure:
            lines.append("")
            lines.append(
                paint(f"{s.simulation}: {s.failure['rule']} {s.state}: {s.failure['reason']}", COLOURS[s.state])
            )
            lines.append(f"  {s.failure['message']}")
            lines.append(f"  log: {s.failure['log']}")
            lines.extend(f"  | {text}" for text in s.failure["last_lines"])
    if status.goals:
        lines.append("")
        lines.extend(render_goals(status.goals))
    if status.sites:
        lines.append("")
        lines.extend(render_sites(status.sites, paint))
    if status.clock_offset_s is not None and abs(status.clock_offset_s) > CLOCK_NOTE_SECONDS:
        ahead = "ahead of" if status.clock_offset_s > 0 else "behind"
        lines.append("")
        lines.append(
            f"note: this machine's clock is {_clock_difference(abs(status.clock_offset_s))} {ahead} the store's; claims' "
            "ages use the store's clock, and each record's times are by the clock it names (clock, clock_offset_s)"
        )
    totals = status.totals
    states = ", ".join(f"{count} {state}" for state, count in sorted(totals["states"].items()))
    fraction = totals["simulated_ns"] / totals["target_ns"] if totals["target_ns"] else 1.0
    lines.append("")
    lines.append(
        f"{totals['simulations']} simulations ({states}); {totals['simulated_ns']:g} of "
        f"{totals['target_ns']:g} ns ({100 * fraction:.0f}%)"
        + (f" {_bar(fraction, 20)}" if colour else "")
        + f"; ETA {_duration(totals['eta_days'])}"
    )
    return "\n".join(lines)
