"""Every profile plans the campaign (dry-run), and the workflow passes the linters."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from conftest import REPO, SNAKEFILE, executed_jobs, snakemake

PROFILES = sorted(p.name for p in (REPO / "profiles").iterdir() if (p / "config.yaml").exists())


def test_there_is_a_local_profile():
    assert "local" in PROFILES


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_plans_the_campaign(tiny_campaign, profile):
    result = snakemake(tiny_campaign, "-n", profile=profile)
    jobs = executed_jobs(result.stdout)
    packing = (yaml.safe_load((REPO / "profiles" / profile / "config.yaml").read_text()).get("config") or {}).get(
        "packing"
    )
    if packing:  # the three simulations fit in one packed job
        assert jobs["pack"] == 1 and "simulate" not in jobs and jobs["summary"] == 1, result.stdout[-2000:]
    else:  # one segment per simulation is planned at a time (see workflow/rules/analyze.smk)
        assert jobs["simulate"] == 3 and jobs["summary"] == 1, result.stdout[-2000:]


def test_example_campaign_plans(tmp_path):
    """The campaign in config/ (the README's demo) is valid and plans."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    jobs = executed_jobs(snakemake(tmp_path, "-n").stdout)
    assert jobs == {"setup": 3, "simulate": 6, "fetch": 6, "analyze": 6, "summary": 1, "all": 1}


def test_snakemake_lint_is_clean():
    result = subprocess.run(["snakemake", "-s", str(SNAKEFILE), "--lint"], cwd=REPO, capture_output=True, text=True)
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr, result.stdout


def test_snakefmt_check_is_clean():
    result = subprocess.run(["snakefmt", "--check", str(REPO / "workflow")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("command", [["ruff", "check", "."], ["ruff", "format", "--check", "."]])
def test_ruff_is_clean(command):
    """The Python code passes the linter and is formatted (pyproject.toml's [tool.ruff])."""
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


@pytest.mark.skipif(
    shutil.which("scontrol") is None or shutil.which("sinfo") is None, reason="Slurm's client is not installed here"
)
def test_doctor_warns_when_an_unreachable_slurm_controller_slows_every_start(tmp_path, monkeypatch):
    from mdcampaign.doctor import WARN, check_slurm_start_up_probe

    # a real scontrol, pointed at a controller that is not there (nothing listens on port 9)
    nowhere = tmp_path / "slurm.conf"
    nowhere.write_text("ClusterName=nowhere\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort=9\n")
    monkeypatch.setenv("SLURM_CONF", str(nowhere))
    [check] = check_slurm_start_up_probe({"executor": "local"})
    assert check.status == WARN and "SLURM_CONF=/dev/null" in check.fix
    assert check_slurm_start_up_probe({"executor": "slurm"}) == []  # there, `doctor` checks the controller itself
    monkeypatch.setenv("SLURM_CONF", "/dev/null")  # the fix: scontrol gives up at once
    assert check_slurm_start_up_probe({"executor": "local"}) == []
