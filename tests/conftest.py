"""Shared fixtures: tiny real campaigns (real structures, real OpenMM) in temporary
directories, and a helper to run the workflow on them with a real `snakemake`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "workflow" / "Snakefile"
STRUCTURES = REPO / "config" / "structures"

# Small enough that a segment takes about a second on 2 CPU cores.
TINY_PROTOCOL = {
    "forcefield": "amber99sbildn",
    "solvent": "implicit",
    "padding_nm": 1.0,
    "nonbonded_cutoff_nm": 0.9,
    "timestep_fs": 4.0,
    "hmr": True,
    "minimization_max_iterations": 50,
    "equilibration_ps": 1.0,
    "segment_ns": 0.002,
    "target_ns": 0.004,
    "frame_interval_ps": 0.1,
    "checkpoint_interval_ps": 0.5,
}

TINY_SYSTEMS = [
    {"id": "ala", "structure": str(STRUCTURES / "alanine-dipeptide.pdb"), "replicas": 2},
    {
        "id": "ala-water",
        "structure": str(STRUCTURES / "alanine-dipeptide.pdb"),
        "replicas": 1,
        "solvent": "explicit",
        "forcefield": "amber14",
    },
]


def pytest_configure(config):
    """Where Slurm's client is installed but no controller runs (a laptop, or this
    machine without scripts/ci/slurm-up), every `snakemake` start would wait ~10 s for
    the Slurm plugin's probe; apply the fix `mdcampaign doctor` gives. The Slurm tests
    skip there anyway."""
    from mdcampaign.doctor import check_slurm_start_up_probe

    if check_slurm_start_up_probe({}):
        os.environ["SLURM_CONF"] = "/dev/null"
    # Snakemake, in every process the tests start (and the Slurm jobs they submit),
    # polls Slurm at the profile's interval: see tests/support/sitecustomize.py
    support = str(Path(__file__).parent / "support")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [support, os.environ.get("PYTHONPATH")]))


def write_campaign(directory: Path, systems=None, protocol=None, **config) -> Path:
    """Write config/config.yaml and config/systems.tsv for a campaign in `directory`."""
    systems = systems if systems is not None else TINY_SYSTEMS
    (directory / "config").mkdir(parents=True, exist_ok=True)
    settings = {
        "campaign": "test",
        "systems": "config/systems.tsv",
        "platform": "CPU",
        "protocol": {**TINY_PROTOCOL, **(protocol or {})},
        **config,
    }
    (directory / "config" / "config.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    write_systems(directory, systems)
    return directory


def write_systems(directory: Path, systems: list[dict]) -> None:
    columns = list(dict.fromkeys(key for row in systems for key in row))
    lines = ["\t".join(columns)] + ["\t".join(str(row.get(c, "")) for c in columns) for row in systems]
    (directory / "config" / "systems.tsv").write_text("\n".join(lines) + "\n")


def snakemake(
    directory: Path,
    *args: str,
    profile: str = "local",
    timeout: float = 900,
    check: bool = True,
    env: dict | None = None,
) -> subprocess.CompletedProcess:
    """Run the real workflow in `directory` with one of the repository's profiles."""
    command = ["snakemake", "-s", str(SNAKEFILE), "--profile", str(REPO / "profiles" / profile), *args]
    result = subprocess.run(
        command, cwd=directory, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
        )
    return result


def executed_jobs(output) -> dict[str, int]:
    """Count jobs per rule in the 'Job stats' table Snakemake prints (give the text
    or the finished process)."""
    if isinstance(output, subprocess.CompletedProcess):
        output = output.stdout + output.stderr
    counts = {}
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Job stats:"):
            for row in lines[i + 3 :]:
                parts = row.split()
                if len(parts) != 2 or not parts[1].isdigit() or parts[0] == "total":
                    break
                counts[parts[0]] = int(parts[1])
            break
    return counts


def exploding_system(directory: Path, system_id: str = "hot") -> dict:
    """A systems-table row that sets up fine and explodes in production: NME's carbon
    0.015 nm from ACE's methyl (just past setup's overlap check), one minimization step, no
    equilibration."""
    clash = directory / "clash.pdb"
    clash.write_text(
        "\n".join(
            line[:30] + f"{2.15:8.3f}{2.09:8.3f}{0.0:8.3f}" + line[54:]
            if line.startswith("HETATM") and line[12:16].strip() == "C" and line[17:20] == "NME"
            else line
            for line in (STRUCTURES / "alanine-dipeptide.pdb").read_text().splitlines()
        )
        + "\n"
    )
    return {"id": system_id, "structure": clash, "replicas": 1, "equilibration_ps": 0, "minimization_max_iterations": 1}


@pytest.fixture
def tiny_campaign(tmp_path):
    return write_campaign(tmp_path / "campaign")


@pytest.fixture(scope="session")
def prepared_ala(tmp_path_factory):
    """Alanine dipeptide in implicit solvent, set up once per test session."""
    from mdcampaign.engines.openmm.setup import prepare
    from mdcampaign.protocol import Protocol

    schema_defaults = _schema_defaults()
    protocol = Protocol(**{**schema_defaults, **TINY_PROTOCOL})
    out = tmp_path_factory.mktemp("prepared-ala")
    prepare(STRUCTURES / "alanine-dipeptide.pdb", protocol, out, platform="CPU", threads=1)
    return out, protocol


def _schema_defaults() -> dict:
    from mdcampaign.validation import load_schema

    properties = load_schema("config.schema.yaml")["properties"]["protocol"]["properties"]
    return {key: spec["default"] for key, spec in properties.items()}


@pytest.fixture(scope="session")
def plain_install(tmp_path_factory) -> dict:
    """mdcampaign as a user installs it, once per test session: a wheel built from this
    checkout in a fresh virtual environment, without the test extras (its dependencies
    from the package index). The environment to run its commands with."""
    base = tmp_path_factory.mktemp("plain-install")
    wheels, venv = base / "wheels", base / "venv"
    for command in (
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
        [sys.executable, "-m", "venv", str(venv)],
    ):
        subprocess.run(command, check=True, capture_output=True, timeout=900)
    wheel = next(wheels.glob("mdcampaign-*.whl"))
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(wheel)], capture_output=True, text=True, timeout=1500
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)
    return {"env": env, "venv": venv, "wheel": wheel}


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable


def make_profile(directory: Path, base: str, config: dict | None = None, **settings) -> Path:
    """A copy of one of the repository's profiles with some keys changed (a CLI
    --config would replace the profile's whole `config` mapping)."""
    profile = yaml.safe_load((REPO / "profiles" / base / "config.yaml").read_text())
    profile.setdefault("config", {}).update(config or {})
    profile.update(settings)
    target = directory / f"profile-{base}"
    target.mkdir(parents=True, exist_ok=True)
    (target / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return target


def run_with_profile(directory: Path, profile: Path, *args: str, timeout: float = 900, check: bool = True):
    command = ["snakemake", "-s", str(SNAKEFILE), "--profile", str(profile), *args]
    result = subprocess.run(command, cwd=directory, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
        )
    return result


def assert_complete(campaign: Path, sims: dict[str, float], store: Path | None = None):
    """Every simulation at its target length, with loadable, continuous trajectories
    and a manifest per segment (segment data in `store`, by default results/)."""
    import json

    import mdtraj
    import numpy as np
    import pandas as pd

    summary = pd.read_csv(campaign / "results" / "summary.tsv", sep="\t")
    assert sorted(summary["simulation"]) == sorted(sims)
    assert_statistics(campaign, summary)
    for sim, target_ns in sims.items():
        row = summary.set_index("simulation").loc[sim]
        assert row["simulated_ns"] == pytest.approx(target_ns)
        sim_dir = (store or campaign / "results") / "sims" / sim
        dirs = sorted(p for p in (sim_dir / "segments").iterdir() if p.is_dir() and not p.name.startswith("."))
        traj = mdtraj.load([str(d / "trajectory.xtc") for d in dirs], top=str(sim_dir / "trajectory_topology.pdb"))
        interval = np.diff(traj.time)
        assert np.allclose(interval, interval[0], atol=1e-3), f"{sim}: gap or duplicate frame"
        assert traj.time[-1] == pytest.approx(target_ns * 1000, abs=1e-3)
        assert row["frames"] == traj.n_frames
        final_state = {"openmm": "final_state.xml", "gromacs": "final_state.cpt"}[row["engine"]]
        for d in dirs:
            manifest = json.loads((d / "manifest.json").read_text())
            assert set(manifest["files"]) == {"trajectory.xtc", "energies.csv", final_state, "segment.json"}
            assert manifest["protocol"].get("engine", "openmm") == row["engine"] == manifest["info"]["engine"]


def assert_statistics(campaign: Path, summary) -> None:
    """Each replica's equilibrated estimates in summary.tsv and each system's over its
    replicas in systems.tsv: a finite number, or n/a with its reason; never NaN."""
    import math

    import pandas as pd

    from mdcampaign.summary import NOT_AVAILABLE, STATISTICS

    systems = pd.read_csv(campaign / "results" / "systems.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert sorted(systems["system"]) == sorted(set(summary["system"]))
    for system in systems["system"]:
        page = campaign / "results" / "per-system"
        assert (page / f"{system}.convergence.png").exists(), f"no convergence figure of {system}"
        table = pd.read_csv(page / f"{system}.statistics.tsv", sep="\t")
        assert set(STATISTICS) <= set(table["observable"]), f"the statistics table of {system} lacks observables"
    tables = (
        (
            pd.read_csv(campaign / "results" / "summary.tsv", sep="\t", dtype=str, keep_default_na=False),
            ("_eq_mean", "_eq_error", "_eq_from_ps"),
            "statistics_notes",
        ),
        (systems, ("_mean", "_se", "_agreement_p"), "notes"),
    )
    for table, suffixes, notes in tables:
        for _, row in table.iterrows():
            for name in STATISTICS:
                for suffix in suffixes:
                    value = row[f"{name}{suffix}"]
                    if value == NOT_AVAILABLE:
                        assert name in row[notes], (name, suffix, row[notes])
                    else:
                        assert math.isfinite(float(value)), (name, suffix, value)
        assert (table[f"{STATISTICS[0]}{suffixes[0]}"] != NOT_AVAILABLE).any(), "RMSD is estimated somewhere"


# -- the closing report: how many fault trials and bad-input cases ended correctly ------
_REPORT: dict[str, list[tuple[str, bool]]] = {}


def report(suite: str, case: str, correct: bool) -> None:
    """Record one trial or case for the report printed at the end of the test run."""
    _REPORT.setdefault(suite, []).append((case, correct))


def pytest_terminal_summary(terminalreporter):
    if not _REPORT:
        return
    terminalreporter.section("mdcampaign fault-injection and bad-input report")
    for suite, outcomes in sorted(_REPORT.items()):
        correct = sum(1 for _, ok in outcomes if ok)
        terminalreporter.write_line(
            f"{suite}: {len(outcomes)} trials/cases, {correct} ended with correct data "
            f"or the expected one-line error, {len(outcomes) - correct} did not"
        )
