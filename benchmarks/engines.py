"""The GROMACS engine: its speed against OpenMM's CPU platform, and our GROMACS segment
runner against a bare `gmx mdrun` of the same segment.

1. The same structure (villin headpiece in TIP3P water, amber99sb-ildn, the same
   protocol keys) set up by each engine, integrated with the same thread count: bare
   OpenMM (LangevinMiddleIntegrator.step in a loop) and bare `gmx mdrun`; ns/day, and
   atom-steps per second (the two setups solvate the same padding with slightly
   different numbers of waters).
2. One segment (50 ps, a checkpoint every 10 ps) run by `gromacs_runner.run_segment` (tpr
   conversion, checkpoints, splicing of its parts, the energies table, records: all
   included) against `gmx mdrun` of the same tpr from the same checkpoint with the
   same thread options, checkpointing only at its end.
Rounds alternate which goes first (this machine's speed drifts); medians are reported.

    python benchmarks/engines.py [--repeat 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from efficiency import bare_ns_per_day  # noqa: E402
from mdcampaign.engines.gromacs import gmx, setup  # noqa: E402
from mdcampaign.engines.gromacs import runner as gromacs_runner  # noqa: E402
from mdcampaign.engines.openmm.setup import prepare  # noqa: E402
from mdcampaign.protocol import Protocol  # noqa: E402
from mdcampaign.runs import SegmentTask  # noqa: E402
from mdcampaign.validation import load_schema  # noqa: E402

DEFAULTS = {
    k: v["default"] for k, v in load_schema("config.schema.yaml")["properties"]["protocol"]["properties"].items()
}
PROTOCOL = {
    **DEFAULTS,
    "forcefield": "amber99sbildn",
    "solvent": "explicit",
    "water_model": "tip3p",
    "box_shape": "dodecahedron",
    "padding_nm": 1.0,
    "equilibration_ps": 2.0,
    "minimization_max_iterations": 200,
    "segment_ns": 0.05,
    "target_ns": 0.05,
    "frame_interval_ps": 1.0,
    "checkpoint_interval_ps": 10.0,
}
STRUCTURE = REPO / "config" / "structures" / "villin-1VII.pdb"


def bare_mdrun(setup: Path, protocol: Protocol, threads: int, work: Path) -> float:
    """ns/day of `gmx mdrun` running the segment the runner runs, wall time of the
    mdrun process."""
    work.mkdir(parents=True)
    gmx.run_gmx(
        "convert-tpr",
        [("-s", setup / "system.tpr"), ("-nsteps", protocol.segment_steps), ("-o", work / "bare.tpr")],
        cwd=work,
    )
    options = [
        ("-s", work / "bare.tpr"),
        ("-cpi", setup / "start.cpt"),
        ("-noappend", True),
        ("-deffnm", "bare"),
        *gmx.thread_options(threads),
    ]
    started = time.perf_counter()
    subprocess.run(
        gmx.gmx_argv("mdrun", options), cwd=work, check=True, capture_output=True, env=gmx.gmx_environment(threads)
    )
    return protocol.segment_ns / (time.perf_counter() - started) * 86400


def runner(setup: Path, protocol: Protocol, threads: int, work: Path) -> float:
    """ns/day of our runner for the same segment: its whole wall time."""
    started = time.perf_counter()
    task = SegmentTask(
        name="benchmark",
        segment=0,
        protocol=protocol,
        seed=protocol.seed,
        system=setup / "system.tpr",
        start_state=setup / "start.cpt",
        topology=None,
        work_dir=work,
        threads=threads,
    )
    assert gromacs_runner.run_segment(task).complete
    return protocol.segment_ns / (time.perf_counter() - started) * 86400


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if gmx.available() is None:
        print("GROMACS is not installed (gmx not found): skipped", file=sys.stderr)
        return 0
    protocol = Protocol(**{**PROTOCOL, "engine": "gromacs"})
    # OpenMM integrates a shorter stretch: it is several times slower on CPUs.
    openmm_protocol = Protocol(**{**PROTOCOL, "segment_ns": 0.01, "target_ns": 0.01})
    with tempfile.TemporaryDirectory(prefix="mdcampaign-engines-") as tmp:
        tmp = Path(tmp)
        openmm_setup = prepare(STRUCTURE, openmm_protocol, tmp / "openmm", platform="CPU", threads=args.threads)
        gmx_setup = setup.prepare(STRUCTURE, protocol, tmp / "gromacs", threads=args.threads)
        openmm_speeds, bare_speeds, runner_speeds = [], [], []
        for attempt in range(args.repeat):
            measures = [
                lambda: openmm_speeds.append(bare_ns_per_day(tmp / "openmm", openmm_protocol, args.threads)),
                lambda attempt=attempt: bare_speeds.append(
                    bare_mdrun(tmp / "gromacs", protocol, args.threads, tmp / f"bare-{attempt}")
                ),
                lambda attempt=attempt: runner_speeds.append(
                    runner(tmp / "gromacs", protocol, args.threads, tmp / f"run-{attempt}")
                ),
            ]
            for measure in measures if attempt % 2 == 0 else measures[::-1]:
                measure()
            print(
                f"round {attempt + 1}: OpenMM {openmm_speeds[-1]:.1f}, gmx mdrun {bare_speeds[-1]:.1f}, "
                f"runner {runner_speeds[-1]:.1f} ns/day",
                file=sys.stderr,
            )
    atoms = {"openmm": openmm_setup["atoms"], "gromacs": gmx_setup["atoms"]}

    def cell(values):
        return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"

    def atom_steps(ns_per_day, n_atoms, timestep_fs):
        return ns_per_day * 1e6 / timestep_fs / 86400 * n_atoms

    openmm_rate = atom_steps(statistics.median(openmm_speeds), atoms["openmm"], protocol.timestep_fs)
    gmx_rate = atom_steps(statistics.median(bare_speeds), atoms["gromacs"], protocol.timestep_fs)
    print(
        f"| villin in TIP3P water, CPU, {args.threads} threads, {args.repeat} rounds | atoms | ns/day, median "
        "(min–max) | atom-steps/s | vs OpenMM |"
    )
    print("|---|---|---|---|---|")
    print(f"| OpenMM (bare loop) | {atoms['openmm']} | {cell(openmm_speeds)} | {openmm_rate:.3g} | 1 |")
    print(
        f"| GROMACS (bare `gmx mdrun`) | {atoms['gromacs']} | {cell(bare_speeds)} | {gmx_rate:.3g} | "
        f"{statistics.median(bare_speeds) / statistics.median(openmm_speeds):.2f}× ns/day, "
        f"{gmx_rate / openmm_rate:.2f}× atom-steps |"
    )
    print()
    print(
        f"| one 50 ps segment, checkpoints every 10 ps ({args.repeat} rounds) | ns/day, median (min–max) "
        "| ratio of medians |"
    )
    print("|---|---|---|")
    print(f"| bare `gmx mdrun` (same tpr, checkpoint, threads) | {cell(bare_speeds)} | 1 |")
    print(
        f"| our runner (`gromacs_runner.run_segment`, everything included) | {cell(runner_speeds)} | "
        f"{statistics.median(runner_speeds) / statistics.median(bare_speeds):.3f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
