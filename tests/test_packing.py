"""Packing: several simulations side by side in one job, each slot pinned to its own
cores (or GPU), the job going on with the next waiting segment; exact after a kill
of one slot, and one slot's failure does not stop the others. Real OpenMM, real
processes. (On the real test Slurm cluster: tests/test_slurm.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from conftest import REPO, assert_complete, exploding_system, make_profile, run_with_profile, write_campaign
from mdcampaign.slots import Packing, batches, slot_plan

PACKED = {"packing": {"slots": 2, "threads": 1}}


def test_each_slot_gets_its_own_cores():
    plan = slot_plan(Packing.of(slots=4, threads=12), list(range(48)))
    assert [slot.cores for slot in plan] == [tuple(range(12 * i, 12 * (i + 1))) for i in range(4)]
    assert all(slot.device is None for slot in plan)
    assert plan[2].environment() == {"MDCAMPAIGN_SLOT": "2", "MDCAMPAIGN_SLOT_CORES": ",".join(map(str, range(24, 36)))}


def test_one_slot_per_gpu_and_several_slots_sharing_a_gpu():
    one_each = slot_plan(Packing.of(slots=4, threads=1, gpus=4), list(range(96)))
    assert [slot.device for slot in one_each] == [0, 1, 2, 3]
    two_each = slot_plan(Packing.of(slots=8, threads=2, gpus=4), list(range(16)))
    assert [slot.device for slot in two_each] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert len({core for slot in two_each for core in slot.cores}) == 16, "no core is shared"
    assert two_each[5].environment()["MDCAMPAIGN_SLOT_DEVICE"] == "1"


def test_too_few_cores_pins_nobody_rather_than_sharing_a_core():
    plan = slot_plan(Packing.of(slots=4, threads=2), [0, 1, 2])
    assert all(slot.cores is None for slot in plan)
    assert "MDCAMPAIGN_SLOT_CORES" not in plan[0].environment()


def test_batches_are_one_jobs_worth_and_named_after_their_members():
    names = [f"sys{i}/r1" for i in range(5)]
    first = batches(names, 2)
    assert len(set(first.values())) == 3
    assert first["sys0/r1"] == first["sys1/r1"] != first["sys2/r1"]
    assert batches(names, 2) == first, "the same simulations always form the same batch"
    assert Packing.of(slots=3).batch_size == 6 and Packing.of(slots=3, simulations=4).batch_size == 4


def two_replicas(tmp_path: Path, **protocol) -> Path:
    """Alanine dipeptide in implicit solvent, two replicas: one per slot."""
    return write_campaign(
        tmp_path / "campaign",
        systems=[{"id": "ala", "structure": REPO / "config/structures/alanine-dipeptide.pdb", "replicas": 2}],
        protocol={"frame_interval_ps": 0.2, **protocol},
    )


def intervals(campaign: Path, simulation: str) -> list[tuple[float, float, dict]]:
    """(start, end, slot) of every run of every segment of a simulation, from the records."""
    spans = []
    for manifest in sorted((campaign / "results" / "sims" / simulation / "segments").glob("*/manifest.json")):
        for run in json.loads(manifest.read_text())["info"]["runs"]:
            start = datetime.fromisoformat(run["started_at"]).timestamp()
            spans.append((start, start + run["wall_seconds"], run["slot"]))
    return spans


@pytest.mark.slow
def test_a_packed_job_runs_two_simulations_side_by_side_in_pinned_slots(tmp_path):
    campaign = two_replicas(tmp_path, segment_ns=0.01, target_ns=0.03, checkpoint_interval_ps=1.0)
    result = run_with_profile(campaign, make_profile(tmp_path, "local", config=PACKED))
    assert_complete(campaign, {"ala/r1": 0.03, "ala/r2": 0.03})
    rounds = list((campaign / "results" / "packs").glob("*/round-*.json"))
    assert len(rounds) == 1, "one job ran every segment of both simulations"
    record = json.loads(rounds[0].read_text())
    assert {s["state"] for s in record["simulations"].values()} == {"done"}
    assert len(record["segments"]) == 6 and record["busy_fraction"] > 0.5
    first, second = intervals(campaign, "ala/r1"), intervals(campaign, "ala/r2")
    slots = {run[2]["slot"] for run in first} | {run[2]["slot"] for run in second}
    assert slots == {0, 1}, "each simulation in its own slot"
    cores = {tuple(run[2]["cores"]) for run in first + second}
    assert len(cores) == 2 and all(len(c) == 1 for c in cores), "each slot pinned to its own core"
    overlap = min(first[-1][1], second[-1][1]) - max(first[0][0], second[0][0])
    assert overlap > 0, "the two simulations ran at the same time"
    assert "pack" in result.stdout + result.stderr


def runner_of(campaign: Path, simulation: str) -> int | None:
    for runner in (campaign / "scratch" / simulation).glob("*/work/runner.json"):
        try:
            return json.loads(runner.read_text())["pid"]
        except (ValueError, KeyError):
            continue
    return None


@pytest.mark.slow
def test_kill_9_of_one_slot_leaves_the_other_running_and_resumes_exactly(tmp_path):
    campaign = two_replicas(tmp_path, segment_ns=0.1, target_ns=0.1, checkpoint_interval_ps=2.0)
    profile = make_profile(tmp_path, "local", config=PACKED)
    process = subprocess.Popen(
        ["snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "--profile", str(profile)],
        cwd=campaign,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 300
        victim = None
        while time.time() < deadline and process.poll() is None:
            checkpointed = list((campaign / "scratch" / "ala" / "r1").glob("*/work/checkpoint.chk"))
            victim = runner_of(campaign, "ala/r1") if checkpointed else None
            if victim and runner_of(campaign, "ala/r2"):
                break
            time.sleep(0.2)
        assert victim, "both slots were running"
        report = json.loads(
            subprocess.run(
                ["mdcampaign", "status", "--json", "--no-slurm"], cwd=campaign, capture_output=True, text=True
            ).stdout
        )
        running = {s["simulation"]: s["slot"] for s in report["simulations"] if s["state"] == "running"}
        assert sorted(running.values()) == [0, 1], f"status shows each running simulation's slot: {running}"
        os.kill(victim, signal.SIGKILL)
        output, _ = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    # the job went on (the other slot finished), and the batch's next job resumed the killed one
    assert process.returncode == 0, output[-3000:]
    first_job = json.loads(next((campaign / "results" / "packs").glob("*/round-0.json")).read_text())
    assert first_job["simulations"]["ala/r1"]["state"] == "failed"
    assert "killed by SIGKILL" in first_job["simulations"]["ala/r1"]["failure"]
    assert first_job["simulations"]["ala/r2"]["state"] == "done"
    survivor = json.loads((campaign / "results/sims/ala/r2/segments/0000/manifest.json").read_text())
    assert survivor["info"]["runs"][0]["stop_reason"] is None, "the other slot finished its segment undisturbed"
    assert "resumed from checkpoint" in (campaign / "logs/simulate/ala/r1/0000.log").read_text()
    assert_complete(campaign, {"ala/r1": 0.1, "ala/r2": 0.1})


@pytest.mark.slow
def test_one_exploding_system_in_a_packed_job_does_not_stop_the_other(tmp_path):
    directory = tmp_path / "campaign"
    directory.mkdir()
    campaign = write_campaign(
        directory,
        systems=[
            {"id": "ala", "structure": REPO / "config/structures/alanine-dipeptide.pdb", "replicas": 1},
            exploding_system(directory),
        ],
        protocol={"segment_ns": 0.01, "target_ns": 0.02, "frame_interval_ps": 0.2, "checkpoint_interval_ps": 1.0},
    )
    result = run_with_profile(campaign, make_profile(tmp_path, "local", config=PACKED), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Error in rule pack" in output and "hot/r1: simulate of segment 0000 failed" in output
    assert len(list((campaign / "results/sims/ala/r1/segments").glob("*/manifest.json"))) == 2
    status = json.loads(
        subprocess.run(
            ["mdcampaign", "status", "--json", "--no-slurm"], cwd=campaign, capture_output=True, text=True
        ).stdout
    )
    states = {s["simulation"]: s for s in status["simulations"]}
    assert states["hot/r1"]["state"] == "failed"
    assert "logs/simulate/hot/r1/0000.log" in states["hot/r1"]["failure"]["log"]
    assert states["ala/r1"]["state"] in ("done", "fetched")


def test_tune_tries_packings_that_share_the_cores_evenly():
    from mdcampaign.tune import candidates

    assert [(p.slots, p.threads) for p in candidates(48, 0)] == [
        (1, 48),
        (2, 24),
        (4, 12),
        (8, 6),
        (16, 3),
        (32, 1),
        (48, 1),
    ]
    assert [(p.slots, p.threads) for p in candidates(2, 0)] == [(1, 2), (2, 1)]
    assert [(p.slots, p.threads, p.gpus) for p in candidates(16, 4)] == [(4, 4, 4), (8, 2, 4), (16, 1, 4)]


@pytest.mark.slow
def test_tune_measures_packings_of_a_set_up_system(tmp_path, prepared_ala):
    setup, protocol = prepared_ala
    campaign = write_campaign(
        tmp_path / "campaign",
        systems=[{"id": "ala", "structure": REPO / "config/structures/alanine-dipeptide.pdb", "replicas": 1}],
    )
    target = campaign / "results" / "systems" / "ala"
    target.mkdir(parents=True)
    for name in ("system.xml", "state.xml"):
        (target / name).write_bytes((setup / name).read_bytes())
    (target / "setup.json").write_text(json.dumps({"atoms": 22, "protocol": protocol.__dict__}))
    result = subprocess.run(
        ["mdcampaign", "tune", "--seconds", "1", "--cores", "2"], cwd=campaign, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "ala (22 atoms): 1 slots x 2 threads" in result.stdout
    assert "ala (22 atoms): 2 slots x 1 threads" in result.stdout
    assert "ala: best" in result.stdout and "packing: {slots:" in result.stdout


@pytest.mark.slow
def test_kill_9_of_the_whole_packed_run_then_the_same_command_continues_exactly(tmp_path):
    campaign = two_replicas(tmp_path, segment_ns=0.04, target_ns=0.12, checkpoint_interval_ps=2.0)
    profile = make_profile(tmp_path, "local", config=PACKED)
    process = subprocess.Popen(
        ["snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "--profile", str(profile)],
        cwd=campaign,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        fetched = list(campaign.glob("results/sims/ala/r*/segments/*/manifest.json"))
        if fetched and list(campaign.glob("scratch/ala/r*/*/work/checkpoint.chk")):
            break
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # snakemake, the packed job and both slots, like a node crash
    process.wait(timeout=60)
    rerun = run_with_profile(campaign, profile)
    assert "cleared the lock left by a run that no longer exists" in rerun.stdout + rerun.stderr
    assert_complete(campaign, {"ala/r1": 0.12, "ala/r2": 0.12})


def test_a_slot_process_runs_on_its_own_cores():
    code = "import os; from mdcampaign.slots import pin_to_slot; pin_to_slot(); print(sorted(os.sched_getaffinity(0)))"
    core = max(os.sched_getaffinity(0))
    env = {**os.environ, **slot_plan(Packing.of(slots=1, threads=1), [core])[0].environment()}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"[{core}]"
