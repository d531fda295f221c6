"""GROMACS segments: segment k = steps k*S .. (k+1)*S, run by mdrun, with exact
continuation after ``kill -9``, a time budget or a signal, frames and energy rows at
steps first + F, ..., last (none at the start step: that frame is the previous
segment's last). ``python -m mdcampaign.engines.gromacs.runner`` runs one by hand.

How exactness works. Segment k's input is the tpr made by ``gmx convert-tpr -nsteps
(k+1)*S`` and the start checkpoint (setup's ``start.cpt`` at step 0, or segment k-1's
``final_state.cpt`` at step k*S). Every run of the segment is ``mdrun -cpi
<checkpoint> -noappend``: from the start checkpoint the first time, from the segment's
own newest ``segment.cpt`` (``segment_prev.cpt`` if that one is unreadable) after a
stop or a ``kill -9``. Each run writes its own part files (``segment.partNNNN.xtc`` /
``.edr``) beginning with the frame of the step it starts from. (Appending is not an
option: GROMACS appends only to the files named in the checkpoint, and a segment's
start checkpoint names the previous segment's files, elsewhere; once a run used
-noappend, GROMACS never appends again.) When the segment is complete its
``trajectory.xtc`` and ``energies.csv`` are spliced from the parts in order, each part
replacing what earlier parts wrote from its start step on (frames a killed run wrote
after its last checkpoint), and keeping steps first+F .. last: no frame is lost or
duplicated, and the frame at step k*S, segment k-1's last, is left out as in the
OpenMM runner. mdrun fsyncs its outputs before each checkpoint and writes checkpoints
atomically (temp file, then ``_prev`` rotation).

Checkpoints: GROMACS checkpoints by wall-clock time (``-cpt`` minutes), at a
neighbour-search step. ``checkpoint_interval_ps`` is turned into minutes with the
speed measured in this segment: the first run of a segment stops after one checkpoint
interval (``-nsteps``), which ends with a checkpoint exactly at that step and measures
the speed; the rest of the segment then runs in one mdrun with ``-cpt`` set to the
wall time that interval takes (at least ``MIN_CHECKPOINT_SECONDS``). Where the
checkpoints fall does not affect the splice, only how much work a kill loses.

Bitwise identity: with ``-reprod`` (used on CPUs) the same segment run twice gives
identical frames, and a restart at constant volume continues bitwise as if
uninterrupted. With the C-rescale barostat GROMACS 2022.5's restarts are exact in
state (positions, velocities, box from the checkpoint) but some restarts differ from
an uninterrupted run in the last bits, which grows into a different (equally valid)
trajectory after a few hundred steps; GROMACS's own continuation tests compare
energies within a tolerance for this reason.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from ... import xtc
from ...errors import EXIT_FAILED, EXIT_PAUSED, CampaignError, SegmentError
from ...files import atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file
from ...protocol import Protocol
from ...records import segment_record
from ...runs import (
    ENERGY_COLUMNS,
    Outcome,
    SegmentTask,
    StopRequest,
    announce_runner,
    run_entry,
    sole_runner,
    withdraw_runner,
)
from .energies import EDR_TERMS, edr_frames
from .gmx import (
    GMX,
    GromacsError,
    available,
    check_tpr_matches,
    checkpoint_header,
    failure_message,
    gmx_argv,
    gmx_environment,
    gmx_problem,
    inspect_tpr,
    run_gmx,
    thread_options,
)

log = logging.getLogger(__name__)


MIN_CHECKPOINT_SECONDS = 1.0


OUTPUT_FILES = ("trajectory.xtc", "energies.csv", "final_state.cpt", "segment.json")


def _ns_per_day(steps: int, timestep_ps: float, seconds: float) -> float | None:
    if steps <= 0 or seconds <= 0:
        return None
    return round(steps * timestep_ps / 1000.0 / seconds * 86400.0, 3)


def _set_parent_death_signal():  # pragma: no cover - runs in the child before exec
    """mdrun runs in its own session (so that a Ctrl-C reaches it once, through us);
    if this process dies (kill -9), the kernel kills mdrun too."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class _MdrunProcess:
    """One mdrun, watched: stop signals and the deadline become one SIGTERM to mdrun,
    which then stops at the next neighbour-search step with a checkpoint."""

    def __init__(self, options: list, cwd: Path, threads: int | None, log_path: Path):
        self.argv = gmx_argv("mdrun", options)
        self.cwd = cwd
        self.log_path = log_path
        self.stop_reason: str | None = None
        self._output = open(log_path, "a")  # noqa: SIM115 - mdrun writes it for the process's life; closed in wait()
        self._output.write(f"$ {' '.join(self.argv)}\n")
        self._output.flush()
        try:
            self.process = subprocess.Popen(
                self.argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=self._output,
                stderr=subprocess.STDOUT,
                env=gmx_environment(threads),
                start_new_session=True,
                preexec_fn=_set_parent_death_signal,
            )
        except OSError:
            self._output.close()
            raise GromacsError(
                f"gmx mdrun: {gmx_problem() or f'the GROMACS program {GMX!r} could not be run'}"
            ) from None
        self._signalled = False

    def stop(self, reason: str) -> None:
        if not self._signalled and self.process.poll() is None:
            self.stop_reason = reason
            self.process.send_signal(signal.SIGTERM)
            self._signalled = True

    def wait(self, deadline: float | None, requested) -> int:
        try:
            while True:
                try:
                    return self.process.wait(timeout=0.25)
                except subprocess.TimeoutExpired:
                    pass
                if requested():
                    self.stop(f"signal {requested()}")
                if deadline is not None and time.time() > deadline:
                    # -maxh should have stopped it; this is the backstop.
                    self.stop("time budget: deadline reached")
        finally:
            self._output.close()


def run_segment(task: SegmentTask) -> Outcome:
    """Run (or resume, or recognise as done) one segment in ``task.work_dir``.

    ``task.system``: the simulation's production input (``system.tpr``, a replica's
    tpr or a lab's own); ``task.start_state``: where the segment starts (setup's
    ``start.cpt`` or the previous segment's ``final_state.cpt``; None only for segment
    0 of a lab's tpr, which starts from the tpr's own state). ``task.deadline``: epoch
    seconds by which mdrun must have stopped. Complete: the outputs ``trajectory.xtc``,
    ``energies.csv``, ``final_state.cpt``, ``segment.json`` are in the work folder;
    else it stopped early with its progress checkpointed (``{"step", "reason"}``), and
    the same call continues it exactly."""
    work = Path(task.work_dir).absolute()
    work.mkdir(parents=True, exist_ok=True)
    with sole_runner(work, task.name, task.segment):
        try:
            return Outcome(*_run_segment(task, work))
        finally:
            withdraw_runner(work)


def _run_segment(task: SegmentTask, work: Path) -> tuple[bool, dict]:
    name, segment_index, protocol, threads, deadline = (
        task.name,
        task.segment,
        task.protocol,
        task.threads,
        task.deadline,
    )
    tpr, start_cpt = task.system, task.start_state
    tpr = Path(tpr).absolute()
    start_cpt = Path(start_cpt).absolute() if start_cpt is not None else None
    if start_cpt is None and segment_index != 0:
        raise SegmentError(f"{name} segment {segment_index}: needs the previous segment's final_state.cpt")
    start_sha = sha256_file(tpr) + ":" + (sha256_file(start_cpt) if start_cpt else "-")
    done = _completed_info(work, start_sha)
    if done is not None:
        log.info("%s segment %d is already complete in %s", name, segment_index, work)
        return True, done

    marker_path = work / "run.json"
    marker = _read_json(marker_path)
    if marker.get("start_sha256") != start_sha or marker.get("segment") != segment_index:
        marker = {}
    gmx_log = work / "gromacs.log"
    parameters = marker.get("tpr") or inspect_tpr(tpr, cwd=work)
    first = parameters["init_step"] + segment_index * protocol.segment_steps
    last = first + protocol.segment_steps
    check_tpr_matches(parameters, protocol, tpr, name)
    if start_cpt is not None:
        header = checkpoint_header(start_cpt)
        if header is None:
            raise SegmentError(f"{name} segment {segment_index}: {start_cpt} is not a GROMACS checkpoint")
        if header["step"] != first:
            raise SegmentError(
                f"{name} segment {segment_index}: {start_cpt} is at step {header['step']}, but the "
                f"segment starts at step {first}"
            )
    seg_tpr = work / "segment.tpr"
    if not marker or not seg_tpr.exists():
        # A fresh start: nothing of an earlier attempt (or of another start) is kept.
        _clear_runs(work, keep_tpr=False)
        for path in (work / n for n in (*OUTPUT_FILES, "mdrun.log")):
            path.unlink(missing_ok=True)
        run_gmx(
            "convert-tpr",
            [("-s", tpr), ("-nsteps", last - parameters["init_step"]), ("-o", seg_tpr)],
            cwd=work,
            subject=tpr,
            log_file=gmx_log,
        )
        marker = {
            "segment": segment_index,
            "start_sha256": start_sha,
            "tpr": parameters,
            "first_step": first,
            "last_step": last,
            "history": [],
        }
        atomic_write_json(marker_path, marker)
    history = marker["history"]
    if marker.get("running"):
        # The previous run was killed with its wrapper (kill -9, node failure).
        killed = marker.pop("running")
        reached = own_checkpoint_step(work)
        history.append(
            {
                **killed,
                "stop_reason": "killed (no record of its end)",
                "to_step": reached if reached is not None else killed["from_step"],
            }
        )

    stop_reason = None
    redone_end = False
    announce_runner(work, task.slot)
    gpu = task.device  # a packed job's slot runs on its own GPU
    with StopRequest() as stop:
        while True:
            resume = _choose_resume(work, first, last)
            if resume and resume[1] >= last:
                if _spliced_outputs(work, parameters, first, last) is not None:
                    break
                if redone_end:
                    raise SegmentError(
                        f"{name} segment {segment_index}: mdrun reached step {last} but its "
                        f"trajectory or energy file lacks frames of steps {first}-{last}; see {gmx_log}"
                    )
                redone_end = True
                # Killed while mdrun was finishing: redo the end from the previous checkpoint.
                previous = checkpoint_header(work / "segment_prev.cpt")
                if previous and first <= previous["step"] < last:
                    resume = (work / "segment_prev.cpt", previous["step"])
                else:
                    resume = None
            if resume is None:
                _clear_runs(work)
            step = resume[1] if resume else first
            if stop.signal_name:
                stop_reason = f"signal {stop.signal_name}"
                break
            # Every run writes its own part files (segment.partNNNN.*); the finished segment
            # is spliced from them (see _spliced_outputs). No -noconfout: mdrun writes its
            # final checkpoint only together with the final coordinates.
            options = [("-s", seg_tpr), ("-deffnm", "segment")]
            if resume or start_cpt is not None:
                options += [("-cpi", resume[0] if resume else start_cpt), ("-noappend", True)]
            calibrating = "ns_per_day_measured" not in marker
            steps_per_checkpoint = protocol.checkpoint_steps
            if calibrating:
                # One checkpoint interval first, ending with a checkpoint: measures the speed.
                end = min(last, step + steps_per_checkpoint)
                options.append(("-nsteps", end - step))  # counted from where the run starts
                options.append(("-cpt", 15.0))  # GROMACS's default, until the speed is known
            else:
                minutes = (
                    max(
                        MIN_CHECKPOINT_SECONDS,
                        protocol.checkpoint_interval_ps / 1000.0 / marker["ns_per_day_measured"] * 86400.0,
                    )
                    / 60.0
                )
                options.append(("-cpt", round(minutes, 4)))
                end = last
            mdrun_deadline = None
            if deadline is not None:
                remaining = deadline - time.time()
                margin = min(60.0, max(5.0, 0.05 * remaining))
                if remaining - margin < 1.0:
                    stop_reason = f"time budget: {max(0.0, remaining):.0f} s left"
                    break
                options.append(("-maxh", round((remaining - margin) / 3600.0, 6)))
                mdrun_deadline = deadline - margin / 2
            options += thread_options(threads, gpu=gpu)
            run = run_entry(task, "GROMACS " + (f"GPU {gpu}" if gpu is not None else "CPU"), step, time.time())
            marker["running"] = run
            atomic_write_json(marker_path, marker)
            began = time.time()
            log_offset = gmx_log.stat().st_size if gmx_log.exists() else 0
            mdrun = _MdrunProcess(options, work, threads, gmx_log)
            returncode = mdrun.wait(mdrun_deadline, lambda: stop.signal_name)
            elapsed = time.time() - began
            reached = own_checkpoint_step(work)
            reached = step if reached is None else reached
            run.update(
                {
                    "to_step": reached,
                    "wall_seconds": round(elapsed, 2),
                    "ns_per_day": _ns_per_day(reached - step, protocol.timestep_ps, elapsed),
                }
            )
            marker.pop("running", None)
            output = _tail(gmx_log, start=log_offset)
            # mdrun stopped by a signal (ours, or the scheduler's) checkpoints, then exits 1.
            signalled = re.search(r"Received the (?:second )?(?:TERM|INT|INT/TERM) signal", output)
            if returncode > 0 and signalled:
                mdrun.stop_reason = mdrun.stop_reason or "signal to mdrun"
                returncode = 0
            if returncode != 0:
                run["stop_reason"] = (
                    f"killed by {signal.Signals(-returncode).name}"
                    if returncode < 0
                    else f"mdrun failed (exit status {returncode})"
                )
                history.append(run)
                atomic_write_json(marker_path, marker)
                message = failure_message("mdrun", seg_tpr, "" if returncode < 0 else output, gmx_log, returncode)
                raise GromacsError(
                    f"{name} segment {segment_index} (steps {first}-{last}): {message}; progress "
                    f"up to the last checkpoint (step {reached}) is kept, run again to continue"
                )
            if calibrating and reached > step and elapsed > 0:
                marker["ns_per_day_measured"] = _mdrun_performance(work) or _ns_per_day(
                    reached - step, protocol.timestep_ps, elapsed
                )
            if reached < end:
                run["stop_reason"] = mdrun.stop_reason or _mdrun_stop_reason(gmx_log) or "stopped early"
                history.append(run)
                atomic_write_json(marker_path, marker)
                stop_reason = run["stop_reason"]
                break
            run["stop_reason"] = None
            history.append(run)
            atomic_write_json(marker_path, marker)
    if stop_reason is not None:
        reached = own_checkpoint_step(work) or first
        log.warning(
            "%s segment %d paused at step %d of %d (%s); progress is saved, run again to continue",
            name,
            segment_index,
            reached,
            last,
            stop_reason,
        )
        return False, {"step": reached, "reason": stop_reason}
    info = _finish(task, work, marker, parameters, start_sha, first, last)
    return True, info


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _completed_info(work: Path, start_sha: str) -> dict | None:
    info = _read_json(work / "segment.json")
    if not info or info.get("start_sha256") != start_sha:
        return None
    if not all((work / name).exists() for name in OUTPUT_FILES):
        return None
    return info


def own_checkpoint_step(work: Path) -> int | None:
    header = checkpoint_header(work / "segment.cpt")
    return header["step"] if header else None


def parked_files(work: Path) -> tuple[int, list[Path]] | None:
    """The step of a paused segment's newest checkpoint and the files that continue it
    on another machine with the same GROMACS: its record, its tpr, its part files and
    checkpoints (mdrun's are portable between machines)."""
    step = own_checkpoint_step(work)
    if step is None or not (work / "run.json").exists():
        return None
    carried = [p for p in work.iterdir() if _MDRUN_FILE.match(p.name) and p.suffix in _PARKED_SUFFIXES]
    return step, [work / "run.json", *sorted(carried)]


_PARKED_SUFFIXES = (".tpr", ".xtc", ".edr", ".cpt")


def _choose_resume(work: Path, first: int, last: int):
    """The segment's own checkpoint to continue from, as (path, step), or None (then the
    segment starts from its start checkpoint). A checkpoint at the last step whose
    outputs are not all on disk (killed while mdrun was finishing) is passed over for
    the previous one: GROMACS then truncates the outputs to it and redoes the rest."""
    for candidate in (work / "segment.cpt", work / "segment_prev.cpt"):
        header = checkpoint_header(candidate)
        if header is None or not first <= header["step"] <= last:
            continue
        return candidate, header["step"]
    return None


_MDRUN_FILE = re.compile(r"^segment(\.part\d+)?\.(xtc|edr|log|gro|trr|cpt|tpr)$|^segment_prev\.cpt$")


def _clear_runs(work: Path, keep_tpr: bool = True) -> None:
    """Remove mdrun's files (of an earlier attempt, or of a finished segment)."""
    for path in work.iterdir():
        if _MDRUN_FILE.match(path.name) and not (keep_tpr and path.name == "segment.tpr"):
            path.unlink(missing_ok=True)


def _parts(work: Path) -> list[tuple[int, dict[str, Path]]]:
    """mdrun's output files per simulation part, oldest first: ``segment.xtc`` (part 1,
    a run that started from the tpr) and ``segment.partNNNN.xtc`` (runs that started
    from a checkpoint), with their ``.edr``."""
    parts: dict[int, dict[str, Path]] = {}
    for path in work.iterdir():
        match = re.match(r"^segment(?:\.part(\d+))?\.(xtc|edr)$", path.name)
        if match:
            parts.setdefault(int(match.group(1) or 1), {})[match.group(2)] = path
    return sorted(parts.items())


def _xtc_frames(path: Path) -> list[tuple[int, int, float]]:
    """(offset, step, time) of every complete frame."""
    frames = []
    with open(path, "rb") as handle:
        for offset in xtc.frame_offsets(path):
            handle.seek(offset)
            _, _, step, time_ps, *_ = xtc._HEADER.unpack(handle.read(xtc._HEADER.size))
            frames.append((offset, step, time_ps))
    return frames


def _spliced_outputs(work: Path, parameters: dict, first: int, last: int):
    """The segment's frames and energy rows, spliced from mdrun's part files, or None
    if some are missing.

    Each run continues from a checkpoint and writes its own part, starting with the
    frame at its start step; what an earlier part holds from that step on was written
    after the checkpoint by a run that was then killed, and is replaced (what ``gmx
    trjcat`` does). Only frames at steps first+F .. last are kept: the frame at the
    start step is the previous segment's last."""
    frame_steps = parameters["nstxout_compressed"]
    expected = list(range(first + frame_steps, last + 1, frame_steps))
    frames: list[tuple[int, Path, int, int]] = []  # step, file, offset, length
    rows: list[tuple[int, dict]] = []  # step, values
    for _, part in _parts(work):
        if "xtc" in part:
            found = []
            offsets = _xtc_frames(part["xtc"])
            ends = [o for o, _, _ in offsets[1:]] + [xtc._end_of_frame(part["xtc"], [o for o, _, _ in offsets])]
            for (offset, stored_step, _), end in zip(offsets, ends[: len(offsets)], strict=True):
                # XTC keeps the step as a 32-bit integer (its time is a float, too coarse
                # for long simulations): recover the full step from the segment's range.
                step = first + (stored_step - first) % 2**32
                if (step - first) % frame_steps == 0:
                    found.append((step, part["xtc"], offset, end - offset))
            if found:
                frames = [f for f in frames if f[0] < found[0][0]] + found
        if "edr" in part:
            try:
                names, energy_frames = edr_frames(part["edr"])
            except Exception:  # noqa: BLE001 - an empty or unreadable part: nothing from it
                continue
            found = [
                (step, dict(zip(names, values, strict=False)))
                for step, _, values in energy_frames
                if (step - first) % frame_steps == 0
            ]
            if found:
                rows = [r for r in rows if r[0] < found[0][0]] + found
    frames = [f for f in frames if first < f[0] <= last]
    rows = [r for r in rows if first < r[0] <= last]
    if [f[0] for f in frames] != expected or [r[0] for r in rows] != expected:
        return None
    return frames, rows


def _finish(
    task: SegmentTask, work: Path, marker: dict, parameters: dict, start_sha: str, first: int, last: int
) -> dict:
    name, segment_index, protocol = task.name, task.segment, task.protocol
    spliced = _spliced_outputs(work, parameters, first, last)
    if spliced is None:
        raise SegmentError(
            f"{name} segment {segment_index}: mdrun finished but its trajectory or energy files do "
            f"not have every frame of steps {first}-{last}; see {work / 'gromacs.log'}"
        )
    kept, rows = spliced
    _write_frames(work / "trajectory.xtc", kept)
    dt, tinit = parameters["dt_ps"], parameters["tinit_ps"]
    lines = [",".join(ENERGY_COLUMNS)]
    for step, energies in rows:
        values = []
        for column in ENERGY_COLUMNS[2:]:
            term, factor = EDR_TERMS[column]
            values.append(f"{float(energies[term]) * factor:.8g}" if term in energies else "")
        lines.append(",".join([str(step), f"{tinit + step * dt:.6f}"] + values))
    atomic_write_text(work / "energies.csv", "\n".join(lines) + "\n")
    final = work / "segment.cpt"
    header = checkpoint_header(final)
    if header is None or header["step"] != last:
        raise SegmentError(f"{name} segment {segment_index}: the final checkpoint is not at step {last}")
    atomic_write_bytes(work / "final_state.cpt", final.read_bytes())
    history = marker["history"]
    total_wall = sum(run.get("wall_seconds") or 0 for run in history)
    info = segment_record(
        task,
        frames=len(kept),
        platform=history[-1]["platform"] if history else None,
        runs=history,
        ns_per_day=_ns_per_day(last - first, dt, total_wall),
        seed=task.seed,  # the replica's tpr holds its seeds
        checkpoint_minutes=round(
            max(
                MIN_CHECKPOINT_SECONDS,
                protocol.checkpoint_interval_ps / 1000.0 / marker["ns_per_day_measured"] * 86400.0,
            )
            / 60.0,
            4,
        )
        if marker.get("ns_per_day_measured")
        else None,
        start_sha256=start_sha,
        gmx_version=available(),
    )
    atomic_write_json(work / "segment.json", info)
    # mdrun's own files are no longer needed; keep its logs, in order, as one.
    with open(work / "mdrun.log.tmp", "wb") as handle:
        for path in sorted(work.glob("segment*.log"), key=lambda p: int(re.sub(r"\D", "", p.name) or 1)):
            handle.write(path.read_bytes())
    os.replace(work / "mdrun.log.tmp", work / "mdrun.log")
    _clear_runs(work, keep_tpr=False)
    (work / "run.json").unlink(missing_ok=True)
    log.info(
        "%s segment %d complete: %d frames, %.1f ns/day (GROMACS)",
        name,
        segment_index,
        len(kept),
        info["ns_per_day"] or 0,
    )
    return info


def _write_frames(path: Path, frames) -> None:
    """Copy XTC frames (file, offset, length) into one file, atomically."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as out:
        for _, source, offset, length in frames:
            with open(source, "rb") as handle:
                handle.seek(offset)
                out.write(handle.read(length))
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def _tail(path: Path, size: int = 20000, start: int = 0) -> str:
    with open(path, "rb") as handle:
        handle.seek(max(start, path.stat().st_size - size))
        return handle.read().decode("utf-8", "replace")


def _mdrun_performance(work: Path) -> float | None:
    """ns/day of the last mdrun, from its log (without start-up time)."""
    logs = sorted(work.glob("segment*.log"))
    if not logs:
        return None
    found = re.findall(r"(?m)^Performance:\s+([\d.]+)", _tail(logs[-1]))
    return float(found[-1]) if found else None


def _mdrun_stop_reason(gmx_log: Path) -> str | None:
    text = _tail(gmx_log)
    if "Run time exceeded" in text:
        return "time budget (-maxh)"
    if re.search(r"Received the (?:second )?(?:TERM|INT|INT/TERM) signal", text):
        return "signal to mdrun"
    return None


def main(argv=None) -> int:
    """Run one GROMACS segment outside Snakemake (debugging, benchmarks, tests):

    python -m mdcampaign.engines.gromacs.runner --tpr system.tpr --start start.cpt --work work/ \\
        --protocol protocol.json [--segment K] [--threads N] [--budget-seconds S]
    Exit status: 0 complete, EXIT_PAUSED (progress saved), EXIT_FAILED.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mdcampaign.engines.gromacs.runner", description=main.__doc__)
    parser.add_argument("--tpr", required=True, type=Path)
    parser.add_argument("--start", type=Path, default=None)
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--protocol", required=True, type=Path, help="JSON file with every protocol key")
    parser.add_argument("--segment", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--gpu", type=int, default=None)
    parser.add_argument("--budget-seconds", type=float, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    protocol = Protocol.from_record(json.loads(args.protocol.read_text()))
    task = SegmentTask(
        name=args.work.name,
        segment=args.segment,
        protocol=protocol,
        seed=protocol.seed,
        system=args.tpr,
        start_state=args.start,
        topology=None,
        work_dir=args.work,
        threads=args.threads,
        deadline=time.time() + args.budget_seconds if args.budget_seconds else None,
        slot={"slot": None, "cores": None, "device": args.gpu} if args.gpu is not None else None,
    )
    try:
        complete = run_segment(task).complete
    except (SegmentError, CampaignError) as error:
        log.error("%s", error)
        return EXIT_FAILED
    return 0 if complete else EXIT_PAUSED


if __name__ == "__main__":
    raise SystemExit(main())
