"""The segment runner: production MD for one segment of one simulation, restartable
at any moment.

Everything happens in a work directory that Snakemake does not know about, so that
neither a failed job nor ``--rerun-incomplete`` can delete a partial segment:

- ``trajectory.xtc``: one frame every frame interval, numbered with the absolute step
  and time of the simulation (segment k starts at step k * segment_steps);
- ``energies.csv``: one row per frame (same steps as the trajectory);
- ``checkpoint.chk`` (and the previous one, ``checkpoint.prev.chk``): a header line
  that records the step, the frame and row counts it covers, the platform and a
  checksum, followed by OpenMM's binary checkpoint. It is written only after the
  frames and rows it covers are flushed to disk, atomically (temp file + rename);
- ``checkpoint.portable`` when it pauses (time budget, signal): the same header over
  the state as XML (positions, velocities, box, parameters), which any platform and
  any machine loads, where the binary checkpoint loads only on the platform that wrote
  it. A pulled segment paused at one site continues from it at another (parking.py);
- ``final_state.xml`` and ``segment.json`` when the segment is complete.

On restart the newest usable checkpoint is loaded (the portable one only when no binary
one loads here), the trajectory and table are cut back to what it covers, and the
segment continues: no gap, no duplicate frame. The
runner also stops cleanly, with a checkpoint, when its time budget runs out or when
it receives SIGTERM, SIGINT or SIGUSR1.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import openmm
from openmm import app, unit

from ... import xtc
from ...errors import SegmentError
from ...files import (
    atomic_write_bytes,
    atomic_write_json,
    fsync_file,
    sha256_bytes,
    sha256_file,
)
from ...protocol import Protocol
from ...records import segment_record
from ...runs import (
    ENERGY_COLUMNS,
    Outcome,
    SegmentTask,
    StopRequest,
    announce_runner,
    iso_time,
    run_entry,
    sole_runner,
    withdraw_runner,
)
from . import plumbing
from .forcefields import BAROSTAT_INTERVAL_STEPS
from .setup import thermo_values, trajectory_atom_indices

log = logging.getLogger(__name__)

CHECKPOINT_MAGIC = b"MDCAMPAIGN-CHECKPOINT 1\n"
PORTABLE_MAGIC = b"MDCAMPAIGN-PORTABLE-CHECKPOINT 1\n"
OUTPUT_FILES = ("trajectory.xtc", "energies.csv", "final_state.xml", "segment.json")
# Keep each uninterrupted stretch of integration short enough that a stop request
# (signal or time budget) is honoured within this many seconds.
MAX_CHUNK_SECONDS = 10.0


def run_segment(job: SegmentTask) -> Outcome:
    """Run (or resume, or recognise as done) one segment in ``job.work_dir``."""
    work = Path(job.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    with sole_runner(work, job.name, job.segment):
        return _run_segment(job, work)


def _run_segment(job: SegmentTask, work: Path) -> Outcome:
    start_sha = sha256_file(job.start_state)
    done = _completed_info(work, start_sha)
    if done is not None:
        log.info("%s segment %d is already complete in %s", job.name, job.segment, work)
        return Outcome(True, done)

    protocol = job.protocol
    system = plumbing.read_xml(job.system)
    topology = app.PDBFile(str(job.topology)).topology
    subset = trajectory_atom_indices(topology, protocol.trajectory_atoms)
    platform_name = plumbing.choose_platform(job.platform)
    integrator = plumbing.langevin(
        protocol.temperature_K, protocol.friction_per_ps, protocol.timestep_fs, job.segment_seed
    )
    context = plumbing.make_context(system, integrator, platform_name, job.threads, job.device)
    log.info(
        "%s segment %d: steps %d-%d, platform %s%s",
        job.name,
        job.segment,
        job.first_step,
        job.last_step,
        platform_name,
        f" ({job.threads} threads)" if platform_name == "CPU" and job.threads else "",
    )

    paths = _WorkFiles(work)
    resumed = _resume(context, paths, job, start_sha, platform_name)
    if resumed is None and (portable := _portable_checkpoint(paths, job, start_sha)) is not None:
        # Another platform's (or machine's) state: it goes on here with random forces of
        # a seed of its own, not the segment's from its start again.
        context = plumbing.make_context(
            system,
            plumbing.langevin(
                protocol.temperature_K,
                protocol.friction_per_ps,
                protocol.timestep_fs,
                continuation_seed(job.segment_seed, portable[0]["step"]),
            ),
            platform_name,
            job.threads,
            job.device,
        )
        resumed = _resume_portable(context, paths, *portable)
    if resumed is None:
        step, frames, rows = _fresh_start(context, paths, job)
        history = []
    else:
        step, frames, rows, history = resumed

    recorder = _Recorder(context, system, topology, subset, paths, job, frames, rows)
    run = _RunLog(history, run_entry(job, platform_name, step, time.time()), protocol)
    announce_runner(work, job.slot)
    try:
        with StopRequest() as stop:
            step = _integrate(
                context,
                recorder,
                job,
                step,
                stop,
                lambda at: recorder.checkpoint(at, platform_name, start_sha, run.history(at)),
            )
    finally:
        withdraw_runner(work)
    if step < job.last_step:
        recorder.checkpoint(step, platform_name, start_sha, run.history(step, recorder.stop_reason), portable=True)
        recorder.close()
        log.warning(
            "%s segment %d paused at step %d of %d (%s); progress is saved, run again to continue",
            job.name,
            job.segment,
            step,
            job.last_step,
            recorder.stop_reason,
        )
        return Outcome(False, {"step": step, "reason": recorder.stop_reason})
    return Outcome(True, _finish(context, recorder, job, start_sha, run.history(step)))


@dataclass
class _RunLog:
    """Per-run bookkeeping (host, platform, steps, speed) carried in checkpoints, so
    that a segment completed over several runs reports all of them."""

    earlier: list
    entry: dict  # runs.run_entry
    protocol: Protocol
    started: float = field(default_factory=time.time)

    def history(self, step: int, stop_reason: str | None = None) -> list:
        elapsed = time.time() - self.started
        return self.earlier + [
            {
                **self.entry,
                "stop_reason": stop_reason,
                "to_step": step,
                "wall_seconds": round(elapsed, 2),
                "ns_per_day": _ns_per_day(step - self.entry["from_step"], self.protocol, elapsed),
            }
        ]


class _WorkFiles:
    def __init__(self, work: Path):
        self.work = work
        self.trajectory = work / "trajectory.xtc"
        self.energies = work / "energies.csv"
        self.checkpoint = work / "checkpoint.chk"
        self.previous = work / "checkpoint.prev.chk"
        self.portable = work / "checkpoint.portable"
        self.final_state = work / "final_state.xml"
        self.info = work / "segment.json"


def _completed_info(work: Path, start_sha: str) -> dict | None:
    try:
        info = json.loads((work / "segment.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if info.get("start_state_sha256") != start_sha:
        return None
    if not all((work / name).exists() for name in OUTPUT_FILES):
        return None
    return info


def _fresh_start(context: openmm.Context, paths: _WorkFiles, job: SegmentTask):
    for path in (
        paths.trajectory,
        paths.energies,
        paths.checkpoint,
        paths.previous,
        paths.portable,
        paths.final_state,
        paths.info,
    ):
        path.unlink(missing_ok=True)
    state = plumbing.read_xml(job.start_state)
    if job.protocol.explicit:
        context.setPeriodicBoxVectors(*state.getPeriodicBoxVectors())
    context.setPositions(state.getPositions())
    if job.segment == 0:
        # Replicas share the equilibrated structure and differ by their velocities.
        context.setVelocitiesToTemperature(job.protocol.temperature_K * unit.kelvin, job.segment_seed)
    else:
        context.setVelocities(state.getVelocities())
    context.setStepCount(job.first_step)
    context.setTime(job.first_step * job.protocol.timestep_ps)
    with open(paths.energies, "w") as handle:
        handle.write(",".join(ENERGY_COLUMNS) + "\n")
    return job.first_step, 0, 0


def latest_checkpoint_header(work: Path) -> dict | None:
    """Header of the newest intact checkpoint in a segment's work folder, if any. Between
    rotating ``checkpoint.chk`` to the previous one and writing the new one, only the
    previous exists: a process killed there resumes from it, and status reads it."""
    paths = _WorkFiles(work)
    for candidate in (paths.checkpoint, paths.previous):
        checkpoint = read_checkpoint(candidate)
        if checkpoint is not None:
            return checkpoint[0]
    return None


def parked_files(work: Path) -> tuple[int, list[Path]] | None:
    """The step of a paused segment's portable checkpoint and what continues from it
    elsewhere: the frames and rows it covers, and the binary checkpoint of the same step
    (the platform that wrote it continues exactly from that one)."""
    paths = _WorkFiles(work)
    checkpoint = read_checkpoint(paths.portable, PORTABLE_MAGIC)
    if checkpoint is None:
        return None
    step = checkpoint[0]["step"]
    files = [paths.portable, paths.energies] + ([paths.trajectory] if paths.trajectory.exists() else [])
    binary = read_checkpoint(paths.checkpoint)
    if binary is not None and binary[0]["step"] == step:
        files.append(paths.checkpoint)
    return step, files


def read_checkpoint(path: Path, magic: bytes = CHECKPOINT_MAGIC) -> tuple[dict, bytes] | None:
    """Header and payload of a checkpoint file, or None if it is missing or damaged."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if not data.startswith(magic):
        return None
    end = data.find(b"\n", len(magic))
    try:
        header = json.loads(data[len(magic) : end])
    except (ValueError, UnicodeDecodeError):
        return None
    payload = data[end + 1 :]
    if sha256_bytes(payload) != header.get("sha256"):
        return None
    return header, payload


def _resume(context, paths: _WorkFiles, job: SegmentTask, start_sha: str, platform_name: str):
    for candidate in (paths.checkpoint, paths.previous):
        if not candidate.exists():
            continue
        checkpoint = read_checkpoint(candidate)
        if checkpoint is None:
            log.warning("%s is damaged (bad header or checksum); trying an older one", candidate.name)
            continue
        header, payload = checkpoint
        if header.get("start_state_sha256") != start_sha or header.get("segment") != job.segment:
            log.warning("%s belongs to a different start state; starting the segment afresh", candidate.name)
            return None
        if header.get("platform") != platform_name:
            log.warning(
                "%s was written on platform %s and cannot be loaded on %s",
                candidate.name,
                header.get("platform"),
                platform_name,
            )
            continue
        frames_on_disk = xtc.count_frames(paths.trajectory)
        rows_on_disk = xtc.count_rows(paths.energies)
        if frames_on_disk < header["frames"] or rows_on_disk < header["rows"]:
            log.warning(
                "%s covers %d frames / %d rows but only %d / %d are on disk; trying an older one",
                candidate.name,
                header["frames"],
                header["rows"],
                frames_on_disk,
                rows_on_disk,
            )
            continue
        try:
            context.loadCheckpoint(payload)
        except Exception as error:  # noqa: BLE001 - OpenMMException for foreign/corrupt data
            log.warning("%s could not be loaded (%s); trying an older one", candidate.name, error)
            continue
        if context.getStepCount() != header["step"]:
            log.warning("%s step mismatch; trying an older one", candidate.name)
            continue
        resumed, discarded = _cut_back(paths, header, frames_on_disk)
        log.info(
            "resumed from %s at step %d (%d frames kept, %d frames written after it discarded)",
            candidate.name,
            header["step"],
            header["frames"],
            discarded,
        )
        return resumed
    return None


def _cut_back(paths: _WorkFiles, header: dict, frames_on_disk: int):
    """Cut the trajectory and the table back to what a checkpoint covers; what the runner
    resumes with (step, frames, rows, run history), and the frames discarded."""
    if paths.trajectory.exists():
        xtc.truncate_frames(paths.trajectory, header["frames"])
    xtc.truncate_rows(paths.energies, header["rows"])
    discarded = frames_on_disk - header["frames"]
    history = header.get("history", [])
    if history:
        history[-1] = {**history[-1], "discarded_frames_on_restart": discarded}
    return (header["step"], header["frames"], header["rows"], history), discarded


def continuation_seed(segment_seed: int, step: int) -> int:
    """The random-force seed of a segment continued from a portable checkpoint at
    ``step``: its own, never the segment's start seed (whose forces it would repeat)."""
    return 1 + (segment_seed * 1_000_003 + step) % (2**31 - 2)


def _portable_checkpoint(paths: _WorkFiles, job: SegmentTask, start_sha: str) -> tuple[dict, bytes] | None:
    """The portable checkpoint, if it belongs to this segment and its frames and rows are
    on disk."""
    checkpoint = read_checkpoint(paths.portable, PORTABLE_MAGIC)
    if checkpoint is None:
        if paths.portable.exists():
            log.warning("%s is damaged (bad header or checksum)", paths.portable.name)
        return None
    header = checkpoint[0]
    if header.get("start_state_sha256") != start_sha or header.get("segment") != job.segment:
        log.warning("%s belongs to a different start state; starting the segment afresh", paths.portable.name)
        return None
    if xtc.count_frames(paths.trajectory) < header["frames"] or xtc.count_rows(paths.energies) < header["rows"]:
        log.warning("%s covers frames or rows that are not on disk", paths.portable.name)
        return None
    return checkpoint


def _resume_portable(context, paths: _WorkFiles, header: dict, payload: bytes):
    state = openmm.XmlSerializer.deserialize(payload.decode())
    context.setState(state)
    context.setStepCount(header["step"])
    context.setTime(state.getTime())
    resumed, discarded = _cut_back(paths, header, xtc.count_frames(paths.trajectory))
    log.info(
        "resumed from the portable checkpoint at step %d (written on %s by %s; %d frames kept, %d discarded)",
        header["step"],
        header.get("platform"),
        header.get("host"),
        header["frames"],
        discarded,
    )
    return resumed


class _Recorder:
    """Writes frames, energy rows and checkpoints, in that order of durability."""

    def __init__(self, context, system, topology, subset, paths: _WorkFiles, job: SegmentTask, frames, rows):
        self.context = context
        self.paths = paths
        self.job = job
        self.frames = frames
        self.rows = rows
        self.subset = subset
        self.periodic = job.protocol.explicit
        self.dof = plumbing.degrees_of_freedom(system)
        self.mass_g = plumbing.total_mass_grams(system)
        self.stop_reason = ""
        n_atoms = len(subset) if subset is not None else topology.getNumAtoms()
        self._xtc = app.XTCFile(
            str(paths.trajectory),
            _placeholder_topology(n_atoms, topology.getPeriodicBoxVectors()),
            job.protocol.timestep_ps,
            firstStep=job.first_step + job.protocol.frame_steps,
            interval=job.protocol.frame_steps,
            append=paths.trajectory.exists() and paths.trajectory.stat().st_size > 0,
        )
        self._energies = open(paths.energies, "a")  # noqa: SIM115 - open for the segment's life; closed by close()

    def frame(self, step: int) -> None:
        state = self.context.getState(getPositions=True, getEnergy=True, enforcePeriodicBox=self.periodic)
        values = thermo_values(state, self.dof, self.mass_g, self.periodic)
        if not math.isfinite(values["potential_energy_kJ_mol"]) or not math.isfinite(values["kinetic_energy_kJ_mol"]):
            raise SegmentError(self._explosion(step, "the energy is NaN or infinite"))
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        if self.subset is not None:
            positions = positions[self.subset]
        try:
            self._xtc.writeModel(positions, periodicBoxVectors=state.getPeriodicBoxVectors())
        except ValueError as error:  # NaN / infinite / out-of-range coordinates
            raise SegmentError(self._explosion(step, str(error).split(".")[0].lower())) from None
        self.frames += 1
        row = [str(step), f"{step * self.job.protocol.timestep_ps:.6f}"] + [
            "" if values[c] is None else f"{values[c]:.8g}" for c in ENERGY_COLUMNS[2:]
        ]
        self._energies.write(",".join(row) + "\n")
        self._energies.flush()
        self.rows += 1

    def _explosion(self, step, what):
        return (
            f"{self.job.name} segment {self.job.segment}: the simulation became unstable at step {step} "
            f"(t = {step * self.job.protocol.timestep_ps:g} ps): {what}. Check the structure and the "
            f"protocol (timestep_fs {self.job.protocol.timestep_fs}, hmr {self.job.protocol.hmr})"
        )

    def checkpoint(self, step: int, platform_name: str, start_sha: str, history: list, portable=False) -> None:
        """A binary checkpoint at ``step`` (and, ``portable``, the portable one too)."""
        # Frames and rows first, so that a checkpoint never covers data that is not on disk.
        self._energies.flush()
        os.fsync(self._energies.fileno())
        if self.paths.trajectory.exists():
            fsync_file(self.paths.trajectory)
        header = {
            "segment": self.job.segment,
            "step": step,
            "frames": self.frames,
            "rows": self.rows,
            "platform": platform_name,
            "host": os.uname().nodename,
            "start_state_sha256": start_sha,
            "written_at": iso_time(time.time()),
            "history": history,
        }
        payload = self.context.createCheckpoint()
        if self.paths.checkpoint.exists():
            os.replace(self.paths.checkpoint, self.paths.previous)
        _write_checkpoint(self.paths.checkpoint, CHECKPOINT_MAGIC, header, payload)
        if portable:
            state = self.context.getState(
                getPositions=True, getVelocities=True, getParameters=True, enforcePeriodicBox=False
            )
            _write_checkpoint(
                self.paths.portable, PORTABLE_MAGIC, header, openmm.XmlSerializer.serialize(state).encode()
            )

    def close(self):
        self._energies.close()


def _write_checkpoint(path: Path, magic: bytes, header: dict, payload: bytes) -> None:
    header = {**header, "sha256": sha256_bytes(payload)}
    atomic_write_bytes(path, magic + json.dumps(header).encode() + b"\n" + payload)


def _placeholder_topology(n_atoms: int, box_vectors) -> app.Topology:
    """XTCFile only needs the atom count and whether the system is periodic."""
    topology = app.Topology()
    residue = topology.addResidue("X", topology.addChain())
    for _ in range(n_atoms):
        topology.addAtom("X", None, residue)
    topology.setPeriodicBoxVectors(box_vectors)
    return topology


def _integrate(context, recorder: _Recorder, job: SegmentTask, step: int, stop: StopRequest, checkpoint) -> int:
    """Integrate to the end of the segment or until asked to stop; returns the step
    reached. Frames are written at frame boundaries, checkpoints at checkpoint ones."""
    protocol = job.protocol
    integrator = context.getIntegrator()
    granule = BAROSTAT_INTERVAL_STEPS if protocol.explicit else 1
    chunk_limit = protocol.frame_steps
    slowest_chunk = 0.0
    checkpoint_seconds = 0.0
    margin = job.stop_margin_seconds
    if margin is None and job.deadline is not None:
        margin = min(60.0, max(5.0, 0.05 * (job.deadline - time.time())))
    while step < job.last_step:
        if stop.signal_name:
            recorder.stop_reason = f"signal {stop.signal_name}"
            break
        if job.deadline is not None:
            remaining = job.deadline - time.time()
            if remaining < 2 * slowest_chunk + checkpoint_seconds + margin:
                recorder.stop_reason = f"time budget: {max(0, remaining):.0f} s left"
                break
        to_frame = protocol.frame_steps - (step - job.first_step) % protocol.frame_steps
        steps = min(to_frame, chunk_limit)
        began = time.time()
        try:
            integrator.step(steps)
        except openmm.OpenMMException as error:
            raise SegmentError(recorder._explosion(step + steps, str(error).split("\n")[0])) from None
        step += steps
        took = time.time() - began
        slowest_chunk = max(slowest_chunk, took)
        if took > MAX_CHUNK_SECONDS and steps > granule:
            # Shorten chunks so that signals and the budget are checked often enough.
            chunk_limit = max(granule, int(steps * MAX_CHUNK_SECONDS / took) // granule * granule)
        if (step - job.first_step) % protocol.frame_steps == 0:
            recorder.frame(step)
            if (step - job.first_step) % protocol.checkpoint_steps == 0 and step < job.last_step:
                began = time.time()
                checkpoint(step)
                checkpoint_seconds = max(checkpoint_seconds, time.time() - began)
    return step


def _finish(context, recorder: _Recorder, job: SegmentTask, start_sha: str, history: list) -> dict:
    recorder.checkpoint(job.last_step, context.getPlatform().getName(), start_sha, history)
    recorder.close()
    state = context.getState(getPositions=True, getVelocities=True, enforcePeriodicBox=False)
    plumbing.write_xml(recorder.paths.final_state, state)
    protocol = job.protocol
    total_wall = sum(run["wall_seconds"] for run in history)
    info = segment_record(
        job,
        frames=recorder.frames,
        platform=history[-1]["platform"],
        runs=history,
        ns_per_day=_ns_per_day(protocol.segment_steps, protocol, total_wall),
        seed=job.segment_seed,
        start_state_sha256=start_sha,
        openmm_version=openmm.__version__,
    )
    atomic_write_json(recorder.paths.info, info)
    log.info(
        "%s segment %d complete: %d frames, %.1f ns/day on %s",
        job.name,
        job.segment,
        recorder.frames,
        info["ns_per_day"] or 0,
        info["platform"],
    )
    return info


def _ns_per_day(steps: int, protocol: Protocol, seconds: float) -> float | None:
    if steps <= 0 or seconds <= 0:
        return None
    return round(steps * protocol.timestep_ps / 1000.0 / seconds * 86400.0, 3)


WARMUP_STEPS = 100


def measure_speed(
    setup_dir: Path, files, platform: str, threads: int, seconds: float, device: int | None = None
) -> float:
    """Integrate a set-up system for about ``seconds`` after a warm-up; its ns/day."""
    protocol = json.loads((Path(setup_dir) / "setup.json").read_text())["protocol"]
    system = plumbing.read_xml(Path(setup_dir) / files.system)
    state = plumbing.read_xml(Path(setup_dir) / files.setup_state)
    integrator = plumbing.langevin(protocol["temperature_K"], protocol["friction_per_ps"], protocol["timestep_fs"], 1)
    context = plumbing.make_context(system, integrator, plumbing.choose_platform(platform), threads, device)
    context.setState(state)
    integrator.step(WARMUP_STEPS)
    steps, chunk = 0, 50
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        integrator.step(chunk)
        steps += chunk
    context.getState(getEnergy=True)  # wait for a GPU to finish
    elapsed = time.perf_counter() - started
    return steps * protocol["timestep_fs"] * 1e-6 / elapsed * 86400.0


def main(argv=None) -> int:
    """Run one segment outside Snakemake (for debugging and benchmarks):

    python -m mdcampaign.engines.openmm.runner --system system.xml --state state.xml \\
        --topology topology.pdb --work work/ --protocol protocol.json [--segment K]
    Exit status: 0 complete, 75 paused (progress saved), 1 failed.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mdcampaign.engines.openmm.runner", description=main.__doc__)
    parser.add_argument("--system", required=True, type=Path)
    parser.add_argument("--state", required=True, type=Path, help="start state (setup state.xml or a final_state.xml)")
    parser.add_argument("--topology", required=True, type=Path)
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--protocol", required=True, type=Path, help="JSON file with every protocol key")
    parser.add_argument("--segment", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--platform", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--budget-seconds", type=float, default=None, help="stop cleanly after this long")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    protocol = Protocol.from_record(json.loads(args.protocol.read_text()))
    job = SegmentTask(
        "segment",
        args.segment,
        protocol,
        args.seed,
        args.system,
        args.state,
        args.topology,
        args.work,
        platform=args.platform,
        threads=args.threads,
        deadline=time.time() + args.budget_seconds if args.budget_seconds else None,
        stop_margin_seconds=0.0 if args.budget_seconds else None,
    )
    try:
        outcome = run_segment(job)
    except SegmentError as error:
        log.error("%s", error)
        return 1
    return 0 if outcome.complete else 75


if __name__ == "__main__":
    raise SystemExit(main())
