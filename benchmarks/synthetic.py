"""Generate synthetic campaigns of any size for the real workflow.

    python benchmarks/synthetic.py DIR --sims 1000 --segments 20 [--done 0.9] [--done-mode sims|segments]

Writes DIR/config/{config.yaml,systems.tsv} (alanine dipeptide in implicit solvent,
10 replicas per system, tiny segments so that a real run is mostly orchestration)
and, with --done, fake records of finished work exactly as the workflow leaves them
(segment manifests, fetch markers, setup and analysis outputs), so that re-planning a
partly finished campaign can be timed without running it first:
  --done-mode sims      that fraction of the simulations is completely finished;
  --done-mode segments  every simulation has that fraction of its segments.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPLICAS = 10
SEGMENT_NS = 0.0004  # 100 steps of 4 fs


def write(directory: Path, sims: int, segments: int) -> None:
    (directory / "config").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "config" / "structures" / "alanine-dipeptide.pdb", directory / "config" / "ala.pdb")
    systems = max(1, sims // REPLICAS)
    (directory / "config" / "config.yaml").write_text(
        "campaign: synthetic\nsystems: config/systems.tsv\nplatform: CPU\nprotocol:\n"
        "  forcefield: amber99sbildn\n  solvent: implicit\n  minimization_max_iterations: 10\n"
        f"  equilibration_ps: 0.4\n  segment_ns: {SEGMENT_NS}\n  target_ns: {SEGMENT_NS * segments:.6g}\n"
        "  frame_interval_ps: 0.1\n  checkpoint_interval_ps: 0.4\n"
    )
    rows = ["id\tstructure\treplicas"] + [f"s{i:05d}\tconfig/ala.pdb\t{REPLICAS}" for i in range(systems)]
    (directory / "config" / "systems.tsv").write_text("\n".join(rows) + "\n")


def fake_done(directory: Path, sims: int, segments: int, fraction: float, mode: str) -> None:
    systems = max(1, sims // REPLICAS)
    names = [(f"s{i:05d}", r) for i in range(systems) for r in range(1, REPLICAS + 1)]
    for system in {name for name, _ in names}:
        setup = directory / "results" / "systems" / system
        setup.mkdir(parents=True, exist_ok=True)
        for file in ("system.xml", "state.xml", "topology.pdb", "trajectory_topology.pdb", "setup.json"):
            (setup / file).write_text("{}")
    finished_sims = round(fraction * len(names)) if mode == "sims" else 0
    for index, (system, replica) in enumerate(names):
        if mode == "sims":
            done = segments if index < finished_sims else 0
        else:
            done = int(fraction * segments)
        sim = directory / "results" / "sims" / system / f"r{replica}"
        for k in range(done):
            record = sim / "segments" / f"{k:04d}"
            record.mkdir(parents=True, exist_ok=True)
            (record / "manifest.json").write_text(
                json.dumps(
                    {
                        "simulation": f"{system}/r{replica}",
                        "segment": k,
                        "path": f"sims/{system}/r{replica}/segments/{k:04d}",
                        "files": {},
                        "pinned": {},
                        "site": None,
                        "info": {"simulated_ns": SEGMENT_NS, "ns_per_day": 500.0, "platform": "CPU"},
                    }
                )
            )
            (sim / "segments" / f"{k:04d}.fetched").write_text("{}")
        if done == segments:
            analysis = sim / "analysis" / f"{segments:04d}"
            analysis.mkdir(parents=True, exist_ok=True)
            for file in ("rmsd.csv", "rg.csv", "rmsf.csv", "dssp.csv", "analysis.png"):
                (analysis / file).write_text("")
            summary = json.dumps(
                {
                    "segments": segments,
                    "segment_simulated_ns": SEGMENT_NS * segments,
                    "ns_per_day_mean": 500.0,
                    "platforms": ["CPU"],
                    "site": None,
                }
            )
            (analysis / "analysis.json").write_text(summary)
            (sim / "analysis" / f"complete-{segments:04d}.json").write_text(summary)
    # the records must look newer than the setup they came from, as after a real run
    now = os.path.getmtime(directory / "config" / "systems.tsv") + 10
    for path in (directory / "results" / "sims").rglob("*"):
        os.utime(path, (now, now))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--sims", type=int, default=1000)
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument("--done", type=float, default=0.0)
    parser.add_argument("--done-mode", choices=("sims", "segments"), default="sims")
    args = parser.parse_args()
    write(args.directory, args.sims, args.segments)
    if args.done:
        fake_done(args.directory, args.sims, args.segments, args.done, args.done_mode)


if __name__ == "__main__":
    main()
