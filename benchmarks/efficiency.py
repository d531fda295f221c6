"""Simulate-step efficiency and the cost of a kill.

1. The segment runner against a bare OpenMM loop on the same system, platform and
   thread count: the runner's ns/day (frames, energies, checkpoints, bookkeeping
   included) divided by the bare loop's, for an implicit and an explicit system;
   and, within each runner run, the share of its wall time spent in
   integrator.step (what is not is the runner's own cost).
   Runs alternate (which goes first alternates too) and the median of --repeat
   runs is reported.
2. Work lost per `kill -9`: the runner killed at random moments, then resumed; the
   simulated time it had to redo, against the checkpoint interval.

    python benchmarks/efficiency.py [--repeat 5] [--threads 2] [--kills 10]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openmm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from mdcampaign.engines.openmm import plumbing as engine  # noqa: E402
from mdcampaign.engines.openmm.runner import run_segment  # noqa: E402
from mdcampaign.engines.openmm.setup import prepare  # noqa: E402
from mdcampaign.protocol import Protocol  # noqa: E402
from mdcampaign.runs import SegmentTask  # noqa: E402
from mdcampaign.validation import load_schema  # noqa: E402

DEFAULTS = {
    k: v["default"] for k, v in load_schema("config.schema.yaml")["properties"]["protocol"]["properties"].items()
}
SYSTEMS = {
    "villin, implicit solvent (OBC2)": (
        "villin-1VII.pdb",
        {"forcefield": "amber99sbildn", "solvent": "implicit", "segment_ns": 0.01},
    ),
    "alanine dipeptide in TIP3P water (PME, barostat)": (
        "alanine-dipeptide.pdb",
        {"forcefield": "amber14", "solvent": "explicit", "padding_nm": 1.2, "segment_ns": 0.01},
    ),
}
# frames every ps and checkpoints every 5 ps: denser than the defaults (10 and 100 ps)
OUTPUT = {
    "frame_interval_ps": 1.0,
    "checkpoint_interval_ps": 5.0,
    "equilibration_ps": 2.0,
    "target_ns": 0.01,
    "minimization_max_iterations": 200,
}


def bare_ns_per_day(setup: Path, protocol: Protocol, threads: int) -> float:
    system = engine.read_xml(setup / "system.xml")
    state = engine.read_xml(setup / "state.xml")
    integrator = engine.langevin(protocol.temperature_K, protocol.friction_per_ps, protocol.timestep_fs, 1)
    context = engine.make_context(system, integrator, "CPU", threads)
    if protocol.explicit:
        context.setPeriodicBoxVectors(*state.getPeriodicBoxVectors())
    context.setPositions(state.getPositions())
    context.setVelocitiesToTemperature(protocol.temperature_K * openmm.unit.kelvin, 1)
    started = time.perf_counter()
    integrator.step(protocol.segment_steps)
    context.getState(getEnergy=True)  # wait for the last step
    elapsed = time.perf_counter() - started
    return protocol.segment_ns / elapsed * 86400


class IntegrationClock:
    """Wall time spent inside integrator.step, whoever calls it: the share of the
    runner's own wall time that is MD, measured within one run and so immune to the
    machine's drifting load (which moves the bare-vs-runner ratio by several %)."""

    def __init__(self):
        self.seconds = 0.0
        self._step = openmm.LangevinMiddleIntegrator.step
        clock = self

        def step(integrator, steps):
            started = time.perf_counter()
            try:
                return clock._step(integrator, steps)
            finally:
                clock.seconds += time.perf_counter() - started

        openmm.LangevinMiddleIntegrator.step = step


def runner_run(setup: Path, protocol: Protocol, threads: int, work: Path, clock: IntegrationClock) -> tuple:
    """The runner's ns/day, and the share of its wall time spent integrating."""
    clock.seconds = 0.0
    started = time.perf_counter()
    info = run_segment(
        SegmentTask(
            "bench",
            0,
            protocol,
            1,
            setup / "system.xml",
            setup / "state.xml",
            setup / "topology.pdb",
            work,
            platform="CPU",
            threads=threads,
        )
    ).info
    return info["ns_per_day"], clock.seconds / (time.perf_counter() - started)


def efficiency(repeat: int, threads: int, tmp: Path) -> list[tuple]:
    clock = IntegrationClock()
    rows = []
    for label, (structure, changes) in SYSTEMS.items():
        protocol = Protocol(**{**DEFAULTS, **OUTPUT, **changes})
        setup = tmp / f"{Path(structure).stem}-{changes['solvent']}"
        info = prepare(REPO / "config" / "structures" / structure, protocol, setup, platform="CPU", threads=threads)
        bare, ours = [], []
        for attempt in range(repeat):  # alternating which goes first, against drifting machine load
            work = tmp / f"{setup.name}-{attempt}"
            if attempt % 2:
                ours.append(runner_run(setup, protocol, threads, work, clock))
                bare.append(bare_ns_per_day(setup, protocol, threads))
            else:
                bare.append(bare_ns_per_day(setup, protocol, threads))
                ours.append(runner_run(setup, protocol, threads, work, clock))
        speeds = [speed for speed, _ in ours]
        share = statistics.median(share for _, share in ours)
        ratio = statistics.median(speeds) / statistics.median(bare)
        rows.append((f"{label} ({info['atoms']} atoms)", bare, speeds, ratio, share))
        print(
            f"{label}: bare {statistics.median(bare):.1f}, runner {statistics.median(speeds):.1f} ns/day, "
            f"ratio {ratio:.3f}, integrating {100 * share:.1f}% of the runner's wall time",
            file=sys.stderr,
        )
    return rows


def kill_cost(kills: int, threads: int, tmp: Path) -> dict:
    protocol = Protocol(
        **{
            **DEFAULTS,
            "forcefield": "amber99sbildn",
            "solvent": "implicit",
            "segment_ns": 0.05,
            "target_ns": 0.05,
            "frame_interval_ps": 0.2,
            "checkpoint_interval_ps": 2.0,
            "equilibration_ps": 1.0,
        }
    )
    setup = tmp / "kill-setup"
    prepare(REPO / "config" / "structures" / "alanine-dipeptide.pdb", protocol, setup, platform="CPU", threads=1)
    (tmp / "protocol.json").write_text(json.dumps(protocol.__dict__))
    rng = random.Random(5)
    lost = []
    for trial in range(kills):
        work = tmp / f"kill-{trial}"
        command = [
            sys.executable,
            "-m",
            "mdcampaign.engines.openmm.runner",
            "--system",
            str(setup / "system.xml"),
            "--state",
            str(setup / "state.xml"),
            "--topology",
            str(setup / "topology.pdb"),
            "--work",
            str(work),
            "--protocol",
            str(tmp / "protocol.json"),
            "--platform",
            "CPU",
            "--threads",
            str(threads),
        ]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.5, 3.0))
        if process.poll() is not None:
            continue
        process.send_signal(signal.SIGKILL)
        process.wait()
        resumed = subprocess.run(command, capture_output=True, text=True)
        match = re.search(r"\((\d+) frames kept, (\d+) frames written after it discarded\)", resumed.stderr)
        if match:
            # frames written after the checkpoint are redone, plus at most the frame in progress
            lost.append((int(match.group(2)) + 1) * protocol.frame_interval_ps)
        elif "steps 0-" in resumed.stderr:  # killed before the first checkpoint: the segment restarted
            lost.append(protocol.checkpoint_interval_ps)
    return {
        "kills": len(lost),
        "mean_ps": statistics.mean(lost) if lost else 0.0,
        "max_ps": max(lost, default=0.0),
        "checkpoint_ps": protocol.checkpoint_interval_ps,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kills", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mdcampaign-efficiency-") as tmp:
        rows = efficiency(args.repeat, args.threads, Path(tmp))
        kills = kill_cost(args.kills, 1, Path(tmp))
    print(
        f"| system (CPU, {args.threads} threads, {args.repeat} runs each) | bare OpenMM ns/day, median (min–max) "
        "| segment runner ns/day, median (min–max) | ratio of medians | runner's wall time spent integrating |"
    )
    print("|---|---|---|---|---|")
    for label, bare, ours, ratio, share in rows:
        print(
            f"| {label} | {statistics.median(bare):.1f} ({min(bare):.1f}–{max(bare):.1f}) | "
            f"{statistics.median(ours):.1f} ({min(ours):.1f}–{max(ours):.1f}) | {ratio:.3f} | {100 * share:.1f}% |"
        )
    print()
    print("| kills | work redone per kill, mean | max | checkpoint interval |")
    print("|---|---|---|---|")
    print(
        f"| {kills['kills']} | {kills['mean_ps']:.2f} ps | {kills['max_ps']:.2f} ps | {kills['checkpoint_ps']:g} ps |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
