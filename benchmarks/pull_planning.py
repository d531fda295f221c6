"""Planning when sites pull work (issue 17): `snakemake -n` and `mdcampaign status` on a
10,000-simulation campaign for a site of capacity 100, against the same campaign
planned the old way (every simulation's jobs in the DAG), in the same run.

    python benchmarks/pull_planning.py [--sims 10000] [--segments 20] [--capacity 100] [--repeat 3]

The campaign is benchmarks/synthetic.py's (alanine dipeptide, 10 replicas per
system). Pulling shapes: nothing done yet, and 90% of the simulations complete in
the store (their claims say so, as the jobs leave them: a released claim and the
segments-/analyzed- markers, 40,000 files). Prints a Markdown table: median wall
time (min-max) and peak RSS.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from planning import fmt, round_robin  # noqa: E402
from synthetic import REPLICAS, write  # noqa: E402

REPO = HERE.parent


def pulling_config(directory: Path, capacity: int) -> None:
    with open(directory / "config" / "config.yaml", "a") as handle:
        handle.write(
            f"store: {directory / 'store'}\nsite: alpha\n"
            f"sites:\n  alpha: {{capacity: {capacity}, ns_per_day: 100}}\n"
            f"  beta: {{capacity: {capacity}, ns_per_day: 100}}\n"
        )


def fake_claims(directory: Path, sims: int, segments: int, fraction: float) -> None:
    """The store's claims of a campaign with ``fraction`` of its simulations complete."""
    systems = max(1, sims // REPLICAS)
    names = [(f"s{i:05d}", r) for i in range(systems) for r in range(1, REPLICAS + 1)]
    for system, replica in names[: int(fraction * len(names))]:
        folder = directory / "store" / "claims" / system / f"r{replica}"
        (folder / "000000").mkdir(parents=True)
        (folder / "000000" / "holder+beta+node-1.s0").touch()
        (folder / "000000" / "released").touch()
        for marker in (f"segments-{segments:04d}", f"analyzed-{segments:04d}", "origin+beta"):
            (folder / marker).touch()


def view_cost(directory: Path) -> float:
    """Seconds for one site's view and order of preference (what a pull job and the
    planning of its inputs compute), in-process."""
    import yaml

    from mdcampaign.campaign import load_campaign
    from mdcampaign.pulljob import site_view
    from mdcampaign.store import LocalStore

    cwd = os.getcwd()
    os.chdir(directory)
    try:
        campaign = load_campaign(yaml.safe_load(Path("config/config.yaml").read_text()))
        started = time.perf_counter()
        view = site_view(campaign, LocalStore(directory / "store"))
        view.preferred()
        return time.perf_counter() - started
    finally:
        os.chdir(cwd)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=10000)
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument("--capacity", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("SLURM_CONF", "/dev/null")  # the Slurm plugin's start-up probe is not ours (README)
    snakemake = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "workflow" / "Snakefile"),
        "-n",
        "--quiet",
        "--cores",
        "2",
    ]
    with tempfile.TemporaryDirectory(prefix="mdcampaign-pull-bench-") as tmp:
        static, fresh, done = (Path(tmp) / name for name in ("static", "pull-fresh", "pull-90"))
        for directory in (static, fresh, done):
            write(directory, args.sims, args.segments)
        for directory in (fresh, done):
            pulling_config(directory, args.capacity)
        fake_claims(done, args.sims, args.segments, 0.9)
        status = [sys.executable, "-m", "mdcampaign.cli", "status", "--no-slurm"]
        commands = {
            f"pulling, fresh: snakemake -n (capacity {args.capacity})": (snakemake, fresh),
            f"pulling, 90% done: snakemake -n (capacity {args.capacity})": (snakemake, done),
            "pulling, 90% done: mdcampaign status": (status, done),
        }
        results = round_robin(commands, args.repeat)
        baseline = round_robin({"every simulation planned (no sites), fresh: snakemake -n": (snakemake, static)}, 1)
        view = [view_cost(done) for _ in range(args.repeat)]
    print(f"\n{args.sims} simulations x {args.segments} segments\n")
    print("| command | wall time, median (min-max) | peak RSS |\n|---|---|---|")
    for name, result in {**results, **baseline}.items():
        print(f"| {name} | {fmt(result)} | {result['rss']:.0f} MB |")
    print(
        f"| a site's view and order of preference, in-process (90% done) | {sorted(view)[len(view) // 2]:.2f} s "
        f"({min(view):.2f}-{max(view):.2f}) | - |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
