"""`mdcampaign status`, `doctor` and the HTML report on real campaigns."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, SNAKEFILE, STRUCTURES, exploding_system, snakemake, write_campaign
from test_faults import long_campaign, start_snakemake
from test_segment import wait_for

pytestmark = pytest.mark.slow


def status(directory: Path, *args: str) -> dict:
    result = subprocess.run(
        ["mdcampaign", "status", "--json", "--no-slurm", *args], cwd=directory, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    campaign = write_campaign(tmp_path_factory.mktemp("finished") / "campaign")
    snakemake(campaign)
    return campaign


def test_status_of_a_finished_campaign(finished):
    report = status(finished)
    assert [s["state"] for s in report["simulations"]] == ["done", "done", "done"]
    assert report["totals"]["simulated_ns"] == pytest.approx(report["totals"]["target_ns"])
    assert all(s["ns_per_day"] > 0 for s in report["simulations"])
    text = subprocess.run(["mdcampaign", "status", "--no-slurm"], cwd=finished, capture_output=True, text=True).stdout
    assert "ala-water/r1" in text and "\033[" not in text, "plain text when piped"
    assert "3 simulations (3 done)" in text


def test_status_of_an_interrupted_campaign(tmp_path):
    campaign = long_campaign(tmp_path / "campaign")
    process = start_snakemake(campaign)
    # wait until segment 0 of r1 is in the store and segment 1 has a checkpoint
    assert wait_for(
        lambda: (
            (
                (campaign / "results/sims/ala/r1/segments/0000/manifest.json").exists()
                and any((campaign / "scratch/ala/r1/0001/work").glob("checkpoint.chk"))
            )
            or process.poll() is not None
        ),
        timeout=300,
    )
    running = status(campaign)
    by_name = {s["simulation"]: s for s in running["simulations"]}
    assert by_name["ala/r1"]["state"] == "running" and by_name["ala/r1"]["segment"] == 1
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    time.sleep(0.5)
    report = status(campaign)
    r1 = {s["simulation"]: s for s in report["simulations"]}["ala/r1"]
    assert r1["state"] == "paused" and r1["segment"] == 1 and r1["segments"] == 2
    assert 0.02 < r1["simulated_ns"] < 0.04, "one segment done, the next one part-way"
    assert "interrupted" in r1["failure"]["reason"]
    text = subprocess.run(["mdcampaign", "status", "--no-slurm"], cwd=campaign, capture_output=True, text=True).stdout
    assert "paused segment 2 of 2" in text


def test_status_of_a_failing_simulation_shows_reason_and_log(tmp_path):
    campaign = write_campaign(tmp_path / "campaign", systems=[exploding_system(tmp_path)])
    snakemake(campaign, check=False)
    report = status(campaign)
    hot = report["simulations"][0]
    assert hot["state"] == "failed"
    assert hot["failure"]["rule"] == "simulate"
    assert hot["failure"]["reason"] == "NaN energies (the simulation exploded)"
    assert hot["failure"]["log"].endswith("logs/simulate/hot/r1/0000.log")
    assert any("became unstable" in line for line in hot["failure"]["last_lines"])
    text = subprocess.run(["mdcampaign", "status", "--no-slurm"], cwd=campaign, capture_output=True, text=True).stdout
    assert "hot/r1: simulate failed: NaN energies" in text and "log: " in text


def test_doctor_passes_for_the_local_profile(finished):
    result = subprocess.run(
        ["mdcampaign", "doctor", "--profile", str(REPO / "profiles" / "local")],
        cwd=finished,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout
    assert "FAIL" not in result.stdout and "this machine is ready" in result.stdout


def test_the_html_report_shows_every_simulation(finished):
    report = finished / "report.html"
    result = subprocess.run(
        ["snakemake", "-s", str(SNAKEFILE), "--report", str(report)], cwd=finished, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    html = report.read_text()
    for simulation in ("ala/r1", "ala/r2", "ala-water/r1"):
        assert simulation in html
    assert "summary.tsv" in html and "summary.png" in html


def test_the_readme_commands_work_from_the_plain_install(finished, tmp_path, plain_install):
    """mdcampaign without the test extras, in a fresh virtual environment (a wheel of this
    checkout: `pip install -e .` installs the same dependencies), is enough for every
    command the README shows, a GROMACS system included."""
    env = plain_install["env"]
    commands = [
        ["mdcampaign", "validate"],
        ["mdcampaign", "status", "--no-slurm"],
        ["snakemake", "-s", str(SNAKEFILE), "--profile", str(REPO / "profiles" / "local"), "-n"],
        ["snakemake", "-s", str(SNAKEFILE), "--report", str(tmp_path / "report.html")],
    ]
    for command in commands:
        result = subprocess.run(command, cwd=finished, capture_output=True, text=True, env=env)
        assert result.returncode == 0, f"{' '.join(command)}: {result.stderr[-2000:]}"
    assert "summary.tsv" in (tmp_path / "report.html").read_text()
    # a GROMACS system too (its .edr files are read with pyedr, a core dependency)
    if shutil.which("gmx"):
        gromacs = write_campaign(
            tmp_path / "gromacs",
            systems=[
                {
                    "id": "ala-gmx",
                    "structure": STRUCTURES / "alanine-dipeptide.pdb",
                    "engine": "gromacs",
                    "solvent": "explicit",
                    "water_model": "tip3p",
                }
            ],
        )
        command = ["snakemake", "-s", str(SNAKEFILE), "--profile", str(REPO / "profiles" / "local")]
        result = subprocess.run(command, cwd=gromacs, capture_output=True, text=True, env=env)
        assert result.returncode == 0, result.stderr[-3000:]


def test_a_running_setup_is_setting_up_and_a_killed_one_says_it_was_interrupted(tmp_path):
    """A solvated system's setup (20 ps of equilibration: some seconds) seen by status
    while it runs, then after kill -9 of the whole run."""
    campaign = write_campaign(
        tmp_path / "campaign",
        systems=[
            {
                "id": "ala-water",
                "structure": STRUCTURES / "alanine-dipeptide.pdb",
                "replicas": 1,
                "solvent": "explicit",
                "forcefield": "amber14",
                "equilibration_ps": 40.0,
            }
        ],
    )
    process = start_snakemake(campaign)
    try:
        setting_up = lambda: status(campaign)["simulations"][0]["state"] == "setting up"  # noqa: E731
        assert wait_for(setting_up, timeout=120, interval=0.5), "status never said the setup runs"
        text = subprocess.run(["mdcampaign", "status", "--no-slurm"], cwd=campaign, capture_output=True, text=True)
        assert "ala-water/r1" in text.stdout and "setting up" in text.stdout
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    time.sleep(0.5)
    if (campaign / "results/systems/ala-water/setup.json").exists():
        pytest.skip("the setup finished before it was killed")
    (simulation,) = status(campaign)["simulations"]
    assert simulation["state"] == "waiting" and simulation["failure"]["rule"] == "setup"
    assert simulation["failure"]["reason"] == "interrupted (run again to set it up)"
    assert "stopped without finishing or failing" in simulation["failure"]["message"]
    assert simulation["eta_days"] > 0
