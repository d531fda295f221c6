"""Where every file of a campaign lives: one place for the path patterns that the
Snakemake rules, the job scripts and the status tools share.

Patterns use Snakemake wildcards: ``{system}``, ``{replica}`` (an integer) and
``{segment}`` (zero-padded, see :func:`segment_name`).

Three areas:

- ``results/`` (in the campaign directory): setup outputs, the records of fetched
  segments, analyses and the summary. Always local, so that planning never needs
  another host.
- the *store* (``store`` in config, ``results`` by default): the durable copy of
  every segment's data.
- the *scratch* area (``scratch`` in config): where segments are staged and run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NamedTuple

RESULTS = "results"
LOGS = "logs"
# Snakemake's lock files (<n>.input.lock, <n>.output.lock), and the file every main
# Snakemake process of the campaign holds a flock on while it lives (see runlock.py).
SNAKEMAKE_LOCKS = ".snakemake/locks"
RUN_LOCK = ".snakemake/mdcampaign/run.lock"

SIM = "{system}/r{replica}"

# results/
SETUP_DIR = f"{RESULTS}/systems/{{system}}"
SETUP_INFO = f"{SETUP_DIR}/setup.json"
# What every engine's setup writes (the rule declares these; the engine's own files,
# see EngineFiles, are found through setup.json, which is written last).
SETUP_OUTPUTS = ("topology.pdb", "trajectory_topology.pdb", "setup.json")
SIMS_RECORDS = f"{RESULTS}/sims"
SIM_RECORDS = f"{SIMS_RECORDS}/{SIM}"
# A segment's record (its manifest), beside its data in the store and in results/.
MANIFEST = "manifest.json"
SEGMENT_RECORD = f"{SIM_RECORDS}/segments/{{segment}}/{MANIFEST}"
SEGMENT_MARKER = f"{SIM_RECORDS}/segments/{{segment}}.fetched"
# The analysis of a simulation's first {segments} segments (zero-padded count): a
# raised target asks for a new one, which is what makes Snakemake continue the
# simulation (see workflow/rules/analyze.smk).
ANALYSIS_DIR = f"{SIM_RECORDS}/analysis/{{segments}}"
# Written by `analyze` once a simulation's analysis covers all its segments; named
# after the segment count, so that raising the target makes it stale by name.
COMPLETION_RECORD = f"{SIM_RECORDS}/analysis/complete-{{segments}}.json"
SUMMARY_TABLE = f"{RESULTS}/summary.tsv"
SYSTEMS_TABLE = f"{RESULTS}/systems.tsv"
# A page per system in the report: its convergence figure and its statistics table.
PER_SYSTEM = f"{RESULTS}/per-system"
PER_SYSTEM_FIGURE = "{system}.convergence.png"
PER_SYSTEM_TABLE = "{system}.statistics.tsv"
COMPARISONS_TABLE = f"{RESULTS}/comparisons.tsv"
COMPARISONS_FIGURE = f"{RESULTS}/comparisons.png"
# Continue until converged (convergence.py): a system's decision to stop, per goal
# ({goal}: Goal.key), as the store holds it, and how far its evaluation has got.
DECISION = f"{RESULTS}/decisions/{{system}}/{{goal}}.json"
DECISION_PROGRESS = f"{RESULTS}/decisions/{{system}}/{{goal}}.progress.json"
# A segment's observables per frame, stored beside it when its system has a goal.
SEGMENT_OBSERVABLES = "observables.csv"
# One job of a packed batch of simulations (see slots.py), and what it did.
PACKS = f"{RESULTS}/packs"
PACK_ROUND = f"{PACKS}/{{batch}}/round-{{round}}.json"
BATCH_PATTERN = r"b[0-9a-f]+"
ROUND_PATTERN = r"\d+"
SUMMARY_FIGURE = f"{RESULTS}/summary.png"
# For the report: every rule of the workflow, and the segments' timelines.
REPORT_WORKFLOW = f"{RESULTS}/report/workflow.png"
REPORT_TIMELINES = f"{RESULTS}/report/timelines.png"
# Simulations whose segment timelines the report shows (the first ones of the table).
TIMELINE_SIMULATIONS = 60
# A pulling site's jobs (see pulling.py), per version of its work ({digest}): each of
# its {worker}s alternates waiting for work (await) and a job that pulls it (pull).
PULL_DIR = f"{RESULTS}/pulls/{{site}}/{{digest}}"
PULL_AWAIT = f"{PULL_DIR}/w{{worker}}/{{round}}.await.json"
PULL_ROUND = f"{PULL_DIR}/w{{worker}}/{{round}}.pull.json"
PULL_END = f"{PULL_DIR}/w{{worker}}.done.json"
DIGEST_PATTERN = r"[0-9a-f]+"
WORKER_PATTERN = r"\d+"
# Ligand parameters, one folder per distinct ligand (see ligands.py), shared by systems.
LIGAND_CACHE = f"{RESULTS}/ligands"

# A site's own state, in its campaign folder (mdcampaign sites deploy/start/stop).
SITE_STATE = ".mdcampaign"
SITE_VENV = f"{SITE_STATE}/venv"  # the environment deploy installs the campaign's build in
SITE_WHEELS = f"{SITE_STATE}/wheels"  # the build's wheel, and the wheels of its dependencies if given
SITE_BUILD = f"{SITE_STATE}/build"  # the build installed there (deploy.build_id)
DRIVER_PID = f"{SITE_STATE}/driver.pid"  # the site's Snakemake, started by `sites start`
DRIVER_LOG = f"{LOGS}/driver.log"
# While this exists the site's jobs finish their segments and take no more (`sites stop`).
DRAIN_MARKER = f"{SITE_STATE}/stop"

# relative to the store
STORE_SIMS = "sims"
STORE_SIM = f"{STORE_SIMS}/{SIM}"
STORE_SEGMENT = f"{STORE_SIM}/segments/{{segment}}"
STORE_ANALYSIS_DIR = f"{STORE_SIM}/analysis/{{segments}}"
# A paused segment's progress, for any site to continue it (parking.py): the work files
# its engine names and PARKED_RECORD, one per simulation (the newest pause).
STORE_PARKED = f"{STORE_SIM}/parked"
PARKED_RECORD = "parked.json"
# Which site and job holds which simulation, when sites pull work (see claims.py).
STORE_CLAIMS = "claims"
# Each site's driver says it is alive here, every poll (heartbeat.py): <site>.json.
STORE_SITES = "sites"
# The campaign's definition every site must run (deploy writes it; sites check it).
STORE_DEFINITION = "campaign.json"
# Each system's decision to stop (convergence.py): <system>/<goal>.json, made once.
STORE_DECISIONS = "decisions"


# written last by `stage` into a segment's scratch input: the staging is complete
STAGE_RECORD = "stage.json"


@dataclass(frozen=True)
class EngineFiles:
    """The files whose format is an MD engine's own; every other file of a campaign is
    the same for all engines (XTC trajectories, CSV energies, PDB topologies, JSON)."""

    system: str  # the simulation's system, pinned in the store with segment 0
    setup_state: str  # setup's equilibrated state, where segment 0 starts
    final_state: str  # a segment's last state, where the next segment starts

    @property
    def start_state(self) -> str:
        """The previous segment's final state, staged for the next segment."""
        return "start_state" + os.path.splitext(self.final_state)[1]

    @property
    def segment_files(self) -> tuple[str, ...]:
        """What every segment produces; the same names in scratch and in the store."""
        return ("trajectory.xtc", "energies.csv", self.final_state, "segment.json")

    @property
    def pinned_files(self) -> tuple[str, ...]:
        """Copied once per simulation (with segment 0), so that a simulation keeps using
        the system it started with even if `setup` is re-run later."""
        return (self.system, "topology.pdb", "trajectory_topology.pdb")

    @property
    def staged_files(self) -> tuple[str, ...]:
        """What `stage` copies out of the store for segment k >= 1 (plus its record)."""
        return (self.system, self.start_state, "topology.pdb", "trajectory_topology.pdb", STAGE_RECORD)


# relative to scratch
SCRATCH_SEGMENT = f"{SIM}/{{segment}}"


def segment_steps_left(scratch_segment: str | os.PathLike, files: EngineFiles, segment: int) -> list[str]:
    """Which of a segment's jobs (stage, simulate, fetch) are still to run, judged by
    their outputs in its scratch folder as the rules declare them: what Snakemake would
    decide, for a packed job that runs them itself. fetch always runs: its record in
    results/ is what says a segment is done."""
    folder = os.fspath(scratch_segment)
    simulated = [*files.segment_files, *(files.pinned_files if segment == 0 else ())]
    steps = ["fetch"]
    if not all(os.path.exists(os.path.join(folder, "output", name)) for name in simulated):
        steps.insert(0, "simulate")
        if segment > 0 and not os.path.exists(os.path.join(folder, "input", STAGE_RECORD)):
            steps.insert(0, "stage")
    return steps


SEGMENT_DIGITS = 4
SEGMENT_PATTERN = r"\d\d\d\d+"  # no braces: Snakemake would read {4,} as a wildcard
REPLICA_PATTERN = r"[1-9]\d*"


def segment_name(index: int) -> str:
    return f"{index:0{SEGMENT_DIGITS}d}"


class SimulationId(NamedTuple):
    """A simulation: a system and one of its replicas. Its name, ``<system>/r<replica>``,
    is what users see and its path below ``sims/``."""

    system: str
    replica: int

    @property
    def name(self) -> str:
        return sim_name(self.system, self.replica)

    @classmethod
    def parse(cls, name: str) -> SimulationId:
        """The simulation a name stands for (ValueError if it names none)."""
        system, separator, replica = name.rpartition("/r")
        if not separator or not system or not replica.isdigit():
            raise ValueError(f"not a simulation name: {name!r} (expected <system>/r<replica>)")
        return cls(system, int(replica))


def sim_name(system: str, replica: int) -> str:
    """The name users see for a simulation; it is also its path below ``sims/``
    (planning calls this for every simulation: plain formatting)."""
    return f"{system}/r{replica}"


class _KeepMissing(dict):
    def __missing__(self, key):
        return "{" + key + "}"


def fill(pattern: str, **wildcards) -> str:
    """Fill some or all wildcards of a pattern (unfilled ones stay as wildcards)."""
    return pattern.format_map(_KeepMissing(wildcards))


def completion_record(system: str, replica, segments: int) -> str:
    return COMPLETION_RECORD.format(system=system, replica=replica, segments=segment_name(segments))


def analysis_file(system: str, replica, segments: int, name: str = "analysis.json") -> str:
    return f"{ANALYSIS_DIR.format(system=system, replica=replica, segments=segment_name(segments))}/{name}"


def setup_info(system: str) -> str:
    """A system's setup record, written last by `setup` (it stands for all its files)."""
    return SETUP_INFO.format(system=system)


def next_round(batch: str) -> int:
    """The round a batch's next job is: one more than the rounds recorded (one listing)."""
    try:
        return sum(1 for name in os.listdir(f"{PACKS}/{batch}") if name.startswith("round-"))
    except FileNotFoundError:
        return 0


def segment_marker(system: str, replica, segment: int) -> str:
    """The fetch checkpoint's output for one segment."""
    return SEGMENT_MARKER.format(system=system, replica=replica, segment=segment_name(segment))


def segment_record(system: str, replica, segment: int) -> str:
    """The local record (manifest) of one segment; called once per segment per plan,
    so it is plain string formatting."""
    return SEGMENT_RECORD.format(system=system, replica=replica, segment=segment_name(segment))


def segments_fetched(system: str, replica, limit: int, root: str = ".") -> int:
    """How many segments of a simulation are in the store (0, 1, ... in order, at most
    ``limit``), counted from the local manifests under ``root``: a few stat calls."""
    done = 0
    while done < limit and os.path.exists(os.path.join(root, segment_record(system, replica, done))):
        done += 1
    return done


def sim_records(simulation: str) -> str:
    """A simulation's folder of records in results/ (``simulation``: its name)."""
    return f"{SIMS_RECORDS}/{simulation}"


def store_sim(simulation: str) -> str:
    """A simulation's folder in the store (``simulation``: its name, ``<system>/r<N>``)."""
    return f"{STORE_SIMS}/{simulation}"


def store_parked(simulation: str) -> str:
    """Where a simulation's paused segment is parked in the store."""
    return f"{store_sim(simulation)}/parked"


def store_segments(simulation: str) -> str:
    """The folder of a simulation's segments in the store."""
    return f"{store_sim(simulation)}/segments"


def sim_segment_record(segment: int) -> str:
    """A segment's record within its simulation's folder (in the store or a copy of it)."""
    return f"segments/{segment_name(segment)}/{MANIFEST}"


def scratch_segment(scratch: str, system: str, replica, segment: int) -> str:
    """A segment's folder in scratch (its input, work and output areas)."""
    return fill(f"{scratch}/{SCRATCH_SEGMENT}", system=system, replica=replica, segment=segment_name(segment))


def store_analysis(simulation: str, segments: int, name: str = "analysis.json") -> str:
    """The analysis of a simulation's first ``segments`` segments, in the store."""
    system, replica = SimulationId.parse(simulation)
    return f"{STORE_ANALYSIS_DIR.format(system=system, replica=replica, segments=segment_name(segments))}/{name}"


def log_path(rule: str) -> str:
    """The log of one job of a rule (a pattern with the rule's wildcards)."""
    return LOG_PATTERNS[rule]


LOG_PATTERNS = {
    "setup": f"{LOGS}/setup/{{system}}.log",
    "stage": f"{LOGS}/stage/{SIM}/{{segment}}.log",
    "simulate": f"{LOGS}/simulate/{SIM}/{{segment}}.log",
    "fetch": f"{LOGS}/fetch/{SIM}/{{segment}}.log",
    "analyze": f"{LOGS}/analyze/{SIM}/{{segments}}.log",
    "summary": f"{LOGS}/summary.log",
    "pack": f"{LOGS}/pack/{{batch}}/{{round}}.log",
    "await_work": f"{LOGS}/pull/{{site}}/{{digest}}/w{{worker}}/{{round}}.await.log",
    "pull": f"{LOGS}/pull/{{site}}/{{digest}}/w{{worker}}/{{round}}.log",
    "pulled": f"{LOGS}/pull/{{site}}/{{digest}}/w{{worker}}.done.log",
}


def scratch_area(scratch: str, area: str) -> str:
    """A folder of a segment's scratch area: 'input' (staged), 'work' (the runner's,
    unknown to Snakemake so that nothing deletes a partial segment), 'output'."""
    return f"{scratch}/{SCRATCH_SEGMENT}/{area}"


def scratch_work(scratch: str, system: str, replica, segment: int) -> str:
    """A segment's work folder in scratch (the runner's: see scratch_area)."""
    return fill(scratch_area(scratch, "work"), system=system, replica=replica, segment=segment_name(segment))


def analysis_cache(scratch: str) -> str:
    """Where `analyze` puts its copy of a simulation's segments from a remote store."""
    return f"{scratch}/{SIM}/analysis-cache"
