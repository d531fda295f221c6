"""The plan's input functions, params and time limits (mdcampaign.planning), called
directly as Snakemake calls them while it plans; the workflow tests run them for real."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from conftest import write_campaign
from mdcampaign import layout
from mdcampaign.campaign import load_campaign
from mdcampaign.configuration import read_config_file
from mdcampaign.jobspec import JobSpec
from mdcampaign.planning import Plan


class Asked:
    """Records what the plan asks of Snakemake's checkpoints (the continue loop)."""

    def __init__(self):
        self.asked = []

    def __getattr__(self, name):
        return SimpleNamespace(get=lambda **wildcards: self.asked.append((name, wildcards)))


def plan_of(directory, **settings) -> tuple[Plan, Asked]:
    write_campaign(directory, **settings)
    config = read_config_file(directory / "config" / "config.yaml")
    campaign = load_campaign(config, "config/config.yaml", base_dir=directory)
    asked = Asked()
    return Plan(campaign, config, "config/config.yaml", asked), asked


@pytest.fixture
def in_campaign(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


class wildcards(dict):  # read like Snakemake's wildcards: by key and by attribute
    def __getattr__(self, name):
        return self[name]


def test_the_continue_loop_asks_for_the_next_segment_only(in_campaign):
    plan, asked = plan_of(in_campaign)
    records = plan.segment_records(wildcards(system="ala", replica="1", segments="0002"))
    assert records == [layout.segment_marker("ala", 1, 0), layout.segment_marker("ala", 1, 1)]
    assert asked.asked == [("fetch", {"system": "ala", "replica": 1, "segment": "0000"})]
    # segment 0 in the store: its manifest stands for it, and segment 1 is asked for
    record = in_campaign / layout.segment_record("ala", 1, 0)
    record.parent.mkdir(parents=True)
    record.write_text("{}")
    asked.asked.clear()
    records = plan.segment_records(wildcards(system="ala", replica="1", segments="0002"))
    assert records[0] == layout.segment_record("ala", 1, 0)
    assert asked.asked == [("fetch", {"system": "ala", "replica": 1, "segment": "0001"})]
    with pytest.raises(ValueError, match="has 2 segments"):
        plan.segment_records(wildcards(system="ala", replica="1", segments="0003"))


def test_a_finished_simulation_is_not_an_input_of_the_summary(in_campaign):
    plan, _ = plan_of(in_campaign)
    assert len(plan.summary_inputs(None)) == 3
    done = in_campaign / layout.completion_record("ala", 1, 2)
    done.parent.mkdir(parents=True)
    done.write_text("{}")
    assert layout.analysis_file("ala", 1, 2) not in plan.summary_inputs(None)
    assert len(plan.summary_inputs(None)) == 2


def test_segments_start_from_setup_then_from_what_stage_copied(in_campaign):
    plan, _ = plan_of(in_campaign)
    first = plan.simulate_inputs(wildcards(system="ala", replica="1", segment="0000"))
    assert first["setup"] == "results/systems/ala/setup.json"
    assert plan.simulate_inputs(wildcards(system="ala", replica="1", segment="0001")) == {
        "staged": layout.scratch_area("scratch", "input")
    }
    with pytest.raises(ValueError, match="not staged"):
        plan.stage_inputs(wildcards(system="ala", replica="1", segment="0000"))


def test_a_job_gets_one_spec_that_it_reads_back(in_campaign):
    plan, _ = plan_of(in_campaign)
    spec = plan.job_spec(protocol=plan.protocol_of, seed=plan.seed_of, final=plan.last_input)
    text = spec(wildcards(system="ala", replica="2", segment="0001"), ["a", "b"])
    read = JobSpec.from_json(text)
    assert read.params["seed"] == plan.campaign.simulation("ala", 2).seed and read.params["final"] == "b"
    assert read.config == plan.job_config and json.loads(text)["wildcards"]["replica"] == "2"
    assert plan.job_command("simulate", runtime=True).endswith("simulate {params.job:q} {threads} {resources.runtime}")


def test_time_limits_grow_with_retries_and_stop_at_the_partitions_limit(in_campaign):
    plan, _ = plan_of(in_campaign, max_runtime_minutes=30, protocol={"segment_ns": 0.5, "target_ns": 1.0})
    segment = wildcards(system="ala", replica="1", segment="0000")
    first, second = plan.simulate_runtime(segment, 1), plan.simulate_runtime(segment, 2)
    assert 0 < first <= second <= 30
    packed, _ = plan_of(in_campaign / "packed", packing={"slots": 2, "threads": 1})
    batch = next(iter(packed.members))
    assert packed.pack_runtime(wildcards(batch=batch), 1) >= 1
    assert {m["system"] for m in packed.pack_members(wildcards(batch=batch))} <= {"ala", "ala-water"}
