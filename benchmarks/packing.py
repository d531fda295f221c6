"""Packing several simulations into one job (README: "Jobs and slots").

    python benchmarks/packing.py [--seconds 20] [--repeat 2] [--campaign] [--slurm]

1. Aggregate ns/day of the same two simulations on this machine: packed (2 slots x
   1 thread, side by side, pinned) against one at a time (1 slot x 2 threads), for
   the example's systems, alternating the two so that machine noise hits both.
   (The same measurement `mdcampaign tune` makes.)
2. --campaign: the example campaign (config/) end to end with profiles/local as
   shipped (one segment per job, 2 threads each) against the same profile with
   packing {slots: 2, threads: 1}, in fresh copies, one after the other.
3. --slurm: on the test cluster (scripts/ci/slurm-up), a packed campaign of two
   simulations x three 2 ns segments of alanine dipeptide (about a minute each) in 2 slots: the slot busy fraction, i.e. the
   segment runners' integrating time / (slots x the job's Slurm elapsed time).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))
JOBCOMP = Path(os.environ.get("MDCAMPAIGN_CI_DIR", "/tmp/mdcampaign-ci")) / "slurm" / "jobcomp.log"


def snakemake(campaign: Path, profile: Path, *args: str) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "--profile", str(profile), *args],
        cwd=campaign,
        check=True,
        capture_output=True,
        text=True,
    )
    return time.perf_counter() - started


def profile_with(tmp: Path, base: str, name: str, config: dict, **settings) -> Path:
    profile = yaml.safe_load((REPO / "profiles" / base / "config.yaml").read_text())
    profile.setdefault("config", {}).update(config)
    profile.update(settings)
    (tmp / name).mkdir()
    (tmp / name / "config.yaml").write_text(yaml.safe_dump(profile))
    return tmp / name


def aggregate(tmp: Path, seconds: float, repeat: int) -> list[str]:
    from mdcampaign.slots import Packing
    from mdcampaign.tune import measure

    campaign = tmp / "example"
    shutil.copytree(REPO / "config", campaign / "config")
    systems = [
        line.split("\t")[0]
        for line in (campaign / "config/systems.tsv").read_text().splitlines()[1:]
        if line.strip() and not line.startswith("#")
    ]
    snakemake(campaign, REPO / "profiles" / "local", *(f"results/systems/{s}/setup.json" for s in systems))
    cpus = sorted(os.sched_getaffinity(0))[:2]
    rows = []
    for system in systems:
        folder = campaign / "results" / "systems" / system
        atoms = json.loads((folder / "setup.json").read_text())["atoms"]
        one, two = [], []
        for _ in range(repeat):
            one.append(sum(measure(folder, Packing.of(slots=1, threads=2), seconds, "CPU", cpus)))
            two.append(sum(measure(folder, Packing.of(slots=2, threads=1), seconds, "CPU", cpus)))
        print(f"{system}: 1x2 {one}, 2x1 {two}", file=sys.stderr)
        rows.append(
            f"| {system} ({atoms} atoms) | {statistics.median(one):.1f} ({min(one):.1f}–{max(one):.1f}) | "
            f"{statistics.median(two):.1f} ({min(two):.1f}–{max(two):.1f}) | "
            f"{statistics.median(two) / statistics.median(one):.2f} |"
        )
    return [
        "| system (CPU, 2 cores) | one at a time: 1 slot × 2 threads, ns/day | packed: 2 slots × 1 thread, "
        "total ns/day | packed / one at a time |",
        "|---|---|---|---|",
        *rows,
    ]


def example_campaign(tmp: Path) -> list[str]:
    rows = []
    for label, config in (
        ("profiles/local as shipped (a job per segment, 2 threads)", {}),
        ("packed: {slots: 2, threads: 1}", {"packing": {"slots": 2, "threads": 1}}),
    ):
        campaign = tmp / f"campaign-{len(rows)}"
        shutil.copytree(REPO / "config", campaign / "config")
        profile = profile_with(tmp, "local", f"profile-{len(rows)}", config)
        wall = snakemake(campaign, profile)
        print(f"{label}: {wall:.0f} s", file=sys.stderr)
        rows.append(f"| {label} | {wall:.0f} s |")
    return ["| example campaign (3 systems × 2 replicas, setup included) | wall time |", "|---|---|", *rows]


def slurm_busy_fraction(tmp: Path) -> list[str]:
    from conftest import write_campaign

    campaign = write_campaign(
        tmp / "slurm-campaign",
        systems=[{"id": "ala", "structure": REPO / "config/structures/alanine-dipeptide.pdb", "replicas": 2}],
        protocol={"segment_ns": 2.0, "target_ns": 6.0, "frame_interval_ps": 10.0, "checkpoint_interval_ps": 100.0},
    )
    profile = profile_with(
        tmp, "ci-slurm", "profile-slurm", {"packing": {"slots": 2, "threads": 1}, "max_runtime_minutes": 30}
    )
    snakemake(campaign, profile)
    integrating: dict[str, float] = {}
    for manifest in campaign.glob("results/sims/*/r*/segments/*/manifest.json"):
        for run in json.loads(manifest.read_text())["info"]["runs"]:
            integrating[run["slurm_job_id"]] = integrating.get(run["slurm_job_id"], 0.0) + run["wall_seconds"]
    rows = []
    for line in JOBCOMP.read_text().splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        if fields.get("JobId") in integrating:
            start, end = (datetime.fromisoformat(fields[key]) for key in ("StartTime", "EndTime"))
            elapsed = (end - start).total_seconds()
            busy = integrating[fields["JobId"]] / (2 * elapsed)
            rows.append(
                f"| {fields['JobId']} | 2 | {elapsed:.0f} s | {integrating[fields['JobId']]:.0f} s | {busy:.2f} |"
            )
    return [
        "| packed Slurm job | slots | Slurm elapsed | segment runners' wall time, summed | busy fraction |",
        "|---|---|---|---|---|",
        *rows,
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--campaign", action="store_true")
    parser.add_argument("--slurm", action="store_true")
    parser.add_argument("--no-aggregate", action="store_true", help="skip part 1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mdcampaign-packing-") as tmp:
        if not args.no_aggregate:
            print("\n".join(aggregate(Path(tmp), args.seconds, args.repeat)))
        if args.campaign:
            print()
            print("\n".join(example_campaign(Path(tmp))))
        if args.slurm:
            print()
            print("\n".join(slurm_busy_fraction(Path(tmp))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
