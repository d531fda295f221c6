"""Planning speed: `snakemake -n` on synthetic campaigns of the real workflow, and
`mdcampaign status` on the same shapes, each against signac-flow's `status` on the
same shape measured in the same run.

    python benchmarks/planning.py [--shapes 100x10,1000x10,1000x20] [--repeat 5] [--signac PYTHON]

Every command runs once per round, --repeat rounds (so that all of them see the same
drifting machine load). Prints Markdown tables: median wall time (min-max), peak RSS, and
the ratio to signac-flow's status (> 1: slower than signac-flow). Snakemake's own
start-up, a dry run of a one-rule Snakefile measured in the same run, is the floor
that no workflow plans below.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def timed(command: list[str], cwd: Path, env: dict | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one run of a command."""
    wrapper = ["/usr/bin/time", "-f", "%e %M", *command] if Path("/usr/bin/time").exists() else command
    started = time.perf_counter()
    result = subprocess.run(wrapper, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    try:
        rss_mb = int(result.stderr.strip().splitlines()[-1].split()[1]) / 1024
    except (IndexError, ValueError):
        rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return wall, rss_mb


def summarize(runs: list[tuple[float, float]]) -> dict:
    walls = [wall for wall, _ in runs]
    return {
        "median": statistics.median(walls),
        "min": min(walls),
        "max": max(walls),
        "rss": max(rss for _, rss in runs),
    }


def round_robin(commands: dict, repeat: int, env_of: dict | None = None) -> dict:
    """Run every (command, directory) once per round, `repeat` rounds: the machine's
    load drifts over minutes, so every measurement sees the same mix of it. ``env_of``:
    environment variables per command, if any."""
    runs = {key: [] for key in commands}
    for round_ in range(repeat):
        for key, (command, cwd) in commands.items():
            runs[key].append(timed(command, cwd, (env_of or {}).get(key)))
        print(f"round {round_ + 1} of {repeat} done", file=sys.stderr)
    return {key: summarize(values) for key, values in runs.items()}


def fmt(result: dict) -> str:
    return f"{result['median']:.2f} s ({result['min']:.2f}-{result['max']:.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="100x10,1000x10,1000x20")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--signac", help="a Python with signac-flow installed (skip the comparison if absent)")
    args = parser.parse_args()
    shapes = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes.split(",")]
    from mdcampaign.doctor import check_slurm_start_up_probe

    for warning in check_slurm_start_up_probe({}):  # 9 s of waiting per start would swamp every figure
        print(f"{warning.what}; measuring with the fix: {warning.fix}", file=sys.stderr)
        os.environ["SLURM_CONF"] = "/dev/null"
    snakemake = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "workflow" / "Snakefile"),
        "--profile",
        str(REPO / "profiles" / "local"),
        "-n",
        "--quiet",
    ]
    status = [sys.executable, "-m", "mdcampaign.cli", "status", "--json", "--no-slurm"]
    cases = []  # (sims, segments, label, campaign directory, signac project or None)
    with tempfile.TemporaryDirectory(prefix="mdcampaign-bench-") as tmp:
        trivial = Path(tmp) / "one-rule"
        trivial.mkdir()
        (trivial / "Snakefile").write_text('rule all:\n    output: "a"\n    shell: "touch {output}"\n')
        commands = {"floor": ([sys.executable, "-m", "snakemake", "-n", "--quiet", "-c1"], trivial)}
        for sims, segments in shapes:
            for done, mode in ((0.0, "sims"), (0.9, "sims"), (0.9, "segments")):
                label = (
                    "fresh"
                    if not done
                    else ("90% of simulations done" if mode == "sims" else "90% of every simulation done")
                )
                directory = Path(tmp) / f"c{sims}x{segments}-{done}-{mode}"
                subprocess.run(
                    [
                        sys.executable,
                        str(HERE / "synthetic.py"),
                        str(directory),
                        "--sims",
                        str(sims),
                        "--segments",
                        str(segments),
                        "--done",
                        str(done),
                        "--done-mode",
                        mode,
                    ],
                    check=True,
                )
                key = (sims, segments, label)
                commands[("plan", key)] = (snakemake, directory)
                commands[("status", key)] = (status, directory)
                if args.signac and mode == "sims":
                    project = Path(tmp) / f"s{sims}x{segments}-{done}"
                    subprocess.run(
                        [
                            args.signac,
                            str(HERE / "signac_flow_project.py"),
                            str(project),
                            "--sims",
                            str(sims),
                            "--segments",
                            str(segments),
                            "--done",
                            str(done),
                        ],
                        check=True,
                    )
                    commands[("signac", key)] = ([args.signac, "project.py", "status"], project)
                cases.append(key)
        results = round_robin(commands, args.repeat)
    floor = results["floor"]
    rows = [(*key, results[("plan", key)], results[("status", key)], results.get(("signac", key))) for key in cases]
    print(f"Snakemake's own start-up (dry run of a one-rule Snakefile): {fmt(floor)}, {floor['rss']:.0f} MB\n")
    print(
        "| sims × segments | campaign state | `snakemake -n` | above the floor | peak RSS | `mdcampaign status` "
        "| signac-flow `status` | plan / signac | status / signac |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for sims, segments, label, plan, stat, signac in rows:
        ratios = (
            (f"{plan['median'] / signac['median']:.1f}", f"{stat['median'] / signac['median']:.2f}")
            if signac
            else ("-", "-")
        )
        print(
            f"| {sims} × {segments} | {label} | {fmt(plan)} | {plan['median'] - floor['median']:.2f} s | "
            f"{plan['rss']:.0f} MB | {fmt(stat)} | {fmt(signac) if signac else '-'} | {ratios[0]} | {ratios[1]} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
