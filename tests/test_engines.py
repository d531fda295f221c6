"""Two MD engines in one campaign, through the real workflow: OpenMM and GROMACS
systems side by side (real `snakemake`, real `gmx`), their records, the refusal to
change a started simulation's engine, and status/doctor for GROMACS."""

from __future__ import annotations

import json
import shutil
import subprocess

import mdtraj
import numpy as np
import pandas as pd
import pytest

from conftest import STRUCTURES, assert_complete, snakemake, write_campaign, write_systems
from mdcampaign.engines.gromacs import gmx

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        gmx.available() is None, reason="GROMACS is not installed (gmx not found): apt-get install gromacs"
    ),
]

# The tiny protocol's keys (4 fs with HMR, 2 ps segments, frames every 0.1 ps) on
# GROMACS: amber99sb-ildn and TIP3P in a small box, as GROMACS ships them.
GROMACS_COLUMNS = {"engine": "gromacs", "solvent": "explicit", "forcefield": "amber99sbildn", "water_model": "tip3p"}


def mixed_systems(gromacs_engine: str = "gromacs") -> list[dict]:
    return [
        {"id": "ala", "structure": str(STRUCTURES / "alanine-dipeptide.pdb"), "replicas": 1},
        {
            "id": "ala-gmx",
            "structure": str(STRUCTURES / "alanine-dipeptide.pdb"),
            "replicas": 2,
            **GROMACS_COLUMNS,
            "engine": gromacs_engine,
        },
    ]


@pytest.fixture(scope="module")
def mixed_campaign(tmp_path_factory):
    campaign = write_campaign(tmp_path_factory.mktemp("mixed") / "campaign", systems=mixed_systems())
    snakemake(campaign)
    return campaign


def test_openmm_and_gromacs_systems_in_one_campaign(mixed_campaign):
    assert_complete(mixed_campaign, {"ala/r1": 0.004, "ala-gmx/r1": 0.004, "ala-gmx/r2": 0.004})
    summary = pd.read_csv(mixed_campaign / "results" / "summary.tsv", sep="\t").set_index("simulation")
    assert summary.loc["ala/r1", "engine"] == "openmm" and summary.loc["ala-gmx/r2", "engine"] == "gromacs"
    setup = json.loads((mixed_campaign / "results/systems/ala-gmx/setup.json").read_text())
    assert setup["engine"] == "gromacs" and setup["forcefield"] == "amber99sb-ildn"
    sim = mixed_campaign / "results" / "sims" / "ala-gmx"
    for replica in ("r1", "r2"):
        segment = json.loads((sim / replica / "segments/0001/segment.json").read_text())
        assert segment["engine"] == "gromacs" and segment["first_step"] == 500
        assert (sim / replica / "system.tpr").exists(), "the simulation's own tpr is kept with it"
    # every frame once with its energies row, at absolute times
    segments = [sim / "r1" / "segments" / s for s in ("0000", "0001")]
    traj = mdtraj.load([str(d / "trajectory.xtc") for d in segments], top=str(sim / "r1" / "trajectory_topology.pdb"))
    energies = pd.concat([pd.read_csv(d / "energies.csv") for d in segments])
    np.testing.assert_allclose(traj.time, np.arange(1, 41) * 0.1, atol=1e-3)
    np.testing.assert_allclose(energies["time_ps"], traj.time, atol=1e-3)
    assert energies["density_g_per_mL"].between(0.5, 1.5).all() and energies["temperature_K"].between(200, 400).all()
    # GROMACS writes atoms wrapped into the box: the analysis makes the molecule whole first
    analysis = json.loads(next((sim / "r1" / "analysis").glob("[0-9]*/analysis.json")).read_text())
    assert analysis["rmsd_mean_nm"] < 0.3, "a molecule broken across the box would give RMSDs of nanometres"
    assert "could not image" not in (mixed_campaign / "logs/analyze/ala-gmx/r1/0002.log").read_text()
    # replicas share the equilibrated start and differ by their Langevin seeds
    other = mdtraj.load(
        str(sim / "r2" / "segments/0001/trajectory.xtc"), top=str(sim / "r2" / "trajectory_topology.pdb")
    )
    assert not np.allclose(traj.xyz[-1], other.xyz[-1], atol=1e-3)


def test_a_started_simulation_keeps_its_engine(mixed_campaign):
    write_systems(mixed_campaign, mixed_systems(gromacs_engine="openmm"))
    try:
        result = snakemake(mixed_campaign, "-n", check=False)
    finally:
        write_systems(mixed_campaign, mixed_systems())
    assert result.returncode != 0
    message = [line for line in (result.stdout + result.stderr).splitlines() if "engine is 'openmm'" in line]
    assert message and "started with 'gromacs'" in message[0], result.stderr[-2000:]


def test_status_and_doctor_know_gromacs(mixed_campaign):
    report = json.loads(
        subprocess.run(
            ["mdcampaign", "status", "--json", "--no-slurm"],
            cwd=mixed_campaign,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert {s["state"] for s in report["simulations"]} == {"done"}
    doctor = subprocess.run(["mdcampaign", "doctor"], cwd=mixed_campaign, capture_output=True, text=True)
    assert "engine gromacs" in doctor.stdout and "engine openmm" in doctor.stdout
    broken = subprocess.run(
        ["mdcampaign", "doctor"],
        cwd=mixed_campaign,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "MDCAMPAIGN_GMX": "/nonexistent/gmx"},
    )
    line = next(line for line in broken.stdout.splitlines() if "engine gromacs" in line)
    assert "FAIL" in line and "MDCAMPAIGN_GMX='/nonexistent/gmx' does not exist" in line
    assert "module load gromacs" in broken.stdout


def test_gromacs_refuses_what_it_cannot_do_in_one_line(tmp_path):
    campaign = write_campaign(
        tmp_path / "campaign",
        systems=[
            {
                "id": "ala-gmx",
                "structure": str(STRUCTURES / "alanine-dipeptide.pdb"),
                "replicas": 1,
                **GROMACS_COLUMNS,
                "forcefield": "charmm36",
            }
        ],
    )
    result = subprocess.run(["mdcampaign", "validate"], cwd=campaign, capture_output=True, text=True)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert (
        "line 2 (id 'ala-gmx')" in result.stderr
        and "forcefield 'charmm36' is not shipped with GROMACS" in result.stderr
    )


def test_a_labs_own_gromacs_inputs_run_as_given(mixed_campaign, tmp_path):
    # A lab's inputs: the files our GROMACS setup of ala-gmx wrote, as a lab would have them.
    lab = tmp_path / "lab"
    shutil.copytree(mixed_campaign / "results/systems/ala-gmx", lab, ignore=shutil.ignore_patterns("build"))
    campaign = write_campaign(
        tmp_path / "campaign",
        systems=[
            {"id": "own-tpr", "structure": lab / "system.tpr", "replicas": 1, "engine": "gromacs"},
            {
                "id": "own-mdp",
                "structure": lab / "start.gro",
                "replicas": 2,
                "engine": "gromacs",
                "gromacs_topology": lab / "system.top",
                "gromacs_mdp": lab / "production.mdp",
                "gromacs_index": lab / "index.ndx",
            },
        ],
    )
    snakemake(campaign)
    assert_complete(campaign, {"own-tpr/r1": 0.004, "own-mdp/r1": 0.004, "own-mdp/r2": 0.004})
    sims = campaign / "results" / "sims"
    first = [
        mdtraj.load(
            str(sims / f"own-mdp/{r}/segments/0001/trajectory.xtc"),
            top=str(sims / f"own-mdp/{r}/trajectory_topology.pdb"),
        ).xyz[-1]
        for r in ("r1", "r2")
    ]
    assert not np.allclose(*first, atol=1e-3), "replicas of a lab's .mdp get their own seeds"
    # A .tpr cannot have replicas (it would run identically), nor run on OpenMM; a
    # protocol that does not match the inputs is refused by setup in one line.
    for row, expected in (
        ({"replicas": 2}, "column replicas: a .tpr runs as given"),
        ({"engine": "openmm"}, "column engine: a .tpr can only run with engine gromacs"),
    ):
        write_systems(
            campaign, [{"id": "own-tpr", "structure": lab / "system.tpr", "replicas": 1, "engine": "gromacs", **row}]
        )
        result = subprocess.run(["mdcampaign", "validate"], cwd=campaign, capture_output=True, text=True)
        assert result.returncode != 0 and expected in result.stderr and len(result.stderr.strip().splitlines()) == 1
    write_systems(
        campaign,
        [
            {
                "id": "own-2fs",
                "structure": lab / "system.tpr",
                "replicas": 1,
                "engine": "gromacs",
                "timestep_fs": 2.0,
                "hmr": False,
            }
        ],
    )
    result = snakemake(campaign, check=False)
    log = (campaign / "logs/setup/own-2fs.log").read_text()
    assert result.returncode != 0 and "does not match the protocol: its timestep is 4 fs" in log
