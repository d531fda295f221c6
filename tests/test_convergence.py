"""Continue until converged (convergence.py): the goal, the verdict, the decision filed
once in the store, and a real campaign in which one system stops early and another
runs to its cap."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import STRUCTURES, executed_jobs, snakemake, write_campaign
from mdcampaign import layout
from mdcampaign.campaign import load_campaign
from mdcampaign.convergence import DecisionBoard, Goal, judge, segments_wanted
from mdcampaign.errors import CampaignError
from mdcampaign.store import LocalStore

ALA = str(STRUCTURES / "alanine-dipeptide.pdb")


def goal(**values) -> Goal:
    return Goal(
        **{"observable": "rg_nm", "standard_error": 0.01, "min_ns": 0.0, "segment_ns": 1.0, "replicas": 2, **values}
    )


def test_a_goal_comes_from_the_protocol_and_a_changed_goal_is_a_new_decision(tmp_path):
    campaign = load_campaign(
        _config(tmp_path, {"until": {"observable": "rmsd_mean_nm", "standard_error": 0.005, "min_ns": 0.004}}),
        str(tmp_path / "config/config.yaml"),
        tmp_path,
    )
    system = campaign.systems["ala"]
    found = Goal.of(system.protocol, system.replicas)
    assert (found.observable, found.standard_error, found.min_ns, found.replicas) == ("rmsd_nm", 0.005, 0.004, 2)
    assert found.min_segments == 2
    assert "until_observable" not in system.protocol.record(), "when to stop is not how to simulate"
    assert goal().key != goal(standard_error=0.02).key


def test_the_verdict_waits_for_min_ns_and_stops_at_the_goal():
    rng = np.random.default_rng(1)
    series = [0.5 + 0.01 * rng.standard_normal(200) for _ in range(3)]
    early = judge(goal(min_ns=3.0), series, 2)
    assert not early.converged and "not before 3 ns" in early.reason
    settled = judge(goal(standard_error=0.01), series, 2)
    assert settled.converged and settled.error <= 0.01 and settled.simulated_ns == 2.0
    strict = judge(goal(standard_error=1e-6), series, 2)
    assert not strict.converged and "> goal" in strict.reason
    few = judge(goal(), [np.ones(3), np.ones(3)], 1)
    assert not few.converged and few.error is None and "too few frames" in few.reason


def _stored_segment(store: Path, simulation: str, segment: int, values) -> None:
    folder = store / layout.store_segments(simulation) / layout.segment_name(segment)
    folder.mkdir(parents=True)
    frames = np.arange(len(values)) + segment * len(values)
    pd.DataFrame({"time_ps": frames, "rg_nm": values}).to_csv(folder / layout.SEGMENT_OBSERVABLES, index=False)


def test_the_store_says_the_boundary_every_replica_reached_and_keeps_the_first_decision(tmp_path):
    store = LocalStore(tmp_path / "store")
    board = DecisionBoard(store, "ala", goal())
    assert board.state() == (0, None)
    for segment in range(3):
        _stored_segment(store.root, "ala/r1", segment, np.full(20, 0.5 + segment))
    _stored_segment(store.root, "ala/r2", 0, np.full(20, 0.7))
    assert board.state() == (1, None), "r2 has one segment: the boundary is 1"
    _stored_segment(store.root, "ala/r2", 1, np.full(20, 0.9))
    assert board.state()[0] == 2
    r1, r2 = board.series(2)
    assert len(r1) == len(r2) == 40 and r1[-1] == 1.5 and r2[0] == 0.7
    first = judge(goal(standard_error=10.0), [r1 + 0.01 * np.sin(np.arange(40)), r2], 2)
    decided = board.decide(first, "here")
    again = board.decide(judge(goal(standard_error=10.0), [r1, r2], 3), "elsewhere")
    assert decided["segments"] == again["segments"] == 2 and again["site"] == "here", "the first decision stands"
    assert board.state() == (2, decided)


@pytest.mark.parametrize(
    ("protocol", "replicas", "config", "message"),
    [
        ({"until_observable": "rg_nm"}, 2, {}, "needs its goal: until_standard_error above 0"),
        (
            {"until_observable": "rg_nm", "until_standard_error": 0.1, "until_min_ns": 1.0},
            2,
            {},
            "longer than target_ns",
        ),
        ({"until_observable": "rg_nm", "until_standard_error": 0.1}, 1, {}, "needs at least 2 replicas"),
        (
            {"until_observable": "rg_nm", "until_standard_error": 0.1},
            2,
            {"sites": {"a": {"ns_per_day": 10}}, "pulling": {"enabled": True}, "site": "a"},
            "does not work with pulling sites yet",
        ),
        ({"until": {"observable": "rg_nm", "error": 0.1}}, 2, {}, "protocol.until: expected a mapping with"),
        ({"until_observable": "energy"}, 2, {}, "until_observable"),
    ],
)
def test_a_goal_that_cannot_work_is_refused_in_one_line(tmp_path, protocol, replicas, config, message):
    with pytest.raises(CampaignError, match=message) as error:
        load_campaign(_config(tmp_path, protocol, replicas, **config), str(tmp_path / "config/config.yaml"), tmp_path)
    assert "\n" not in str(error.value)


def _config(directory: Path, protocol: dict, replicas: int = 2, **config) -> dict:
    write_campaign(
        directory, systems=[{"id": "ala", "structure": ALA, "replicas": replicas}], protocol=protocol, **config
    )
    return yaml.safe_load((directory / "config/config.yaml").read_text())


def _started(manifest: Path) -> float:
    runs = json.loads(manifest.read_text())["info"]["runs"]
    return min(datetime.fromisoformat(run["started_at"]).timestamp() for run in runs)


def test_a_settled_system_stops_early_while_an_open_one_runs_to_its_cap(tmp_path):
    """Real MD: `settled` has a goal any two replicas meet (Rg within 1 nm) after
    0.004 ns, `open` one nobody meets; both are capped at 4 segments."""
    campaign = write_campaign(
        tmp_path / "campaign",
        systems=[
            {"id": "settled", "structure": ALA, "replicas": 2, "until_standard_error": 1.0, "until_min_ns": 0.004},
            {"id": "open", "structure": ALA, "replicas": 2, "until_standard_error": 1e-9},
        ],
        protocol={"target_ns": 0.008, "until_observable": "rg_nm", "until_standard_error": 1.0},
    )
    snakemake(campaign, timeout=900)
    store = campaign / "results"
    for replica in (1, 2):
        settled = json.loads((campaign / layout.analysis_file("settled", replica, 4)).read_text())
        assert settled["segments"] == 2 and settled["simulated_ns"] == pytest.approx(0.004)
        assert "converged after 2 of 4 segments" in settled["stopped"]
        assert settled["statistics"]["rg_nm"]["mean"] is not None
        open_ = json.loads((campaign / layout.analysis_file("open", replica, 4)).read_text())
        assert open_["segments"] == 4 and "stopped" not in open_
        observables = pd.read_csv(store / layout.store_segments(f"settled/r{replica}") / "0000" / "observables.csv")
        assert list(observables.columns[:3]) == ["time_ps", "rmsd_nm", "rg_nm"] and len(observables) == 20

    def decided(system):  # beside each decision (the store is results/ here): this site's progress
        return [p for p in (store / layout.STORE_DECISIONS / system).glob("*.json") if ".progress" not in p.name]

    decisions = decided("settled")
    assert len(decisions) == 1 and not decided("open")
    decision = json.loads(decisions[0].read_text())
    assert decision["segments"] == 2 and decision["converged"] and decision["error"] <= 1.0
    # no segment of the stopped system started after its decision
    for manifest in (campaign / "results/sims/settled").glob("r*/segments/*/manifest.json"):
        assert _started(manifest) < decision["decided_at"]
    goals = json.loads(
        subprocess.run(
            ["mdcampaign", "status", "--json", "--no-slurm"], cwd=campaign, capture_output=True, text=True, check=True
        ).stdout
    )["goals"]
    by_system = {g["system"]: g for g in goals}
    assert by_system["settled"]["converged"] and by_system["settled"]["judged_at_ns"] == pytest.approx(0.004)
    assert not by_system["open"]["converged"] and "> goal 1e-09" in by_system["open"]["reason"]
    text = subprocess.run(["mdcampaign", "status", "--no-slurm"], cwd=campaign, capture_output=True, text=True).stdout
    assert "settled: rg_nm converged, stopped at 0.004 ns" in text
    summary = pd.read_csv(campaign / layout.SUMMARY_TABLE, sep="\t")
    assert sorted(summary.loc[summary.system == "settled", "segments"]) == [2, 2]
    assert segments_wanted("settled", 4, Goal.from_record(decision["goal_record"]), campaign) == 2
    validated = subprocess.run(["mdcampaign", "validate"], cwd=campaign, capture_output=True, text=True, check=True)
    assert "0.032 ns in total at most (2 systems stop when converged)" in validated.stdout
    again = snakemake(campaign)
    assert executed_jobs(again) == {}, "a re-run reads the same decision and has nothing to do"
    assert (campaign / layout.completion_record("settled", 1, 2)).exists(), "complete: named after what it covers"
