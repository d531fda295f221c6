"""`mdcampaign tune`: measure which packing gives a machine the most ns/day in total.

For each set-up system of the campaign, runs 1, 2, 4, ... copies of it side by side
for a few seconds, each pinned to its share of the cores (and its GPU) exactly as a
packed job's slots are (`slots.slot_plan`), and reports the total ns/day of each
packing. Run it where the simulations will run (on a cluster: inside an interactive
job on a compute node of the partition), after `setup`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .engines import engine_for
from .slots import Packing, slot_plan


@dataclass
class Trial:
    system: str
    atoms: int
    packing: Packing
    ns_per_day: list[float]  # one per slot

    @property
    def total(self) -> float:
        return sum(self.ns_per_day)


def candidates(cores: int, gpus: int, max_per_gpu: int = 4) -> list[Packing]:
    """Packings worth trying: on CPUs 1, 2, 4, ... slots sharing the cores evenly; on
    GPUs 1, 2, 4 slots per GPU, the cores shared among them."""
    if gpus:
        per_gpu = [n for n in (1, 2, 4, 8) if n <= max_per_gpu and n * gpus <= cores]
        return [Packing.of(slots=n * gpus, threads=max(1, cores // (n * gpus)), gpus=gpus) for n in per_gpu]
    counts = []
    slots = 1
    while slots <= cores:
        counts.append(slots)
        slots *= 2
    if cores not in counts:
        counts.append(cores)
    return [Packing.of(slots=s, threads=cores // s) for s in counts]


def measure(system_dir: Path, packing: Packing, seconds: float, platform: str, cpus: list[int]) -> list[float]:
    """ns/day of each of ``packing.slots`` copies of a system run side by side."""
    processes = []
    for slot in slot_plan(packing, cpus):
        command = [
            sys.executable,
            "-m",
            "mdcampaign.tune",
            str(system_dir),
            platform,
            str(packing.threads),
            str(seconds),
        ]
        processes.append(
            subprocess.Popen(
                command,
                env={**os.environ, **slot.environment()},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    speeds = []
    for process in processes:
        out, err = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"a tuning run failed: {' '.join(err.split())[-300:]}")
        speeds.append(float(out.strip().splitlines()[-1]))
    return speeds


def _worker(system_dir: str, platform: str, threads: int, seconds: float) -> float:
    """In a slot's process: the set-up system's ns/day, measured by its engine."""
    from .engines import engine_for
    from .slots import current_slot, pin_to_slot

    pin_to_slot()
    setup = json.loads((Path(system_dir) / "setup.json").read_text())
    slot = current_slot()
    device = slot.get("device") if slot else None
    return engine_for(setup.get("engine", "openmm")).measure_speed(Path(system_dir), platform, threads, seconds, device)


def tune(systems: dict[str, Path], cores: int, gpus: int, seconds: float, platform: str, report=print) -> list[Trial]:
    cpus = sorted(os.sched_getaffinity(0))[:cores]
    trials = []
    for name, system_dir in systems.items():
        setup = json.loads((system_dir / "setup.json").read_text())
        atoms = setup.get("atoms", 0)
        engine = engine_for(setup.get("engine", "openmm"))
        if not engine.measures_speed:
            report(
                f"{name}: skipped (tune cannot measure {engine.name} systems in slots; they use the packing "
                "measured for systems of another engine of their size)"
            )
            continue
        for packing in candidates(len(cpus), gpus):
            trial = Trial(name, atoms, packing, measure(system_dir, packing, seconds, platform, cpus))
            trials.append(trial)
            report(
                f"{name} ({atoms} atoms): {packing.slots} slots x {packing.threads} threads"
                + (f" on {gpus} GPUs" if gpus else "")
                + f": {trial.total:.1f} ns/day in total "
                f"({', '.join(f'{s:.1f}' for s in trial.ns_per_day)})"
            )
    return trials


def best(trials: list[Trial]) -> dict[str, Trial]:
    """The packing with the most total ns/day, per system."""
    result: dict[str, Trial] = {}
    for trial in trials:
        if trial.system not in result or trial.total > result[trial.system].total:
            result[trial.system] = trial
    return result


if __name__ == "__main__":
    print(_worker(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
