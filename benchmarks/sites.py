"""What running every machine from one workstation costs (`mdcampaign sites`), over the
test SSH server (scripts/ci/sshd-up: users mdsite1 and mdsite2 stand in for two
machines' login nodes, mdstore for the store):

- `sites deploy` of a fresh site (nothing installed there; the dependencies from a
  folder of wheels, the build's wheel already made: a warm wheel cache);
- a `sites deploy` that changes nothing (targets: under 10 s);
- `mdcampaign status` of a campaign with three sites' heartbeats in the store (target:
  under 3 s), against the same campaign's status without sites' heartbeats read.

Baselines in the same run: one `ssh` round trip to the site (what any remote step
costs at least), and `pip install` of the same wheels into a fresh environment there.

    python3 benchmarks/sites.py [--repeat 3] [--wheels DIR]
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SSH_BIN = Path(os.environ.get("MDCAMPAIGN_CI_DIR", "/tmp/mdcampaign-ci")) / "ssh" / "bin"
STORE_ROOT = "/home/mdstore/store"


def timed(command: list[str], cwd: Path, env: dict) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return elapsed


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s ({min(values):.2f}–{max(values):.2f})"


def campaign(folder: Path, name: str, hosts: dict[str, str]) -> None:
    (folder / "config").mkdir(parents=True)
    (folder / "structures").mkdir()
    shutil.copy(REPO / "config" / "structures" / "alanine-dipeptide.pdb", folder / "structures")
    sites = {"here": {"ns_per_day": 100, "capacity": 1, "profile": "local"}}
    for site, host in hosts.items():
        sites[site] = {
            "host": host,
            "path": f"bench/{name}-{site}",
            "ns_per_day": 100,
            "capacity": 1,
            "profile": "local",
        }
    config = {
        "campaign": name,
        "systems": "config/systems.tsv",
        "store": f"mdstore:{STORE_ROOT}/{name}",
        "site": "here",
        "sites": sites,
        "protocol": {"solvent": "implicit", "forcefield": "amber99sbildn", "segment_ns": 0.01, "target_ns": 0.02},
    }
    (folder / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (folder / "config" / "systems.tsv").write_text(
        "id\tstructure\treplicas\nala\tstructures/alanine-dipeptide.pdb\t3\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--wheels", help="a folder of the dependencies' wheels (default: made now with pip wheel)")
    args = parser.parse_args()
    if not (SSH_BIN / "ssh").exists():
        sys.exit("run scripts/ci/sshd-up first (the test SSH server and its site users)")
    env = {**os.environ, "PATH": f"{SSH_BIN}:{Path(sys.executable).parent}:{os.environ['PATH']}"}
    os.environ["PATH"] = env["PATH"]  # this process writes the heartbeats to the store too
    work = Path(tempfile.mkdtemp(prefix="mdcampaign-bench-sites-"))
    wheels = Path(args.wheels) if args.wheels else work / "wheels"
    if not args.wheels:
        print("making the dependencies' wheels once (pip wheel) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(wheels), str(REPO)], check=True)
    name = f"bench{uuid.uuid4().hex[:6]}"
    folder = work / "campaign"
    campaign(folder, name, {"one": "site1", "two": "site2"})
    home = Path(pwd.getpwnam("mdsite1").pw_dir)
    fresh, unchanged, ssh_trip, pip_only = [], [], [], []
    try:
        timed(["mdcampaign", "sites", "deploy", "--wheels", str(wheels), "one"], folder, env)  # warms the wheel cache
        for _ in range(args.repeat):
            shutil.rmtree(home / "bench" / f"{name}-one")  # a fresh machine again
            fresh.append(timed(["mdcampaign", "sites", "deploy", "--wheels", str(wheels), "one"], folder, env))
            unchanged.append(timed(["mdcampaign", "sites", "deploy", "--wheels", str(wheels), "one"], folder, env))
            ssh_trip.append(timed(["ssh", "site1", "true"], folder, env))
            target = f"bench/{name}-pip"
            pip_only.append(
                timed(
                    [
                        "ssh",
                        "site1",
                        f"rm -rf {target} && python3 -m venv {target} && {target}/bin/python -m pip install -q "
                        f"--disable-pip-version-check --no-compile --no-index --find-links bench/{name}-one/"
                        f".mdcampaign/wheels mdcampaign",
                    ],
                    folder,
                    env,
                )
            )
        # three sites' heartbeats in the store, then status with and without reading them
        sys.path.insert(0, str(REPO / "src"))
        from mdcampaign.heartbeat import beat
        from mdcampaign.store import TransferSettings, open_store

        store = open_store(f"mdstore:{STORE_ROOT}/{name}", TransferSettings.of())
        for site in ("here", "one", "two"):
            beat(
                store,
                site,
                {"site": site, "state": "running", "interval_s": 60, "host": "login1", "pid": 1, "jobs": {}},
            )
        with_sites, without = [], []
        plain = work / "plain"
        shutil.copytree(folder / "config", plain / "config")
        shutil.copytree(folder / "structures", plain / "structures")
        config = yaml.safe_load((plain / "config" / "config.yaml").read_text())
        config.pop("sites"), config.pop("site")
        (plain / "config" / "config.yaml").write_text(yaml.safe_dump(config))
        for _ in range(args.repeat):  # alternated: a slow spell hits both alike
            with_sites.append(timed(["mdcampaign", "status", "--no-slurm"], folder, env))
            without.append(timed(["mdcampaign", "status", "--no-slurm"], plain, env))
    finally:
        shutil.rmtree(home / "bench", ignore_errors=True)
        subprocess.run([str(SSH_BIN / "ssh"), "mdstore", f"rm -rf {STORE_ROOT}/{name}"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    print("| measured | wall time, median (min–max) | baseline in the same run | ratio |")
    print("|---|---|---|---|")
    print(
        f"| `sites deploy` of a fresh site (dependencies from a folder of wheels) | {summary(fresh)} | "
        f"`pip install` of the same wheels there: {summary(pip_only)} | "
        f"{statistics.median(fresh) / statistics.median(pip_only):.2f} |"
    )
    print(
        f"| `sites deploy` that changes nothing | {summary(unchanged)} | one `ssh site true`: {summary(ssh_trip)} | "
        f"{statistics.median(unchanged) / statistics.median(ssh_trip):.1f} |"
    )
    print(
        f"| `mdcampaign status`, three sites' heartbeats | {summary(with_sites)} | the same campaign without sites: "
        f"{summary(without)} | {statistics.median(with_sites) / statistics.median(without):.2f} |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
