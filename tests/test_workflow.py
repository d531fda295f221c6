"""The whole workflow, end to end with the local profile: real Snakemake, real
OpenMM, real files. Then extend a target, add a replica, and kill things."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import REPO, SNAKEFILE, assert_complete, executed_jobs, snakemake, write_systems

pytestmark = pytest.mark.slow


def test_campaign_end_to_end_then_extend_and_add(tiny_campaign):
    # the two systems as a group: the solvated one compared with the one in implicit solvent
    systems = [
        {"id": "ala", "structure": REPO / "config/structures/alanine-dipeptide.pdb", "replicas": 2},
        {
            "id": "ala-water",
            "structure": REPO / "config/structures/alanine-dipeptide.pdb",
            "replicas": 1,
            "solvent": "explicit",
            "forcefield": "amber14",
        },
    ]
    systems[0].update(group="solvent", reference="true")
    systems[1].update(group="solvent")
    write_systems(tiny_campaign, systems)
    snakemake(tiny_campaign)
    assert_complete(tiny_campaign, {"ala/r1": 0.004, "ala/r2": 0.004, "ala-water/r1": 0.004})
    assert (tiny_campaign / "results" / "summary.png").stat().st_size > 10_000
    assert not any((tiny_campaign / "scratch").rglob("*.xtc")), "scratch is cleaned up after fetch"
    # the features for Markov models load with NumPy alone, one row per frame
    features = tiny_campaign / "results" / "sims" / "ala" / "r1" / "analysis" / "0002" / "features.npz"
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import numpy, sys; d = numpy.load(sys.argv[1], allow_pickle=False); "
            "print(d['dihedrals'].shape, len(d['time_ps']), len(d['rmsd_nm']), d['dihedral_names'].tolist())",
            str(features),
        ],
        capture_output=True,
        text=True,
    )
    assert loaded.returncode == 0, loaded.stderr
    summary = pd.read_csv(tiny_campaign / "results" / "summary.tsv", sep="\t").set_index("simulation")
    frames = int(summary.loc["ala/r1", "frames"])
    assert loaded.stdout.startswith(f"({frames}, 4) {frames} {frames} ['sin(phi ALA2)', 'cos(phi ALA2)'"), loaded.stdout
    # the group's comparison: every observable and residue against the reference; one
    # replica of ala-water gives no error bar, which the table says
    compared = pd.read_csv(tiny_campaign / "results" / "comparisons.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert set(compared["system"]) == {"ala-water"} and set(compared["reference"]) == {"ala"}
    assert {"rmsd_nm", "rg_nm", "temperature_K", "rmsf_nm"} <= set(compared["observable"])
    assert (compared["differs"] == "n/a").all() and compared["note"].str.len().gt(0).all()
    assert (tiny_campaign / "results" / "comparisons.png").stat().st_size > 10_000

    again = snakemake(tiny_campaign, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr

    # Continue: raise the target of one system; only its new segments run.
    before = {p: p.stat().st_mtime_ns for p in (tiny_campaign / "results" / "sims").rglob("trajectory.xtc")}
    systems[0]["target_ns"] = 0.008
    write_systems(tiny_campaign, systems)
    # planning holds the next segment of each affected simulation; the continue
    # decision adds the one after when it is fetched
    plan = executed_jobs(snakemake(tiny_campaign, "-n").stdout)
    assert plan == {"stage": 2, "simulate": 2, "fetch": 2, "analyze": 2, "summary": 1, "all": 1}
    snakemake(tiny_campaign)
    assert {p: p.stat().st_mtime_ns for p in before} == before, "finished segments were rewritten"
    assert len(list((tiny_campaign / "logs" / "simulate").rglob("*.log"))) == 6 + 4, "only the new segments ran"
    assert_complete(tiny_campaign, {"ala/r1": 0.008, "ala/r2": 0.008, "ala-water/r1": 0.004})

    # Add a replica: only the new simulation runs (its system is already set up).
    systems[1]["replicas"] = 2
    write_systems(tiny_campaign, systems)
    plan = executed_jobs(snakemake(tiny_campaign, "-n").stdout)
    assert plan == {"simulate": 1, "fetch": 1, "analyze": 1, "summary": 1, "all": 1}, "segment 0 needs no stage"
    snakemake(tiny_campaign)
    assert_complete(tiny_campaign, {"ala/r1": 0.008, "ala/r2": 0.008, "ala-water/r1": 0.004, "ala-water/r2": 0.004})

    # A simulation whose results were deleted (here the store is results/ itself) is
    # simply run again by the same command.
    shutil.rmtree(tiny_campaign / "results" / "sims" / "ala-water" / "r2")
    plan = executed_jobs(snakemake(tiny_campaign, "-n").stdout)
    assert plan == {"simulate": 1, "fetch": 1, "analyze": 1, "summary": 1, "all": 1}, plan
    snakemake(tiny_campaign)
    assert_complete(tiny_campaign, {"ala/r1": 0.008, "ala/r2": 0.008, "ala-water/r1": 0.004, "ala-water/r2": 0.004})


def test_a_simulation_whose_records_were_moved_away_is_made_again_keeping_what_the_store_holds(tmp_path):
    """Its records in results/ moved away, a simulation is planned again by the plain
    command (the summary's own outputs being there does not hide it); its segments are
    run again, on another platform here, so they differ, and each one the store already
    holds is kept as it is: the records come back from the store's manifests, and the
    next segment continues from the stored one."""
    import hashlib

    from conftest import write_campaign

    store = tmp_path / "store"
    campaign = write_campaign(
        tmp_path / "campaign",
        systems=[{"id": "ala", "structure": REPO / "config/structures/alanine-dipeptide.pdb", "replicas": 1}],
        store=str(store),
    )
    snakemake(campaign)

    def stored() -> dict:
        return {
            str(p.relative_to(store)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((store / "sims").rglob("*"))
            if p.is_file() and "analysis" not in p.parts
        }

    before = stored()
    records = {
        p.name: json.loads(p.read_text())["fetched_at"]
        for p in (campaign / "results" / "sims" / "ala" / "r1" / "segments").glob("*/manifest.json")
    }
    shutil.move(campaign / "results" / "sims" / "ala" / "r1", tmp_path / "moved-away")
    config = campaign / "config" / "config.yaml"
    config.write_text(config.read_text().replace("platform: CPU", "platform: Reference"))
    plan = executed_jobs(snakemake(campaign, "-n").stdout)
    assert plan == {"simulate": 1, "fetch": 1, "analyze": 1, "summary": 1, "all": 1}, plan
    snakemake(campaign)
    assert stored() == before, "a segment in the store was replaced"
    fetch_logs = "\n".join(p.read_text() for p in (campaign / "logs" / "fetch").rglob("*.log"))
    assert "ala/r1 segment 0000: the store already holds a copy of it" in fetch_logs, fetch_logs[-2000:]
    assert {
        p.name: json.loads(p.read_text())["fetched_at"]
        for p in (campaign / "results" / "sims" / "ala" / "r1" / "segments").glob("*/manifest.json")
    } == records, "the records are the store's"
    assert_complete(campaign, {"ala/r1": 0.004}, store=store)


def wait_for(predicate, timeout=300.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_killing_a_simulation_mid_segment_then_rerunning_completes_exactly(tmp_path):
    from conftest import write_campaign

    campaign = write_campaign(
        tmp_path / "campaign",
        systems=[{"id": "ala", "structure": REPO / "config/structures/alanine-dipeptide.pdb", "replicas": 1}],
        protocol={"segment_ns": 0.02, "target_ns": 0.04, "checkpoint_interval_ps": 1.0},
    )
    process = subprocess.Popen(
        ["snakemake", "-s", str(SNAKEFILE), "--profile", str(REPO / "profiles" / "local")],
        cwd=campaign,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # the runner records its pid in its work folder: kill exactly that process
    runners = lambda: list((campaign / "scratch").rglob("work/runner.json"))  # noqa: E731
    checkpoints = lambda: list((campaign / "scratch").rglob("work/checkpoint.chk"))  # noqa: E731
    assert wait_for(lambda: (checkpoints() and runners()) or process.poll() is not None)
    pid = json.loads(runners()[0].read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    output, _ = process.communicate(timeout=300)
    assert process.returncode != 0
    assert "Error in rule simulate" in output
    assert "logs/simulate/ala/r1/0000.log" in output

    rerun = snakemake(campaign)
    log = (campaign / "logs" / "simulate" / "ala" / "r1" / "0000.log").read_text()
    assert "resumed from checkpoint" in log
    assert_complete(campaign, {"ala/r1": 0.04})
    assert "Nothing to be done" in snakemake(campaign, "-n").stderr + snakemake(campaign, "-n").stdout
    assert rerun.returncode == 0
