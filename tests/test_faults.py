"""Failures will happen: kill -9 at random moments, Snakemake itself interrupted or
killed, damaged checkpoints, full disks, two runs at once, an exploding system.
After each, running the same command again must finish with correct data.

Fast variants run by default; `pytest -m soak` runs the long random-kill soak (and
benchmarks/faults.py reports the same counts). Each trial is counted in the report
printed at the end of the test run."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import mdtraj
import numpy as np
import pandas as pd
import pytest

from conftest import (
    REPO,
    SNAKEFILE,
    assert_complete,
    executed_jobs,
    exploding_system,
    report,
    snakemake,
    write_campaign,
)
from mdcampaign import xtc
from mdcampaign.protocol import Protocol
from test_segment import assert_exact_segment, killed_after_two_checkpoints, segment_command, wait_for

KILL_PROTOCOL = {"segment_ns": 0.02, "target_ns": 0.02, "frame_interval_ps": 0.1, "checkpoint_interval_ps": 0.2}


def assert_energies_match_trajectory(work: Path, topology: Path):
    traj = mdtraj.load(str(work / "trajectory.xtc"), top=str(topology))
    energies = pd.read_csv(work / "energies.csv")
    assert len(energies) == traj.n_frames
    np.testing.assert_allclose(energies["time_ps"], traj.time, atol=1e-3)
    assert energies["step"].is_unique and energies["step"].is_monotonic_increasing


def kill_trial(
    setup_dir: Path, protocol: Protocol, work: Path, rng: random.Random, kills: int, at_checkpoint_write: bool = False
) -> int:
    """Kill the runner `kills` times at random moments (or while it writes a
    checkpoint), then let it finish; returns how many kills landed."""
    command = segment_command(setup_dir, protocol, work)
    landed = 0
    for _ in range(kills):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if at_checkpoint_write:
            wait_for(
                lambda process=process: any(work.glob(".checkpoint.chk.*.tmp")) or process.poll() is not None,
                timeout=60,
                interval=0.0005,
            )
        else:
            time.sleep(rng.uniform(0.3, 2.5))  # start-up takes ~1 s; the segment ~1-2 s more
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            landed += 1
        process.wait()
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return landed


def run_kill_trials(prepared_ala, tmp_path, trials: int, seed: int):
    setup_dir, base = prepared_ala
    protocol = Protocol(**{**base.__dict__, **KILL_PROTOCOL})
    rng = random.Random(seed)
    landed_total = 0
    for trial in range(trials):
        work = tmp_path / f"trial{trial}"
        targeted = trial % 3 == 0
        landed = kill_trial(setup_dir, protocol, work, rng, kills=3, at_checkpoint_write=targeted)
        landed_total += landed
        try:
            assert_exact_segment(work, setup_dir / "trajectory_topology.pdb", protocol)
            assert_energies_match_trajectory(work, setup_dir / "trajectory_topology.pdb")
            ok = True
        finally:
            report("kill -9 of simulate at random moments", f"trial {trial}", locals().get("ok", False))
    assert landed_total >= trials, "most kills must land while the segment runs"


def test_kill_9_at_random_moments_never_loses_or_duplicates_frames(prepared_ala, tmp_path):
    run_kill_trials(prepared_ala, tmp_path, trials=4, seed=2026)


@pytest.mark.slow
@pytest.mark.soak
def test_kill_9_soak(prepared_ala, tmp_path):
    run_kill_trials(prepared_ala, tmp_path, trials=25, seed=11)


def test_unreadable_checkpoints_and_a_short_trajectory_restart_the_segment(prepared_ala, tmp_path):
    setup_dir, base = prepared_ala
    protocol = Protocol(**{**base.__dict__, **KILL_PROTOCOL})
    work = tmp_path / "work"
    command = segment_command(setup_dir, protocol, work)
    killed_after_two_checkpoints(command, work)
    (work / "checkpoint.chk").write_bytes(b"garbage")
    (work / "checkpoint.prev.chk").write_bytes(os.urandom(5000))
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0 and "damaged" in result.stderr
    assert_exact_segment(work, setup_dir / "trajectory_topology.pdb", protocol)
    # a trajectory that lost frames its checkpoint covers is never trusted
    work2 = tmp_path / "work2"
    command2 = segment_command(setup_dir, protocol, work2)
    killed_after_two_checkpoints(command2, work2)
    xtc.truncate_frames(work2 / "trajectory.xtc", 1)
    result = subprocess.run(command2, capture_output=True, text=True)
    assert result.returncode == 0 and "are on disk" in result.stderr
    assert_exact_segment(work2, setup_dir / "trajectory_topology.pdb", protocol)
    report("damaged checkpoint or trajectory", "both checkpoints garbage", True)
    report("damaged checkpoint or trajectory", "trajectory shorter than its checkpoint", True)


# -- the whole campaign --------------------------------------------------------------------------


def long_campaign(directory: Path, systems=None) -> Path:
    return write_campaign(
        directory,
        systems=systems
        or [{"id": "ala", "structure": REPO / "config/structures/alanine-dipeptide.pdb", "replicas": 2}],
        protocol={"segment_ns": 0.02, "target_ns": 0.04, "frame_interval_ps": 0.2, "checkpoint_interval_ps": 1.0},
    )


def start_snakemake(directory: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["snakemake", "-s", str(SNAKEFILE), "--profile", str(REPO / "profiles" / "local"), *args],
        cwd=directory,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def running_checkpoint(directory: Path) -> bool:
    return any((directory / "scratch").rglob("work/checkpoint.chk"))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
def test_snakemake_interrupted_mid_campaign_then_rerun_completes(tmp_path, how):
    campaign = long_campaign(tmp_path / "campaign")
    process = start_snakemake(campaign)
    assert wait_for(lambda: running_checkpoint(campaign) or process.poll() is not None, timeout=300)
    fetched_before = {p: p.stat().st_mtime_ns for p in campaign.glob("results/sims/*/r*/segments/*/manifest.json")}
    os.killpg(process.pid, getattr(signal, how))  # the whole process group, like Ctrl-C or a node crash
    process.communicate(timeout=120)
    rerun = snakemake(campaign, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    cleared = [line for line in rerun.stderr.splitlines() if "cleared the lock" in line]
    if how == "SIGKILL":
        # Snakemake's lock survives a kill -9; the same command clears it, and says so in one line
        assert len(cleared) == 1 and cleared[0].startswith(
            "mdcampaign: cleared the lock left by a run that no "
            f"longer exists (pid {process.pid} on host "
            f"{socket.gethostname()}, started "
        ), cleared
    else:
        assert cleared == [], "Snakemake removed its lock itself"
    jobs = executed_jobs(rerun)
    assert "setup" not in jobs, "setup finished before the interruption"
    assert {p: p.stat().st_mtime_ns for p in fetched_before} == fetched_before, "fetched segments are not redone"
    resumed = [log for log in (campaign / "logs" / "simulate").rglob("*.log") if "resumed from" in log.read_text()]
    assert resumed, "the interrupted segment resumed from its checkpoint"
    assert_complete(campaign, {"ala/r1": 0.04, "ala/r2": 0.04})
    report("snakemake interrupted mid-campaign", how, True)


@pytest.mark.slow
def test_a_second_run_at_the_same_time_is_refused(tmp_path):
    campaign = long_campaign(tmp_path / "campaign")
    first = start_snakemake(campaign)
    # Snakemake's own lock files (the folder also holds mdcampaign's record of each run)
    assert wait_for(
        lambda: any((campaign / ".snakemake" / "locks").glob("*.lock")) or first.poll() is not None, timeout=120
    )
    second = snakemake(campaign, check=False)
    assert second.returncode != 0
    assert "Directory cannot be locked" in second.stdout + second.stderr
    assert (
        f"mdcampaign: this campaign is being run by pid {first.pid} on host {socket.gethostname()} since "
        in second.stderr
    )
    first.communicate(timeout=600)
    assert first.returncode == 0
    assert_complete(campaign, {"ala/r1": 0.04, "ala/r2": 0.04})
    report("two runs at once", "second refused, first completes", True)


@pytest.mark.slow
def test_an_exploding_system_fails_clearly_and_the_rest_goes_on(tmp_path):
    structure = REPO / "config/structures/alanine-dipeptide.pdb"
    campaign = write_campaign(
        tmp_path / "campaign",
        systems=[{"id": "ala", "structure": structure, "replicas": 1}, exploding_system(tmp_path)],
    )
    result = snakemake(campaign, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Error in rule simulate" in output and "system=hot" in output
    assert "hot/r1 segment 0: the simulation became unstable" in output
    assert "Traceback" not in output
    assert (campaign / "results/sims/ala/r1/analysis/0002/analysis.json").exists(), "the rest of the campaign went on"
    report("exploding simulation", "fails clearly, others complete", True)


# -- full disks ---------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A real 8 MB file system (tmpfs), nearly filled; needs root."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {result.stderr.strip()}")
    filler = mount_point / "filler"
    free = shutil.disk_usage(mount_point).free
    filler.write_bytes(b"\0" * (free - 24 * 1024))
    yield mount_point, filler
    subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["scratch", "store"])
def test_a_full_disk_is_a_clear_error_and_the_campaign_resumes(tmp_path, small_disk, where):
    disk, filler = small_disk
    campaign = write_campaign(
        tmp_path / "campaign",
        systems=[{"id": "ala", "structure": REPO / "config/structures/alanine-dipeptide.pdb", "replicas": 1}],
        **{where: str(disk / where)},
    )
    failed = snakemake(campaign, check=False)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "No space left on device" in output and "Traceback" not in output
    store = disk / "store" if where == "store" else campaign / "results"
    assert not list(store.rglob("*.partial")), "no half-written file is left to be taken for a finished one"
    assert not list((campaign / "results").rglob("manifest.json")) or where == "scratch"
    filler.unlink()  # space again
    snakemake(campaign)
    assert_complete(campaign, {"ala/r1": 0.004}, store=disk / "store" if where == "store" else None)
    report("disk full", where, True)
