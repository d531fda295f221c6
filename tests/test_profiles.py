"""Every profile plans the campaign (dry-run), and the workflow passes the linters."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import REPO, SNAKEFILE, executed_jobs, snakemake

PROFILES = sorted(p.name for p in (REPO / "profiles").iterdir() if (p / "config.yaml").exists())


def test_there_is_a_local_profile():
    assert "local" in PROFILES


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_plans_the_campaign(tiny_campaign, profile):
    result = snakemake(tiny_campaign, "-n", profile=profile)
    jobs = executed_jobs(result.stdout)
    # one segment per simulation is planned at a time (see workflow/rules/analyze.smk)
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
