"""What each rule's job does: translate the job's wildcards, params and files into
calls to the modules that do the work, log to the rule's log file, and turn expected
failures into one clear line (in the log and on stderr) and an exit status instead of
a traceback.

The per-segment and per-simulation rules (stage, simulate, fetch, analyze) run
`scripts/job.py RULE SPEC` as a shell command: SPEC (JSON) carries the wildcards,
params and the few config values the job needs, and the job derives its files from
the wildcards with the same `layout` patterns the rules declare. (Snakemake's
`script:` costs a few milliseconds per job while planning, which adds up to seconds
on campaigns of thousands of simulations.) `setup` and `summary` use `script:` and
get Snakemake's object.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import layout, slurm
from .convergence import Goal, learn_decision, segments_wanted, standing
from .engines import engine_for, files_of
from .errors import EXIT_FAILED, EXIT_PAUSED, CampaignError, DataError, SegmentError, TransferError
from .jobspec import JobSpec
from .ligand_spec import ligands_from_record
from .protocol import Protocol
from .records import read_manifest, read_manifests, write_fetched_marker
from .slots import current_slot, pin_to_slot

log = logging.getLogger("mdcampaign")


@dataclass
class JobContext:
    """What a shell-run job is given (see the module docstring)."""

    rule: str
    wildcards: dict
    params: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    threads: int = 1
    runtime: float | None = None

    def path(self, pattern: str) -> Path:
        return Path(layout.fill(pattern, **self.wildcards))

    def scratch(self, area: str) -> Path:
        return self.path(layout.scratch_area(self.config["scratch"], area))

    @property
    def log(self) -> Path:
        return self.path(layout.log_path(self.rule))

    @property
    def label(self) -> str:
        w = self.wildcards
        if "batch" in w:
            return f"{self.rule} {w['batch']} round {w['round']}"
        if "worker" in w:
            return f"{self.rule} site {w['site']} worker {w['worker']}" + (
                f" round {w['round']}" if "round" in w else ""
            )
        name = layout.sim_name(w["system"], w["replica"]) if "replica" in w else w["system"]
        return f"{self.rule} {name}" + (f" segment {w['segment']}" if "segment" in w else "")


def main(argv=None) -> int:
    """scripts/job.py RULE SPEC THREADS RUNTIME: run one job of a shell-run rule."""
    argv = sys.argv[1:] if argv is None else argv
    rule, spec = argv[0], JobSpec.from_json(argv[1])
    threads = int(_positive(argv[2]) or 1) if len(argv) > 2 else 1
    runtime = _positive(argv[3]) if len(argv) > 3 else None
    context = JobContext(rule, spec.wildcards, spec.params, spec.config, threads, runtime)
    pin_to_slot()  # in a packed job: this slot's cores
    {
        "stage": stage,
        "simulate": simulate,
        "fetch": fetch,
        "pack": pack,
        "analyze": analyze,
        "pull": pull,
        "await_work": await_work,
        "pulled": pulled,
    }[rule](context)
    return 0


def _positive(text: str) -> float | None:
    """A positive number given on the command line, else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value > 0 else None


@contextmanager
def job_logging(log_file: Path | str, what: str):
    """Log to the rule's log file; expected failures end the job with one line."""
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    console.setFormatter(logging.Formatter(f"[{what}] %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler, console]
    root.setLevel(logging.INFO)
    log.info("%s started (pid %d, host %s)", what, os.getpid(), os.uname().nodename)
    try:
        yield
    except (CampaignError, DataError, SegmentError, TransferError) as error:
        log.error("FAILED: %s", error)
        sys.exit(EXIT_FAILED)
    except ModuleNotFoundError as error:
        from .extras import extra_providing

        extra = extra_providing(error.name or "")
        hint = extra.install_hint if extra else "reinstall mdcampaign with its dependencies (pip install mdcampaign)"
        log.error("FAILED: Python module %r is not installed here: %s", error.name, hint)
        sys.exit(EXIT_FAILED)
    except Exception as error:  # noqa: BLE001 - unexpected: keep the traceback, in the log
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            log.error(
                "FAILED: disk full: %s writing %s; free some space there, then run the same command again "
                "(finished work is kept, this job resumes)",
                error.strerror,
                error.filename or "a file",
            )
            sys.exit(EXIT_FAILED)
        handler.stream.write(traceback.format_exc())
        log.error("FAILED with an unexpected error; the traceback is in %s", log_file)
        sys.exit(EXIT_FAILED)
    finally:
        handler.flush()


def setup(smk) -> None:
    from .files import atomic_write_json

    with job_logging(smk.log[0], f"setup {smk.wildcards.system}"):
        record = dict(smk.params.protocol)
        ligand = record.pop("ligand", None)
        protocol = Protocol.from_record(record)
        out_dir = Path(smk.output.info).parent
        inputs = {name: Path(path) for name, path in smk.input.items()}
        engine = engine_for(protocol.engine)
        if problem := engine.problem():
            raise CampaignError(f"engine {protocol.engine}: {problem}")
        info = engine.prepare(
            inputs,
            protocol,
            out_dir,
            smk.config["platform"],
            smk.threads,
            smk.params.seed,
            ligands_from_record(ligand),
        )
        info["system"] = smk.wildcards.system
        info["engine"] = protocol.engine
        info["protocol"] = record
        atomic_write_json(smk.output.info, info)  # last: the engine's own files are complete


def store_of(config: dict):
    from .store import TransferSettings, open_store

    return open_store(config["store"], TransferSettings.of(**config.get("transfer", {})))


def _claim(job: JobContext):
    """(board, lease) when this job runs a pulled simulation, else (None, None)."""
    if "lease" not in job.config:
        return None, None
    from .claims import ClaimBoard, Lease

    return ClaimBoard(store_of(job.config), job.config["lease_seconds"]), Lease(**job.config["lease"])


def _record_progress(board, lease, done: int, site: str, ns_per_day: float | None = None, analyzed=False) -> None:
    """Tell the claims what is now in the store. The data is stored either way: a
    marker not written is written by the next claim (it counts the store itself)."""
    try:
        if not board.published(lease, done, site, ns_per_day, analyzed):
            log.warning("%s: stored, but the claim was taken over since", lease.simulation)
    except TransferError as error:
        log.warning("%s: stored, but the claims could not be updated (%s)", lease.simulation, error)


def stage(job: JobContext) -> None:
    from .transfer import stage_segment

    with job_logging(job.log, job.label):
        w = job.wildcards
        previous = read_manifest(layout.segment_record(w["system"], w["replica"], int(w["segment"]) - 1))
        files = files_of(previous.protocol or {})
        staged = {name: job.scratch("input") / name for name in files.staged_files}
        sim_dir = layout.fill(layout.STORE_SIM, **w)
        sources = {name: (f"{sim_dir}/{name}", previous.pinned[name]) for name in files.pinned_files}
        sources[files.start_state] = (
            f"{previous.path}/{files.final_state}",
            previous.files[files.final_state]["sha256"],
        )
        info = {
            "simulation": layout.sim_name(w["system"], w["replica"]),
            "segment": int(w["segment"]),
            "pinned": previous.pinned,
        }
        stage_segment(store_of(job.config), sources, staged, info)


def _deadline(runtime_minutes: float | None) -> float | None:
    """When this job must have stopped: the Slurm job's end time when running under
    Slurm, else None (no limit). Asked once per job."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        return None
    end = os.environ.get("SLURM_JOB_END_TIME")  # set by Slurm >= 23.02
    if end and end.isdigit():
        return float(end)
    end = slurm.job_end_time(job_id)
    if end is not None:
        return end
    return time.time() + 60.0 * runtime_minutes if runtime_minutes else None


def simulate(job: JobContext) -> None:
    from .runs import SegmentTask, publish

    with job_logging(job.log, job.label):
        w = job.wildcards
        protocol = Protocol.from_record(job.params["protocol"])
        engine = engine_for(protocol.engine)
        files = engine.files
        first = int(w["segment"]) == 0
        work_dir = job.scratch("work")
        if first:  # straight from setup
            setup_dir = job.path(layout.SETUP_DIR)
            start = {name: setup_dir / name for name in layout.SETUP_OUTPUTS}
            start[files.system] = engine.simulation_system(setup_dir, job.params["seed"], work_dir)
            start_state = engine.setup_state(setup_dir)
        else:
            start = {name: job.scratch("input") / name for name in files.staged_files}
            start_state = start[files.start_state]
        output = job.scratch("output")
        task = SegmentTask(
            name=layout.sim_name(w["system"], w["replica"]),
            segment=int(w["segment"]),
            protocol=protocol,
            seed=job.params["seed"],
            system=start[files.system],
            start_state=start_state,
            topology=start["topology.pdb"],
            work_dir=work_dir,
            platform=job.config["platform"],
            threads=job.threads,
            deadline=_deadline(job.runtime),
            slot=current_slot(),
        )
        outcome = engine.run_segment(task)
        if not outcome.complete:
            log.warning(
                "PAUSED: %s segment %s stopped at step %s (%s). Progress is saved in %s; run the same "
                "command again to continue.",
                task.name,
                w["segment"],
                outcome.info["step"],
                outcome.info["reason"],
                work_dir,
            )
            sys.exit(EXIT_PAUSED)
        if first:  # the system this simulation starts with, to be kept with it in the store
            output.mkdir(parents=True, exist_ok=True)
            for name in files.pinned_files:  # each complete before the segment's files appear
                shutil.copyfile(start[name], output / f".{name}.partial")
                os.replace(output / f".{name}.partial", output / name)
        publish(work_dir, {name: output / name for name in files.segment_files})


def fetch(job: JobContext) -> None:
    from .transfer import fetch_segment

    with job_logging(job.log, job.label):
        w = job.wildcards
        segment = int(w["segment"])
        output = job.scratch("output")
        files = files_of(job.params["protocol"])
        segment_files = {name: output / name for name in files.segment_files}
        info = {
            "simulation": layout.sim_name(w["system"], w["replica"]),
            "protocol": job.params["protocol"],
            "seed": job.params["seed"],
            "site": job.config.get("site"),
        }
        if segment == 0:
            # the system a simulation starts with is kept with it in the store
            pinned = {name: output / name for name in files.pinned_files}
        else:
            pinned = {}
            previous = read_manifest(layout.segment_record(w["system"], w["replica"], segment - 1))
            info["pinned"] = previous.pinned
            if job.params.get("until") and layout.SEGMENT_OBSERVABLES not in previous.files:
                log.warning(
                    "%s: segments stored before its goal (until_observable) was set carry no observables: it is not "
                    "judged, and runs to target_ns",
                    w["system"],
                )
        goal = Goal.from_record(job.params.get("until"))
        store = store_of(job.config)
        if goal is not None:  # what the decision to stop reads, stored with the segment
            try:
                segment_files[layout.SEGMENT_OBSERVABLES] = _segment_observables(job, output, pinned, info, store)
            except Exception as error:  # noqa: BLE001 - the segment is stored anyway; its system runs to the cap
                log.warning("%s: no observables for this segment (%s): its system cannot be judged", w["system"], error)
        board, lease = _claim(job)
        manifest = fetch_segment(
            store,
            segment_files,
            pinned,
            info,
            layout.fill(layout.STORE_SIM, **w),
            layout.fill(layout.STORE_SEGMENT, **w),
            Path(layout.segment_record(w["system"], w["replica"], segment)),
            guard=board.guard_script(lease) if board else None,
            # judged before the local record lets the plan ask for the next segment
            stored=(lambda: learn_decision(store, w["system"], goal, job.config.get("site"), job.path(".")))
            if goal
            else None,
        )
        write_fetched_marker(job.path(layout.SEGMENT_MARKER), manifest)
        if board:
            _record_progress(board, lease, segment + 1, job.config["site"], manifest.info.ns_per_day)


def _segment_observables(job: JobContext, output: Path, pinned: dict, info: dict, store) -> Path:
    """The segment's observables per frame (analysis.segment_observables), against the
    simulation's own starting structure: pinned with segment 0, else the setup's if it
    is the same file, else a copy from the store."""
    from .analysis import segment_observables
    from .files import sha256_file

    path = output / layout.SEGMENT_OBSERVABLES
    if path.exists():  # a fetch run again after a failure
        return path
    name = "trajectory_topology.pdb"
    topology = pinned.get(name)
    if topology is None:
        expected = info["pinned"][name]
        topology = job.path(f"{layout.fill(layout.SETUP_DIR, system=job.wildcards['system'])}/{name}")
        if not topology.exists() or sha256_file(topology) != expected:
            topology = output.parent / f"pinned-{name}"
            store.get([(f"{layout.fill(layout.STORE_SIM, **job.wildcards)}/{name}", topology, expected)])
    segment_observables(output / "trajectory.xtc", topology, path)
    return path


def pack(job: JobContext) -> None:
    from .files import atomic_write_json
    from .packing import Member, run_batch
    from .slots import Packing

    with job_logging(job.log, job.label):
        members = [
            Member(m["system"], int(m["replica"]), m["n_segments"], m["protocol"], m["seed"], until=m.get("until"))
            for m in job.params["members"]
        ]
        packing = Packing(**job.params["packing"])
        log.info(
            "%d simulations in %d slots of %d threads%s: %s",
            len(members),
            packing.slots,
            packing.threads,
            f" on {packing.gpus} GPUs" if packing.gpus else "",
            ", ".join(m.name for m in members),
        )
        record, failures = run_batch(members, packing, job.config, _deadline(job.runtime))
        record.update(batch=job.wildcards["batch"], round=int(job.wildcards["round"]))
        log.info("round record: %s", json.dumps(record))
        progress = any(run["outcome"] in ("done", "paused") for run in record["segments"])
        if failures and not progress:
            raise SegmentError(failures)
        if failures:  # the others went on; the batch's next job tries these again
            log.warning("FAILED in this job, to be tried again in the next: %s", failures)
        atomic_write_json(job.path(layout.PACK_ROUND), record)


def _pulling_campaign(job: JobContext):
    from .campaign import load_campaign

    return load_campaign(json.loads(json.dumps(job.config["campaign"])), job.config["config_file"])


def pull(job: JobContext) -> None:
    """One job of a pulling site: its slots claim simulations in the store and run them
    until nothing is left to claim or the job's time is up."""
    from .files import atomic_write_json
    from .packing import run_batch
    from .pulljob import StoreClaimer
    from .slots import Packing

    with job_logging(job.log, job.label):
        campaign = _pulling_campaign(job)
        packing = campaign.packing if campaign.packing.enabled else Packing.of(slots=1, threads=job.threads)
        log.info(
            "site %s: %d slots of %d threads%s take work from %s",
            campaign.site,
            packing.slots,
            packing.threads,
            f" on {packing.gpus} GPUs" if packing.gpus else "",
            job.config["store"],
        )
        record, failures = run_batch(
            [], packing, job.config, _deadline(job.runtime), claimer=StoreClaimer(campaign, store_of(job.config))
        )
        record.update(site=campaign.site, worker=int(job.wildcards["worker"]), round=int(job.wildcards["round"]))
        log.info("round record: %s", json.dumps(record))
        if failures:  # released as failed: tried again by a later claim, anywhere
            log.warning("FAILED in this job, to be tried again: %s", failures)
        atomic_write_json(job.path(layout.PULL_ROUND), record)


def await_work(job: JobContext) -> None:
    """Wait, where Snakemake runs, until this site has work to pull or is done."""
    from .pulljob import await_work as wait

    with job_logging(job.log, job.label):
        campaign = _pulling_campaign(job)
        decision = wait(
            campaign,
            store_of(job.config),
            job.path(layout.PULL_DIR),
            int(job.wildcards["worker"]),
            job.path(layout.PULL_AWAIT),
        )
        if decision["next"] == "stop":
            log.warning("the site is being stopped (%s exists): this worker takes no more work", layout.DRAIN_MARKER)
            sys.exit(EXIT_PAUSED)
        log.info("decision: %s", json.dumps(decision))


def pulled(job: JobContext) -> None:
    """The end of one worker's rounds: the site has nothing left to do."""
    from .files import atomic_write_json

    with job_logging(job.log, job.label):
        final = json.loads(Path(job.params["final"]).read_text())
        if final.get("given_up"):
            log.warning(
                "given up after repeated failures (their logs say why; `mdcampaign status` lists them): %s",
                ", ".join(final["given_up"]),
            )
        atomic_write_json(job.path(layout.PULL_END), final)


def analyze(job: JobContext) -> None:
    from .analysis import analyze as run_analysis
    from .files import atomic_write_json

    with job_logging(job.log, job.label):
        w = job.wildcards
        # the planned count (the cap), or fewer once the system stopped (convergence)
        segments = segments_wanted(
            w["system"], int(w["segments"]), Goal.from_record(job.params.get("until")), job.path(".")
        )
        manifests = [read_manifest(layout.segment_record(w["system"], w["replica"], k)) for k in range(segments)]
        sim_dir = layout.fill(layout.STORE_SIM, **w)
        expected = {"trajectory_topology.pdb": manifests[0].pinned["trajectory_topology.pdb"]}
        for m in manifests:
            segment = layout.segment_name(m.segment)
            for name in ("trajectory.xtc", "energies.csv"):
                expected[f"segments/{segment}/{name}"] = m.files[name]["sha256"]
        store = store_of(job.config)
        cache = job.path(layout.analysis_cache(job.config["scratch"]))
        local = store.local_copy(sim_dir, cache, expected)
        folder = job.path(layout.ANALYSIS_DIR)
        folder.mkdir(parents=True, exist_ok=True)  # made by Snakemake for the rule; not in a pulling job
        out = {
            "json": folder / "analysis.json",
            "png": folder / "analysis.png",
            **{key: folder / f"{key}.csv" for key in ("rmsd", "rg", "rmsf", "dssp")},
            "features": folder / "features.npz",
            "binding": folder / "binding.csv",  # ligands and metal sites, where there are any
        }
        segments = [local / "segments" / layout.segment_name(m.segment) for m in manifests]
        summary = run_analysis(
            [d / "trajectory.xtc" for d in segments],
            [d / "energies.csv" for d in segments],
            local / "trajectory_topology.pdb",
            job.params["frame_interval_ps"],
            out,
            layout.sim_name(w["system"], w["replica"]),
        )
        speeds = [m.info.ns_per_day for m in manifests if m.info.ns_per_day]
        summary.update(
            {
                "segments": len(manifests),
                "segment_simulated_ns": round(sum(m.info.simulated_ns for m in manifests), 6),
                "ns_per_day_mean": round(sum(speeds) / len(speeds), 3) if speeds else None,
                "platforms": sorted({m.info.platform for m in manifests}),
                "site": manifests[-1].site,
            }
        )
        if len(manifests) < int(w["segments"]):
            summary["stopped"] = f"converged after {len(manifests)} of {int(w['segments'])} segments"
        atomic_write_json(out["json"], summary)
        out = {key: path for key, path in out.items() if path.exists()}
        # The store keeps every site's analyses, for the campaign-wide summary.
        analysis_dir = layout.fill(layout.STORE_ANALYSIS_DIR, **w)
        if store.describe(analysis_dir) != str(folder):
            store.put_directory(out, analysis_dir)
        shutil.rmtree(cache, ignore_errors=True)
        # named after the segments it covers: a goal changed since (convergence) asks again
        completion = Path(layout.completion_record(w["system"], w["replica"], len(manifests)))
        for older in folder.parent.iterdir():  # analyses of fewer segments are superseded
            if older != folder and older.is_dir() and older.name.isdigit():
                shutil.rmtree(older, ignore_errors=True)
            elif older.name.startswith("complete-") and older.name != completion.name:
                older.unlink(missing_ok=True)
        atomic_write_json(completion, summary)
        board, lease = _claim(job)
        if board:
            _record_progress(board, lease, len(manifests), job.config["site"], analyzed=True)


def summary(smk) -> None:
    import tempfile

    from .summary import read_json, setup_columns, summary_row, write_summary

    with job_logging(smk.log[0], "summary"), tempfile.TemporaryDirectory(prefix="mdcampaign-summary-") as cache:
        analyses = list(smk.params.analyses)
        if smk.params.store:  # pulling sites: every site's analyses, from the store (one transfer)
            store = store_of(smk.params.store)
            base = store.collect(layout.STORE_SIMS, "analysis.json", Path(cache) / layout.STORE_SIMS).parent
            analyses = [str(base / path) for path in analyses]
        rows = []
        setups: dict[str, dict] = {}
        replicas: dict[str, list[dict]] = {}
        for sim, path in zip(smk.params.simulations, analyses, strict=True):
            if not os.path.exists(path):
                if smk.params.store:  # given up, or pinned to a site that has not finished
                    rows.append({**summary_row(sim, {}), "status": "not analyzed"})
                    replicas.setdefault(sim["system"], []).append({})
                    continue
                raise DataError(
                    f"the analysis of {sim['simulation']} is missing ({path}); delete "
                    f"{Path(path).parent.parent}/complete-*.json and run the same command to redo it"
                )
            if sim["system"] not in setups:  # another site's systems may be set up elsewhere only
                setup = Path(layout.setup_info(sim["system"]))
                setups[sim["system"]] = setup_columns(read_json(setup) if setup.exists() else {})
            analysis = read_json(path)
            replicas.setdefault(sim["system"], []).append(analysis)
            rows.append({**summary_row(sim, analysis), **setups[sim["system"]]})
        write_summary(
            rows,
            Path(smk.output.table),
            Path(smk.output.figure),
            smk.params.campaign,
            (Path(smk.output.systems), replicas),
            Path(smk.output.per_system),
            (Path(smk.output.comparisons), Path(smk.output.comparisons_figure), dict(smk.params.groups)),
            {system: standing(system, Goal.from_record(record)) for system, record in dict(smk.params.goals).items()},
        )
        from .report_figures import plot_rule_graph, plot_timelines

        plot_rule_graph(Path(smk.output.workflow), smk.params.mode, smk.params.campaign)
        manifests = read_manifests(
            path
            for name in smk.params.timelines
            for path in sorted(Path(layout.sim_records(name), "segments").glob(f"*/{layout.MANIFEST}"))
        )
        plot_timelines(
            manifests,
            Path(smk.output.timelines),
            smk.params.campaign,
            len(smk.params.timelines),
            len(smk.params.simulations),
        )


if __name__ == "__main__":
    sys.exit(main())
