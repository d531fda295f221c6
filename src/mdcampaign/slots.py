"""Packing: several simulations side by side in one cluster job, each in a *slot*.

A machine profile says what one job holds (``packing:`` in the config): how many
slots run at once, how many CPU threads each gets (pinned to distinct cores of the
job's allocation) and how many GPUs the job has (slot i uses GPU i mod gpus, so
several slots share a GPU when there are more slots than GPUs). The simulations of
this run's share are cut into *batches*, one job's worth each; a job (`pack` rule)
keeps its slots busy with its batch's segments until they are done or the
allocation's time is up, and the next job of the batch continues from there.

Plain data and arithmetic only: planning imports this module.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

# What a slot's process is told (read by the segment runner and `mdcampaign status`).
SLOT_ENV = "MDCAMPAIGN_SLOT"
CORES_ENV = "MDCAMPAIGN_SLOT_CORES"
DEVICE_ENV = "MDCAMPAIGN_SLOT_DEVICE"


@dataclass(frozen=True)
class Packing:
    """``packing:`` of the config. ``slots == 0``: no packing (one segment per job)."""

    slots: int
    threads: int
    gpus: int
    simulations: int  # simulations one job holds; 0: twice the slots

    @classmethod
    def of(cls, **values) -> Packing:
        """A packing of these values, the schema's defaults for the others."""
        from .validation import schema_defaults

        return cls(**{**schema_defaults("packing"), **values})

    @property
    def enabled(self) -> bool:
        return self.slots > 0

    @property
    def batch_size(self) -> int:
        return self.simulations or 2 * self.slots

    @property
    def job_threads(self) -> int:
        return self.slots * self.threads


@dataclass(frozen=True)
class Slot:
    index: int
    cores: tuple[int, ...] | None  # None: not pinned (fewer cores than slots x threads)
    device: int | None  # GPU index within the job, None on CPU

    def environment(self) -> dict[str, str]:
        env = {SLOT_ENV: str(self.index)}
        if self.cores is not None:
            env[CORES_ENV] = ",".join(map(str, self.cores))
        if self.device is not None:
            env[DEVICE_ENV] = str(self.device)
        return env


def slot_plan(packing: Packing, cpus: list[int] | None = None) -> list[Slot]:
    """Which cores and which GPU each slot of a job gets. ``cpus``: the cores the job
    may use (by default this process's affinity: under Slurm, exactly what the job
    was given). Each slot gets ``threads`` distinct cores; if the job has fewer than
    slots x threads cores, nobody is pinned rather than two slots share a core."""
    cpus = sorted(os.sched_getaffinity(0)) if cpus is None else list(cpus)
    pinned = len(cpus) >= packing.slots * packing.threads
    return [
        Slot(
            index=i,
            cores=tuple(cpus[i * packing.threads : (i + 1) * packing.threads]) if pinned else None,
            device=i % packing.gpus if packing.gpus else None,
        )
        for i in range(packing.slots)
    ]


def current_slot() -> dict | None:
    """The slot this process runs in (from its environment), for the records."""
    if SLOT_ENV not in os.environ:
        return None
    cores = os.environ.get(CORES_ENV)
    device = os.environ.get(DEVICE_ENV)
    return {
        "slot": int(os.environ[SLOT_ENV]),
        "cores": [int(c) for c in cores.split(",")] if cores else None,
        "device": int(device) if device else None,
    }


def pin_to_slot() -> None:
    """Run this process (and the threads it starts) on its slot's cores, if it has a
    slot. Done by the process itself at start: pinning a child between fork and exec
    is not safe in the packed job, whose slots are threads."""
    slot = current_slot()
    if slot and slot["cores"]:
        os.sched_setaffinity(0, slot["cores"])


def batches(names: list[str], size: int) -> dict[str, str]:
    """Cut simulations (in the order given) into batches of ``size``; each batch is
    named after its members, so the same simulations always form the same batch."""
    result = {}
    for start in range(0, len(names), size):
        members = names[start : start + size]
        batch = "b" + hashlib.sha1("\n".join(members).encode()).hexdigest()[:10]
        result.update(dict.fromkeys(members, batch))
    return result
