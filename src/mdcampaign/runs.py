"""What every engine's segment runner shares: the columns of the energies table, how a
stop request (a signal) is caught so that the runner can checkpoint first, and what a
run of a segment returns, and who runs a segment: one runner at a time (a lock), and
a record of it that `mdcampaign status` reads. Imports no MD engine."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .errors import SegmentError
from .files import atomic_write_json, file_system_now
from .protocol import Protocol

log = logging.getLogger(__name__)

ENERGY_COLUMNS = (
    "step",
    "time_ps",
    "potential_energy_kJ_mol",
    "kinetic_energy_kJ_mol",
    "total_energy_kJ_mol",
    "temperature_K",
    "volume_nm3",
    "density_g_per_mL",
)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


@dataclass
class SegmentTask:
    """One segment of one simulation, for any engine. Paths are this segment's files."""

    name: str  # simulation name, for messages
    segment: int
    protocol: Protocol
    seed: int  # the simulation's seed
    system: Path  # the simulation's system (layout.EngineFiles.system)
    start_state: Path | None  # where it starts; None: from the system file's own state
    topology: Path  # topology.pdb
    work_dir: Path
    platform: str = "auto"  # OpenMM's platform preference
    threads: int | None = None
    deadline: float | None = None  # epoch seconds by which the runner must have stopped
    slot: dict | None = None  # a packed job's slot it runs in (slots.current_slot): its cores and GPU
    stop_margin_seconds: float | None = None  # default: 5% of the time left at start, 5-60 s

    @property
    def device(self) -> int | None:
        """The GPU of the slot it runs in, if any."""
        return self.slot.get("device") if self.slot else None

    @property
    def first_step(self) -> int:
        return self.segment * self.protocol.segment_steps

    @property
    def last_step(self) -> int:
        return self.first_step + self.protocol.segment_steps

    @property
    def segment_seed(self) -> int:
        return (self.seed * 1_000_003 + self.segment * 7919) % 2_147_483_647 or 1


@dataclass
class Outcome:
    complete: bool
    info: dict = field(default_factory=dict)


class StopRequest:
    """Records stop signals instead of dying, so the loop can checkpoint first."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = {}

    def __enter__(self):
        for sig in STOP_SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        self.signal_name = signal.Signals(signum).name
        log.warning("received %s: will checkpoint and stop", self.signal_name)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# In a segment's work folder: held (flock) by the one process running the segment, and
# who that is. The record is left behind only if the runner is killed, which is how
# `mdcampaign status` tells a stopped segment from a running one.
RUNNER_LOCK = "runner.lock"
RUNNER_RECORD = "runner.json"


@contextmanager
def sole_runner(work: Path, name: str, segment: int):
    """Hold the segment's work folder alone: a second runner of the same segment (a job
    left running by a killed Snakemake, started again) stops instead of writing the
    same files. The kernel releases the lock when the holder dies."""
    import fcntl

    with open(work / RUNNER_LOCK, "a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            # a runner killed while it wrote a record leaves the temporary file of that
            # atomic write (files.atomic_write_bytes): ours to clear, holding the lock
            for stale in work.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
        except BlockingIOError:
            try:
                holder = json.loads((work / RUNNER_RECORD).read_text())
                who = f"pid {holder['pid']} on {holder['host']}"
            except (OSError, ValueError, KeyError):
                who = "another process"
            raise SegmentError(
                f"{name} segment {segment} is already being run by {who} (in {work}); a second runner "
                "would corrupt it: wait for that one to finish, or stop it and run again"
            ) from None
        except OSError:  # no locking on this file system: nothing more to check with
            pass
        yield


def announce_runner(work: Path, slot: dict | None = None) -> None:
    """Record that this process is working on the segment now (in ``slot``, if packed)."""
    atomic_write_json(
        work / RUNNER_RECORD,
        {
            "pid": os.getpid(),
            "host": platform.node(),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
            "slot": slot,
            "started_at": iso_time(time.time()),
            **clock(work),
        },
    )


def run_entry(task: SegmentTask, platform_name: str, from_step: int, started: float) -> dict:
    """How one run of a segment begins, in its record's ``runs`` (the same for every
    engine): where (host, Slurm job, slot), on what, from which step, when. The runner
    adds how it ended: ``to_step``, ``wall_seconds``, ``ns_per_day``, ``stop_reason``."""
    return {
        "host": platform.node(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slot": task.slot,
        "platform": platform_name,
        "threads": task.threads,
        "from_step": from_step,
        "started_at": iso_time(started),
    }


def withdraw_runner(work: Path) -> None:
    (work / RUNNER_RECORD).unlink(missing_ok=True)


def iso_time(epoch: float) -> str:
    """A time for the records: UTC, ISO 8601, to the second, by this host's clock (a
    record names the host in its ``clock`` field: hosts' clocks may disagree)."""
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="seconds")


def clock(directory: Path | str) -> dict:
    """Whose clock a record's times are by: this host (``clock``), and how far this
    process's clock is from the clock that stamps files in ``directory``, where the
    record is written (``clock_offset_s``: 0 on a healthy machine; a skewed or faked
    process clock shows here). Claims' ages use the store's clock instead (claims.py)."""
    try:
        offset = round(time.time() - file_system_now(directory), 1)
    except OSError:
        offset = None
    return {"clock": platform.node(), "clock_offset_s": offset}


def publish(work_dir: Path, outputs: dict[str, Path]) -> None:
    """Expose the finished files under the paths Snakemake expects, then drop the work
    directory. Hard links keep the data if the job is interrupted in between."""
    work_dir = Path(work_dir)
    for name, target in outputs.items():
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(work_dir / name, target)
        except OSError:
            shutil.copy2(work_dir / name, target)
    shutil.rmtree(work_dir, ignore_errors=True)
