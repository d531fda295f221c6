"""Campaign definition: validation with one-line errors, defaults, expansion, seeds."""

from __future__ import annotations

import pytest
import yaml

from conftest import STRUCTURES, write_campaign, write_systems
from mdcampaign.campaign import load_campaign
from mdcampaign.errors import CampaignError
from mdcampaign.protocol import Protocol
from mdcampaign.systems import replica_seed


def load(directory):
    config = yaml.safe_load((directory / "config" / "config.yaml").read_text())
    return load_campaign(config, "config/config.yaml", base_dir=directory)


def error_of(directory) -> str:
    with pytest.raises(CampaignError) as caught:
        load(directory)
    message = str(caught.value)
    assert "\n" not in message, "errors must be one line"
    return message


def test_expands_systems_into_replicas_with_defaults(tmp_path):
    campaign = load(write_campaign(tmp_path))
    names = [s.name for s in campaign.simulations]
    assert names == ["ala/r1", "ala/r2", "ala-water/r1"]
    water = campaign.systems["ala-water"].protocol
    assert water.solvent == "explicit" and water.forcefield == "amber14"
    # defaults from the schema fill keys the config leaves out
    assert water.temperature_K == 300.0 and water.pressure_bar == 1.0
    assert campaign.store == "results" and campaign.scratch == "scratch"
    assert all(s.n_segments == 2 for s in campaign.simulations)


def test_seeds_are_deterministic_distinct_and_recorded(tmp_path):
    first = load(write_campaign(tmp_path / "a"))
    second = load(write_campaign(tmp_path / "b"))
    seeds = [s.seed for s in first.simulations]
    assert seeds == [s.seed for s in second.simulations]
    assert len(set(seeds)) == len(seeds)
    assert first.simulations[0].seed == replica_seed("ala", 1, 0)


def test_row_overrides_only_that_system(tmp_path):
    systems = [
        {"id": "hot", "structure": STRUCTURES / "alanine-dipeptide.pdb", "replicas": 1, "temperature_K": 350},
        {"id": "cold", "structure": STRUCTURES / "alanine-dipeptide.pdb", "replicas": 1},
    ]
    campaign = load(write_campaign(tmp_path, systems=systems))
    assert campaign.systems["hot"].protocol.temperature_K == 350
    assert campaign.systems["cold"].protocol.temperature_K == 300.0


def test_segments_round_up_to_cover_the_target(tmp_path):
    campaign = load(write_campaign(tmp_path, protocol={"target_ns": 0.005, "segment_ns": 0.002}))
    assert campaign.simulations[0].n_segments == 3


def test_comment_and_blank_lines_are_skipped_and_lines_counted(tmp_path):
    directory = write_campaign(tmp_path)
    table = directory / "config" / "systems.tsv"
    rows = table.read_text().splitlines()
    table.write_text("# my systems\n" + rows[0] + "\n\n" + rows[1] + "\n" + rows[1] + "\n")
    assert "line 5" in error_of(directory) and "duplicate system id 'ala'" in error_of(directory)


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"protocol": {"temperature_K": -5}}, "config/config.yaml: protocol.temperature_K: must be > 0 (got -5)"),
        (
            {"protocol": {"forcefield": "amber99"}},
            "protocol.forcefield: must be one of: amber14, amber99sbildn, charmm36",
        ),
        ({"protocol": {"temprature_K": 300}}, "unknown key 'temprature_K' (did you mean 'temperature_K'?)"),
        ({"platform": "GPU"}, "platform: must be one of: auto, CUDA, OpenCL, CPU, Reference (got 'GPU')"),
        ({"protocol": {"segment_ns": 0.01, "target_ns": 0.004}}, "segment_ns (0.01) must not exceed target_ns (0.004)"),
        ({"protocol": {"hmr": False}}, "timestep_fs 4.0 needs hmr: true"),
        ({"protocol": {"frame_interval_ps": 0.3}}, "segment_ns (0.002) must be a whole number of frame intervals"),
    ],
)
def test_config_errors_name_the_key_and_what_is_allowed(tmp_path, change, expected):
    directory = write_campaign(tmp_path)
    path = directory / "config" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    for key, value in change.items():
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    path.write_text(yaml.safe_dump(config))
    assert expected in error_of(directory)


@pytest.mark.parametrize(
    "row, expected",
    [
        ({"id": "a/b"}, "line 2 (id 'a/b'), column id: must contain only letters"),
        ({"id": "a..b"}, "column id: must not contain '..'"),
        ({"id": "has space"}, "column id: must contain only letters"),
        ({"replicas": "0"}, "column replicas: must be >= 1 (got 0)"),
        ({"replicas": "two"}, "column replicas: must be an integer (got 'two')"),
        ({"temperature_K": "hot"}, "column temperature_K: must be a number (got 'hot')"),
        ({"structure": "missing.pdb"}, "column structure: file 'missing.pdb' does not exist"),
        ({"structure": "x.mol2"}, "unsupported file type '.mol2'"),
        ({"colour": "red"}, "unknown column 'colour'"),
    ],
)
def test_table_errors_name_file_line_and_column(tmp_path, row, expected):
    directory = write_campaign(tmp_path)
    base = {"id": "ala", "structure": str(STRUCTURES / "alanine-dipeptide.pdb"), "replicas": 1}
    write_systems(directory, [{**base, **row}])
    message = error_of(directory)
    assert message.startswith("config/systems.tsv, line 2")
    assert expected in message


def test_comma_separated_table_is_explained(tmp_path):
    directory = write_campaign(tmp_path)
    (directory / "config" / "systems.tsv").write_text("id,structure,replicas\nala,x.pdb,1\n")
    assert "separated by tabs" in error_of(directory)


@pytest.mark.parametrize(
    "content, expected",
    [(b"", "is empty"), (b"\x00\x01\x02binary", "is a binary file"), (b"HELLO\nWORLD\n", "no ATOM or HETATM")],
)
def test_unusable_structure_files_fail_before_anything_runs(tmp_path, content, expected):
    directory = write_campaign(tmp_path)
    bad = directory / "bad.pdb"
    bad.write_bytes(content)
    write_systems(directory, [{"id": "bad", "structure": "bad.pdb", "replicas": 1}])
    assert expected in error_of(directory)


def test_protocol_steps_follow_from_lengths():
    protocol = Protocol(
        **{
            **{k: v for k, v in load_defaults().items()},
            "timestep_fs": 2.0,
            "segment_ns": 1.0,
            "frame_interval_ps": 10.0,
            "checkpoint_interval_ps": 100.0,
            "target_ns": 10.0,
        }
    )
    assert protocol.segment_steps == 500_000
    assert protocol.frame_steps == 5_000
    assert protocol.checkpoint_steps == 50_000
    assert protocol.n_segments == 10


def load_defaults():
    from conftest import _schema_defaults

    return _schema_defaults()


def test_ids_read_as_missing_values_by_spreadsheets_are_names(tmp_path):
    alanine = str(STRUCTURES / "alanine-dipeptide.pdb")
    write_campaign(tmp_path, systems=[{"id": "NA", "structure": alanine}, {"id": "nan", "structure": alanine}])
    assert sorted(load(tmp_path).systems) == ["NA", "nan"]


def test_empty_trailing_columns_of_a_spreadsheet_export_are_ignored(tmp_path):
    write_campaign(tmp_path)
    alanine = STRUCTURES / "alanine-dipeptide.pdb"
    (tmp_path / "config" / "systems.tsv").write_text(f"id\tstructure\treplicas\t\t\nala\t{alanine}\t2\t\t\n")
    assert [s.name for s in load(tmp_path).simulations] == ["ala/r1", "ala/r2"]


def test_home_and_environment_variables_in_paths_are_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("MDCAMPAIGN_TEST_WORK", str(tmp_path / "work"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    write_campaign(tmp_path, store="$MDCAMPAIGN_TEST_WORK/store", scratch="~/scratch")
    campaign = load(tmp_path)
    assert campaign.store == f"{tmp_path}/work/store"
    assert campaign.scratch_here == f"{tmp_path}/home/scratch"
    # another site's scratch is expanded on that site, not here (its variables may not exist here)
    write_campaign(
        tmp_path,
        site="here",
        scratch="$MDCAMPAIGN_UNSET_HERE/x",
        sites={"here": {"scratch": "${MDCAMPAIGN_TEST_WORK}/md"}, "there": {"scratch": "$ELSEWHERE/md"}},
    )
    assert load(tmp_path).scratch_here == f"{tmp_path}/work/md"


def test_a_remote_store_is_not_expanded_here(tmp_path):
    write_campaign(tmp_path, store="cluster:/work/me/store")
    assert load(tmp_path).store == "cluster:/work/me/store"


def test_nested_command_line_values_are_read_as_numbers():
    from mdcampaign.configuration import command_line_values

    given = {
        "protocol": {"segment_ns": "0.02", "replicas": "3", "hmr": "false", "forcefield": "amber14"},
        "platform": "CPU",
    }
    assert command_line_values(given) == {
        "protocol": {"segment_ns": 0.02, "replicas": 3, "hmr": False, "forcefield": "amber14"},
        "platform": "CPU",
    }


def test_na_in_an_optional_column_keeps_the_default(tmp_path):
    alanine = STRUCTURES / "alanine-dipeptide.pdb"
    write_campaign(tmp_path)
    (tmp_path / "config" / "systems.tsv").write_text(
        f"id\tstructure\treplicas\ttemperature_K\nala\t{alanine}\tNA\tNA\n"
    )
    campaign = load(tmp_path)
    assert campaign.systems["ala"].replicas == 1 and campaign.systems["ala"].protocol.temperature_K == 300.0


def test_whole_numbers_given_as_decimals_are_integers(tmp_path):
    write_campaign(tmp_path, packing={"slots": 2.0, "threads": 1.0}, protocol={"seed": 5.0})
    campaign = load(tmp_path)
    assert campaign.packing.slots == 2 and isinstance(campaign.packing.slots, int)
    assert isinstance(campaign.defaults.seed, int)
