"""The segment runner, for real: OpenMM on alanine dipeptide, killed with SIGKILL at
awkward moments, resumed, and checked frame by frame."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import mdtraj
import numpy as np
import pandas as pd
import pytest

from mdcampaign import xtc
from mdcampaign.engines.openmm.runner import PORTABLE_MAGIC, continuation_seed, read_checkpoint, run_segment
from mdcampaign.errors import SegmentError
from mdcampaign.protocol import Protocol
from mdcampaign.runs import SegmentTask

LONG = {"segment_ns": 0.02, "target_ns": 0.02, "frame_interval_ps": 0.1, "checkpoint_interval_ps": 1.0}


def protocol_with(base: Protocol, **changes) -> Protocol:
    return Protocol(**{**base.__dict__, **changes})


def segment_command(setup_dir: Path, protocol: Protocol, work: Path, segment=0, state=None, extra=()):
    protocol_file = work.parent / f"{work.name}-protocol.json"
    protocol_file.parent.mkdir(parents=True, exist_ok=True)
    protocol_file.write_text(json.dumps(protocol.__dict__))
    return [
        sys.executable,
        "-m",
        "mdcampaign.engines.openmm.runner",
        "--system",
        str(setup_dir / "system.xml"),
        "--state",
        str(state or setup_dir / "state.xml"),
        "--topology",
        str(setup_dir / "topology.pdb"),
        "--work",
        str(work),
        "--protocol",
        str(protocol_file),
        "--segment",
        str(segment),
        "--seed",
        "7",
        "--platform",
        "CPU",
        "--threads",
        "1",
        *extra,
    ]


def wait_for(predicate, timeout=60.0, interval=0.005):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def killed_after_two_checkpoints(command: list[str], work: Path) -> None:
    """Run a segment and SIGKILL it once it has written two checkpoints: frozen first
    (SIGSTOP), and killed only when both files are there, never between the rotation of
    one checkpoint and the rename of the next (the runner recovers from that state too,
    but the tests that call this damage `checkpoint.chk`)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def both_checkpoints():
        return (work / "checkpoint.prev.chk").exists() and (work / "checkpoint.chk").exists()

    while True:
        assert wait_for(lambda: both_checkpoints() or process.poll() is not None)
        process.send_signal(signal.SIGSTOP)
        if both_checkpoints() or process.poll() is not None:
            break
        process.send_signal(signal.SIGCONT)
    process.send_signal(signal.SIGKILL)
    process.wait()


def checkpoint_step(work: Path) -> int:
    header = read_checkpoint(work / "checkpoint.chk")
    return header[0]["step"] if header else -1


def assert_exact_segment(work: Path, topology: Path, protocol: Protocol, segment: int = 0):
    """Every frame present once, at the right absolute time, matching the energies."""
    expected = protocol.segment_steps // protocol.frame_steps
    traj = mdtraj.load(str(work / "trajectory.xtc"), top=str(topology))
    first = segment * protocol.segment_steps
    steps = first + protocol.frame_steps * np.arange(1, expected + 1)
    assert traj.n_frames == expected
    np.testing.assert_allclose(traj.time, steps * protocol.timestep_ps, atol=1e-3)
    energies = pd.read_csv(work / "energies.csv")
    assert list(energies["step"]) == list(steps)
    assert np.isfinite(energies["potential_energy_kJ_mol"]).all()
    info = json.loads((work / "segment.json").read_text())
    assert info["frames"] == expected and info["first_step"] == first
    return info


def test_segment_runs_with_absolute_time_and_continues(prepared_ala, tmp_path):
    setup_dir, base = prepared_ala
    protocol = protocol_with(base, segment_ns=0.002, target_ns=0.004)
    first = SegmentTask(
        "ala/r1",
        0,
        protocol,
        7,
        setup_dir / "system.xml",
        setup_dir / "state.xml",
        setup_dir / "topology.pdb",
        tmp_path / "s0",
        platform="CPU",
        threads=1,
    )
    assert run_segment(first).complete
    second = SegmentTask(
        "ala/r1",
        1,
        protocol,
        7,
        setup_dir / "system.xml",
        tmp_path / "s0" / "final_state.xml",
        setup_dir / "topology.pdb",
        tmp_path / "s1",
        platform="CPU",
        threads=1,
    )
    assert run_segment(second).complete
    assert_exact_segment(tmp_path / "s0", setup_dir / "trajectory_topology.pdb", protocol, 0)
    info = assert_exact_segment(tmp_path / "s1", setup_dir / "trajectory_topology.pdb", protocol, 1)
    assert info["platform"] == "CPU" and info["ns_per_day"] > 0
    joined = mdtraj.load(
        [str(tmp_path / "s0" / "trajectory.xtc"), str(tmp_path / "s1" / "trajectory.xtc")],
        top=str(setup_dir / "trajectory_topology.pdb"),
    )
    assert np.allclose(np.diff(joined.time), protocol.frame_interval_ps, atol=1e-3)
    # running a finished segment again recognises it and does nothing
    assert run_segment(second).info["finished_at"] == info["finished_at"]


def test_kill_9_after_checkpoint_resumes_exactly(prepared_ala, tmp_path):
    setup_dir, base = prepared_ala
    protocol = protocol_with(base, **LONG)
    work = tmp_path / "work"
    command = segment_command(setup_dir, protocol, work)
    kills = 0
    for _ in range(3):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        before = checkpoint_step(work)
        assert wait_for(
            lambda before=before, process=process: checkpoint_step(work) > before or process.poll() is not None
        )
        if process.poll() is None:
            time.sleep(0.05)  # past the checkpoint: frames written after it must be discarded
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 2, "the segment finished before it could be killed; make it longer"
    frames_on_disk = xtc.count_frames(work / "trajectory.xtc")
    assert 0 < frames_on_disk < protocol.segment_steps // protocol.frame_steps
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "resumed from checkpoint.chk" in result.stderr
    info = assert_exact_segment(work, setup_dir / "trajectory_topology.pdb", protocol)
    assert len(info["runs"]) >= 2


def test_damaged_checkpoint_falls_back_to_the_previous_one(prepared_ala, tmp_path):
    setup_dir, base = prepared_ala
    protocol = protocol_with(base, **LONG)
    work = tmp_path / "work"
    command = segment_command(setup_dir, protocol, work)
    killed_after_two_checkpoints(command, work)
    data = (work / "checkpoint.chk").read_bytes()
    (work / "checkpoint.chk").write_bytes(data[: len(data) // 2])  # torn write
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "checkpoint.chk is damaged" in result.stderr
    assert "resumed from checkpoint.prev.chk" in result.stderr
    assert_exact_segment(work, setup_dir / "trajectory_topology.pdb", protocol)


def test_sigterm_checkpoints_and_exits_paused(prepared_ala, tmp_path):
    setup_dir, base = prepared_ala
    protocol = protocol_with(base, **LONG)
    work = tmp_path / "work"
    command = segment_command(setup_dir, protocol, work)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: checkpoint_step(work) > 0)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 75, stderr
    assert "paused at step" in stderr
    header, _ = read_checkpoint(work / "checkpoint.chk")
    # the stop checkpoint covers everything written: nothing is recomputed
    assert header["frames"] == xtc.count_frames(work / "trajectory.xtc")
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "0 frames written after it discarded" in result.stderr
    assert_exact_segment(work, setup_dir / "trajectory_topology.pdb", protocol)


def test_time_budget_pauses_then_a_second_run_completes(prepared_ala, tmp_path):
    setup_dir, base = prepared_ala
    protocol = protocol_with(base, **LONG)
    work = tmp_path / "work"
    paused = subprocess.run(
        segment_command(setup_dir, protocol, work, extra=("--budget-seconds", "0.5")), capture_output=True, text=True
    )
    assert paused.returncode == 75, paused.stderr
    assert "time budget" in paused.stderr
    done = subprocess.run(segment_command(setup_dir, protocol, work), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert_exact_segment(work, setup_dir / "trajectory_topology.pdb", protocol)


def test_a_segment_paused_on_one_platform_continues_on_another_from_its_portable_checkpoint(prepared_ala, tmp_path):
    """What lets another site continue a paused segment (parking.py): the binary
    checkpoint of the Reference platform does not load on CPU; the portable one written
    at the pause does, and the segment goes on from its step with nothing lost or
    repeated, with random forces of a seed of its own."""
    setup_dir, base = prepared_ala
    # long enough that Reference (4000 ns/day here) pauses for its budget mid-segment
    protocol = protocol_with(base, segment_ns=0.1, target_ns=0.1, frame_interval_ps=0.5, checkpoint_interval_ps=10.0)
    work = tmp_path / "work"
    on_reference = [
        "Reference" if arg == "CPU" else arg
        for arg in segment_command(setup_dir, protocol, work, extra=("--budget-seconds", "0.8"))
    ]
    paused = subprocess.run(on_reference, capture_output=True, text=True)
    assert paused.returncode == 75, paused.stderr
    header, _ = read_checkpoint(work / "checkpoint.portable", PORTABLE_MAGIC)
    assert 0 < header["step"] < protocol.segment_steps and header["platform"] == "Reference"
    assert header["frames"] == xtc.count_frames(work / "trajectory.xtc")
    done = subprocess.run(segment_command(setup_dir, protocol, work), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "written on platform Reference and cannot be loaded on CPU" in done.stderr, done.stderr
    assert f"resumed from the portable checkpoint at step {header['step']}" in done.stderr, done.stderr
    info = assert_exact_segment(work, setup_dir / "trajectory_topology.pdb", protocol)
    assert [(run["platform"], run["from_step"]) for run in info["runs"]] == [
        ("Reference", 0),
        ("CPU", header["step"]),
    ]
    assert continuation_seed(7, header["step"]) != 7
    energies = pd.read_csv(work / "energies.csv")
    # 22 atoms: one frame's temperature fluctuates by about 65 K (a frame past 500 K now
    # and then); the mean over the segment's 200 frames is the check
    temperature = energies["temperature_K"]
    assert abs(temperature.mean() - 300) < 25 and temperature.max() < 700, temperature.describe()


def test_exploding_system_fails_with_a_message_naming_the_simulation(prepared_ala, tmp_path):
    import openmm

    setup_dir, base = prepared_ala
    state = openmm.XmlSerializer.deserialize((setup_dir / "state.xml").read_text())
    positions = state.getPositions(asNumpy=True)
    positions[1] = positions[0]  # two atoms on top of each other: infinite forces
    context_state = tmp_path / "bad_state.xml"
    system = openmm.XmlSerializer.deserialize((setup_dir / "system.xml").read_text())
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"))
    context.setPositions(positions)
    context.setVelocities(state.getVelocities())
    context_state.write_text(openmm.XmlSerializer.serialize(context.getState(getPositions=True, getVelocities=True)))
    job = SegmentTask(
        "ala/r1",
        0,
        protocol_with(base, segment_ns=0.002),
        7,
        setup_dir / "system.xml",
        context_state,
        setup_dir / "topology.pdb",
        tmp_path / "work",
        platform="CPU",
        threads=1,
    )
    with pytest.raises(SegmentError, match=r"ala/r1 segment 0: the simulation became unstable at step \d+"):
        run_segment(job)


def test_a_second_runner_of_the_same_segment_is_refused(prepared_ala, tmp_path):
    import fcntl

    setup_dir, protocol = prepared_ala
    work = tmp_path / "work"
    work.mkdir()
    (work / "runner.json").write_text(json.dumps({"pid": 4242, "host": "node7"}))
    with open(work / "runner.lock", "a") as held:  # what a running runner holds
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        job = SegmentTask(
            "ala/r1",
            0,
            protocol,
            7,
            setup_dir / "system.xml",
            setup_dir / "state.xml",
            setup_dir / "topology.pdb",
            work,
            platform="CPU",
            threads=1,
        )
        with pytest.raises(SegmentError, match="already being run by pid 4242 on node7"):
            run_segment(job)
    assert not (work / "trajectory.xtc").exists(), "the second runner wrote nothing"
