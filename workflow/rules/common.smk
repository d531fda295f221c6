import json
import os
import shlex
import sys
import time
from pathlib import Path

from snakemake.settings.types import DeploymentMethod
from snakemake.utils import min_version, update_config

min_version("9.0")

try:
    from mdcampaign import layout, runlock, shipped
    from mdcampaign.campaign import load_campaign
    from mdcampaign.configuration import (
        command_line_values,
        read_config_file,
        report_requested,
    )
    from mdcampaign.errors import CampaignError
    from mdcampaign.guards import account_problem, check_started
    from mdcampaign.resources import (
        measured_ns_per_day,
        runtime_minutes,
        segment_runtime_minutes,
    )
    from mdcampaign.pulljob import site_view
    from mdcampaign.pulling import campaign_digest, workers
    from mdcampaign.slots import batches
    from mdcampaign.slurm_jobs import earlier_jobs_cancelled, patient_status_checks
    from mdcampaign.store import TransferSettings, open_store
    from mdcampaign.summary import simulation_identity
except ModuleNotFoundError as missing:
    sys.exit(
        f"mdcampaign: cannot import {missing.name!r}; install mdcampaign first: "
        f"pip install mdcampaign, or pip install -e <its checkout>"
    )


# The config files given with --configfile, else the campaign's own.
CONFIG_FILES = [str(path) for path in workflow.config_settings.configfiles] or [
    "config/config.yaml"
]
# Snakemake's own message for a YAML syntax error names neither file nor line.
for config_path in CONFIG_FILES:
    try:
        read_config_file(config_path)
    except CampaignError as error:
        sys.exit(f"mdcampaign: {error}")


configfile: "config/config.yaml"


# `--config protocol={segment_ns: 0.02}`: Snakemake hands nested values over as text.
update_config(config, command_line_values(workflow.config_settings.config))

CONFIG_FILE = CONFIG_FILES[-1]
try:
    CAMPAIGN = load_campaign(config, CONFIG_FILE)
    check_started(CAMPAIGN)
except CampaignError as error:
    sys.exit(f"mdcampaign: {error}")

# Before Snakemake checks its lock: clear the one a killed run left (kill -9, OOM, a
# reboot) when that run provably no longer exists, or name the live run that holds it.
if workflow.is_main_process:
    runlock.claim()


onstart:
    # Checked when the run starts (not for dry-runs): a profile whose allocation was
    # never filled in would otherwise fail at the first sbatch.
    if problem := account_problem(config):
        sys.exit(f"mdcampaign: {problem}")
    # On a cluster: follow jobs through a controller outage, and first cancel what an
    # earlier run of this campaign left in the queue (mdcampaign.slurm_jobs).
    if (
        workflow.executor_plugin is not None
        and workflow.executor_plugin.name == "slurm"
    ):
        patient_status_checks(config["slurm_patience_minutes"])
        earlier_jobs_cancelled(".", say=lambda text: print(text, file=sys.stderr))


SCRATCH = CAMPAIGN.scratch_here
STORE = CAMPAIGN.store
# This run's share of the campaign: every simulation, or those of this site.
SIMULATIONS = CAMPAIGN.share
PACKING = CAMPAIGN.packing
# With packing, this run's share in batches of one job's worth (see mdcampaign.slots),
# in table order: every process (this one, and Snakemake inside a cluster job) forms
# the same batches, whatever has finished since.
BATCH_OF = (
    batches([sim.name for sim in SIMULATIONS], PACKING.batch_size)
    if PACKING.enabled
    else {}
)
SIMULATION_NAMED = {sim.name: sim for sim in SIMULATIONS}
# When sites pull work (see mdcampaign.pulling), this site runs WORKERS chains of
# jobs, each waiting for work (await_work) and pulling it (pull) in turn; no job is
# planned per simulation.
PULLS = CAMPAIGN.pulls
PULL_WILDCARDS = (
    {"site": CAMPAIGN.site, "digest": campaign_digest(CAMPAIGN, config)}
    if PULLS
    else {}
)
WORKERS = workers(CAMPAIGN) if PULLS else 0
# How segments are run, for the report's rule graph.
SEGMENT_MODE = "pulling" if PULLS else ("packed" if PACKING.enabled else "segments")
MEMBERS = {}
for simulation_name, batch_name in BATCH_OF.items():
    MEMBERS.setdefault(batch_name, []).append(simulation_name)


wildcard_constraints:
    system=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    replica=layout.REPLICA_PATTERN,
    segment=layout.SEGMENT_PATTERN,
    segments=layout.SEGMENT_PATTERN,
    batch=layout.BATCH_PATTERN,
    round=layout.ROUND_PATTERN,
    digest=layout.DIGEST_PATTERN,
    worker=layout.WORKER_PATTERN,


def runs_locally(rule_name):
    """Whether a rule runs where Snakemake runs (`local_rules` in config, set by profiles)."""
    return rule_name in CAMPAIGN.local_rules


def simulate_runtime(wildcards, attempt):
    """Time limit (minutes) of a simulate job: segment length over the expected speed,
    with room to spare, growing with each retry."""
    simulation = simulation_of(wildcards)
    system = CAMPAIGN.systems[simulation.system]
    speed = measured_ns_per_day(
        simulation.system, simulation.replica, int(wildcards.segment), system.replicas
    )
    if speed is None:
        speed = CAMPAIGN.expected_ns_per_day[simulation.protocol.solvent]
    return segment_runtime_minutes(
        simulation.protocol.segment_ns, speed, attempt, CAMPAIGN.max_runtime_minutes
    )


def scratch_dir(area):
    return layout.scratch_area(SCRATCH, area)


# The few config values shell-run jobs need (see mdcampaign.jobs).
JOB_CONFIG = {
    "platform": CAMPAIGN.platform,
    "store": STORE,
    "transfer": config["transfer"],
    "site": CAMPAIGN.site,
    "scratch": SCRATCH,
}
# Pulling jobs decide what to run when they run, from the whole campaign.
PULL_JOB_CONFIG = {**JOB_CONFIG, "campaign": config, "config_file": CONFIG_FILE}
JOB_SCRIPT = str(shipped.JOB_SCRIPT)


def job_spec(config=None, **values):
    """A params function giving a shell-run job what it needs, as one JSON argument:
    its wildcards, these values (functions of the wildcards, or of the wildcards and
    the input) and ``config`` (JOB_CONFIG by default). (Only wildcards and input:
    asking for threads or resources here would evaluate every job's resources while
    planning.)"""

    def spec(wildcards, input):
        return json.dumps(
            {
                "wildcards": dict(wildcards),
                "params": {
                    key: (
                        value(wildcards, input)
                        if value.__code__.co_argcount == 2
                        else value(wildcards)
                    )
                    for key, value in values.items()
                },
                "config": config or JOB_CONFIG,
            }
        )

    return spec


# With --use-conda the job runs the environment's Python; otherwise the Python that
# runs Snakemake (which has mdcampaign installed, venv or not).
JOB_PYTHON = (
    "python"
    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
    else shlex.quote(sys.executable)
)


def job_command(rule, runtime=False):
    """The shell command of a shell-run rule: the quoted JSON spec, then the job's
    threads and (for rules that have one) its time limit in minutes, filled in when
    the job runs."""
    command = (
        f"{JOB_PYTHON} {shlex.quote(JOB_SCRIPT)} {rule} {{params.job:q}} {{threads}}"
    )
    return command + (" {resources.runtime}" if runtime else "")


def seed_of(wildcards):
    return simulation_of(wildcards).seed


def frame_interval_of(wildcards):
    return simulation_of(wildcards).protocol.frame_interval_ps


def simulation_of(wildcards):
    return CAMPAIGN.simulation(wildcards.system, wildcards.replica)


def protocol_of(wildcards):
    return CAMPAIGN.systems[wildcards.system].protocol.record()


def segment_record(system, replica, segment):
    """How the DAG refers to 'segment k of this simulation is in the store'.

    A fetched segment is referred to by its manifest, a plain file that no rule
    produces, so Snakemake does not expand the stage/simulate/fetch jobs of finished
    segments: planning cost follows the work left, not the campaign's size. A segment
    not yet fetched is referred to by the fetch rule's marker, which pulls in its jobs.
    """
    record = layout.segment_record(system, replica, segment)
    if os.path.exists(record):
        return record
    return layout.segment_marker(system, replica, segment)


# `snakemake --report` collects figures from the jobs of the plan, so it needs every
# simulation's analyze job in it, finished or not.
FULL_PLAN = report_requested(sys.argv[1:])


# Every simulation's analysis, in the order of SIMULATIONS.
# The summary's rows: this run's share; when sites pull, the whole campaign, whose
# analyses it reads from the store (paths relative to the store).
SUMMARIZED = CAMPAIGN.simulations if PULLS else SIMULATIONS
SUMMARIZED_ANALYSES = [
    (
        layout.store_analysis(sim.name, sim.n_segments)
        if PULLS
        else layout.analysis_file(sim.system, sim.replica, sim.n_segments)
    )
    for sim in SUMMARIZED
]


def summary_inputs(wildcards):
    """The summary's inputs: the analyses still to be made. A finished, analyzed
    simulation (its completion record exists, a file no rule makes) is not an input
    at all, so that re-planning a mostly finished campaign neither creates jobs nor
    checks files for it; the summary reads every analysis from SUMMARIZED_ANALYSES. When
    the site pulls: the end of each of its workers (the summary then reads the
    analyses of the whole campaign from the store)."""
    if PULLS:
        return [
            layout.fill(layout.PULL_END, **PULL_WILDCARDS, worker=worker)
            for worker in range(WORKERS)
        ]
    return [
        analysis
        for sim, analysis in zip(SIMULATIONS, SUMMARIZED_ANALYSES)
        if FULL_PLAN
        or not os.path.exists(
            layout.completion_record(sim.system, sim.replica, sim.n_segments)
        )
    ]


def segment_records(wildcards):
    """All segments of a simulation: the continue loop.

    While segments are missing, this asks the `fetch` checkpoint for the next one;
    Snakemake then plans just that segment (stage, simulate, fetch) and calls this
    again when it is in the store. Planning therefore holds one segment per
    unfinished simulation, not all of them, however long the simulations are.
    """
    simulation = simulation_of(wildcards)
    if int(wildcards.segments) != simulation.n_segments:
        raise ValueError(
            f"{simulation.name} has {simulation.n_segments} segments, not {wildcards.segments}"
        )
    done = layout.segments_fetched(
        simulation.system, simulation.replica, simulation.n_segments
    )
    if done < simulation.n_segments:
        request_segment(simulation, done)
    return [
        segment_record(simulation.system, simulation.replica, k)
        for k in range(simulation.n_segments)
    ]


def request_segment(simulation, segment):
    """Ask for the job that makes the next segment of a simulation: its own `fetch`
    checkpoint, or with packing the next job of the simulation's batch (which runs
    as many of its segments as the allocation allows)."""
    if PACKING.enabled:
        batch = BATCH_OF[simulation.name]
        checkpoints.pack.get(batch=batch, round=str(layout.next_round(batch)))
    else:
        checkpoints.fetch.get(
            **simulation.wildcards, segment=layout.segment_name(segment)
        )


def pack_members(wildcards):
    """The simulations of a batch, with what their segment jobs need."""
    return [
        {
            **sim.wildcards,
            "n_segments": sim.n_segments,
            "protocol": sim.protocol.record(),
            "seed": sim.seed,
        }
        for sim in batch_simulations(wildcards.batch)
    ]


def batch_simulations(batch):
    return [SIMULATION_NAMED[name] for name in MEMBERS[batch]]


def pack_inputs(wildcards):
    """The set-up systems of a batch's simulations that have not started yet."""
    return sorted(
        {
            layout.setup_info(sim.system)
            for sim in batch_simulations(wildcards.batch)
            if layout.segments_fetched(sim.system, sim.replica, 1) == 0
        }
    )


def pack_runtime(wildcards, attempt):
    """Time limit (minutes) of a packed job: its batch's remaining work spread over
    its slots, but at least its longest simulation's, with room to spare; at most the
    partition's limit (the job stops its slots cleanly before it, and the batch's next
    job continues)."""
    remaining = []  # days of work left per simulation
    for sim in batch_simulations(wildcards.batch):
        done = layout.segments_fetched(sim.system, sim.replica, sim.n_segments)
        speed = measured_ns_per_day(
            sim.system, sim.replica, done, CAMPAIGN.systems[sim.system].replicas
        )
        speed = speed or CAMPAIGN.expected_ns_per_day[sim.protocol.solvent]
        remaining.append((sim.n_segments - done) * sim.protocol.segment_ns / speed)
    days = max([sum(remaining) / PACKING.slots, *remaining])
    return runtime_minutes(days, attempt, CAMPAIGN.max_runtime_minutes)


def setup_inputs(wildcards):
    """The structure a system is set up from (and its ligand's chemistry file), or the
    lab's own engine inputs that it runs as given (named as in System.own_inputs: tpr,
    or gro, top, mdp, ndx)."""
    system = CAMPAIGN.systems[wildcards.system]
    if system.own_inputs:
        return {key: str(path) for key, path in system.own_inputs.items()}
    inputs = {"structure": str(system.structure)}
    if system.ligand and system.ligand.chemistry_file:
        inputs["ligand_file"] = str(system.ligand.chemistry_file)
    return inputs


def setup_protocol(wildcards):
    """setup's protocol param: the protocol record, and the system's ligand if it has
    one (only then, so that the params of systems without one stay as they were)."""
    system = CAMPAIGN.systems[wildcards.system]
    record = system.protocol.record()
    return {**record, "ligand": system.ligand.record()} if system.ligand else record


def simulate_inputs(wildcards):
    """Segment 0 starts from its system's setup (on the campaign's file system, read
    in place: no staging job needed; setup.json stands for the engine's own files,
    written before it); segment k from what `stage` copied out of the store."""
    if int(wildcards.segment) == 0:
        return {
            name.split(".")[0]: layout.fill(
                f"{layout.SETUP_DIR}/{name}", system=wildcards.system
            )
            for name in layout.SETUP_OUTPUTS
        }
    return {"staged": scratch_dir("input")}


def stage_inputs(wildcards):
    """Segment k (k >= 1) continues from segment k-1, in the store."""
    segment = int(wildcards.segment)
    if segment == 0:
        raise ValueError("segment 0 starts from setup and is not staged")
    return {
        "previous": segment_record(wildcards.system, wildcards.replica, segment - 1)
    }


def pull_rounds_of(wildcards):
    return {**PULL_WILDCARDS, "worker": wildcards.worker}


def worker_rounds(wildcards):
    """One worker's rounds so far, each a wait for work then a job pulling it, up to
    the wait that found everything complete: the input of its `pulled` end."""
    rounds = []
    number = 0
    while True:
        wait = checkpoints.await_work.get(
            **pull_rounds_of(wildcards), round=str(number)
        ).output.decision
        with open(wait) as handle:
            if json.load(handle)["next"] == "done":
                return rounds + [wait]
        rounds += [
            wait,
            checkpoints.pull.get(
                **pull_rounds_of(wildcards), round=str(number)
            ).output.round,
        ]
        number += 1


def pull_inputs(wildcards):
    """A pull job's decision to run, and the systems it may start, set up: the site's
    next unstarted simulations in its order of preference (a slice per worker, two
    per slot). Inside the job itself only the decision: what the job claims is
    decided when it runs, and needs no more than what is set up by then."""
    inputs = {
        "decision": layout.fill(
            layout.PULL_AWAIT,
            **PULL_WILDCARDS,
            worker=wildcards.worker,
            round=wildcards.round,
        )
    }
    # inside the job, and for rounds that ran: what they were given no longer matters
    # (a setup made since must not make a finished round look out of date)
    finished = layout.fill(
        layout.PULL_ROUND,
        **PULL_WILDCARDS,
        worker=wildcards.worker,
        round=wildcards.round,
    )
    if not workflow.is_main_process or os.path.exists(finished):
        return inputs
    per_worker = 2 * (PACKING.slots if PACKING.enabled else 1)
    unstarted = planning_view()["unstarted"]
    start = int(wildcards.worker) * per_worker
    # fewer waiting than this worker's slice: the first ones
    if start >= len(unstarted):
        start = 0
    inputs["setups"] = sorted(
        {layout.setup_info(sim.system) for sim in unstarted[start : start + per_worker]}
    )
    return inputs


_VIEW = {}


def planning_view():
    """What the site's planning needs of the claims: the unstarted simulations it would
    take, in its order of preference. From one listing of the store, read again (and
    the order worked out again) when older than pulling.poll_seconds."""
    if _VIEW.get("at", 0) < time.time() - CAMPAIGN.pulling.poll_seconds:
        store = open_store(STORE, TransferSettings(**config["transfer"]))
        view = site_view(CAMPAIGN, store)
        _VIEW.update(
            unstarted=[
                sim for sim in view.preferred() if view.listing.of(sim.name).done == 0
            ],
            at=time.time(),
        )
    return _VIEW
