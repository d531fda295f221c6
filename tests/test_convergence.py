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


# -- pulling sites ----------------------------------------------------------------------


def test_pulling_sites_read_the_decision_from_the_listing_and_keep_replicas_in_step(tmp_path):
    """The listing of the claims carries the decisions to stop (one store call): a site's
    view ends a stopped system's simulations at the decision, and until a decision, a
    replica ahead of the others waits for them."""
    from mdcampaign.campaign import load_campaign
    from mdcampaign.claims import ClaimBoard
    from mdcampaign.pulling import SiteView

    sites = {"a": {"ns_per_day": 100, "capacity": 1}, "b": {"ns_per_day": 100, "capacity": 1}}
    directory = write_campaign(
        tmp_path / "c",
        systems=[{"id": "ala", "structure": ALA, "replicas": 2}, {"id": "free", "structure": ALA, "replicas": 2}],
        protocol={"target_ns": 0.008, "until_standard_error": 1.0},
        sites=sites,
        site="a",
        store=str(tmp_path / "s"),
    )
    config = yaml.safe_load((directory / "config/config.yaml").read_text())
    config["protocol"]["until_observable"] = "rg_nm"
    campaign = load_campaign(config, base_dir=directory)
    store = LocalStore(tmp_path / "s")
    for simulation, segments in (("ala/r1", 2), ("ala/r2", 1)):  # stored (claims count the store itself)
        for segment in range(segments):
            folder = store.root / layout.store_segments(simulation) / layout.segment_name(segment)
            folder.mkdir(parents=True)
            (folder / layout.MANIFEST).write_text("{}")
    claims = ClaimBoard(store, campaign.pulling.lease_seconds)
    first = claims.claim("ala/r1", 4, "b+elsewhere-1.s0").lease
    claims.published(first, 2, "b", 250.0)
    claims.release(first)
    second = claims.claim("ala/r2", 4, "b+elsewhere-1.s1").lease
    claims.published(second, 1, "b", 250.0)
    claims.release(second)
    view = SiteView(campaign, claims.listing())
    assert view.stops == {} and view.segments(campaign.simulation("ala", 1)) == 4
    claimable = [s.name for s in view.claimable()]
    assert "ala/r2" in claimable and "ala/r1" not in claimable, "r1 is a segment ahead of r2: it waits"
    goal = view.goals["ala"]
    series = [np.full(40, 0.5), np.full(40, 0.51)]
    DecisionBoard(store, "ala", goal).decide(judge(goal, series, 2), "b")
    listing = claims.listing()
    assert listing.stopped_systems({"ala": goal}) == {"ala": 2}
    view = SiteView(campaign, listing)
    assert view.stops == {"ala": 2} and view.segments(campaign.simulation("ala", 1)) == 2
    claimable = [s.name for s in view.claimable()]
    assert "ala/r1" in claimable, "stopped at 2: r1 is due its analysis"
    again = claims.claim("ala/r1", 2, "a+here-1.s0", planned=4)
    assert (again.outcome, again.done) == ("claimed", 2)
    claims.published(again.lease, 2, "a", analyzed=True)
    claims.release(again.lease)
    analysis = store.root / layout.store_analysis("ala/r1", 4)  # named after the cap
    analysis.parent.mkdir(parents=True)
    analysis.write_text("{}")
    assert claims.claim("ala/r1", 2, "a+here-1.s0", planned=4).outcome == "complete"
    view = SiteView(campaign, claims.listing())
    assert view.complete(campaign.simulation("ala", 1)) and not view.complete(campaign.simulation("ala", 2))
    assert json.loads(json.dumps(listing.to_json()))["stops"] == {f"ala/{goal.key}": 2}


@pytest.mark.slow
def test_two_pulling_sites_stop_a_settled_system_early_and_run_an_open_one_to_its_cap(tmp_path):
    """Real MD on two sites pulling from one store at once: `settled` stops at its
    decision (filed once, whichever site judged it), `open` runs to its cap; each site
    ends by itself, and both report the same decision."""
    from conftest import REPO, SNAKEFILE

    store = tmp_path / "store"
    sites = {name: {"scratch": str(tmp_path / f"scratch-{name}"), "ns_per_day": 100, "capacity": 1} for name in "ab"}
    systems = [
        {"id": "settled", "structure": ALA, "replicas": 2, "until_standard_error": 1.0, "until_min_ns": 0.004},
        {"id": "open", "structure": ALA, "replicas": 2, "until_standard_error": 1e-9},
    ]
    folders = {
        name: write_campaign(
            tmp_path / f"at-{name}",
            systems=systems,
            protocol={"target_ns": 0.008, "until_observable": "rg_nm", "until_standard_error": 1.0},
            store=str(store),
            sites=sites,
            site=name,
            pulling={"lease_minutes": 0.5, "poll_seconds": 1},
        )
        for name in sites
    }
    command = ["snakemake", "-s", str(SNAKEFILE), "--profile", str(REPO / "profiles" / "local")]
    runs = {
        name: subprocess.Popen(command, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name, folder in folders.items()
    }
    for name, run in runs.items():
        out, _ = run.communicate(timeout=900)
        assert run.returncode == 0, f"site {name}:\n{out[-5000:]}"
    decisions = [p for p in (store / layout.STORE_DECISIONS / "settled").glob("*.json")]
    assert len(decisions) == 1 and not (store / layout.STORE_DECISIONS / "open").exists()
    decision = json.loads(decisions[0].read_text())
    assert decision["segments"] == 2 and decision["converged"]
    for replica in (1, 2):
        sim = store / "sims" / "settled" / f"r{replica}"
        settled = json.loads((sim / "analysis" / "0004" / "analysis.json").read_text())
        assert settled["segments"] == 2 and "converged after 2 of 4 segments" in settled["stopped"]
        # in step: no replica ran a segment past the decision
        assert sorted(p.name for p in (sim / "segments").iterdir()) == ["0000", "0001"]
        for manifest in (sim / "segments").glob("*/manifest.json"):
            assert _started(manifest) < decision["decided_at"]
        open_ = json.loads(
            (store / "sims" / "open" / f"r{replica}" / "analysis" / "0004" / "analysis.json").read_text()
        )
        assert open_["segments"] == 4 and "stopped" not in open_
    ran = {json.loads(p.read_text())["site"] for p in store.glob("sims/*/r*/segments/*/manifest.json")}
    assert ran == {"a", "b"}, "both sites took work"
    for name, folder in folders.items():
        report = json.loads(
            subprocess.run(
                ["mdcampaign", "status", "--json", "--no-slurm"], cwd=folder, capture_output=True, text=True, check=True
            ).stdout
        )
        goals = {g["system"]: g for g in report["goals"]}
        assert goals["settled"]["converged"] and goals["settled"]["judged_at_ns"] == pytest.approx(0.004), name
        assert not goals["open"]["converged"], name
        states = {s["simulation"]: s for s in report["simulations"]}
        for replica in (1, 2):
            state = states[f"settled/r{replica}"]
            assert (state["state"], state["target_ns"]) == ("done", pytest.approx(0.004)), state
        summary = pd.read_csv(folder / layout.SUMMARY_TABLE, sep="\t")
        assert sorted(summary.loc[summary.system == "settled", "segments"]) == [2, 2], name
