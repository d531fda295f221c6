"""What each rule's script does with the `snakemake` object it is given.

The scripts in ``scripts/`` call exactly one function here; the functions translate
Snakemake's inputs, outputs and params into calls to the modules that do the work,
set up logging to the rule's log file, and turn expected failures into one clear
line (in the log and on stderr) and an exit status instead of a traceback.
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
from pathlib import Path

from . import layout
from .campaign import Protocol
from .errors import CampaignError, DataError, SegmentError, TransferError

log = logging.getLogger("mdcampaign")

EXIT_FAILED = 1
# The segment stopped early with its progress saved (time budget or a stop signal):
# running the same command again continues it. EX_TEMPFAIL from sysexits.h.
EXIT_PAUSED = 75


@contextmanager
def job_logging(smk, what: str):
    """Log to the rule's log file; expected failures end the job with one line."""
    log_file = Path(smk.log[0])
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
    except Exception as error:  # noqa: BLE001 - unexpected: keep the traceback, in the log
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            log.error("FAILED: disk full: %s writing %s; free some space there, then run the same command again "
                      "(finished work is kept, this job resumes)", error.strerror, error.filename or "a file")
            sys.exit(EXIT_FAILED)
        handler.stream.write(traceback.format_exc())
        log.error("FAILED with an unexpected error; the traceback is in %s", log_file)
        sys.exit(EXIT_FAILED)
    finally:
        handler.flush()


def protocol_of(smk) -> Protocol:
    return Protocol(**smk.params.protocol)


def _label(smk) -> str:
    w = smk.wildcards
    name = layout.sim_name(w.system, w.replica) if "replica" in w.keys() else w.system
    return f"{smk.rule} {name}" + (f" segment {w.segment}" if "segment" in w.keys() else "")


def setup(smk) -> None:
    from .engine import atomic_write_json
    from .prepare import prepare

    with job_logging(smk, _label(smk)):
        out_dir = Path(smk.output.system).parent
        info = prepare(Path(smk.input.structure), protocol_of(smk), out_dir, smk.config["platform"], smk.threads,
                       smk.params.seed)
        info["system"] = smk.wildcards.system
        info["protocol"] = smk.params.protocol
        atomic_write_json(smk.output.info, info)


def store_of(smk):
    from .store import TransferSettings, open_store

    return open_store(smk.config["store"], TransferSettings(**smk.config.get("transfer", {})))


def stage(smk) -> None:
    from .transfer import read_manifest, stage_segment

    with job_logging(smk, _label(smk)):
        w = smk.wildcards
        staged = {name: Path(smk.output.staged) / name for name in layout.STAGED_FILES}
        previous = read_manifest(smk.params.previous_record)
        sim_dir = layout.fill(layout.STORE_SIM, system=w.system, replica=w.replica)
        store_sources = {name: (f"{sim_dir}/{name}", previous["pinned"][name]) for name in layout.PINNED_FILES}
        store_sources["start_state.xml"] = (f"{previous['path']}/final_state.xml",
                                            previous["files"]["final_state.xml"]["sha256"])
        info = {"simulation": layout.sim_name(w.system, w.replica), "segment": int(w.segment),
                "pinned": previous["pinned"]}
        stage_segment(store_of(smk), store_sources, staged, info)


def _deadline(smk) -> float | None:
    """When this job must have stopped: the Slurm job's end time when running under
    Slurm, else None (no limit). Asked once per job."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        return None
    end = os.environ.get("SLURM_JOB_END_TIME")  # set by Slurm >= 23.02
    if end and end.isdigit():
        return float(end)
    end = slurm_end_time(job_id)
    if end is not None:
        return end
    runtime = getattr(smk.resources, "runtime", None)
    return time.time() + 60.0 * runtime if isinstance(runtime, (int, float)) and runtime > 0 else None


def slurm_end_time(job_id: str) -> float | None:
    """End time of a running Slurm job (one squeue call), or None if unknown."""
    import subprocess
    from datetime import datetime

    try:
        result = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%e"], capture_output=True, text=True,
                                timeout=30)
        return datetime.strptime(result.stdout.strip(), "%Y-%m-%dT%H:%M:%S").timestamp()
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def simulate(smk) -> None:
    from .segment import SegmentJob, publish, run_segment

    with job_logging(smk, _label(smk)):
        w = smk.wildcards
        first = int(w.segment) == 0
        if first:  # straight from setup
            start = {name: Path(smk.input[name.split(".")[0]]) for name in layout.SEGMENT_START_FILES}
            start_state = start["state.xml"]
        else:
            start = {name: Path(smk.input.staged) / name for name in layout.STAGED_FILES}
            start_state = start["start_state.xml"]
        outputs = {name: Path(smk.output.segment) / name for name in layout.SEGMENT_FILES}
        work_dir = Path(smk.params.work_dir)
        job = SegmentJob(
            name=layout.sim_name(w.system, w.replica),
            segment=int(w.segment),
            protocol=protocol_of(smk),
            seed=smk.params.seed,
            system_xml=start["system.xml"],
            start_state_xml=start_state,
            topology_pdb=start["topology.pdb"],
            work_dir=work_dir,
            platform=smk.config["platform"],
            threads=smk.threads,
            deadline=_deadline(smk),
        )
        outcome = run_segment(job)
        if not outcome.complete:
            log.warning(
                "PAUSED: %s segment %s stopped at step %s (%s). Progress is saved in %s; run the same "
                "command again to continue.", job.name, w.segment, outcome.info["step"], outcome.info["reason"],
                work_dir,
            )
            sys.exit(EXIT_PAUSED)
        publish(work_dir, outputs)
        if first:  # the system this simulation starts with, to be kept with it in the store
            for name in layout.PINNED_FILES:
                shutil.copyfile(start[name], Path(smk.output.segment) / name)


def fetch(smk) -> None:
    from .engine import atomic_write_text
    from .transfer import fetch_segment, read_manifest

    with job_logging(smk, _label(smk)):
        w = smk.wildcards
        output = Path(smk.input.segment)
        segment_files = {name: output / name for name in layout.SEGMENT_FILES}
        info = {"simulation": layout.sim_name(w.system, w.replica), "protocol": smk.params.protocol,
                "seed": smk.params.seed, "site": smk.config.get("site")}
        if int(w.segment) == 0:
            # the system a simulation starts with is kept with it in the store
            pinned = {name: output / name for name in layout.PINNED_FILES}
        else:
            pinned = {}
            info["pinned"] = read_manifest(smk.params.previous_record)["pinned"]
        manifest = fetch_segment(
            store_of(smk), segment_files, pinned, info,
            layout.fill(layout.STORE_SIM, system=w.system, replica=w.replica), w.segment, Path(smk.params.record),
        )
        atomic_write_text(smk.output.marker, json.dumps({"fetched_at": manifest["fetched_at"]}) + "\n")


def analyze(smk) -> None:
    from .analysis import analyze as run_analysis
    from .engine import atomic_write_json
    from .transfer import read_manifest

    with job_logging(smk, _label(smk)):
        w = smk.wildcards
        manifests = [read_manifest(layout.segment_record(w.system, w.replica, k))
                     for k in range(int(w.segments))]
        sim_dir = layout.fill(layout.STORE_SIM, system=w.system, replica=w.replica)
        expected = {"trajectory_topology.pdb": manifests[0]["pinned"]["trajectory_topology.pdb"]}
        for m in manifests:
            segment = layout.segment_name(m["segment"])
            for name in ("trajectory.xtc", "energies.csv"):
                expected[f"segments/{segment}/{name}"] = m["files"][name]["sha256"]
        store = store_of(smk)
        local = store.local_copy(sim_dir, Path(smk.params.cache), expected)
        folder = Path(smk.output.json).parent
        out = {"json": Path(smk.output.json), "png": Path(smk.output.png),
               **{key: folder / f"{key}.csv" for key in ("rmsd", "rg", "rmsf", "dssp")}}
        segments = [local / "segments" / layout.segment_name(m["segment"]) for m in manifests]
        summary = run_analysis(
            [d / "trajectory.xtc" for d in segments],
            [d / "energies.csv" for d in segments],
            local / "trajectory_topology.pdb",
            smk.params.frame_interval_ps,
            out,
            layout.sim_name(w.system, w.replica),
        )
        speeds = [m["info"]["ns_per_day"] for m in manifests if m["info"].get("ns_per_day")]
        summary.update({
            "segments": len(manifests),
            "segment_simulated_ns": round(sum(m["info"]["simulated_ns"] for m in manifests), 6),
            "ns_per_day_mean": round(sum(speeds) / len(speeds), 3) if speeds else None,
            "platforms": sorted({m["info"]["platform"] for m in manifests}),
            "site": manifests[-1].get("site"),
        })
        atomic_write_json(out["json"], summary)
        # The store keeps every site's analyses, for the campaign-wide summary.
        analysis_dir = f"{sim_dir}/analysis/{w.segments}"
        if store.describe(analysis_dir) != str(folder):
            store.put_directory(out, analysis_dir)
        shutil.rmtree(smk.params.cache, ignore_errors=True)
        for older in folder.parent.iterdir():  # analyses of fewer segments are superseded
            if older != folder and older.is_dir() and older.name.isdigit():
                shutil.rmtree(older, ignore_errors=True)
            elif older.name.startswith("complete-") and older.name != f"complete-{w.segments}.json":
                older.unlink(missing_ok=True)
        atomic_write_json(layout.completion_record(w.system, w.replica, len(manifests)), summary)


def summary(smk) -> None:
    from .summary import read_json, summary_row, write_summary

    with job_logging(smk, "summary"):
        rows = [
            summary_row(sim, read_json(path))
            for sim, path in zip(smk.params.simulations, smk.input.analyses)
        ]
        write_summary(rows, Path(smk.output.table), Path(smk.output.figure), smk.params.campaign)
