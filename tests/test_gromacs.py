"""The GROMACS engine, for real: alanine dipeptide in a small water box set up with
gmx, run in segments, killed with SIGKILL, stopped by its time budget, and checked
frame by frame; a lab's own inputs; gmx's errors in one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import STRUCTURES, _schema_defaults
from mdcampaign.engines.gromacs import GromacsEngine, gmx, inputs, runner, setup
from mdcampaign.errors import CampaignError, SegmentError
from mdcampaign.protocol import Protocol
from mdcampaign.runs import ENERGY_COLUMNS, RUNNER_LOCK, SegmentTask

GMX_VERSION = gmx.available()
needs_gmx = pytest.mark.skipif(
    GMX_VERSION is None, reason="GROMACS is not installed (gmx not found): apt-get install gromacs"
)

# 2 fs without HMR, frames every 0.2 ps, segments of 2 ps; about a second per segment
# on 2 cores for the ~1000 atoms of alanine dipeptide in a 1.2 nm-padded dodecahedron.
GMX_PROTOCOL = {
    "forcefield": "amber99sbildn",
    "solvent": "explicit",
    "water_model": "tip3p",
    "box_shape": "dodecahedron",
    "padding_nm": 1.2,
    "nonbonded_cutoff_nm": 0.9,
    "timestep_fs": 2.0,
    "hmr": False,
    "minimization_max_iterations": 200,
    "equilibration_ps": 2.0,
    "segment_ns": 0.002,
    "target_ns": 0.004,
    "frame_interval_ps": 0.2,
    "checkpoint_interval_ps": 0.4,
    "trajectory_atoms": "solute",
    "seed": 3,
}
THREADS = 2


def run_segment(tpr: Path, start: Path | None, work: Path, segment: int, protocol: Protocol, **options):
    """The runner on one segment, as (complete, info)."""
    task = SegmentTask(
        name="test",
        segment=segment,
        protocol=protocol,
        seed=1,
        system=tpr,
        start_state=start,
        topology=None,
        work_dir=work,
        **options,
    )
    outcome = runner.run_segment(task)
    return outcome.complete, outcome.info


def protocol_with(**changes) -> Protocol:
    return Protocol(**{**_schema_defaults(), **GMX_PROTOCOL, **changes})


@pytest.fixture(scope="module")
def gmx_setup(tmp_path_factory):
    pytest.importorskip("pyedr", reason="pyedr (reads GROMACS .edr files) is not installed: pip install pyedr")
    if GMX_VERSION is None:
        pytest.skip("GROMACS is not installed (gmx not found): apt-get install gromacs")
    protocol = protocol_with()
    out = tmp_path_factory.mktemp("gmx-setup")
    info = setup.prepare(STRUCTURES / "alanine-dipeptide.pdb", protocol, out, threads=THREADS)
    return out, protocol, info


def frame_times(path: Path) -> list[float]:
    return [time_ps for _, _, time_ps in runner._xtc_frames(path)]


def read_energies(path: Path):
    import pandas as pd

    return pd.read_csv(path)


def assert_segment(work: Path, protocol: Protocol, segment: int, tinit: float = 0.0):
    """Frames at first+F .. last exactly once, and one energy row per frame."""
    frames = protocol.segment_steps // protocol.frame_steps
    first = segment * protocol.segment_steps
    expected = [
        round(tinit + (first + (i + 1) * protocol.frame_steps) * protocol.timestep_ps, 6) for i in range(frames)
    ]
    times = [round(t, 3) for t in frame_times(work / "trajectory.xtc")]
    assert times == [round(t, 3) for t in expected]
    table = read_energies(work / "energies.csv")
    assert tuple(table.columns) == ENERGY_COLUMNS
    assert len(table) == frames
    assert list(table["step"]) == [first + (i + 1) * protocol.frame_steps for i in range(frames)]
    assert [round(t, 3) for t in table["time_ps"]] == [round(t, 3) for t in expected]
    assert table[list(ENERGY_COLUMNS[2:])].notna().all().all()
    assert 0.9 < table["density_g_per_mL"].mean() < 1.2
    assert 260 < table["temperature_K"].mean() < 340
    info = json.loads((work / "segment.json").read_text())
    assert info["frames"] == frames and info["first_step"] == first
    assert gmx.checkpoint_header(work / "final_state.cpt")["step"] == first + protocol.segment_steps
    # mdrun's own files are gone; its log is kept
    assert sorted(p.name for p in work.iterdir()) == sorted(
        [*runner.OUTPUT_FILES, "gromacs.log", "mdrun.log", RUNNER_LOCK]
    )
    return info


# --------------------------------------------------------------------------- no gmx needed


def test_engine_columns_are_the_openmm_runners():
    assert runner.ENERGY_COLUMNS == ENERGY_COLUMNS


def test_gmx_argv_is_a_list_with_absolute_paths_and_no_option_lookalikes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = gmx.gmx_argv("grompp", [("-f", Path("-weird name.mdp")), ("-maxwarn", 0), ("-ignh", True), ("-d", 0.8)])
    assert argv[:4] == [gmx.GMX, "-quiet", "-nobackup", "grompp"]
    assert argv[4:] == ["-f", str(tmp_path / "-weird name.mdp"), "-maxwarn", "0", "-ignh", "-d", "0.8"]
    with pytest.raises(ValueError):
        gmx.gmx_argv("grompp", [("-f", "-o")])
    with pytest.raises(ValueError):
        gmx.gmx_argv("grompp", [("f", Path("x"))])


def test_error_line_picks_gromacs_own_error():
    grompp = """Ignoring obsolete mdp entry 'title'

ERROR 1 [file bad.mdp, line 3]:
  Right hand side 'abc' for parameter 'dt' in parameter file is not a real
  value


There was 1 error in input file(s)

-------------------------------------------------------
Program:     gmx grompp, version 2022.5
Source file: src/gromacs/gmxpreprocess/grompp.cpp (line 2478)

Fatal error:
There was 1 error in input file(s)

For more information and tips for troubleshooting, please check the GROMACS
website at http://www.gromacs.org/Documentation/Errors
-------------------------------------------------------
"""
    assert gmx.error_line(grompp) == (
        "ERROR 1 [file bad.mdp, line 3]: Right hand side 'abc' for parameter 'dt' in parameter file is not a real value"
    )
    mdrun = """Program:     gmx mdrun, version 2022.5
Source file: src/gromacs/mdlib/sim_util.cpp (line 777)

Fatal error:
Step 120: The total potential energy is nan, which is not finite. The LJ and
electrostatic contributions to the energy are 0 and -3.2e+04, respectively.

For more information and tips for troubleshooting, please check the GROMACS
"""
    assert gmx.error_line(mdrun).startswith("Step 120: The total potential energy is nan, which is not finite.")


def test_check_protocol_says_what_gromacs_cannot_do():
    assert setup.check_protocol(protocol_with()) == []
    problems = setup.check_protocol(protocol_with(forcefield="amber14", solvent="implicit"))
    assert any("forcefield 'amber14' is not shipped with GROMACS" in p for p in problems)
    assert any("GROMACS removed implicit solvent in version 2019" in p for p in problems)
    (problem,) = setup.check_protocol(protocol_with(water_model="opc"))
    assert "water_model 'opc'" in problem and "tip3p" in problem
    (problem,) = setup.check_protocol(protocol_with(ph=4.0))
    assert "ph 4.0" in problem and "set protonation" in problem
    assert all("\n" not in p for p in problems)


PROTEASE = Path(__file__).parent / "data" / "structures" / "4E43-additives.pdb.gz"


def molecule_charges(build: Path) -> float:
    """The total charge of pdb2gmx's molecules: the last `qtot` of each molecule's atoms."""
    total = 0.0
    for itp in sorted(build.glob("topol_*.itp")):
        qtot = [line.split("qtot")[1] for line in itp.read_text().splitlines() if "; qtot" in line]
        total += float(qtot[-1])
    return total


def openmm_charge(topology) -> float:
    from openmm import app

    system = app.ForceField("amber99sbildn.xml").createSystem(topology, nonbondedMethod=app.NoCutoff)
    (nonbonded,) = [f for f in system.getForces() if type(f).__name__ == "NonbondedForce"]
    return sum(nonbonded.getParticleParameters(i)[0]._value for i in range(system.getNumParticles()))


@needs_gmx
def test_protonation_chosen_by_pka_reaches_pdb2gmx_and_both_engines_carry_the_same_charge(tmp_path):
    """HIV protease at pH 7 and 5 with protonation propka: the active-site Asp25 pair
    changes state with the pH (recorded), pdb2gmx builds exactly those states (its
    topology's charge is the OpenMM system's), and a state GROMACS's force field has no
    chain-terminal form of is refused in one line."""
    from mdcampaign.repair import repair

    charges, recorded = {}, {}
    for ph in (7.0, 5.0):
        protocol = protocol_with(protonation="propka", ph=ph, chains="A,B")
        assert setup.check_protocol(protocol) == [], "any pH, once protonation gives the states"
        build = setup._Build(PROTEASE, protocol, tmp_path / f"ph{ph}", tmp_path / f"ph{ph}" / "build", 1, THREADS)
        build.build.mkdir(parents=True)
        setup._topology(build)
        recorded[ph] = {c["residue"]: c["state"] for c in build.info["fix"]["protonation"]}
        fixer, _ = repair(PROTEASE, protocol)
        charges[ph] = (molecule_charges(build.build), openmm_charge(fixer.topology))
        text = (build.out / "fixed.pdb").read_text()
        assert text.count(" CA  ASH ") == list(recorded[ph].values()).count("ASH"), "ASH given to pdb2gmx by name"
    assert recorded[7.0] != recorded[5.0] and "ASH" in recorded[5.0].values(), recorded
    for ph, (gromacs, openmm) in charges.items():
        assert gromacs == pytest.approx(openmm, abs=1e-3), f"pH {ph}: GROMACS {gromacs} e, OpenMM {openmm} e"
    assert charges[5.0][0] > charges[7.0][0], "more protons at pH 5"

    terminal = protocol_with(mutations="A:M41D", protonation="A:D41=ASH")
    build = setup._Build(STRUCTURES / "villin-1VII.pdb", terminal, tmp_path / "t", tmp_path / "t" / "build", 1, 1)
    build.build.mkdir(parents=True)
    with pytest.raises(CampaignError) as caught:
        setup._topology(build)
    message = str(caught.value)
    assert "ASP 41 (chain A) in state ASH ends its chain" in message and "\n" not in message, message


def test_prepare_refuses_before_running_anything(tmp_path):
    with pytest.raises(CampaignError, match="implicit solvent"):
        setup.prepare(STRUCTURES / "alanine-dipeptide.pdb", protocol_with(solvent="implicit"), tmp_path)
    assert not (tmp_path / "build").exists()


# --------------------------------------------------------------------------- real gmx


@needs_gmx
@pytest.mark.slow
def test_setup_writes_the_production_inputs(gmx_setup, tmp_path):
    out, protocol, info = gmx_setup
    for name in (
        "system.tpr",
        "start.cpt",
        "topology.pdb",
        "trajectory_topology.pdb",
        "system.top",
        "production.mdp",
        "index.ndx",
        "equilibration.csv",
    ):
        assert (out / name).exists(), name
    assert info["gmx_version"] == GMX_VERSION and info["forcefield"] == "amber99sb-ildn"
    assert info["solute_atoms"] == 22 and info["waters"] > 200
    assert info["atoms"] == info["solute_atoms"] + 3 * info["waters"] + sum(info["ions"].values())
    assert info["trajectory_atoms"] == 22
    header = gmx.checkpoint_header(out / "start.cpt")
    assert header["step"] == 0 and header["time_ps"] == 0.0 and header["natoms"] == info["atoms"]
    import mdtraj

    assert mdtraj.load(str(out / "topology.pdb")).n_atoms == info["atoms"]
    assert mdtraj.load(str(out / "trajectory_topology.pdb")).n_atoms == 22
    tpr = gmx.inspect_tpr(out / "system.tpr")
    assert tpr["integrator"] == "sd" and tpr["nsteps"] == protocol.segment_steps
    assert tpr["nstxout_compressed"] == protocol.frame_steps and tpr["init_step"] == 0
    assert 250 < info["equilibration"]["temperature_mean_K"] < 350  # one frame: +-3% swings
    assert tpr["ld_seed"] == protocol.seed
    # A replica: the same state, another Langevin seed.
    replica = gmx.inspect_tpr(inputs.replica_tpr(out, 11, tmp_path / "r2.tpr"))
    assert replica["ld_seed"] == 11 and replica["nsteps"] == tpr["nsteps"]


@needs_gmx
@pytest.mark.slow
def test_two_segments_join_into_one_continuous_trajectory(gmx_setup, tmp_path):
    import mdtraj
    import numpy as np

    out, protocol, _ = gmx_setup
    start = out / "start.cpt"
    works = []
    for segment in range(protocol.n_segments):
        work = tmp_path / f"{segment:04d}"
        complete, info = run_segment(out / "system.tpr", start, work, segment, protocol, threads=THREADS)
        assert complete, info
        assert_segment(work, protocol, segment)
        assert info["runs"] and info["runs"][-1]["ns_per_day"] > 0
        start = work / "final_state.cpt"
        works.append(work)
    # Running a complete segment again does nothing.
    again = run_segment(out / "system.tpr", out / "start.cpt", works[0], 0, protocol, threads=THREADS)
    assert again[0] and again[1]["finished_at"] == json.loads((works[0] / "segment.json").read_text())["finished_at"]
    joined = mdtraj.load([str(w / "trajectory.xtc") for w in works], top=str(out / "trajectory_topology.pdb"))
    spacing = np.diff(joined.time)
    assert len(joined) == protocol.n_segments * protocol.segment_steps // protocol.frame_steps
    assert np.allclose(spacing, protocol.frame_interval_ps, atol=1e-3)
    assert joined.time[0] == pytest.approx(protocol.frame_interval_ps, abs=1e-3)
    assert joined.time[-1] == pytest.approx(protocol.target_ns * 1000, abs=1e-3)
    rows = sum(len(read_energies(w / "energies.csv")) for w in works)
    assert rows == len(joined)


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _segment_command(setup: Path, protocol: Protocol, work: Path, segment=0, start=None, extra=()):
    protocol_file = work.parent / f"{work.name}-protocol.json"
    protocol_file.write_text(json.dumps(protocol.__dict__))
    return [
        sys.executable,
        "-m",
        "mdcampaign.engines.gromacs.runner",
        "--tpr",
        str(setup / "system.tpr"),
        "--start",
        str(start or setup / "start.cpt"),
        "--work",
        str(work),
        "--protocol",
        str(protocol_file),
        "--segment",
        str(segment),
        "--threads",
        str(THREADS),
        *extra,
    ]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@needs_gmx
@pytest.mark.slow
def test_kill9_of_mdrun_three_times_then_resume_keeps_every_frame_once(gmx_setup, tmp_path):
    out, _, _ = gmx_setup
    protocol = protocol_with(segment_ns=0.04, target_ns=0.04)  # 40 ps: about 10 s
    work = tmp_path / "0000"
    command = _segment_command(out, protocol, work)
    reached = -1
    for attempt, target in enumerate(("mdrun", "wrapper", "mdrun", "mdrun")):
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        mdrun = None
        # Kill once this attempt has checkpointed beyond the previous one (and, the first
        # time, beyond the short calibration run that measures the speed).
        while mdrun is None and time.time() < deadline and process.poll() is None:
            header = gmx.checkpoint_header(work / "segment.cpt")
            children = _children(process.pid)
            if header and header["step"] > max(reached, protocol.checkpoint_steps) and children:
                time.sleep(0.1 * attempt)  # land at different moments after the checkpoint
                try:
                    os.kill(children[0] if target == "mdrun" else process.pid, signal.SIGKILL)
                    mdrun = children[0]
                except ProcessLookupError:  # between two mdruns: try again
                    pass
            time.sleep(0.02)
        assert mdrun is not None, f"attempt {attempt}: no progress to kill"
        if target == "mdrun":
            assert process.wait(timeout=60) == 1  # the wrapper reports it and exits
        else:  # the whole job: mdrun dies with its parent
            process.wait(timeout=60)
            assert _wait(lambda pid=mdrun: not _alive(pid), 10), "mdrun outlived its killed parent"
        header = gmx.checkpoint_header(work / "segment.cpt")
        assert header["step"] > reached
        reached = header["step"]
        assert not (work / "segment.json").exists()
    assert reached < protocol.segment_steps, "the segment finished before the last kill; make it longer"
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    info = assert_segment(work, protocol, 0)
    stops = [run["stop_reason"] for run in info["runs"]]
    assert sum("SIGKILL" in (s or "") for s in stops) == 3
    assert sum("killed (no record" in (s or "") for s in stops) == 1
    assert stops[-1] is None


def _wait(predicate, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@needs_gmx
@pytest.mark.slow
def test_time_budget_and_sigterm_stop_with_a_checkpoint_and_the_next_call_continues(gmx_setup, tmp_path):
    out, _, _ = gmx_setup
    protocol = protocol_with(segment_ns=0.03, target_ns=0.03)  # 30 ps: longer than the budget
    work = tmp_path / "0000"
    began = time.time()
    complete, info = run_segment(
        out / "system.tpr", out / "start.cpt", work, 0, protocol, threads=THREADS, deadline=time.time() + 8
    )
    assert not complete and "time budget" in info["reason"], info
    assert time.time() - began < 10
    assert 0 < info["step"] < protocol.segment_steps
    assert gmx.checkpoint_header(work / "segment.cpt")["step"] == info["step"]
    # SIGTERM (Slurm's warning, Ctrl-C): mdrun checkpoints and stops, the runner exits 75.
    process = subprocess.Popen(
        _segment_command(out, protocol, work), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    assert _wait(lambda: gmx.checkpoint_header(work / "segment.cpt")["step"] > info["step"], 60)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 75
    complete, info = run_segment(out / "system.tpr", out / "start.cpt", work, 0, protocol, threads=THREADS)
    assert complete
    assert_segment(work, protocol, 0)
    stops = [run["stop_reason"] or "" for run in info["runs"]]
    assert any("time budget" in s for s in stops) and "signal SIGTERM" in stops, stops


@needs_gmx
@pytest.mark.slow
def test_a_paused_segment_continues_on_another_machine_from_the_files_it_parks(gmx_setup, tmp_path):
    """What parking carries (Engine.parked: the run record, tpr, parts and checkpoints)
    is all another machine needs: copied into a work folder elsewhere, with the inputs
    staged elsewhere too, the segment continues from the parked step, exactly."""
    out, _, _ = gmx_setup
    protocol = protocol_with(segment_ns=0.03, target_ns=0.03)
    here = tmp_path / "here" / "work"
    complete, paused = run_segment(
        out / "system.tpr", out / "start.cpt", here, 0, protocol, threads=THREADS, deadline=time.time() + 10
    )
    assert not complete and 0 < paused["step"] < protocol.segment_steps, paused
    step, files = GromacsEngine().parked(here)
    assert step == paused["step"]
    assert {"run.json", "segment.tpr", "segment.cpt"} <= {f.name for f in files}
    assert not any(f.suffix == ".log" for f in files)
    there, inputs = tmp_path / "there" / "work", tmp_path / "there" / "input"
    there.mkdir(parents=True)
    inputs.mkdir()
    for f in files:
        shutil.copy2(f, there / f.name)
    for name in ("system.tpr", "start.cpt"):
        shutil.copy2(out / name, inputs / name)
    complete, info = run_segment(inputs / "system.tpr", inputs / "start.cpt", there, 0, protocol, threads=THREADS)
    assert complete, info
    frames = protocol.segment_steps // protocol.frame_steps
    expected = [round((i + 1) * protocol.frame_steps * protocol.timestep_ps, 3) for i in range(frames)]
    assert [round(t, 3) for t in frame_times(there / "trajectory.xtc")] == expected
    assert list(read_energies(there / "energies.csv")["step"]) == [
        (i + 1) * protocol.frame_steps for i in range(frames)
    ]
    assert [run["from_step"] for run in info["runs"]][-1] == paused["step"], info["runs"]


@needs_gmx
@pytest.mark.slow
def test_a_labs_own_tpr_runs_in_two_segments(gmx_setup, tmp_path):
    out, protocol, _ = gmx_setup
    lab = inputs.import_inputs(tpr=out / "system.tpr", out_dir=tmp_path / "lab")
    assert lab["timestep_fs"] == protocol.timestep_fs and lab["frame_interval_ps"] == protocol.frame_interval_ps
    assert lab["trajectory_atoms"] == 22  # compressed-x-grps read back from the tpr
    import mdtraj

    assert mdtraj.load(str(tmp_path / "lab" / "trajectory_topology.pdb")).n_atoms == 22
    start = None  # segment 0 starts from the tpr's own state
    for segment in range(2):
        work = tmp_path / f"lab-{segment}"
        complete, _ = run_segment(tmp_path / "lab" / "system.tpr", start, work, segment, protocol, threads=THREADS)
        assert complete
        assert_segment(work, protocol, segment)
        start = work / "final_state.cpt"


@needs_gmx
def test_a_labs_gro_top_mdp_go_through_grompp_and_a_bad_mdp_fails_in_one_line(gmx_setup, tmp_path):
    out, protocol, _ = gmx_setup
    lab = tmp_path / "inputs"
    shutil.copytree(out, lab, ignore=shutil.ignore_patterns("build"))
    info = inputs.import_inputs(
        gro=lab / "start.gro",
        top=lab / "system.top",
        mdp=lab / "production.mdp",
        ndx=lab / "index.ndx",
        out_dir=tmp_path / "ok",
    )
    assert info["nstxout_compressed"] == protocol.frame_steps and (tmp_path / "ok" / "system.tpr").exists()

    bad = lab / "bad.mdp"
    bad.write_text(
        (lab / "production.mdp")
        .read_text()
        .replace("dt                       = 0.002", "dt                       = two")
    )
    with pytest.raises(CampaignError) as error:
        inputs.import_inputs(
            gro=lab / "start.gro", top=lab / "system.top", mdp=bad, ndx=lab / "index.ndx", out_dir=tmp_path / "bad"
        )
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("gmx grompp failed on ")
    assert "bad.mdp" in message and "ERROR 1 [file" in message and "'two'" in message

    broken = lab / "broken.top"
    broken.write_text((lab / "system.top").read_text().replace("[ molecules ]", "[ molecule ]"))
    with pytest.raises(CampaignError) as error:
        inputs.import_inputs(
            gro=lab / "start.gro",
            top=broken,
            mdp=lab / "production.mdp",
            ndx=lab / "index.ndx",
            out_dir=tmp_path / "broken",
        )
    assert "\n" not in str(error.value) and "broken.top" in str(error.value)


@needs_gmx
def test_a_failing_mdrun_names_the_command_and_the_error(gmx_setup, tmp_path):
    out, protocol, _ = gmx_setup
    with pytest.raises(SegmentError, match=r"does not match the protocol: its timestep is 2 fs"):
        run_segment(
            out / "system.tpr", out / "start.cpt", tmp_path / "w", 0, protocol_with(timestep_fs=1.0), threads=THREADS
        )
    with pytest.raises(SegmentError, match=r"is at step 0, but the segment starts at step 1000"):
        run_segment(out / "system.tpr", out / "start.cpt", tmp_path / "w1", 1, protocol, threads=THREADS)


COMPLEX = Path(__file__).parent / "data" / "structures" / "T4L-L99A-p-xylene-complex.pdb.gz"
XYLENE_MOL2 = COMPLEX.parent / "p-xylene.mol2"
ZINC_FINGER = COMPLEX.parent / "5A7U-zinc-finger.pdb"


def gromacs_ligand_terms(out: Path, name: str, work: Path) -> dict:
    """The ligand alone (its atoms from the setup's start.gro), one step of gmx: its
    bonded and 1-4 energies (kJ/mol)."""
    from mdcampaign.engines.gromacs.energies import read_edr

    work.mkdir()
    lines = (out / "start.gro").read_text().splitlines()
    atoms = [line for line in lines[2:-1] if line[5:10].strip() == name]
    (work / "lig.gro").write_text(f"{name}\n{len(atoms):5d}\n" + "\n".join(atoms) + "\n   9.0   9.0   9.0\n")
    (work / "lig.top").write_text(
        '#include "amber99sb-ildn.ff/forcefield.itp"\n'
        f'#include "{out}/ligand_atomtypes.itp"\n#include "{out}/ligand_{name}.itp"\n'
        f"[ system ]\n{name}\n[ molecules ]\n{name} 1\n"
    )
    (work / "lig.mdp").write_text(
        "integrator = md\nnsteps = 0\ncutoff-scheme = Verlet\ncoulombtype = Cut-off\nrcoulomb = 4\nrvdw = 4\n"
        "constraints = none\nnstcalcenergy = 1\nnstenergy = 1\n"
    )
    for command in (
        ["grompp", "-f", "lig.mdp", "-c", "lig.gro", "-p", "lig.top", "-o", "lig.tpr", "-maxwarn", "2"],
        ["mdrun", "-s", "lig.tpr", "-deffnm", "lig", "-nt", "1"],
    ):
        gmx.run_gmx(command[0], [(command[i], command[i + 1]) for i in range(1, len(command), 2)], cwd=work)
    energies = {key: float(values[0]) for key, values in read_edr(work / "lig.edr").items()}
    terms = {
        "bonds": energies["Bond"],
        "angles": energies["Angle"],
        "torsions": energies.get("Proper Dih.", 0.0) + energies.get("Per. Imp. Dih.", 0.0),
        "pairs": energies["LJ-14"] + energies["Coulomb-14"],
    }
    return terms, [[float(line[c : c + 8]) for c in (20, 28, 36)] for line in atoms]


def openmm_ligand_terms(forcefield_file: str, residue, positions_nm) -> dict:
    """The same terms from the OpenMM system of the ligand (its 1-4 exceptions summed
    by hand: in OpenMM they live in the NonbondedForce)."""
    import math

    import openmm
    from openmm import app, unit

    single = app.Topology()
    copy = single.addResidue(residue.name, single.addChain("L"))
    mapped = {atom: single.addAtom(atom.name, atom.element, copy) for atom in residue.atoms()}
    for first, second in residue.internal_bonds():
        single.addBond(mapped[first], mapped[second])
    system = app.ForceField(forcefield_file).createSystem(single, nonbondedMethod=app.NoCutoff, constraints=None)
    kinds = {"HarmonicBondForce": "bonds", "HarmonicAngleForce": "angles", "PeriodicTorsionForce": "torsions"}
    terms = dict.fromkeys((*kinds.values(), "pairs"), 0.0)
    for index, force in enumerate(system.getForces()):
        force.setForceGroup(index)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions_nm * unit.nanometer)
    for index, force in enumerate(system.getForces()):
        kind = kinds.get(type(force).__name__)
        if kind:
            state = context.getState(getEnergy=True, groups={index})
            terms[kind] += state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        if type(force).__name__ == "NonbondedForce":
            for k in range(force.getNumExceptions()):
                i, j, qq, sigma, epsilon = force.getExceptionParameters(k)
                r = math.dist(positions_nm[i], positions_nm[j])
                qq, sigma, epsilon = qq._value, sigma._value, epsilon._value
                terms["pairs"] += 138.935458 * qq / r + 4 * epsilon * ((sigma / r) ** 12 - (sigma / r) ** 6)
    return terms


def two_segments_the_second_killed(out: Path, protocol: Protocol, tmp_path: Path):
    """Segments 0 and 1 from a setup, the second killed (SIGKILL, the whole runner) after
    its first checkpoint and run again: each exact; their joined trajectory."""
    import mdtraj
    import numpy as np

    works, start = [], out / "start.cpt"
    for segment in (0, 1):
        work = tmp_path / f"{segment:04d}"
        if segment == 1:
            process = subprocess.Popen(
                _segment_command(out, protocol, work, segment, start),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            assert _wait(lambda work=work: (work / "segment.cpt").exists(), 120), "no checkpoint before the kill"
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            assert gmx.checkpoint_header(work / "segment.cpt")["step"] < (segment + 1) * protocol.segment_steps
        complete, _ = run_segment(out / "system.tpr", start, work, segment, protocol, threads=THREADS)
        assert complete
        stops = [run["stop_reason"] or "" for run in assert_segment(work, protocol, segment)["runs"]]
        assert any("kill" in stop.lower() for stop in stops) == (segment == 1), stops
        works.append(work)
        start = work / "final_state.cpt"
    joined = mdtraj.load([str(w / "trajectory.xtc") for w in works], top=str(out / "trajectory_topology.pdb"))
    assert np.allclose(np.diff(joined.time), protocol.frame_interval_ps, atol=1e-3)
    return joined


@needs_gmx
@pytest.mark.slow
def test_a_protein_ligand_complex_on_gromacs_has_openmms_ligand_terms_and_resumes_exactly_after_kill_9(
    tmp_path, monkeypatch
):
    """T4 lysozyme L99A with p-xylene, set up by the GROMACS engine: the ligand carries
    the OpenMM engine's GAFF2 + AM1-BCC parameters (its bonded and 1-4 energies equal
    OpenMM's for the same coordinates), and two segments, the second killed with
    SIGKILL mid-way, join into one trajectory with the ligand in its pocket."""
    import numpy as np

    from mdcampaign.ligand_spec import LigandSpec
    from mdcampaign.ligands import missing_tools
    from mdcampaign.repair import repair

    if missing_tools():
        pytest.skip(f"ligand tools not installed ({', '.join(missing_tools())})")
    monkeypatch.chdir(tmp_path)  # the ligand cache, results/ligands/, goes here
    protocol = protocol_with(padding_nm=0.8, minimization_max_iterations=300, checkpoint_interval_ps=0.4)
    ligands = (LigandSpec("TMP", chemistry_file=XYLENE_MOL2),)
    out = tmp_path / "setup"
    info = setup.prepare(COMPLEX, protocol, out, threads=THREADS, ligands=ligands)
    (record,) = info["fix"]["ligands"]
    assert record["copies"] == 1 and any(step.startswith("ligands TMP x1") for step in info["steps"])
    assert "TMP                 1" in (out / "system.top").read_text()

    gromacs, positions = gromacs_ligand_terms(out, "TMP", tmp_path / "terms")
    fixer, _ = repair(COMPLEX, protocol, ligands)
    (residue,) = [r for r in fixer.topology.residues() if r.name == "TMP"]
    openmm = openmm_ligand_terms(info["fix"]["ligand_forcefield_file"], residue, positions)
    for term, value in openmm.items():
        assert gromacs[term] == pytest.approx(value, rel=2e-3, abs=0.05), (term, gromacs, openmm)

    joined = two_segments_the_second_killed(out, protocol, tmp_path)
    ligand = joined.topology.select("resname TMP and not element H")
    protein = joined.topology.select("protein and name CA")
    joined.superpose(joined, 0, atom_indices=protein)
    drift = np.sqrt(((joined.xyz[:, ligand] - joined.xyz[0, ligand]) ** 2).sum(axis=2).mean(axis=1))
    assert len(ligand) == 8 and drift.max() < 0.2, f"ligand RMSD {drift.max():.3f} nm: it left its pocket"


@needs_gmx
@pytest.mark.slow
def test_a_zinc_finger_on_gromacs_keeps_its_zinc_and_its_site_through_two_segments(tmp_path):
    """The cryo-EM zinc finger (Cys2His2 site; two missing heavy atoms) on GROMACS: the
    zinc kept with the OpenMM engine's parameters, its cysteine deprotonated and its
    histidines' tautomers as setup chose them, given to pdb2gmx; two segments with a
    kill -9, and the site holds."""
    import mdtraj

    protocol = protocol_with(padding_nm=0.8, minimization_max_iterations=300, checkpoint_interval_ps=0.4)
    out = tmp_path / "setup"
    info = setup.prepare(ZINC_FINGER, protocol, out, threads=THREADS)
    assert info["fix"]["metal_ions"] == {"ZN": 1} and "ZN_ion              1" in (out / "system.top").read_text()
    # the OpenMM engine's zinc (amber14's Li/Merz 12-6), not amber99sb-ildn.ff/ions.itp's
    (zinc_type,) = [
        line.split() for line in (out / "ligand_atomtypes.itp").read_text().splitlines() if "ZN_ion" in line
    ]
    assert [float(value) for value in zinc_type[-2:]] == pytest.approx([0.22646645, 0.01381917], rel=1e-6)
    donors = {(site["residue"], site["atom"]): site["protonation"] for site in info["fix"]["metal_sites"]}
    assert donors[("CYS 8 (chain A)", "SG")].startswith("CYM"), donors
    fixed = (out / "fixed.pdb").read_text()
    assert " CYM A   8" in fixed and " HID A  21" in fixed, "the site's states reach pdb2gmx by name"
    joined = two_segments_the_second_killed(out, protocol, tmp_path)
    (zinc,) = joined.topology.select("resname ZN")
    bound = [joined.topology.select(f"resSeq {n} and name {a}")[0] for n, a in ((8, "SG"), (21, "NE2"), (26, "NE2"))]
    distances = mdtraj.compute_distances(joined, [[zinc, atom] for atom in bound])
    assert distances.mean(axis=0).max() < 0.26, f"zinc site lost: mean distances {distances.mean(axis=0)} nm"
    assert len(info["fix"].get("metal_site_near_misses", [])) == 1


def test_a_metal_ion_without_parameters_is_refused_in_one_line(tmp_path):
    lines = ZINC_FINGER.read_text().splitlines(keepends=True)
    text = "".join(  # the zinc made a copper(I), which amber14's ion set lacks
        line[:12] + " CU " + line[16:17] + "CU1" + line[20:76] + "CU" + line[78:] if line.startswith("HETATM") else line
        for line in lines
    )
    structure = tmp_path / "copper.pdb"
    structure.write_text(text)
    with pytest.raises(CampaignError) as caught:
        setup.prepare(structure, protocol_with(), tmp_path / "setup", threads=1)
    message = str(caught.value)
    assert "amber14/tip3p.xml), which has none for CU1" in message and "\n" not in message, message
    with pytest.raises(CampaignError, match=r"amber14/spce.xml\), which has none for CU1"):
        setup.prepare(structure, protocol_with(water_model="spce"), tmp_path / "setup-spce", threads=1)
