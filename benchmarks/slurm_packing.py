"""Many short segments on the test Slurm cluster (scripts/ci/slurm-up): wall time with
one Slurm job per segment against packing several segments into one Slurm job with
Snakemake job groups (`groups:` / `group-components:` in the profile).

    python benchmarks/slurm_packing.py [--sims 8] [--segments 3] [--pack 4]

Each Slurm job starts Snakemake inside it, which costs seconds; packing pays that
once for several segments.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def run(sims: int, segments: int, pack: int, tmp: Path) -> tuple[float, int]:
    campaign = tmp / f"campaign-pack{pack}"
    subprocess.run([sys.executable, str(HERE / "synthetic.py"), str(campaign), "--sims", str(sims), "--segments",
                    str(segments)], check=True)
    profile = yaml.safe_load((REPO / "profiles" / "ci-slurm" / "config.yaml").read_text())
    profile["jobs"] = 8
    if pack > 1:
        profile["groups"] = {"simulate": "segments"}
        profile["group-components"] = {"segments": pack}
    profile_dir = tmp / f"profile-pack{pack}"
    profile_dir.mkdir()
    (profile_dir / "config.yaml").write_text(yaml.safe_dump(profile))
    started = time.perf_counter()
    result = subprocess.run(["snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "--profile", str(profile_dir)],
                            cwd=campaign, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    slurm_jobs = len(list((campaign / ".snakemake" / "slurm_logs").rglob("*.log")))
    return wall, slurm_jobs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sims", type=int, default=8)
    parser.add_argument("--segments", type=int, default=3)
    parser.add_argument("--pack", type=int, default=4)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mdcampaign-packing-") as tmp:
        for pack in (1, args.pack):
            wall, jobs = run(args.sims, args.segments, pack, Path(tmp))
            rows.append((pack, wall, jobs))
            print(f"pack {pack}: {wall:.0f} s, {jobs} Slurm jobs", file=sys.stderr)
    print("| segments per Slurm job | wall time | Slurm jobs (setup, simulate, analyze) |")
    print("|---|---|---|")
    for pack, wall, jobs in rows:
        print(f"| {'1 (no packing)' if pack == 1 else f'up to {pack} (job groups)'} | {wall:.0f} s | {jobs} |")
    print(f"\n{args.sims} simulations x {args.segments} segments of {0.4:g} ps of alanine dipeptide; "
          f"ratio packed/unpacked: {rows[1][1] / rows[0][1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
