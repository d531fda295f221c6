"""Planning and status of this checkout against an earlier commit, in the same run:
a refactor must not make planning slower (these machines are noisy, so the two are
measured round-robin on the same synthetic campaigns and compared as ratios).

    python benchmarks/compare_commits.py --base COMMIT [--repeat 5]

The earlier commit is checked out in a temporary git worktree and run with this
environment's packages (its own `src/` first on PYTHONPATH). Shapes: a fixed-assignment
campaign of 1000 simulations x 20 segments, fresh and with 90% of its simulations
finished (`snakemake -n`, `mdcampaign status`), and a pulling site (capacity 100) on
10,000 x 20 with 90% complete in the store's claims (`snakemake -n`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from planning import round_robin  # noqa: E402
from pull_planning import fake_claims, pulling_config  # noqa: E402
from synthetic import fake_done, write  # noqa: E402


def commands(checkout: Path, campaigns: dict[str, Path]) -> dict:
    snakemake = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(checkout / "workflow" / "Snakefile"),
        "-n",
        "--quiet",
        "--cores",
        "2",
    ]
    status = [sys.executable, "-m", "mdcampaign.cli", "status", "--no-slurm"]
    return {
        "plan 1000 x 20, fresh": (snakemake, campaigns["fresh"]),
        "plan 1000 x 20, 90% done": (snakemake, campaigns["done"]),
        "status 1000 x 20, 90% done": (status, campaigns["done"]),
        "plan pulling site 10,000 x 20, 90% done": (snakemake, campaigns["pulling"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the earlier commit")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("SLURM_CONF", "/dev/null")  # the Slurm plugin's start-up probe is not ours
    with tempfile.TemporaryDirectory(prefix="mdcampaign-compare-") as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        subprocess.run(["git", "worktree", "add", "--detach", str(base), args.base], cwd=REPO, check=True)
        try:
            campaigns = {name: tmp / name for name in ("fresh", "done", "pulling")}
            write(campaigns["fresh"], 1000, 20)
            write(campaigns["done"], 1000, 20)
            fake_done(campaigns["done"], 1000, 20, 0.9, "sims")
            write(campaigns["pulling"], 10000, 20)
            pulling_config(campaigns["pulling"], 100)
            fake_claims(campaigns["pulling"], 10000, 20, 0.9)
            ours = commands(REPO, campaigns)
            theirs = commands(base, campaigns)
            both = {**{("this", k): v for k, v in ours.items()}, **{("base", k): v for k, v in theirs.items()}}
            env_of = {("this", k): {} for k in ours} | {("base", k): {"PYTHONPATH": str(base / "src")} for k in theirs}
            results = round_robin(both, args.repeat, env_of)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=REPO, check=False)
    print(f"\nthis checkout against {args.base}, {args.repeat} rounds, medians (min-max)\n")
    print("| measure | this checkout | base | ratio |\n|---|---|---|---|")
    for name in ours:
        now, before = results[("this", name)], results[("base", name)]
        print(
            f"| {name} | {now['median']:.2f} s ({now['min']:.2f}-{now['max']:.2f}), {now['rss']:.0f} MB | "
            f"{before['median']:.2f} s ({before['min']:.2f}-{before['max']:.2f}), {before['rss']:.0f} MB | "
            f"{now['median'] / before['median']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
