#!/usr/bin/env python3
"""Adaptive sampling (least counts) against plain replicas, for the same simulated time.

Alanine dipeptide in implicit solvent (amber99sb-ildn, OBC, 300 K, 4 fs with heavy
hydrogens: the test protocol's settings) from its extended start (phi = psi = 180).
Short runs from there stay at phi < 0; the alpha-L / C7ax region (phi > 0) is rare.

- plain: ``--walkers`` replicas, each ``--rounds`` x ``--length-ps`` long, side by side.
- least counts: ``--walkers`` simulations of ``--length-ps`` per round; after each
  round, every frame so far (sin and cos of phi and psi: the analysis's features)
  is clustered (mdcampaign.spawning, ``--clusters`` k-means clusters, seeded) and the
  next round starts from frames of the least visited clusters, with new velocities.

Both spend ``walkers x rounds x length`` of simulated time, in rounds of ``walkers``
simulations side by side. Measured per seed (declared in advance: ``--seeds``):
the simulated time (all simulations together) until a frame with phi > 0 first
appears, and the (phi, psi) cells of 30 x 30 degrees visited (of 144). The ratio of
medians, whichever way it comes out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from mdcampaign.spawning import choose  # noqa: E402

# config/structures/alanine-dipeptide.pdb with hydrogens, written once: Modeller's
# hydrogens differ by up to 0.003 nm from one call to the next, and so would each run.
STRUCTURE = Path(__file__).resolve().parent / "alanine-dipeptide-hydrogens.pdb"
FRAME_PS = 1.0
TIMESTEP_FS = 4.0


class Dipeptide:
    """The system, and a fresh integrator and context per run: a Langevin integrator's
    random seed counts only when set before its context exists (else the noise, and
    the benchmark, would differ from one run of it to the next)."""

    def __init__(self, platform_name: str):
        import mdtraj
        import openmm
        from openmm import app, unit

        pdb = app.PDBFile(str(STRUCTURE))
        forcefield = app.ForceField("amber99sbildn.xml", "amber99_obc.xml")
        system = forcefield.createSystem(
            pdb.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds, hydrogenMass=4 * unit.amu
        )
        self.system, self.platform = system, openmm.Platform.getPlatformByName(platform_name)
        context = self._context(seed=1)
        context.setPositions(pdb.positions)
        openmm.LocalEnergyMinimizer.minimize(context, maxIterations=200)
        self.start = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        self.topology = mdtraj.Topology.from_openmm(pdb.topology)
        self.steps_per_frame = round(FRAME_PS * 1000 / TIMESTEP_FS)

    def _context(self, seed: int):
        import openmm
        from openmm import unit

        integrator = openmm.LangevinMiddleIntegrator(
            300 * unit.kelvin, 1.0 / unit.picosecond, TIMESTEP_FS * unit.femtosecond
        )
        integrator.setRandomNumberSeed(seed)
        return openmm.Context(self.system, integrator, self.platform)

    def run(self, positions: np.ndarray, length_ps: float, seed: int) -> np.ndarray:
        """Frames (nm) of a run from ``positions``, velocities and noise from ``seed``."""
        context = self._context(seed)
        context.setPositions(positions)
        context.applyConstraints(1e-6)
        context.setVelocitiesToTemperature(300, seed)
        frames = []
        for _ in range(round(length_ps / FRAME_PS)):
            context.getIntegrator().step(self.steps_per_frame)
            frames.append(context.getState(getPositions=True).getPositions(asNumpy=True)._value)
        return np.array(frames)

    def dihedrals(self, frames: np.ndarray) -> np.ndarray:
        """phi and psi (radians) of each frame."""
        import mdtraj

        traj = mdtraj.Trajectory(frames, self.topology)
        return np.column_stack([mdtraj.compute_phi(traj)[1][:, 0], mdtraj.compute_psi(traj)[1][:, 0]])


def features(angles: np.ndarray) -> np.ndarray:
    """What the analysis writes for Markov models (analysis.write_features): sin, cos."""
    return np.column_stack([np.sin(angles[:, 0]), np.cos(angles[:, 0]), np.sin(angles[:, 1]), np.cos(angles[:, 1])])


def first_positive_ns(rounds: list[list[np.ndarray]], length_ps: float) -> float | None:
    """Simulated time of all simulations together until phi > 0 first appears: the
    rounds before, plus the round's simulations side by side up to that frame."""
    spent = 0.0
    for round_ in rounds:
        hits = [int(np.argmax(a[:, 0] > 0)) for a in round_ if (a[:, 0] > 0).any()]
        if hits:
            return (spent + len(round_) * (min(hits) + 1) * FRAME_PS) / 1000
        spent += len(round_) * length_ps
    return None


def cells(rounds: list[list[np.ndarray]]) -> int:
    every = np.degrees(np.concatenate([a for round_ in rounds for a in round_]))
    index = np.floor((every + 180.0) / 30.0).astype(int).clip(0, 11)
    return len({(int(p), int(q)) for p, q in index})


def plain(md: Dipeptide, seed: int, walkers: int, rounds: int, length_ps: float) -> list[list[np.ndarray]]:
    runs = [md.dihedrals(md.run(md.start, rounds * length_ps, seed * 1000 + w)) for w in range(walkers)]
    frames = round(length_ps / FRAME_PS)
    return [[a[k * frames : (k + 1) * frames] for a in runs] for k in range(rounds)]


def adaptive(
    md: Dipeptide, seed: int, walkers: int, rounds: int, length_ps: float, clusters: int
) -> list[list[np.ndarray]]:
    starts = [md.start] * walkers
    all_frames, all_angles, history = [], [], []
    for round_ in range(rounds):
        runs = [md.run(start, length_ps, seed * 1000 + round_ * walkers + w) for w, start in enumerate(starts)]
        angles = [md.dihedrals(frames) for frames in runs]
        history.append(angles)
        all_frames.extend(runs)
        all_angles.extend(angles)
        if round_ + 1 < rounds:
            positions = np.concatenate(all_frames)
            choice = choose("least_counts", features(np.concatenate(all_angles)), walkers, clusters, seed + round_)
            starts = [positions[i] for i in choice.frames]
    return history


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--walkers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--length-ps", type=float, default=100.0)
    parser.add_argument("--clusters", type=int, default=20)
    # 22 atoms: the Reference platform steps about 15x faster than CPU's (its per-step overhead)
    parser.add_argument("--platform", default="Reference")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    md = Dipeptide(args.platform)
    rows = []
    started = time.time()
    for seed in range(1, args.seeds + 1):
        row = {"seed": seed}
        for method in ("plain", "least_counts"):
            if method == "plain":
                history = plain(md, seed, args.walkers, args.rounds, args.length_ps)
            else:
                history = adaptive(md, seed, args.walkers, args.rounds, args.length_ps, args.clusters)
            row[method] = {"first_phi_positive_ns": first_positive_ns(history, args.length_ps), "cells": cells(history)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    budget = args.walkers * args.rounds * args.length_ps / 1000
    print(
        f"\n{args.seeds} seeds, {args.walkers} simulations per round, {args.rounds} rounds of {args.length_ps:g} ps: "
        f"{budget:g} ns per method and seed; {time.time() - started:.0f} s\n"
    )
    print(
        "| seed | plain: phi > 0 after (ns) | least counts: phi > 0 after (ns) | plain: cells | least counts: cells |"
    )
    print("|---|---|---|---|---|")

    def shown(value):
        return "never" if value is None else f"{value:.3f}"

    for row in rows:
        p, a = row["plain"], row["least_counts"]
        print(
            f"| {row['seed']} | {shown(p['first_phi_positive_ns'])} | {shown(a['first_phi_positive_ns'])} | "
            f"{p['cells']} | {a['cells']} |"
        )
    sooner = sum(
        1
        for row in rows
        if row["least_counts"]["first_phi_positive_ns"] is not None
        and (
            row["plain"]["first_phi_positive_ns"] is None
            or row["least_counts"]["first_phi_positive_ns"] < row["plain"]["first_phi_positive_ns"]
        )
    )

    def median(method, key, missing):
        return statistics.median(r[method][key] if r[method][key] is not None else missing for r in rows)

    print(
        f"\nleast counts reached phi > 0 sooner on {sooner} of {len(rows)} seeds; median time to phi > 0 "
        f"(never = the budget, {budget:g} ns): plain {median('plain', 'first_phi_positive_ns', budget):.3f}, "
        f"least counts {median('least_counts', 'first_phi_positive_ns', budget):.3f} ns; median cells: plain "
        f"{median('plain', 'cells', 0)}, least counts {median('least_counts', 'cells', 0)} "
        f"(ratio {median('least_counts', 'cells', 0) / max(1, median('plain', 'cells', 0)):.2f})"
    )
    if args.json:
        args.json.write_text(json.dumps({"arguments": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
