"""The job of the `pack` rule: a batch of simulations run in slots side by side.

Each slot is a thread that takes a simulation of the batch, runs its next segment
(stage, simulate, fetch: the very job commands of the per-segment rules, as
processes pinned to the slot's cores and GPU) and goes on with the simulation's next
segment, or another waiting simulation, until none is left or the job's time is up.
What a segment does, how it resumes after a kill and how it stops before the time
limit is the per-segment path's; this module only schedules.

A simulation is held by one slot at a time, and a batch's rounds run one after the
other (a checkpoint), so no segment ever runs twice at the same time.

When sites pull work (`pull` rule), the job has no fixed batch: a free slot claims
the simulation its site prefers in the store (see pulling.py and claims.py), runs
its segments and its analysis while the job renews the claim, and releases it; a
slot whose claim was taken over stops that simulation and discards its segment.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from . import layout
from .claims import RENEWALS_PER_LEASE, ClaimBoard, Lease
from .convergence import Goal, segments_wanted
from .engines import files_of
from .errors import EXIT_PAUSED
from .jobspec import JobSpec
from .slots import Packing, Slot, slot_plan

log = logging.getLogger(__name__)

# Do not start another segment when less than this is left of the job's time: its
# process would start only to checkpoint and stop again.
START_MARGIN_SECONDS = 15.0


@dataclass
class Member:
    """One simulation of the batch and what happened to it in this job."""

    system: str
    replica: int
    n_segments: int
    protocol: dict
    seed: int
    # waiting, running, done, paused, failed, lost (its claim), handed over, ahead (of its replicas)
    state: str = "waiting"
    failure: str | None = None
    lease: Lease | None = None  # its claim in the store, when pulled
    asked_by: str | None = None  # a faster site asked to take it over after this segment
    frame_interval_ps: float = 0.0  # for its analysis, when pulled
    until: dict | None = None  # its system's goal (convergence.Goal), if it stops when converged

    @property
    def name(self) -> str:
        return layout.sim_name(self.system, self.replica)

    def wanted(self) -> int:
        """Its segments: the cap, or fewer once its system stopped (read each time)."""
        return segments_wanted(self.system, self.n_segments, Goal.from_record(self.until))

    def segment_params(self) -> dict:
        """What its stage, simulate and fetch jobs are given."""
        return {"protocol": self.protocol, "seed": self.seed, **({"until": self.until} if self.until else {})}

    def fetched(self) -> int:
        return layout.segments_fetched(self.system, self.replica, self.n_segments)


@dataclass
class SegmentRun:
    simulation: str
    segment: str
    slot: int
    started: float
    ended: float = 0.0
    outcome: str = ""
    log: str = ""


@dataclass
class Batch:
    """The shared state of one packed job; slots take work from it under a lock."""

    members: list[Member]
    job_config: dict  # what the per-segment job commands get (see jobs.JobContext.config)
    deadline: float | None
    command: list[str]  # python and scripts/job.py
    runs: list[SegmentRun] = field(default_factory=list)
    stopping: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    processes: dict = field(default_factory=dict)  # slot -> running Popen
    claimer: Claimer | None = None  # pulling: where free slots get their next simulation

    def take(self, slot: Slot) -> Member | Asked | None:
        with self.lock:
            if self.stopping or self.time_is_up() or self.draining():
                return None
            if self.claimer is not None:
                member = self.claimer.next(slot)
                if isinstance(member, Member):
                    member.state = "running"
                    self.members.append(member)
                return member
            for member in self.members:
                if member.state == "waiting":
                    member.state = "running"
                    return member
        return None

    def held(self) -> list[Member]:
        with self.lock:
            return [m for m in self.members if m.lease is not None and m.state == "running"]

    def lose(self, member: Member) -> None:
        """Its claim was taken over: stop its segment now; nothing it made is published."""
        with self.lock:
            member.state = "lost"
            for process, running in list(self.processes.values()):
                if running is member and process.poll() is None:
                    process.send_signal(signal.SIGTERM)
        log.warning(
            "%s: the claim was taken over by another site; stopping it here and discarding its segment in progress",
            member.name,
        )

    def time_is_up(self) -> bool:
        return self.deadline is not None and self.deadline - time.time() < START_MARGIN_SECONDS

    def draining(self) -> bool:
        """The site is being stopped (`mdcampaign sites stop`): finish the segments that
        run, start no more."""
        return os.path.exists(layout.DRAIN_MARKER)

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline

    def stop(self, signum: int) -> None:
        """Stop starting segments; ask the running ones to checkpoint and stop."""
        self.stopping = True
        with self.lock:
            for process, _ in self.processes.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
        log.warning("received %s: the running segments checkpoint and stop", signal.Signals(signum).name)


class Asked:
    """What `Claimer.next` gives a slot that asked another site for a simulation (the
    tail hand-over): nothing yet, ask again after ``Claimer.poll_seconds``."""


ASKED = Asked()


class Claimer:
    """What a pulling job's free slots take (implemented in pulljob.py)."""

    board: ClaimBoard
    poll_seconds: float = 30.0

    def next(self, slot: Slot) -> Member | Asked | None:
        raise NotImplementedError

    def park(self, member: Member, segment: int, work_dir: Path) -> None:
        """``member``'s segment paused in ``work_dir``: leave its progress where the next
        taker finds it (pulling: the store, see parking.py)."""

    def may_go_on(self, member: Member) -> bool:
        """Whether ``member``, a segment done, runs its next one in this slot now (False:
        it is released until its system's other replicas caught up)."""
        return True

    def finish(self, member: Member) -> None:
        """The slot is done with ``member`` (done, paused, failed or lost): release it."""
        raise NotImplementedError

    def holds(self, member: Member) -> bool:
        """Whether ``member``'s claim is still this job's (asks the store; True if it
        cannot be reached, since publishing checks again)."""
        raise NotImplementedError

    def reclaim(self, member: Member) -> bool:
        """Take ``member`` again after its claim expired unrenewed, if nobody else did."""
        raise NotImplementedError


def run_batch(
    members: list[Member],
    packing: Packing,
    job_config: dict,
    deadline: float | None,
    slots: list[Slot] | None = None,
    claimer: Claimer | None = None,
) -> tuple[dict, str | None]:
    """Run the batch's segments in ``packing.slots`` slots, until none is left or the
    time is up. Returns what happened (the round's record) and, if any simulation
    failed, one line naming each with its reason and log (the other slots finish
    their work first). A failed simulation is tried again by the batch's next job,
    which comes as long as the others make progress."""
    slots = slots or slot_plan(packing)
    batch = Batch(members, job_config, deadline, [sys.executable, str(Path(sys.argv[0]).resolve())], claimer=claimer)
    started = time.time()
    for slot in slots:
        log.info(
            "slot %d: cores %s, GPU %s",
            slot.index,
            ",".join(map(str, slot.cores)) if slot.cores else "any",
            slot.device if slot.device is not None else "none",
        )
    threads = [
        threading.Thread(target=_slot_loop, args=(batch, slot, packing.threads), name=f"slot-{slot.index}")
        for slot in slots
    ]
    previous = {
        sig: signal.signal(sig, lambda signum, frame: batch.stop(signum)) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    renewing = threading.Event()
    renewer = (
        threading.Thread(target=_renew_claims, args=(batch, renewing), name="renew", daemon=True)
        if claimer is not None
        else None
    )
    try:
        if renewer is not None:
            renewer.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=1.0)  # wakes up for signals
    finally:
        renewing.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    ended = time.time()
    failed = [m for m in members if m.state == "failed"]
    return _record(batch, slots, started, ended), "; ".join(f"{m.name}: {m.failure}" for m in failed) or None


def _renew_claims(batch: Batch, stop: threading.Event) -> None:
    """Renew the job's claims every sixth of the lease; stop the simulations whose
    claim was lost. A store that cannot be reached is tried again at the next turn:
    the segments go on, and publishing checks the claim anyway."""
    board = batch.claimer.board
    while not stop.wait(board.lease_seconds / RENEWALS_PER_LEASE):
        held = batch.held()
        asked: dict = {}
        try:
            lost = board.renew([m.lease for m in held], asked)
        except Exception as error:  # noqa: BLE001 - the store may come back; the segments go on meanwhile
            log.warning(
                "could not renew the claims (%s); trying again in %.0f s",
                error,
                board.lease_seconds / RENEWALS_PER_LEASE,
            )
            continue
        for member in held:
            if member.lease in lost and not _reclaimed(batch, member):
                batch.lose(member)
            elif member.lease in asked and member.asked_by is None:
                member.asked_by = asked[member.lease]
                log.info(
                    "%s: site %s asked to take it over; it goes there after this segment",
                    member.name,
                    asked[member.lease],
                )


def _reclaimed(batch: Batch, member: Member) -> bool:
    try:
        return batch.claimer.reclaim(member)
    except Exception:  # noqa: BLE001 - the store is out of reach again: the claim stays lost
        return False


def _slot_loop(batch: Batch, slot: Slot, threads: int) -> None:
    while (member := batch.take(slot)) is not None:
        if member is ASKED:  # another site's simulation, at the end of its segment there
            time.sleep(batch.claimer.poll_seconds)
            continue
        while member.state == "running":
            segment = member.fetched()
            if segment >= member.wanted():
                if member.lease is not None and not _analyze(batch, member, slot):
                    break
                member.state = "done"
                break
            if batch.stopping or batch.time_is_up() or batch.draining():
                member.state = "paused"
                break
            if member.asked_by is not None:  # the tail hand-over, at a segment's end
                member.state = "handed over"
                log.info(
                    "slot %d: %s handed over to site %s at segment %d",
                    slot.index,
                    member.name,
                    member.asked_by,
                    segment,
                )
                break
            outcome = _run_segment(batch, member, segment, slot, threads)
            if outcome != "done":
                member.state = "lost" if member.state == "lost" else outcome
                break
            if batch.claimer is not None and not batch.claimer.may_go_on(member):
                member.state = "ahead"
                log.info(
                    "slot %d: %s is ahead of its system's other replicas (it stops when converged, judged when "
                    "all reach a segment's end): released until they catch up",
                    slot.index,
                    member.name,
                )
                break
        if batch.claimer is not None:
            batch.claimer.finish(member)
    log.info("slot %d: no more work", slot.index)


def _analyze(batch: Batch, member: Member, slot: Slot) -> bool:
    """A pulled simulation's analysis, by the slot that ran its last segment."""
    segments = layout.segment_name(member.n_segments)
    if Path(layout.completion_record(member.system, member.replica, member.wanted())).exists():
        return True
    wildcards = {"system": member.system, "replica": member.replica, "segments": segments}
    params = {"frame_interval_ps": member.frame_interval_ps, **({"until": member.until} if member.until else {})}
    code = _job(batch, "analyze", wildcards, member, slot, 1, params)
    if code != 0 and member.state != "lost":
        log_file = layout.fill(layout.log_path("analyze"), **wildcards)
        member.state, member.failure = "failed", f"analyze failed ({_reason(log_file, code)}; log: {log_file})"
        log.error("slot %d: %s %s", slot.index, member.name, member.failure)
    return code == 0


def _run_segment(batch: Batch, member: Member, segment: int, slot: Slot, threads: int) -> str:
    """Stage (if it continues from the store), simulate and fetch one segment:
    'done', 'paused' (time is up; its checkpoint is kept), 'failed' or 'lost' (its
    claim was taken over: the segment is discarded)."""
    name = layout.segment_name(segment)
    wildcards = {"system": member.system, "replica": member.replica, "segment": name}
    run = SegmentRun(member.name, name, slot.index, time.time())
    batch.runs.append(run)
    scratch = Path(layout.scratch_segment(batch.job_config["scratch"], member.system, member.replica, segment))
    # Steps a killed job finished are not redone (what Snakemake's outputs would tell it).
    for rule in layout.segment_steps_left(scratch, files_of(member.protocol), segment):
        run.log = layout.fill(layout.log_path(rule), **wildcards)
        code = _job(batch, rule, wildcards, member, slot, threads)
        if code != 0 and member.lease is not None and member.state != "lost" and not batch.claimer.holds(member):
            batch.lose(member)
        if member.state == "lost":
            shutil.rmtree(scratch, ignore_errors=True)  # another site runs this segment now
            run.outcome, run.ended = "lost", time.time()
            return "lost"
        if code != 0 and (batch.stopping or batch.past_deadline()):
            code = EXIT_PAUSED  # stopped by the time limit (a SIGTERM may come before its handler is set)
        if code == EXIT_PAUSED:
            run.outcome, run.ended = "paused", time.time()
            log.info(
                "slot %d: %s segment %s paused (time is up, or asked to stop); its checkpoint is kept",
                slot.index,
                member.name,
                name,
            )
            if rule == "simulate" and batch.claimer is not None:
                work = layout.scratch_work(batch.job_config["scratch"], member.system, member.replica, segment)
                batch.claimer.park(member, segment, Path(work))
            return "paused"
        if code != 0:
            run.outcome, run.ended = "failed", time.time()
            member.failure = f"{rule} of segment {name} failed ({_reason(run.log, code)}; log: {run.log})"
            log.error("slot %d: %s %s", slot.index, member.name, member.failure)
            return "failed"
    # What Snakemake does with the per-segment rules' temporary folders.
    shutil.rmtree(scratch, ignore_errors=True)
    run.outcome, run.ended = "done", time.time()
    log.info("slot %d: %s segment %s done in %.0f s", slot.index, member.name, name, run.ended - run.started)
    return "done"


def _job(
    batch: Batch, rule: str, wildcards: dict, member: Member, slot: Slot, threads: int, params: dict | None = None
) -> int:
    """One per-segment job command, as the rule would run it, in this slot."""
    config = batch.job_config
    if member.lease is not None:  # fetch and analyze check and record the claim
        config = {**config, "lease": member.lease.to_json(), "lease_seconds": batch.claimer.board.lease_seconds}
    spec = JobSpec(wildcards, params or member.segment_params(), config)
    runtime = max(1.0, (batch.deadline - time.time()) / 60.0) if batch.deadline else 0
    command = [*batch.command, rule, spec.to_json(), str(threads if rule == "simulate" else 1), str(runtime)]
    with batch.lock:
        if batch.stopping:
            return EXIT_PAUSED
        # The job pins itself to the slot's cores (slots.pin_to_slot) from its environment.
        if member.state == "lost":
            return EXIT_PAUSED
        process = subprocess.Popen(
            command,
            env={**os.environ, **slot.environment()},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        batch.processes[slot.index] = (process, member)
    _, stderr = process.communicate()
    with batch.lock:
        batch.processes.pop(slot.index, None)
    if process.returncode not in (0,) and stderr.strip():
        log.info("slot %d: %s said: %s", slot.index, rule, " ".join(stderr.split())[-300:])
    return process.returncode


def _reason(log_file: str, code: int) -> str:
    """The job's own one-line reason (its log's FAILED line), or how it ended."""
    try:
        lines = Path(log_file).read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in reversed(lines):
        if "FAILED" in line:
            return line.split("FAILED", 1)[1].lstrip(": ").strip()
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit {code}"


def _record(batch: Batch, slots: list[Slot], started: float, ended: float) -> dict:
    wall = max(ended - started, 1e-9)
    busy = sum((run.ended or ended) - run.started for run in batch.runs)
    return {
        "slots": [{"slot": s.index, "cores": list(s.cores) if s.cores else None, "device": s.device} for s in slots],
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "host": os.uname().nodename,
        "started_at": _iso(started),
        "ended_at": _iso(ended),
        "wall_seconds": round(wall, 2),
        "busy_fraction": round(busy / (len(slots) * wall), 4),
        "simulations": {
            m.name: {"state": m.state, **({"failure": m.failure} if m.failure else {})} for m in batch.members
        },
        "segments": [
            {
                "simulation": r.simulation,
                "segment": r.segment,
                "slot": r.slot,
                "started_at": _iso(r.started),
                "ended_at": _iso(r.ended) if r.ended else None,
                "outcome": r.outcome,
                "log": r.log,
            }
            for r in batch.runs
        ],
    }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
