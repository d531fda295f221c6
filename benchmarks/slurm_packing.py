"""Many short segments on the test Slurm cluster (scripts/ci/slurm-up): what one Slurm
job costs around the MD, and packing several segments into one Slurm job.

    python benchmarks/slurm_packing.py [--sims 8] [--segments 2] [--pack 2]

1. One Slurm job per segment (without packing): the campaign's wall time, and per
   simulate job Slurm's own elapsed time (its job-completion log) against the segment
   runner's wall time (segment.json). The difference is what a job costs besides the
   MD: Snakemake starting twice inside it (the job script, then the job step),
   reading the campaign, and the runner's set-up.
2. The same campaign with Snakemake job groups (`groups: {simulate: segments}`,
   `group-components`, `cores` = the node's CPUs so that a group fits on the node):
   its wall time, or how it failed.
3. The same campaign with packing (`packing: {slots: 2, threads: 1}`): batches of 4
   simulations, each batch one Slurm job whose 2 slots run all its segments.
"""

from __future__ import annotations

import argparse
import json
import os
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
JOBCOMP = Path(os.environ.get("MDCAMPAIGN_CI_DIR", "/tmp/mdcampaign-ci")) / "slurm" / "jobcomp.log"


def slurm_elapsed() -> dict[str, float]:
    """Elapsed seconds of every finished job in the test cluster's job-completion log."""
    elapsed = {}
    for line in JOBCOMP.read_text().splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        try:
            start, end = (datetime.fromisoformat(fields[key]) for key in ("StartTime", "EndTime"))
        except (KeyError, ValueError):
            continue
        elapsed[fields["JobId"]] = (end - start).total_seconds()
    return elapsed


def runner_seconds(campaign: Path) -> dict[str, float]:
    """The segment runner's wall seconds per Slurm job, from the fetched segments."""
    seconds = {}
    for manifest in (campaign / "results" / "sims").glob("*/*/segments/*/manifest.json"):
        for run in json.loads(manifest.read_text())["info"]["runs"]:
            if run.get("slurm_job_id"):  # summed: a packed job runs many segments
                seconds[run["slurm_job_id"]] = seconds.get(run["slurm_job_id"], 0.0) + run["wall_seconds"]
    return seconds


def run(sims: int, segments: int, pack: int, tmp: Path, slots: int = 0) -> dict:
    """``pack``: segments per Slurm job with Snakemake job groups (1: none);
    ``slots``: with packing (the `pack` rule) instead, its slots."""
    campaign = tmp / f"campaign-pack{pack}-slots{slots}"
    subprocess.run(
        [sys.executable, str(HERE / "synthetic.py"), str(campaign), "--sims", str(sims), "--segments", str(segments)],
        check=True,
    )
    profile = yaml.safe_load((REPO / "profiles" / "ci-slurm" / "config.yaml").read_text())
    profile["jobs"] = 8
    if pack > 1:
        profile["groups"] = {"simulate": "segments"}
        profile["group-components"] = {"segments": pack}
        profile["cores"] = os.cpu_count()
    if slots:
        profile["config"]["packing"] = {"slots": slots, "threads": 1}
    profile_dir = tmp / f"profile-pack{pack}-slots{slots}"
    profile_dir.mkdir()
    (profile_dir / "config.yaml").write_text(yaml.safe_dump(profile))
    started = time.perf_counter()
    result = subprocess.run(
        ["snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "--profile", str(profile_dir)],
        cwd=campaign,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    wall = time.perf_counter() - started
    subprocess.run(
        ["snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "--profile", str(profile_dir), "--unlock"],
        cwd=campaign,
        capture_output=True,
    )
    logs = list((campaign / ".snakemake" / "slurm_logs").rglob("*.log"))
    outcome = {"pack": pack, "slots": slots, "wall": wall, "slurm_jobs": len(logs), "ok": result.returncode == 0}
    if result.returncode != 0:
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        errors = [line for line in lines if "Error" in line or "error" in line]
        outcome["failure"] = (errors or lines)[-1].strip()[:200]
    elapsed, runner = slurm_elapsed(), runner_seconds(campaign)
    overheads = [elapsed[job] - seconds / max(slots, 1) for job, seconds in runner.items() if job in elapsed]
    if overheads:
        outcome["overhead"] = (statistics.median(overheads), min(overheads), max(overheads), len(overheads))
        outcome["runner_median"] = statistics.median(runner.values())
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sims", type=int, default=8)
    parser.add_argument("--segments", type=int, default=2)
    parser.add_argument("--pack", type=int, default=2)
    args = parser.parse_args()
    if not JOBCOMP.exists():
        print(f"no job-completion log at {JOBCOMP}: start the test cluster with scripts/ci/slurm-up", file=sys.stderr)
        return 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="mdcampaign-packing-") as tmp:
        for pack, slots in ((1, 0), (args.pack, 0), (1, 2)):
            rows.append(run(args.sims, args.segments, pack, Path(tmp), slots))
            print(f"{pack} segment(s) per job, {slots} slots: {rows[-1]['wall']:.0f} s", file=sys.stderr)
    print(
        f"{args.sims} simulations × {args.segments} segments of alanine dipeptide (0.4 ps each: the MD takes "
        "well under a second), on the one-node test cluster.\n"
    )
    print(
        "| segments per Slurm job | campaign wall time | Slurm jobs | simulate or pack job: Slurm elapsed − runner "
        "wall per slot (median, min–max, jobs) | outcome |"
    )
    print("|---|---|---|---|---|")
    for row in rows:
        label = "1 (one segment per job)" if row["pack"] == 1 else f"up to {row['pack']} (Snakemake job groups)"
        if row["slots"]:
            label = f"all of a batch of {2 * row['slots']} simulations (packing, {row['slots']} slots)"
        overhead = "-"
        if "overhead" in row:
            median, low, high, count = row["overhead"]
            overhead = f"{median:.0f} s ({low:.0f}–{high:.0f}, {count} jobs; runner {row['runner_median']:.1f} s)"
        outcome = "completed" if row["ok"] else f"failed: `{row['failure']}`"
        print(f"| {label} | {row['wall']:.0f} s | {row['slurm_jobs']} | {overhead} | {outcome} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
