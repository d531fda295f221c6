"""Install once, campaigns in their own folders: a wheel in a fresh virtual environment
runs a campaign that `mdcampaign init` wrote, through Snakemake's `module`; profiles
installed by name; a started campaign refuses a major upgrade; --report in every form."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import TINY_PROTOCOL
from mdcampaign import __version__
from mdcampaign.campaign import load_campaign
from mdcampaign.configuration import read_config_file, report_requested
from mdcampaign.errors import CampaignError
from mdcampaign.folders import init_campaign, install_profiles
from mdcampaign.guards import check_started


def run(command: list, cwd: Path, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def tiny(campaign: Path, replicas: int = 2) -> None:
    """The campaign init wrote, cut down to alanine dipeptide with tiny segments."""
    config = yaml.safe_load((campaign / "config" / "config.yaml").read_text())
    config["protocol"].update(TINY_PROTOCOL)
    config["platform"] = "CPU"
    (campaign / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (campaign / "config" / "systems.tsv").write_text(
        f"id\tstructure\treplicas\nala\tconfig/structures/alanine-dipeptide.pdb\t{replicas}\n"
    )


@pytest.mark.slow
def test_a_wheel_in_a_fresh_environment_runs_a_campaign_folder_written_by_init(tmp_path, plain_install):
    env, venv = plain_install["env"], plain_install["venv"]
    where = run(
        [str(venv / "bin" / "python"), "-c", "import mdcampaign.shipped as s; print(s.SNAKEFILE.resolve())"],
        tmp_path,
        env,
    ).stdout.strip()
    assert where.startswith(str(venv)), f"the installed package uses its own workflow, not the checkout's: {where}"
    campaign = tmp_path / "my-campaign"
    run(["mdcampaign", "init", str(campaign)], tmp_path, env)
    tiny(campaign)
    run(["mdcampaign", "validate"], campaign, env)
    run(["snakemake", "--profile", "profiles/local"], campaign, env)
    summary = (campaign / "results" / "summary.tsv").read_text()
    assert "ala/r1" in summary and "ala/r2" in summary
    manifest = json.loads((campaign / "results/sims/ala/r1/segments/0001/manifest.json").read_text())
    assert manifest["mdcampaign_version"] == __version__
    again = run(["snakemake", "--profile", "profiles/local", "-n"], campaign, env)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_init_writes_a_campaign_folder_and_never_overwrites_one(tmp_path):
    written = init_campaign(tmp_path / "c")
    names = {str(path.relative_to(tmp_path / "c")) for path in written}
    assert {
        "config/config.yaml",
        "config/systems.tsv",
        "profiles/local/config.yaml",
        "profiles/stampede/config.yaml",
        "workflow/Snakefile",
        "workflow/profiles/default/config.yaml",
        ".gitignore",
    } <= names
    assert "module mdcampaign:" in (tmp_path / "c" / "workflow" / "Snakefile").read_text()
    config = read_config_file(tmp_path / "c" / "config" / "config.yaml")
    assert load_campaign(config, base_dir=tmp_path / "c").simulations, "the example campaign is valid there"
    (tmp_path / "c" / "config" / "systems.tsv").write_text("edited\n")
    with pytest.raises(CampaignError, match="already holds a campaign"):
        init_campaign(tmp_path / "c")
    assert (tmp_path / "c" / "config" / "systems.tsv").read_text() == "edited\n"


def test_profiles_installed_by_name_keep_your_edits(tmp_path):
    target = tmp_path / "snakemake-profiles"
    assert install_profiles(["stampede"], target=target) == [
        f"stampede: installed as {target}/stampede/config.yaml (snakemake --profile stampede)"
    ]
    installed = target / "stampede" / "config.yaml"
    installed.write_text(installed.read_text().replace("FILL-IN-YOUR-ALLOCATION", "TG-MCB123456"))
    (line,) = install_profiles(["stampede"], target=target)
    assert "exists and differs" in line and "TG-MCB123456" in installed.read_text()
    with pytest.raises(CampaignError, match="no profile 'stampeed'"):
        install_profiles(["stampeed"], target=target)


def test_a_started_campaign_refuses_a_major_upgrade_in_one_line(tiny_campaign):
    config = read_config_file(tiny_campaign / "config" / "config.yaml")
    campaign = load_campaign(config, base_dir=tiny_campaign)
    record = tiny_campaign / "results/sims/ala/r1/segments/0000/manifest.json"
    record.parent.mkdir(parents=True)
    record.write_text(
        json.dumps({"protocol": campaign.simulations[0].protocol.record(), "mdcampaign_version": "9.0.0"})
    )
    with pytest.raises(CampaignError) as refused:
        check_started(campaign, tiny_campaign)
    message = str(refused.value)
    assert (
        "\n" not in message
        and "started with mdcampaign 9.0.0" in message
        and "pip install 'mdcampaign==9.*'" in message
    )
    patch = __version__.rsplit(".", 1)[0] + ".99"
    record.write_text(json.dumps({"protocol": campaign.simulations[0].protocol.record(), "mdcampaign_version": patch}))
    check_started(campaign, tiny_campaign)  # a compatible release continues it


@pytest.mark.parametrize(
    "argv, wanted",
    [
        (["--report"], True),
        (["--report", "report.zip"], True),
        (["--report=r.html", "-n"], True),
        (["--reporter", "html", "--report-html-path", "x.html"], True),
        (["--repo", "x.html"], True),
        (["-n", "--cores", "2"], False),
        (["--rerun-incomplete"], False),
        (["--", "--report"], False),
    ],
)
def test_a_report_is_recognized_in_every_form(argv, wanted):
    assert report_requested(argv) is wanted
