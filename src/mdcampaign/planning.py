"""What the workflow asks of the campaign while Snakemake plans: the rules' input
functions, params and resources, in one object (:class:`Plan`) that the rule files
only wire in (``workflow/rules/common.smk``), and that the tests call directly.

Planning cost is designed here: a finished segment is referred to by its manifest (a
file no rule makes) and a finished, analyzed simulation is not an input of the summary
at all, so re-planning costs what is left to do, not the campaign's size; every path
comes from :mod:`layout`, every job's argument from :class:`jobspec.JobSpec`.
"""

from __future__ import annotations

import json
import os
import shlex
import time

from . import layout
from .campaign import Campaign
from .convergence import Goal, segments_wanted
from .jobspec import JobSpec
from .ligand_spec import ligands_record
from .pulling import campaign_digest, workers
from .resources import expected_speed, runtime_minutes, segment_runtime_minutes
from .slots import batches


class Plan:
    """One Snakemake run's plan of a campaign. ``checkpoints`` is Snakemake's (the
    continue loop asks them for the next segment); ``main_process``: whether this is
    the Snakemake that plans the whole run (not one inside a cluster job)."""

    def __init__(
        self,
        campaign: Campaign,
        config: dict,
        config_file: str,
        checkpoints,
        main_process: bool = True,
        full_plan: bool = False,
        job_python: str = "python",
        job_script: str = "scripts/job.py",
    ):
        self.campaign = campaign
        self.config = config
        self.checkpoints = checkpoints
        self.main_process = main_process
        # `snakemake --report` collects figures from the jobs of the plan, so it needs
        # every simulation's analyze job in it, finished or not.
        self.full_plan = full_plan
        self.job_python, self.job_script = job_python, job_script
        self.scratch = campaign.scratch_here
        self.packing = campaign.packing
        # This run's share of the campaign: every simulation, or those of this site.
        self.simulations = campaign.share
        self.named = {sim.name: sim for sim in self.simulations}
        # With packing, this run's share in batches of one job's worth (see slots), in
        # table order: every process (this one, and Snakemake inside a cluster job) forms
        # the same batches, whatever has finished since.
        self.batch_of = (
            batches([sim.name for sim in self.simulations], self.packing.batch_size) if self.packing.enabled else {}
        )
        self.members: dict[str, list[str]] = {}
        for simulation, batch in self.batch_of.items():
            self.members.setdefault(batch, []).append(simulation)
        # When sites pull work (see pulling), this site runs `workers` chains of jobs,
        # each waiting for work (await_work) and pulling it (pull) in turn; no job is
        # planned per simulation.
        self.pulls = campaign.pulls
        self.pull_wildcards = {"site": campaign.site, "digest": campaign_digest(campaign, config)} if self.pulls else {}
        self.workers = workers(campaign) if self.pulls else 0
        # How segments are run, for the report's rule graph.
        self.segment_mode = "pulling" if self.pulls else ("packed" if self.packing.enabled else "segments")
        # The summary's rows: this run's share; when sites pull, the whole campaign, whose
        # analyses it reads from the store (paths relative to the store).
        self.summarized = campaign.simulations if self.pulls else self.simulations
        self.summarized_analyses = [
            layout.store_analysis(sim.name, sim.n_segments)
            if self.pulls
            else layout.analysis_file(sim.system, sim.replica, sim.n_segments)
            for sim in self.summarized
        ]
        # The few config values shell-run jobs need (see jobs).
        self.job_config = {
            "platform": campaign.platform,
            "store": campaign.store,
            "transfer": config["transfer"],
            "site": campaign.site,
            "scratch": self.scratch,
        }
        # Pulling jobs decide what to run when they run, from the whole campaign.
        self.pull_job_config = {**self.job_config, "campaign": config, "config_file": config_file}
        self._view: dict = {}
        self._goals: dict = {}

    # -- rules and their jobs ------------------------------------------------------------

    def runs_locally(self, rule: str) -> bool:
        """Whether a rule runs where Snakemake runs (`local_rules`, set by profiles)."""
        return rule in self.campaign.local_rules

    def scratch_dir(self, area: str) -> str:
        return layout.scratch_area(self.scratch, area)

    def job_spec(self, config: dict | None = None, **values):
        """A params function giving a shell-run job what it needs, as one JSON argument
        (a JobSpec): its wildcards, these values (functions of the wildcards and the
        input) and ``config`` (the job config by default). (Only wildcards and input:
        asking for threads or resources here would evaluate every job's resources while
        planning.)"""

        def spec(wildcards, input):
            given = {key: value(wildcards, input) for key, value in values.items()}
            return JobSpec(
                dict(wildcards),
                {key: value for key, value in given.items() if value is not None},  # None: not given
                config or self.job_config,
            ).to_json()

        return spec

    def job_command(self, rule: str, runtime: bool = False) -> str:
        """The shell command of a shell-run rule: the quoted JSON spec, then the job's
        threads and (for rules that have one) its time limit in minutes, filled in
        when the job runs."""
        command = f"{self.job_python} {shlex.quote(self.job_script)} {rule} {{params.job:q}} {{threads}}"
        return command + (" {resources.runtime}" if runtime else "")

    def simulation_of(self, wildcards):
        return self.campaign.simulation(wildcards.system, wildcards.replica)

    def seed_of(self, wildcards, input=None) -> int:
        return self.simulation_of(wildcards).seed

    def frame_interval_of(self, wildcards, input=None) -> float:
        return self.simulation_of(wildcards).protocol.frame_interval_ps

    def protocol_of(self, wildcards, input=None) -> dict:
        return self.campaign.systems[wildcards.system].protocol.record()

    def goal_of(self, system: str) -> Goal | None:
        """When a system stops (continue until converged), or None: at its cap."""
        if system not in self._goals:
            spec = self.campaign.systems[system]
            self._goals[system] = Goal.of(spec.protocol, spec.replicas)
        return self._goals[system]

    def until_of(self, wildcards, input=None) -> dict | None:
        goal = self.goal_of(wildcards.system)
        return goal.record() if goal else None

    def packing_of(self, wildcards, input=None) -> dict:
        return self.packing.__dict__

    @staticmethod
    def last_input(wildcards, input) -> str:
        return input[-1]

    # -- time limits --------------------------------------------------------------------

    def simulate_runtime(self, wildcards, attempt) -> int:
        """Time limit (minutes) of a simulate job: segment length over the expected speed,
        with room to spare, growing with each retry."""
        simulation = self.simulation_of(wildcards)
        speed = expected_speed(self.campaign, simulation, int(wildcards.segment))
        return segment_runtime_minutes(
            simulation.protocol.segment_ns, speed, attempt, self.campaign.max_runtime_minutes
        )

    def pack_runtime(self, wildcards, attempt) -> int:
        """Time limit (minutes) of a packed job: its batch's remaining work spread over
        its slots, but at least its longest simulation's, with room to spare; at most the
        partition's limit (the job stops its slots cleanly before it, and the batch's next
        job continues)."""
        remaining = []  # days of work left per simulation
        for sim in self.batch_simulations(wildcards.batch):
            done = layout.segments_fetched(sim.system, sim.replica, sim.n_segments)
            speed = expected_speed(self.campaign, sim, done)
            remaining.append((sim.n_segments - done) * sim.protocol.segment_ns / speed)
        days = max([sum(remaining) / self.packing.slots, *remaining])
        return runtime_minutes(days, attempt, self.campaign.max_runtime_minutes)

    # -- the continue loop -----------------------------------------------------------------

    @staticmethod
    def segment_record(system, replica, segment: int) -> str:
        """How the DAG refers to 'segment k of this simulation is in the store'.

        A fetched segment is referred to by its manifest, a plain file that no rule
        produces, so Snakemake does not expand the stage/simulate/fetch jobs of finished
        segments: planning cost follows the work left, not the campaign's size. A segment
        not yet fetched is referred to by the fetch rule's marker, which pulls in its
        jobs."""
        record = layout.segment_record(system, replica, segment)
        if os.path.exists(record):
            return record
        return layout.segment_marker(system, replica, segment)

    def segment_records(self, wildcards) -> list[str]:
        """All segments of a simulation: the continue loop.

        While segments are missing, this asks the `fetch` checkpoint for the next one;
        Snakemake then plans just that segment (stage, simulate, fetch) and calls this
        again when it is in the store. Planning therefore holds one segment per
        unfinished simulation, not all of them, however long the simulations are."""
        simulation = self.simulation_of(wildcards)
        if int(wildcards.segments) != simulation.n_segments:
            raise ValueError(f"{simulation.name} has {simulation.n_segments} segments, not {wildcards.segments}")
        goal = self.goal_of(simulation.system)
        # fewer once its system stopped: read again after each fetch (convergence)
        wanted = segments_wanted(simulation.system, simulation.n_segments, goal)
        done = layout.segments_fetched(simulation.system, simulation.replica, wanted)
        if goal is not None:
            self.keep_in_step(simulation, self.judged(simulation.system, simulation.replica, done), wanted)
        elif done < wanted:
            self.request_segment(simulation, done)
        return [self.segment_record(simulation.system, simulation.replica, k) for k in range(wanted)]

    def keep_in_step(self, simulation, done: int, wanted: int) -> None:
        """A system that stops when converged is judged at boundaries every replica has
        reached: a replica runs at most one segment ahead of its slowest sibling, and its
        analysis waits until they all end (at the cap, or at the decision), so that no
        replica runs or is analyzed past a decision the others were about to bring."""
        slowest, least = simulation, done
        for replica in range(1, self.campaign.systems[simulation.system].replicas + 1):
            if (
                replica != simulation.replica
                and least > 0
                and layout.sim_name(simulation.system, replica) in self.named
            ):
                count = self.judged(simulation.system, replica, _fetched_up_to(simulation.system, replica, least))
                if count < least:
                    slowest, least = self.campaign.simulation(simulation.system, replica), count
        if least >= wanted:
            return
        if done < wanted and done <= least:
            self.request_segment(simulation, done)
        elif least < wanted:
            self.request_segment(slowest, least)

    @staticmethod
    def judged(system: str, replica, fetched: int) -> int:
        """Of a simulation's ``fetched`` segments (records in results/), those whose
        `fetch` has ended: its marker, written last, comes after the judgement of the
        boundary it completes (a record is there as soon as the segment is stored, and
        with the store in results/ it is the stored one)."""
        if fetched and not os.path.exists(layout.segment_marker(system, replica, fetched - 1)):
            return fetched - 1
        return fetched

    def request_segment(self, simulation, segment: int) -> None:
        """Ask for the job that makes the next segment of a simulation: its own `fetch`
        checkpoint, or with packing the next job of the simulation's batch (which runs as
        many of its segments as the allocation allows)."""
        if self.packing.enabled:
            batch = self.batch_of[simulation.name]
            self.checkpoints.pack.get(batch=batch, round=str(layout.next_round(batch)))
        else:
            self.checkpoints.fetch.get(**simulation.wildcards, segment=layout.segment_name(segment))

    def summary_inputs(self, wildcards) -> list[str]:
        """The summary's inputs: the analyses still to be made. A finished, analyzed
        simulation (its completion record exists, a file no rule makes) is not an input
        at all, so that re-planning a mostly finished campaign neither creates jobs nor
        checks files for it; the summary reads every analysis from summarized_analyses.
        When the site pulls: the end of each of its workers (the summary then reads the
        analyses of the whole campaign from the store)."""
        if self.pulls:
            return [layout.fill(layout.PULL_END, **self.pull_wildcards, worker=w) for w in range(self.workers)]
        return [
            analysis
            for sim, analysis in zip(self.simulations, self.summarized_analyses, strict=True)
            if self.full_plan
            or not os.path.exists(
                layout.completion_record(
                    sim.system, sim.replica, segments_wanted(sim.system, sim.n_segments, self.goal_of(sim.system))
                )
            )
        ]

    # -- setup and segments ---------------------------------------------------------------

    def setup_inputs(self, wildcards) -> dict[str, str]:
        """The structure a system is set up from (and its ligand's chemistry file), or the
        lab's own engine inputs that it runs as given (named as in System.own_inputs)."""
        system = self.campaign.systems[wildcards.system]
        if system.own_inputs:
            return {key: str(path) for key, path in system.own_inputs.items()}
        inputs = {"structure": str(system.structure)}
        files = [ligand.chemistry_file for ligand in system.ligands if ligand.chemistry_file]
        for number, path in enumerate(files, 1):  # the first as it always was named
            inputs["ligand_file" if number == 1 else f"ligand_file_{number}"] = str(path)
        return inputs

    def setup_protocol(self, wildcards) -> dict:
        """setup's protocol param: the protocol record, and the system's ligands if it has
        any (only then, so that the params of systems without one stay as they were)."""
        system = self.campaign.systems[wildcards.system]
        record = system.protocol.record()
        return {**record, "ligand": ligands_record(system.ligands)} if system.ligands else record

    def setup_seed(self, wildcards) -> int:
        """The seed of a system's setup (its equilibration's velocities)."""
        return self.campaign.systems[wildcards.system].protocol.seed + 1

    def simulate_inputs(self, wildcards) -> dict[str, str]:
        """Segment 0 starts from its system's setup (on the campaign's file system, read
        in place: no staging job needed; setup.json stands for the engine's own files,
        written before it); segment k from what `stage` copied out of the store."""
        if int(wildcards.segment) == 0:
            return {
                name.split(".")[0]: layout.fill(f"{layout.SETUP_DIR}/{name}", system=wildcards.system)
                for name in layout.SETUP_OUTPUTS
            }
        return {"staged": self.scratch_dir("input")}

    def stage_inputs(self, wildcards) -> dict[str, str]:
        """Segment k (k >= 1) continues from segment k-1, in the store."""
        segment = int(wildcards.segment)
        if segment == 0:
            raise ValueError("segment 0 starts from setup and is not staged")
        return {"previous": self.segment_record(wildcards.system, wildcards.replica, segment - 1)}

    # -- packed jobs ----------------------------------------------------------------------

    def batch_simulations(self, batch: str) -> list:
        return [self.named[name] for name in self.members[batch]]

    def pack_members(self, wildcards, input=None) -> list[dict]:
        """The simulations of a batch, with what their segment jobs need."""
        return [
            {
                **sim.wildcards,
                "n_segments": sim.n_segments,
                "protocol": sim.protocol.record(),
                "seed": sim.seed,
                **({"until": goal.record()} if (goal := self.goal_of(sim.system)) else {}),
            }
            for sim in self.batch_simulations(wildcards.batch)
        ]

    def pack_inputs(self, wildcards) -> list[str]:
        """The set-up systems of a batch's simulations that have not started yet."""
        return sorted(
            {
                layout.setup_info(sim.system)
                for sim in self.batch_simulations(wildcards.batch)
                if layout.segments_fetched(sim.system, sim.replica, 1) == 0
            }
        )

    # -- a pulling site -------------------------------------------------------------------

    def worker_rounds(self, wildcards) -> list[str]:
        """One worker's rounds so far, each a wait for work then a job pulling it, up to
        the wait that found everything complete: the input of its `pulled` end."""
        rounds: list[str] = []
        number = 0
        own = {**self.pull_wildcards, "worker": wildcards.worker}
        while True:
            wait = self.checkpoints.await_work.get(**own, round=str(number)).output.decision
            with open(wait) as handle:
                if json.load(handle)["next"] == "done":
                    return rounds + [wait]
            rounds += [wait, self.checkpoints.pull.get(**own, round=str(number)).output.round]
            number += 1

    def pull_inputs(self, wildcards) -> dict:
        """A pull job's decision to run, and the systems it may start, set up: the site's
        next unstarted simulations in its order of preference (a slice per worker, two
        per slot). Inside the job itself only the decision: what the job claims is
        decided when it runs, and needs no more than what is set up by then."""
        own = {**self.pull_wildcards, "worker": wildcards.worker, "round": wildcards.round}
        inputs = {"decision": layout.fill(layout.PULL_AWAIT, **own)}
        # inside the job, and for rounds that ran: what they were given no longer matters
        # (a setup made since must not make a finished round look out of date)
        if not self.main_process or os.path.exists(layout.fill(layout.PULL_ROUND, **own)):
            return inputs
        per_worker = 2 * (self.packing.slots if self.packing.enabled else 1)
        unstarted = self.unstarted()
        start = int(wildcards.worker) * per_worker
        if start >= len(unstarted):  # fewer waiting than this worker's slice: the first ones
            start = 0
        inputs["setups"] = sorted({layout.setup_info(sim.system) for sim in unstarted[start : start + per_worker]})
        return inputs

    def unstarted(self) -> list:
        """The unstarted simulations the site would take, in its order of preference: from
        one listing of the store, read again (and the order worked out again) when older
        than pulling.poll_seconds."""
        from .pulljob import site_view
        from .store import TransferSettings, open_store

        if self._view.get("at", 0) < time.time() - self.campaign.pulling.poll_seconds:
            store = open_store(self.campaign.store, TransferSettings(**self.config["transfer"]))
            view = site_view(self.campaign, store)
            self._view = {
                "unstarted": [sim for sim in view.preferred() if view.listing.of(sim.name).done == 0],
                "at": time.time(),
            }
        return self._view["unstarted"]


def _fetched_up_to(system: str, replica, limit: int) -> int:
    """A simulation's segments in the store, counted up to ``limit`` from the top down
    (records are made in order): one stat for a sibling that is level or ahead, a few
    for one a little behind, so that keeping replicas in step costs planning little."""
    count = limit
    while count > 0 and not os.path.exists(layout.segment_record(system, replica, count - 1)):
        count -= 1
    return count
