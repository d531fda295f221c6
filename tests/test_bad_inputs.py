"""The bad-input corpus (tests/data/bad_inputs.yaml): every malformed campaign or
input fails before any simulation starts, with one line that names the file, the
line or key, and what is allowed; no traceback, nothing written to the store."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO, STRUCTURES, report, snakemake, write_campaign
from mdcampaign.campaign import load_campaign
from mdcampaign.configuration import read_config_file
from mdcampaign.errors import CampaignError, SegmentError

CASES = yaml.safe_load((Path(__file__).parent / "data" / "bad_inputs.yaml").read_text())
# Representative cases also run through the real `snakemake -n`, as users meet them.
THROUGH_SNAKEMAKE = {
    "negative temperature",
    "config YAML syntax error",
    "duplicate system ids",
    "id with a slash",
    "comma-separated table",
    "binary PDB file",
    "site column naming an unknown site",
    "site names that YAML reads as numbers",
}


def build(case: dict, directory: Path) -> Path:
    directory = write_campaign(directory)
    config_path = directory / "config" / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    for key, value in case.get("config", {}).items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    for key in case.get("config_drop", []):
        config.pop(key)
    config_path.write_text(yaml.safe_dump(config))
    if "config_text" in case:
        config_path.write_text(case["config_text"])
    if case.get("replace_config_with_directory"):
        config_path.unlink()
        config_path.mkdir()
    if "systems_text" in case:
        (directory / "config" / "systems.tsv").write_text(case["systems_text"].format(structures=STRUCTURES))
    if case.get("systems_missing"):
        (directory / "config" / "systems.tsv").unlink()
    for name, text in case.get("files", {}).items():
        (directory / name).write_text(text)
    for name, data in case.get("files_base64", {}).items():
        (directory / name).write_bytes(base64.b64decode(data))
    for name in case.get("directories", []):
        (directory / name).mkdir()
    return directory


def validation_error(directory: Path) -> str:
    config = read_config_file(directory / "config" / "config.yaml")
    load_campaign(config, "config/config.yaml", base_dir=directory)
    raise AssertionError("the campaign was accepted")


def setup_error(directory: Path) -> str:
    from mdcampaign.engines.openmm.setup import prepare

    config = read_config_file(directory / "config" / "config.yaml")
    campaign = load_campaign(config, "config/config.yaml", base_dir=directory)
    system = next(iter(campaign.systems.values()))
    prepare(
        directory / system.structure,
        system.protocol,
        directory / "results" / "systems" / system.id,
        platform="CPU",
        threads=1,
    )
    raise AssertionError("setup accepted the structure")


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_bad_input_fails_early_with_one_clear_line(case, tmp_path):
    directory = build(case, tmp_path / "campaign")
    stage = case.get("stage", "validation")
    if stage == "cli":
        result = subprocess.run(
            ["snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "-n", "--profile", case["profile"]],
            cwd=directory,
            capture_output=True,
            text=True,
        )
        message = (result.stdout + result.stderr).strip()
        assert result.returncode != 0 and "Traceback" not in message
    else:
        with pytest.raises((CampaignError, SegmentError)) as caught:
            setup_error(directory) if stage == "setup" else validation_error(directory)
        message = str(caught.value)
        assert "\n" not in message, f"not one line: {message!r}"
    assert case["expect"] in message, message
    assert not (directory / "results" / "sims").exists(), "nothing may be written to the store"
    report("bad-input corpus", case["name"], True)


@pytest.mark.parametrize("name", sorted(THROUGH_SNAKEMAKE))
def test_users_see_exactly_that_line_from_snakemake(name, tmp_path):
    case = next(c for c in CASES if c["name"] == name)
    directory = build(case, tmp_path / "campaign")
    result = snakemake(directory, "-n", check=False)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert lines[-1].startswith("mdcampaign: ") and case["expect"] in lines[-1], lines[-3:]


def test_an_unsupported_ligand_stops_in_setup_and_nothing_is_simulated(tmp_path):
    case = next(c for c in CASES if c["name"] == "unsupported ligand")
    directory = build(case, tmp_path / "campaign")
    result = snakemake(directory, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Error in rule setup" in output and "logs/setup/lig.log" in output
    assert "FAILED: structure 'ligand.pdb': residue(s) LIG 1 (chain B) have no template" in output
    assert "rule simulate" not in output
    assert not (directory / "results" / "sims").exists()


def test_nested_command_line_config_is_read_as_numbers(tmp_path):
    directory = write_campaign(tmp_path / "campaign")
    accepted = snakemake(directory, "-n", "--config", "protocol={target_ns: 0.006, temperature_K: 310}")
    assert "simulate" in accepted.stdout
    refused = snakemake(directory, "-n", "--config", "protocol={temperature_K: nan}", check=False)
    lines = [line for line in (refused.stdout + refused.stderr).splitlines() if line.strip()]
    assert refused.returncode == 1 and "Traceback" not in refused.stdout + refused.stderr
    assert lines[-1] == "mdcampaign: config/config.yaml: protocol.temperature_K: must be a finite number (got nan)"


@pytest.mark.parametrize(
    "arguments, expect",
    [
        (["init", "{file}"], "{file} is a file, not a folder"),
        (["init", "{file}/inside"], "the campaign could not be written there: Not a directory"),
        (["tune", "--cores", "-5"], "tune --cores: must be between 1 and the"),
        (["tune", "--cores", "0"], "tune --cores: must be between 1 and the"),
        (["tune", "--seconds", "-5"], "tune --seconds: each trial must last between 1 and 3600 s"),
        (["tune", "--seconds", "nan"], "tune --seconds: each trial must last between 1 and 3600 s"),
        (["tune", "--gpus", "-1"], "tune --gpus: must be between 0 and 64"),
    ],
)
def test_command_line_mistakes_get_one_line(arguments, expect, tmp_path):
    directory = write_campaign(tmp_path / "campaign")
    afile = tmp_path / "a-file"
    afile.write_text("not a folder")
    arguments = [argument.replace("{file}", str(afile)) for argument in arguments]
    result = subprocess.run(["mdcampaign", *arguments], cwd=directory, capture_output=True, text=True)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("mdcampaign: "), lines
    assert expect.replace("{file}", str(afile)) in lines[0], lines[0]
    report("bad-input corpus", f"mdcampaign {' '.join(arguments)}", True)


@pytest.mark.parametrize(
    "value, expect",
    [
        ("/nonexistent/gmx", "MDCAMPAIGN_GMX='/nonexistent/gmx' does not exist"),
        ("gmx; touch {canary}", "is not a program: MDCAMPAIGN_GMX must name the gmx program itself"),
        ("/bin/false", "MDCAMPAIGN_GMX='/bin/false' does not run as gmx"),
        ("no-such-gmx", "MDCAMPAIGN_GMX='no-such-gmx' is not a command on PATH"),
    ],
)
def test_a_broken_gmx_variable_is_named_by_validate_and_doctor(value, expect, tmp_path):
    canary = tmp_path / "canary"
    value = value.replace("{canary}", str(canary))
    directory = write_campaign(
        tmp_path / "campaign",
        systems=[
            {
                "id": "ala-gmx",
                "structure": str(STRUCTURES / "alanine-dipeptide.pdb"),
                "replicas": 1,
                "engine": "gromacs",
                "solvent": "explicit",
                "forcefield": "amber99sbildn",
                "water_model": "tip3p",
            }
        ],
    )
    env = {**os.environ, "MDCAMPAIGN_GMX": value}
    validate = subprocess.run(["mdcampaign", "validate"], cwd=directory, capture_output=True, text=True, env=env)
    assert validate.returncode == 0 and "Traceback" not in validate.stderr
    (warning,) = validate.stderr.strip().splitlines()
    assert warning.startswith("warning: ") and "engine gromacs" in warning and expect in warning, warning
    doctor = subprocess.run(["mdcampaign", "doctor"], cwd=directory, capture_output=True, text=True, env=env)
    line = next(line for line in doctor.stdout.splitlines() if "engine gromacs" in line)
    assert doctor.returncode == 1 and line.startswith("FAIL") and expect in line, doctor.stdout
    assert not canary.exists()
    report("bad-input corpus", f"MDCAMPAIGN_GMX={value}", True)


def test_setup_with_a_broken_gmx_variable_fails_in_one_line_naming_it(tmp_path):
    directory = write_campaign(
        tmp_path / "campaign",
        systems=[
            {
                "id": "ala-gmx",
                "structure": str(STRUCTURES / "alanine-dipeptide.pdb"),
                "replicas": 1,
                "engine": "gromacs",
                "solvent": "explicit",
                "forcefield": "amber99sbildn",
                "water_model": "tip3p",
            }
        ],
    )
    result = snakemake(directory, check=False, env={**os.environ, "MDCAMPAIGN_GMX": "/nonexistent/gmx"})
    log = (directory / "logs/setup/ala-gmx.log").read_text()
    assert result.returncode != 0 and "Traceback" not in log
    assert "FAILED: engine gromacs: MDCAMPAIGN_GMX='/nonexistent/gmx' does not exist" in log, log
    assert not (directory / "results" / "sims").exists()


def test_a_missing_extra_is_named_by_validate_before_anything_runs(tmp_path):
    """The ligand tools live in the environment's bin/ folder: without it on PATH they
    are missing for real, and validate names what and how to install it."""
    import sys

    directory = write_campaign(
        tmp_path / "campaign",
        systems=[
            {
                "id": "lig",
                "structure": str(STRUCTURES / "alanine-dipeptide.pdb"),
                "replicas": 1,
                "solvent": "explicit",
                "ligand": "ACE",
                "ligand_smiles": "CC=O",
            }
        ],
    )
    mdcampaign = Path(sys.executable).parent / "mdcampaign"
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    result = subprocess.run([str(mdcampaign), "validate"], cwd=directory, capture_output=True, text=True, env=env)
    assert result.returncode == 0 and "Traceback" not in result.stderr
    (warning,) = result.stderr.strip().splitlines()
    assert "1 systems have ligands, but antechamber, parmchk2, sqm are not installed" in warning
    assert "pip install 'mdcampaign[ligands]'" in warning
