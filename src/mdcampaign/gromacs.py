"""GROMACS as a second MD engine: setup, restartable segments and a lab's own inputs.

This is the one module that calls ``gmx``. Every call goes through :func:`gmx_argv`
(which builds the argument list: never a shell, our options first, every path made
absolute so that no user value can be read as an option) and is run by
:func:`run_gmx` (or, for the long mdrun of a segment, by :func:`_MdrunProcess`);
a failure becomes one line naming the gmx command, the file and gmx's own error
line (grompp's ``ERROR 1 [file x.mdp, line 3]: ...``, or the text after
``Fatal error:``).

What it provides:

- :func:`check_protocol`: the protocol keys the GROMACS engine cannot honour, one
  line each (force fields and water models GROMACS does not ship, implicit solvent);
- :func:`prepare`: structure -> ``system.tpr`` (production input), ``start.cpt`` (the
  equilibrated state at step 0 and time 0), ``topology.pdb`` and
  ``trajectory_topology.pdb``, with the same protocol keys meaning the same things as
  the OpenMM setup;
- :func:`run_segment`: segment k = steps k*S .. (k+1)*S, exact continuation after
  ``kill -9``, a time budget or a signal, frames and energy rows at steps
  first + F, ..., last (none at the start step: that frame is the previous
  segment's last);
- :func:`import_inputs`: a lab's own ``.tpr``, or ``.gro`` + ``.top`` + ``.mdp``;
- :func:`available`: the gmx version, or None.

How exactness works. Segment k's input is the tpr made by ``gmx convert-tpr -nsteps
(k+1)*S`` and the start checkpoint (setup's ``start.cpt`` at step 0, or segment k-1's
``final_state.cpt`` at step k*S). Every run of the segment is ``mdrun -cpi
<checkpoint> -noappend``: from the start checkpoint the first time, from the segment's
own newest ``segment.cpt`` (``segment_prev.cpt`` if that one is unreadable) after a
stop or a ``kill -9``. Each run writes its own part files (``segment.partNNNN.xtc`` /
``.edr``) beginning with the frame of the step it starts from. (Appending is not an
option: GROMACS appends only to the files named in the checkpoint, and a segment's
start checkpoint names the previous segment's files, elsewhere; once a run used
-noappend, GROMACS never appends again.) When the segment is complete its
``trajectory.xtc`` and ``energies.csv`` are spliced from the parts in order, each part
replacing what earlier parts wrote from its start step on (frames a killed run wrote
after its last checkpoint), and keeping steps first+F .. last: no frame is lost or
duplicated, and the frame at step k*S, segment k-1's last, is left out as in the
OpenMM runner. mdrun fsyncs its outputs before each checkpoint and writes checkpoints
atomically (temp file, then ``_prev`` rotation).

Checkpoints: GROMACS checkpoints by wall-clock time (``-cpt`` minutes), at a
neighbour-search step. ``checkpoint_interval_ps`` is turned into minutes with the
speed measured in this segment: the first run of a segment stops after one checkpoint
interval (``-nsteps``), which ends with a checkpoint exactly at that step and measures
the speed; the rest of the segment then runs in one mdrun with ``-cpt`` set to the
wall time that interval takes (at least ``MIN_CHECKPOINT_SECONDS``). Where the
checkpoints fall does not affect the splice, only how much work a kill loses.

Bitwise identity: with ``-reprod`` (used on CPUs) the same segment run twice gives
identical frames, and a restart at constant volume continues bitwise as if
uninterrupted. With the C-rescale barostat GROMACS 2022.5's restarts are exact in
state (positions, velocities, box from the checkpoint) but some restarts differ from
an uninterrupted run in the last bits, which grows into a different (equally valid)
trajectory after a few hundred steps; GROMACS's own continuation tests compare
energies within a tolerance for this reason.
"""

from __future__ import annotations

import csv
import functools
import json
import logging
import math
import os
import platform as host_platform
import re
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path

from . import xtc
from .errors import EXIT_FAILED, EXIT_PAUSED, CampaignError, SegmentError
from .files import atomic_write_bytes, atomic_write_json, atomic_write_text, sha256_file
from .forcefields import GROMACS_FORCEFIELDS as FORCEFIELDS
from .forcefields import GROMACS_WATER_MODELS as WATER_MODELS
from .protocol import Protocol
from .runs import (
    ENERGY_COLUMNS,
    StopRequest,
    announce_runner,
    clock,
    iso_time,
    sole_runner,
    withdraw_runner,
)
from .slots import current_slot
from .structures import SALT_ION_RESIDUES, WATER_RESIDUES

log = logging.getLogger(__name__)

GMX_VARIABLE = "MDCAMPAIGN_GMX"
GMX = os.environ.get(GMX_VARIABLE, "gmx")

# Protocol value -> GROMACS name. GROMACS 2022 ships amber99sb-ildn (not amber14 or
# charmm36) and, with it, these of the schema's water models (not tip3pfb or opc).
# The pre-equilibrated water box solvate fills the box with, per water model.
WATER_BOXES = {"tip3p": "spc216.gro", "spce": "spc216.gro", "tip4pew": "tip4p.gro"}
BOX_TYPES = {"cube": "cubic", "dodecahedron": "dodecahedron", "octahedron": "octahedron"}
# pdb2gmx assigns the standard protonation states (pH ~7): Asp/Glu charged,
# Lys/Arg charged, His neutral (tautomer from hydrogen bonds), Cys and Tyr neutral.
# PDBFixer gives the same states for pH between the pKa of His (6.04) and Cys (8.18).
HYDROGEN_MASS = 1.5  # amu, as the OpenMM setup's hydrogenMass
RESTRAINT_K = 1000.0  # kJ/mol/nm^2, pdb2gmx's posre.itp default and the OpenMM setup's
EQUILIBRATION_ENERGY_PS = 1.0
COMPRESSIBILITY_PER_BAR = 4.5e-5  # water
TAU_P_PS = 2.0
MIN_CHECKPOINT_SECONDS = 1.0
# mdrun -reprod on CPUs: the same segment run twice gives identical frames (without it,
# a 2-thread run of 1000 atoms diverges from an identical one within picoseconds), for
# 0-10% of speed. GPU nonbonded kernels sum in a varying order either way.
REPRODUCIBLE_ON_CPU = True
CPT_MAGIC = 171817
OUTPUT_FILES = ("trajectory.xtc", "energies.csv", "final_state.cpt", "segment.json")
# A lab's own .gro + .top + .mdp, recorded by import_inputs for replica_tpr.
OWN_INPUTS = "own_inputs.json"
OWN_MDP = "own_inputs.mdp"
# energies.csv column -> .edr term, and the factor to the column's unit
EDR_TERMS = {
    "potential_energy_kJ_mol": ("Potential", 1.0),
    "kinetic_energy_kJ_mol": ("Kinetic En.", 1.0),
    "total_energy_kJ_mol": ("Total Energy", 1.0),
    "temperature_K": ("Temperature", 1.0),
    "volume_nm3": ("Volume", 1.0),
    "density_g_per_mL": ("Density", 1e-3),  # kg/m^3 -> g/mL
}
_OPTION = re.compile(r"^-[a-z][a-z0-9_]*$")
_NUMBER = re.compile(r"^-?\d+(\.\d*)?([eE][-+]?\d+)?$")


class GromacsError(SegmentError):
    """A gmx command failed; the message is one line."""


# --------------------------------------------------------------------------- gmx calls


def gmx_argv(tool: str, options=()) -> list[str]:
    """The argument list of one gmx call: ``gmx -quiet -nobackup <tool> <options>``.

    ``options`` is a sequence of ``(flag, value)`` pairs; value None or True means the
    flag alone. Paths become absolute (so a file named ``-x.pdb`` cannot be taken for
    an option); other values must be numbers or our own words."""
    argv = [GMX, "-quiet", "-nobackup", tool]
    for flag, value in options:
        if not _OPTION.match(flag):
            raise ValueError(f"not a gmx option: {flag!r}")
        if value is None or value is True:
            argv.append(flag)
            continue
        if value is False:
            argv.append("-no" + flag[1:])
            continue
        argv.append(flag)
        if isinstance(value, Path):
            argv.append(str(value.absolute()))
        elif isinstance(value, (int, float)):
            argv.append(repr(value) if isinstance(value, float) else str(value))
        else:
            value = str(value)
            if value.startswith("-") and not _NUMBER.match(value):
                raise ValueError(f"gmx {tool} {flag}: {value!r} would be read as an option")
            argv.append(value)
    return argv


def _environment(threads: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["GMX_MAXBACKUP"] = "-1"  # never leave #file.1# backups behind
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # mdrun refuses a differing -ntomp
    else:
        env.pop("OMP_NUM_THREADS", None)
    return env


def run_gmx(
    tool: str,
    options=(),
    *,
    cwd: Path,
    subject: Path | str | None = None,
    stdin: str | None = None,
    error: type[Exception] = GromacsError,
    threads: int | None = None,
    log_file: Path | None = None,
) -> str:
    """Run one short gmx command and return its output (stdout and stderr together).

    ``stdin`` answers gmx's interactive questions (group selections). ``subject`` is
    the file the failure message names (the user's input). The whole output is
    appended to ``log_file`` (default ``cwd/gromacs.log``)."""
    argv = gmx_argv(tool, options)
    cwd = Path(cwd).absolute()
    try:
        result = subprocess.run(
            argv,
            check=False,
            cwd=cwd,
            input=stdin if stdin is not None else "",
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=_environment(threads),
        )
    except OSError:
        raise error(f"gmx {tool}: {gmx_problem() or f'the GROMACS program {GMX!r} could not be run'}") from None
    log_path = Path(log_file) if log_file else cwd / "gromacs.log"
    with open(log_path, "a") as handle:
        handle.write(f"$ {' '.join(argv)}\n{result.stdout}\n")
    if result.returncode != 0:
        raise error(failure_message(tool, subject, result.stdout, log_path, result.returncode))
    return result.stdout


def failure_message(tool: str, subject, output: str, log_path: Path | None, returncode: int | None = None) -> str:
    where = f" on {subject}" if subject else ""
    line = error_line(output)
    if not line:
        line = (
            f"exit status {returncode}"
            if returncode is not None and returncode >= 0
            else (f"killed by {signal.Signals(-returncode).name}" if returncode else "failed")
        )
    more = f" (full output: {log_path})" if log_path and str(log_path) != os.devnull else ""
    return f"gmx {tool} failed{where}: {line}{more}"


_BLOCK_END = re.compile(r"^(For more information and tips|-{20,}|Program:|Source file:)")


def _block(lines: list[str], start: int) -> str:
    """The text of an error block: the lines after ``start`` up to a blank line."""
    text = []
    for line in lines[start + 1 :]:
        if not line.strip() or _BLOCK_END.match(line.strip()):
            if text:
                break
            continue
        text.append(line.strip())
    return " ".join(text)


def error_line(output: str) -> str:
    """The one meaningful error line in a gmx output: the first grompp ERROR (or, when
    grompp stopped on warnings, the first WARNING), else the text of gmx's error banner
    (after ``Fatal error:``, ``Error in user input:``...), else the last non-empty line."""
    lines = output.splitlines()
    fatal = None
    for index, line in enumerate(lines):
        if not line.startswith("Source file:"):
            continue
        # The banner: Program / Source file / [Function / MPI rank] / blank / "<kind>:" / text
        for header in range(index + 1, min(index + 6, len(lines))):
            stripped = lines[header].strip()
            if not stripped or stripped.startswith(("Function:", "MPI rank:")):
                continue
            if stripped.endswith(":"):
                fatal = (stripped, _block(lines, header))
            break
    for kind in ("ERROR", "WARNING"):
        for index, line in enumerate(lines):
            match = re.match(rf"^({kind} \d+ \[.*?\]):\s*(.*)$", line.strip())
            if match:
                if kind == "WARNING" and fatal and "warning" not in fatal[1].lower():
                    break
                rest = " ".join(filter(None, [match.group(2), _block(lines, index)]))
                return _shorten(f"{match.group(1)}: {rest}".strip())
    if fatal:
        return _shorten(fatal[1] if fatal[0] == "Fatal error:" else f"{fatal[0]} {fatal[1]}")
    meaningful = [line.strip() for line in lines if line.strip() and not _BLOCK_END.match(line.strip())]
    return _shorten(meaningful[-1]) if meaningful else ""


def _shorten(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def available() -> str | None:
    """The GROMACS version (``2022.5-Debian_2022.5_2``), or None if gmx cannot run."""
    return _probe()[0]


def gmx_problem() -> str | None:
    """Why gmx cannot run here, in one line that names MDCAMPAIGN_GMX where it is set
    (the usual cause), or None."""
    return _probe()[1]


@functools.cache
def _probe() -> tuple[str | None, str | None]:
    """(version, problem): ``gmx --version`` run once per process."""
    given = os.environ.get(GMX_VARIABLE)
    named = f"{GMX_VARIABLE}={GMX!r}" if given is not None else f"'{GMX}'"
    if given is not None and (not given.strip() or any(c in given for c in ";|&$`<>\n")):
        return None, (
            f"{named} is not a program: {GMX_VARIABLE} must name the gmx program itself (a path, or a "
            "command on PATH such as gmx_mpi), without arguments or shell syntax"
        )
    if shutil.which(GMX) is None:
        if given is not None:
            where = "does not exist" if not Path(GMX).exists() else "is not an executable program"
            if os.sep not in GMX and not Path(GMX).exists():
                where = "is not a command on PATH"
            return None, f"{named} {where}: point {GMX_VARIABLE} at GROMACS's gmx, or unset it to use gmx from PATH"
        return None, (
            "GROMACS's gmx is not on PATH: `apt install gromacs` (Debian/Ubuntu), `module load gromacs` "
            f"(clusters), or `conda install -c conda-forge gromacs`; or set {GMX_VARIABLE} to its gmx"
        )
    try:
        result = subprocess.run(
            gmx_argv("--version"),
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            env=_environment(),
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"{named} could not be run ({error})"
    match = re.search(r"GROMACS version:\s*(\S+)", result.stdout)
    if result.returncode != 0 or not match:
        said = error_line(result.stdout + result.stderr) or f"exit status {result.returncode}"
        return None, f"{named} does not run as gmx (`gmx --version`: {said})"
    return match.group(1), None


# --------------------------------------------------------------------------- protocol


def check_protocol(protocol: Protocol) -> list[str]:
    """What the GROMACS engine cannot do with this protocol, one line each (empty: fine)."""
    return list(protocol.problems(engine="gromacs"))


def _nstcalcenergy(frame_steps: int) -> int:
    """The largest divisor of the frame interval up to 100 (GROMACS's default): energies
    are then computed at every frame step and not much more often."""
    for candidate in range(min(100, frame_steps), 0, -1):
        if frame_steps % candidate == 0:
            return candidate
    return 1


def _mdp(settings: dict) -> str:
    lines = []
    for key, value in settings.items():
        if isinstance(value, bool):
            value = "yes" if value else "no"
        elif isinstance(value, float):
            value = f"{value:.10g}"
        lines.append(f"{key:<24} = {value}")
    return "\n".join(lines) + "\n"


def _common_md(protocol: Protocol, seed: int) -> dict:
    return {
        "integrator": "sd",  # Langevin (leap-frog stochastic dynamics), like OpenMM's LangevinMiddle
        "dt": protocol.timestep_ps,
        "tc-grps": "System",
        "tau-t": 1.0 / protocol.friction_per_ps,  # sd's tau-t is the inverse friction
        "ref-t": protocol.temperature_K,
        "ld-seed": seed,
        "comm-mode": "Linear",
        "cutoff-scheme": "Verlet",
        "coulombtype": "PME",
        "rcoulomb": protocol.nonbonded_cutoff_nm,
        "rvdw": protocol.nonbonded_cutoff_nm,
        "DispCorr": "EnerPres",  # OpenMM's NonbondedForce uses a dispersion correction too
        "constraints": "h-bonds",
        "constraint-algorithm": "lincs",
        "nstxout": 0,
        "nstvout": 0,
        "nstfout": 0,
    }


def _barostat(protocol: Protocol) -> dict:
    return {
        "pcoupl": "C-rescale",
        "pcoupltype": "isotropic",
        "tau-p": TAU_P_PS,
        "ref-p": protocol.pressure_bar,
        "compressibility": COMPRESSIBILITY_PER_BAR,
    }


def production_mdp(protocol: Protocol, seed: int, trajectory_group: str) -> str:
    frame = protocol.frame_steps
    calc = _nstcalcenergy(frame)
    return _mdp(
        {
            **_common_md(protocol, seed),
            "tinit": 0.0,
            "init-step": 0,
            "nsteps": protocol.segment_steps,
            "continuation": True,
            "gen-vel": False,
            **_barostat(protocol),
            "nstcalcenergy": calc,
            "nstenergy": frame,
            "nstlog": frame,
            "nstxout-compressed": frame,
            "compressed-x-grps": trajectory_group,
            "compressed-x-precision": 1000,
        }
    )


# --------------------------------------------------------------------------- setup


def _steps_done(info: dict, what: str) -> None:
    info.setdefault("steps", []).append(what)


def prepare(
    structure: Path, protocol: Protocol, out_dir: Path, threads: int | None = None, seed: int | None = None
) -> dict:
    """Set up a system with GROMACS; returns what setup.json records.

    Writes to ``out_dir``: ``system.tpr``, ``start.cpt``, ``topology.pdb``,
    ``trajectory_topology.pdb``, ``system.top`` (+ its ``.itp`` files),
    ``production.mdp``, ``index.ndx``, ``equilibration.csv``, ``fixed.pdb`` and, in
    ``out_dir/build``, every intermediate file and ``gromacs.log`` (all gmx output)."""
    from .repair import repair  # the same structure repair as the OpenMM setup

    problems = check_protocol(protocol)
    if problems:
        raise CampaignError("; ".join(problems))
    started = time.time()
    structure = Path(structure).absolute()
    out = Path(out_dir).absolute()
    build = out / "build"
    build.mkdir(parents=True, exist_ok=True)
    seed = protocol.seed if seed is None else seed
    gmx_log = build / "gromacs.log"
    gmx_log.write_text("")
    info: dict = {
        "engine": "gromacs",
        "gmx_version": available(),
        "structure": str(structure),
        "structure_sha256": sha256_file(structure),
        "forcefield": FORCEFIELDS[protocol.forcefield],
        "water_model": WATER_MODELS[protocol.water_model],
    }

    def gmx(tool, options, *, subject=None, stdin=None, error=GromacsError, nt=None):
        return run_gmx(
            tool, options, cwd=build, subject=subject, stdin=stdin, error=error, threads=nt, log_file=gmx_log
        )

    # 1. Structure repair (pdbfixer: water and salt removed, missing heavy atoms added)
    #    and the GROMACS names of caps; pdb2gmx then adds hydrogens itself (-ignh).
    fixer, fix_info = repair(structure, protocol)
    if fix_info.get("metal_ions"):
        raise CampaignError(
            f"structure '{structure}': the GROMACS engine does not keep metal ions yet "
            f"({', '.join(fix_info['metal_ions'])}); use engine openmm (forcefield amber14, explicit "
            f"solvent) or drop them with remove_residues: {next(iter(fix_info['metal_ions']))}"
        )
    info["fix"] = fix_info
    _write_gromacs_pdb(fixer.topology, fixer.positions, out / "fixed.pdb")
    _steps_done(info, "pdbfixer: water and ions removed, missing heavy atoms added, caps renamed for GROMACS")

    gmx(
        "pdb2gmx",
        [
            ("-f", out / "fixed.pdb"),
            ("-o", build / "protein.gro"),
            ("-p", build / "topol.top"),
            ("-i", build / "posre.itp"),
            ("-ff", FORCEFIELDS[protocol.forcefield]),
            ("-water", WATER_MODELS[protocol.water_model]),
            ("-ignh", True),
        ],
        subject=structure,
        error=CampaignError,
    )
    _steps_done(info, f"pdb2gmx -ff {FORCEFIELDS[protocol.forcefield]} -water {protocol.water_model} -ignh")
    molecule_files = [build / "topol.top"] + sorted(build.glob("topol_*.itp"))
    if protocol.hmr:
        moved = sum(_repartition_hydrogen_masses(path, HYDROGEN_MASS) for path in molecule_files)
        info["hmr"] = {"hydrogen_mass_amu": HYDROGEN_MASS, "hydrogens": moved}
        _steps_done(
            info,
            f"hydrogen mass repartitioning: {moved} solute hydrogens set to {HYDROGEN_MASS} amu "
            "in the topology's [ atoms ] masses, taken from the bonded heavy atom (water untouched)",
        )

    # 2. Box, water, ions. The box is OpenMM's (Modeller.addSolvent): image distance =
    #    bounding-sphere diameter + padding, at least 2 * padding; GROMACS's box shapes
    #    have the same vectors as OpenMM's for the same image distance.
    width = _box_width(build / "protein.gro", protocol.padding_nm)
    gmx(
        "editconf",
        [
            ("-f", build / "protein.gro"),
            ("-o", build / "box.gro"),
            ("-c", True),
            ("-bt", BOX_TYPES[protocol.box_shape]),
            ("-box", round(width, 4)),
        ],
    )
    gmx(
        "solvate",
        [
            ("-cp", build / "box.gro"),
            ("-cs", WATER_BOXES[protocol.water_model]),
            ("-p", build / "topol.top"),
            ("-o", build / "solvated.gro"),
        ],
    )
    (build / "ions.mdp").write_text(
        _mdp(
            {
                "integrator": "steep",
                "nsteps": 0,
                "cutoff-scheme": "Verlet",
                "coulombtype": "PME",
                "rcoulomb": protocol.nonbonded_cutoff_nm,
                "rvdw": protocol.nonbonded_cutoff_nm,
            }
        )
    )
    gmx(
        "grompp",
        [
            ("-f", build / "ions.mdp"),
            ("-c", build / "solvated.gro"),
            ("-p", build / "topol.top"),
            # the one warning allowed: net charge (genion is about to neutralize it)
            ("-o", build / "ions.tpr"),
            ("-po", build / "ions.out.mdp"),
            ("-maxwarn", 1),
        ],
        subject=structure,
        error=CampaignError,
    )
    genion = [
        ("-s", build / "ions.tpr"),
        ("-o", build / "ions.gro"),
        ("-p", build / "topol.top"),
        ("-pname", "NA"),
        ("-nname", "CL"),
        ("-neutral", True),
    ]
    if protocol.ionic_strength_molar > 0:
        genion.append(("-conc", float(protocol.ionic_strength_molar)))
    gmx("genion", genion + [("-seed", seed % 2147483646 + 1)], stdin="SOL\n")  # 0 would mean random
    _steps_done(
        info,
        f"editconf -bt {BOX_TYPES[protocol.box_shape]} -box {width:.3f} (padding {protocol.padding_nm} nm "
        f"as in OpenMM: bounding-sphere diameter + padding); solvate "
        f"({WATER_BOXES[protocol.water_model]}); genion -neutral -conc {protocol.ionic_strength_molar}",
    )
    _check_box(build / "ions.gro", protocol, structure)

    # 3. Energy minimization (steepest descent; 0 iterations means until converged, as in OpenMM).
    em = {
        "integrator": "steep",
        "emtol": 10.0,
        "emstep": 0.01,
        "nsteps": protocol.minimization_max_iterations or -1,
        **{
            k: v
            for k, v in _common_md(protocol, seed).items()
            if k
            not in ("integrator", "dt", "tc-grps", "tau-t", "ref-t", "ld-seed", "constraints", "constraint-algorithm")
        },
        "nstenergy": 1,
    }
    (build / "em.mdp").write_text(_mdp(em))
    gmx(
        "grompp",
        [
            ("-f", build / "em.mdp"),
            ("-c", build / "ions.gro"),
            ("-p", build / "topol.top"),
            ("-o", build / "em.tpr"),
            ("-po", build / "em.out.mdp"),
            ("-maxwarn", 0),
        ],
        subject=structure,
        error=CampaignError,
    )
    t0 = time.time()
    gmx("mdrun", [("-s", build / "em.tpr"), ("-deffnm", "em"), *_thread_options(threads)], nt=threads)
    em_energy = _read_edr(build / "em.edr")
    potential = em_energy.get("Potential", [])
    info["minimization"] = {
        "energy_before_kJ_mol": round(float(potential[0]), 2) if len(potential) else None,
        "energy_after_kJ_mol": round(float(potential[-1]), 2) if len(potential) else None,
        "max_iterations": protocol.minimization_max_iterations,
        "seconds": round(time.time() - t0, 1),
    }
    limit = protocol.minimization_max_iterations or "unlimited"
    _steps_done(info, f"energy minimization: steepest descent, at most {limit} steps")

    # 4. Equilibration: half restrained NVT (posre.itp, -DPOSRES), half free NPT. The free
    #    part runs from step -N to step 0 (init-step = -N) so that its final checkpoint is
    #    at step 0, time 0: the production's start.
    total = protocol.equilibration_steps
    restrained = total // 2
    free = total - restrained
    energy_steps = max(1, protocol.steps(EQUILIBRATION_ENERGY_PS))
    t0 = time.time()
    md = _common_md(protocol, seed)
    start_gro, start_cpt = build / "em.gro", None
    if restrained > 0:
        # t = tinit + dt * step: negative steps give negative times.
        nvt = {
            **md,
            "define": "-DPOSRES",
            "nsteps": restrained,
            "tinit": 0.0,
            "init-step": -total,
            "continuation": False,
            "gen-vel": True,
            "gen-temp": protocol.temperature_K,
            "gen-seed": seed,
            "pcoupl": "no",
            "refcoord-scaling": "no",
            "nstcalcenergy": _nstcalcenergy(energy_steps),
            "nstenergy": energy_steps,
            "nstlog": energy_steps,
        }
        (build / "nvt.mdp").write_text(_mdp(nvt))
        gmx(
            "grompp",
            [
                ("-f", build / "nvt.mdp"),
                ("-c", build / "em.gro"),
                ("-r", build / "em.gro"),
                ("-p", build / "topol.top"),
                ("-o", build / "nvt.tpr"),
                ("-po", build / "nvt.out.mdp"),
                ("-maxwarn", 0),
            ],
            subject=structure,
            error=CampaignError,
        )
        gmx("mdrun", [("-s", build / "nvt.tpr"), ("-deffnm", "nvt"), *_thread_options(threads)], nt=threads)
        start_gro, start_cpt = build / "nvt.gro", build / "nvt.cpt"
    npt = {
        **md,
        "nsteps": free,
        "tinit": 0.0,
        "init-step": -free,
        **_barostat(protocol),
        "nstcalcenergy": _nstcalcenergy(energy_steps),
        "nstenergy": energy_steps,
        "nstlog": energy_steps,
    }
    if start_cpt is None:
        npt.update({"continuation": False, "gen-vel": True, "gen-temp": protocol.temperature_K, "gen-seed": seed})
    else:
        npt.update({"continuation": True, "gen-vel": False})
    (build / "npt.mdp").write_text(_mdp(npt))
    grompp = [
        ("-f", build / "npt.mdp"),
        ("-c", start_gro),
        ("-p", build / "topol.top"),
        ("-o", build / "npt.tpr"),
        ("-po", build / "npt.out.mdp"),
        ("-maxwarn", 0),
    ]
    if start_cpt is not None:
        grompp.append(("-t", start_cpt))
    gmx("grompp", grompp, subject=structure, error=CampaignError)
    gmx("mdrun", [("-s", build / "npt.tpr"), ("-deffnm", "npt"), *_thread_options(threads)], nt=threads)
    header = checkpoint_header(build / "npt.cpt")
    if header is None or header["step"] != 0:
        raise GromacsError(
            f"setup: the equilibration checkpoint {build / 'npt.cpt'} is not at step 0 "
            f"({header and header['step']}); see {gmx_log}"
        )
    _steps_done(
        info,
        f"equilibration: {restrained * protocol.timestep_ps:g} ps restrained NVT "
        f"(-DPOSRES, k = {RESTRAINT_K:g} kJ/mol/nm2 on heavy atoms), {free * protocol.timestep_ps:g} ps "
        f"free NPT (C-rescale), sd integrator at {protocol.temperature_K} K",
    )
    info["equilibration"] = _equilibration_summary(build, protocol, out / "equilibration.csv", time.time() - t0)

    # 5. Production input: index groups, the mdp and the tpr (state from npt.cpt, exact).
    atoms = _read_gro_atoms(build / "npt.gro")
    solute = [
        i
        for i, (residue, _) in enumerate(atoms)
        if residue.upper() not in WATER_RESIDUES and residue.upper() not in SALT_ION_RESIDUES
    ]
    subset = protocol.trajectory_atoms == "solute" and len(solute) < len(atoms)
    _write_index(out / "index.ndx", {"System": range(len(atoms)), "Solute": solute})
    for path in molecule_files + [build / "posre.itp"] + sorted(build.glob("posre_*.itp")):
        if path.exists():
            shutil.copy2(path, out / ("system.top" if path.name == "topol.top" else path.name))
    (out / "production.mdp").write_text(production_mdp(protocol, seed, "Solute" if subset else "System"))
    shutil.copy2(build / "npt.gro", out / "start.gro")
    shutil.copy2(build / "npt.cpt", out / "start.cpt")
    _grompp_production(out, out / "system.tpr", seed, gmx_log, structure)
    _steps_done(info, "production input: system.tpr (grompp -t start.cpt) and start.cpt (step 0, time 0)")

    # 6. Topologies for analysis: all atoms, and the atoms written to the trajectory.
    gmx(
        "trjconv",
        [
            ("-s", out / "system.tpr"),
            ("-f", out / "start.gro"),
            ("-o", out / "topology.pdb"),
            ("-n", out / "index.ndx"),
        ],
        stdin="System\n",
    )
    gmx(
        "trjconv",
        [
            ("-s", out / "system.tpr"),
            ("-f", out / "start.gro"),
            ("-o", out / "trajectory_topology.pdb"),
            ("-n", out / "index.ndx"),
        ],
        stdin=("Solute\n" if subset else "System\n"),
    )

    info["atoms"] = len(atoms)
    info["solute_atoms"] = len(solute)
    info["waters"] = sum(1 for r, n in atoms if r.upper() in WATER_RESIDUES and n == "OW")
    info["ions"] = {name: sum(1 for r, _ in atoms if r.upper() == name) for name in ("NA", "CL")}
    info["trajectory_atoms"] = len(solute) if subset else len(atoms)
    info["ld_seed"] = seed
    info["host"] = host_platform.node()
    info["wall_seconds"] = round(time.time() - started, 1)
    log.info(
        "GROMACS setup: %d atoms (%d solute), %d waters, in %.0f s",
        info["atoms"],
        info["solute_atoms"],
        info["waters"],
        info["wall_seconds"],
    )
    return info


def replica_tpr(setup_dir: Path, seed: int, out_tpr: Path) -> Path:
    """``system.tpr`` with another Langevin seed (``ld-seed``), for a replica: replicas
    share the equilibrated state and differ by their random forces (GROMACS cannot
    change the seed of an existing tpr, so this runs grompp again). For a lab's own
    .gro + .top + .mdp, their grompp again with ``ld-seed`` and ``gen-seed`` set (the
    random forces of sd/bd/v-rescale/C-rescale, and velocities where gen-vel = yes)."""
    setup_dir = Path(setup_dir).absolute()
    out_tpr = Path(out_tpr).absolute()
    if (setup_dir / OWN_INPUTS).exists():
        source = json.loads((setup_dir / OWN_INPUTS).read_text())
        seeded = out_tpr.with_name(out_tpr.stem + ".mdp")
        seeded.write_text(_with_seeds((setup_dir / OWN_MDP).read_text(), seed))
        options = [
            ("-f", seeded),
            ("-c", Path(source["gro"])),
            ("-p", Path(source["top"])),
            ("-o", out_tpr),
            ("-po", out_tpr.with_name(out_tpr.stem + ".out.mdp")),
            ("-maxwarn", 0),
        ]
        if "ndx" in source:
            options.append(("-n", Path(source["ndx"])))
        run_gmx(
            "grompp",
            options,
            cwd=Path(source["top"]).parent,
            subject=_grompp_subject(source),
            error=CampaignError,
            log_file=setup_dir / "gromacs.log",
        )
        for leftover in (seeded, out_tpr.with_name(out_tpr.stem + ".out.mdp")):
            leftover.unlink(missing_ok=True)
        return out_tpr
    _grompp_production(setup_dir, out_tpr, seed, setup_dir / "build" / "gromacs.log", setup_dir / "production.mdp")
    return out_tpr


def can_reseed(setup_dir: Path) -> bool:
    """Whether :func:`replica_tpr` can give this setup's replicas their own seeds (not
    for a lab's .tpr, which runs as given)."""
    return (Path(setup_dir) / "production.mdp").exists() or (Path(setup_dir) / OWN_INPUTS).exists()


def _with_seeds(mdp: str, seed: int) -> str:
    """An .mdp with ld-seed and gen-seed set to ``seed`` (either spelling, any case)."""
    for key in ("ld-seed", "gen-seed"):
        pattern = re.compile(rf"(?im)^[ \t]*{key.replace('-', '[-_]')}[ \t]*=.*$")
        line = f"{key:<24} = {seed}"
        mdp = pattern.sub(line, mdp) if pattern.search(mdp) else mdp.rstrip("\n") + f"\n{line}\n"
    return mdp


def _grompp_production(setup: Path, tpr: Path, seed: int, gmx_log: Path, subject) -> None:
    mdp = (setup / "production.mdp").read_text()
    mdp = re.sub(r"(?m)^ld-seed\s*=.*$", f"{'ld-seed':<24} = {seed}", mdp)
    seeded = tpr.with_name(tpr.stem + ".mdp")
    seeded.write_text(mdp)
    run_gmx(
        "grompp",
        [
            ("-f", seeded),
            ("-c", setup / "start.gro"),
            ("-t", setup / "start.cpt"),
            ("-p", setup / "system.top"),
            ("-n", setup / "index.ndx"),
            ("-o", tpr),
            ("-po", tpr.with_name(tpr.stem + ".out.mdp")),
            ("-maxwarn", 0),
        ],
        cwd=setup,
        subject=subject,
        log_file=gmx_log,
    )
    tpr.with_name(tpr.stem + ".out.mdp").unlink(missing_ok=True)
    if seeded.name != "production.mdp":
        seeded.unlink(missing_ok=True)


def _thread_options(threads: int | None, pin_offset: int | None = None, gpu: int | None = None) -> list:
    options = [("-ntmpi", 1)]
    if threads:
        options.append(("-ntomp", int(threads)))
    if pin_offset is not None:
        options += [("-pin", "on"), ("-pinoffset", int(pin_offset)), ("-pinstride", 1)]
    if gpu is not None:
        options += [("-nb", "gpu"), ("-gpu_id", str(int(gpu)))]
    elif REPRODUCIBLE_ON_CPU:
        options.append(("-reprod", True))
    return options


def _write_gromacs_pdb(topology, positions, path: Path) -> None:
    """The structure as pdb2gmx reads it: heavy atoms only (pdb2gmx adds hydrogens),
    with the amber99sb-ildn.ff names of caps (NME's methyl carbon is CH3, the C-terminal
    amide cap is NHE)."""
    from openmm import app

    modeller = app.Modeller(topology, positions)
    modeller.delete(
        [atom for atom in modeller.topology.atoms() if atom.element is not None and atom.element.symbol in ("H", "D")]
    )
    for residue in modeller.topology.residues():
        if residue.name == "NME":
            for atom in residue.atoms():
                if atom.name == "C":
                    atom.name = "CH3"
        elif residue.name == "NH2":
            residue.name = "NHE"
    with open(path, "w") as handle:
        app.PDBFile.writeFile(modeller.topology, modeller.positions, handle, keepIds=True)


def _repartition_hydrogen_masses(path: Path, hydrogen_mass: float) -> int:
    """Hydrogen mass repartitioning in a GROMACS topology, as OpenMM's ``hydrogenMass``:
    every hydrogen bonded to a heavy atom gets ``hydrogen_mass`` and its heavy atom
    loses the difference. Per-atom masses in ``[ atoms ]`` are part of the topology
    format; molecules included from the force field (water, ions) are not touched."""
    lines = path.read_text().splitlines(keepends=True)
    section = None
    molecules: list[dict] = []
    for number, line in enumerate(lines):
        body = line.split(";", 1)[0].strip()
        header = re.match(r"^\[\s*(\w+)\s*\]$", body)
        if header:
            section = header.group(1).lower()
            if section == "moleculetype":
                molecules.append({"atoms": {}, "bonds": []})
            continue
        if not body or body.startswith("#") or not molecules:
            continue
        fields = body.split()
        if section == "atoms" and len(fields) >= 8:
            molecules[-1]["atoms"][int(fields[0])] = (number, float(fields[7]))
        elif section == "bonds" and len(fields) >= 2:
            molecules[-1]["bonds"].append((int(fields[0]), int(fields[1])))
    moved = 0
    for molecule in molecules:
        masses = {nr: mass for nr, (_, mass) in molecule["atoms"].items()}
        for a, b in molecule["bonds"]:
            if a not in masses or b not in masses:
                continue
            if masses[a] < 1.2 <= masses[b]:
                a, b = b, a
            if masses[b] < 1.2 <= masses[a]:
                transfer = hydrogen_mass - masses[b]
                masses[b] = hydrogen_mass
                masses[a] -= transfer
                moved += 1
        for nr, (number, original) in molecule["atoms"].items():
            if abs(masses[nr] - original) > 1e-9:
                lines[number] = _set_mass(lines[number], masses[nr])
    path.write_text("".join(lines))
    return moved


def _set_mass(line: str, mass: float) -> str:
    body, _, comment = line.rstrip("\n").partition(";")
    fields = body.split()
    fields[7] = f"{mass:.5f}"
    text = " ".join(f"{field:>10}" for field in fields)
    return text + (f"   ;{comment}" if comment else "") + "\n"


def _check_box(gro: Path, protocol: Protocol, structure: Path) -> None:
    """GROMACS needs the cutoff below half the shortest box vector and below the
    smallest diagonal element of the box; say so, with the fix, before grompp does."""
    numbers = [float(x) for x in gro.read_text().splitlines()[-1].split()]
    numbers += [0.0] * (9 - len(numbers))
    v1 = (numbers[0], numbers[3], numbers[4])
    v2 = (numbers[5], numbers[1], numbers[6])
    v3 = (numbers[7], numbers[8], numbers[2])
    shortest = min(math.sqrt(sum(x * x for x in v)) for v in (v1, v2, v3))
    limit = min(shortest / 2.0, numbers[0], numbers[1], numbers[2])
    if protocol.nonbonded_cutoff_nm >= limit:
        raise CampaignError(
            f"structure '{structure}': the solvated {protocol.box_shape} box allows a cutoff below {limit:.2f} nm "
            f"only, not nonbonded_cutoff_nm {protocol.nonbonded_cutoff_nm}; increase padding_nm "
            f"(now {protocol.padding_nm}) or lower nonbonded_cutoff_nm"
        )


def _box_width(gro: Path, padding: float) -> float:
    """OpenMM's box width for a padding: bounding-sphere diameter (around the centre of
    the coordinates' range) + padding, at least 2 * padding."""
    lines = gro.read_text().splitlines()
    count = int(lines[1].strip())
    xyz = [(float(line[20:28]), float(line[28:36]), float(line[36:44])) for line in lines[2 : 2 + count]]
    if not xyz:
        return 2 * padding
    center = [0.5 * (min(p[i] for p in xyz) + max(p[i] for p in xyz)) for i in range(3)]
    radius = max(math.dist(center, p) for p in xyz)
    return max(2 * radius + padding, 2 * padding)


def _read_gro_atoms(gro: Path) -> list[tuple[str, str]]:
    lines = gro.read_text().splitlines()
    count = int(lines[1].strip())
    return [(line[5:10].strip(), line[10:15].strip()) for line in lines[2 : 2 + count]]


def _write_index(path: Path, groups: dict[str, list[int]]) -> None:
    with open(path, "w") as handle:
        for name, indices in groups.items():
            handle.write(f"[ {name} ]\n")
            numbers = [str(i + 1) for i in indices]
            handle.writelines(" ".join(numbers[start : start + 15]) + "\n" for start in range(0, len(numbers), 15))


def _read_edr(path: Path) -> dict:
    import pyedr

    try:
        return pyedr.edr_to_dict(str(path), verbose=False)
    except TypeError:  # older pyedr without `verbose`
        return pyedr.edr_to_dict(str(path))


def _gmx_energy(edr: Path, terms: list[str], log_file: Path) -> dict:
    """Energy terms of an .edr through ``gmx energy`` (pyedr refuses the negative steps
    of the equilibration, which ends at step 0)."""
    xvg = edr.with_suffix(".xvg")
    run_gmx(
        "energy",
        [("-f", edr), ("-o", xvg)],
        cwd=edr.parent,
        subject=edr,
        log_file=log_file,
        stdin="".join(term.replace(" ", "-") + "\n" for term in terms) + "\n",
    )
    names, rows = [], []
    for line in xvg.read_text().splitlines():
        legend = re.match(r'^@ s\d+ legend "(.*)"', line)
        if legend:
            names.append(legend.group(1))
        elif line and line[0] not in "#@":
            rows.append([float(x) for x in line.split()])
    data = {"Time": [row[0] for row in rows]}
    for index, name in enumerate(names):
        data[name] = [row[index + 1] for row in rows]
    return data


def _equilibration_summary(build: Path, protocol: Protocol, csv_path: Path, seconds: float) -> dict:
    rows = []
    for phase in ("nvt", "npt"):
        path = build / f"{phase}.edr"
        if not path.exists():
            continue
        terms = [term for term, _ in EDR_TERMS.values() if phase == "npt" or term not in ("Volume", "Density")]
        data = _gmx_energy(path, terms, build / "gromacs.log")
        for index, time_ps in enumerate(data["Time"]):
            row = {
                "step": round(time_ps / protocol.timestep_ps),
                "time_ps": round(float(time_ps), 6),
                "phase": "restrained" if phase == "nvt" else "free",
            }
            for column, (term, factor) in EDR_TERMS.items():
                row[column] = float(data[term][index]) * factor if term in data else None
            rows.append(row)
    with open(csv_path, "w", newline="") as handle:
        if rows:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in rows:
                writer.writerow(
                    {k: (f"{v:.6g}" if isinstance(v, float) else ("" if v is None else v)) for k, v in row.items()}
                )
    free = [r for r in rows if r["phase"] == "free"]
    tail = free[len(free) // 2 :] or rows[-1:]

    def mean(key):
        values = [r[key] for r in tail if r[key] is not None]
        return round(sum(values) / len(values), 4) if values else None

    return {
        "ps": protocol.equilibration_ps,
        "seconds": round(seconds, 1),
        "temperature_mean_K": mean("temperature_K"),
        "density_mean_g_per_mL": mean("density_g_per_mL"),
    }


# --------------------------------------------------------------------------- checkpoints and tprs


def checkpoint_header(path: Path) -> dict | None:
    """Step, time, atoms and simulation part of a GROMACS checkpoint (read from its XDR
    header), or None if the file is missing or not a checkpoint."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(1 << 16)
    except (FileNotFoundError, IsADirectoryError):
        return None
    position = 0

    def take(fmt):
        nonlocal position
        values = struct.unpack_from(fmt, data, position)
        position += struct.calcsize(fmt)
        return values[0]

    def string():
        nonlocal position
        length = take(">I")
        text = data[position : position + length].decode("latin-1")
        position += (length + 3) // 4 * 4
        return text

    try:
        if take(">i") != CPT_MAGIC:
            return None
        version = string()
        for _ in range(5):  # build time, user, host (unused), program, generation time
            string()
        file_version = take(">i")
        if file_version < 17:  # GROMACS 2018 and later write version 17 or higher
            return None
        take(">i")  # double precision
        string()  # host
        natoms = take(">i")
        for _ in range(4):  # T-coupling groups, NH chain lengths, lambda states
            take(">i")
        take(">i")  # integrator
        part = take(">i")
        step = take(">q")
        t = take(">d")
    except (struct.error, UnicodeDecodeError):
        return None
    return {"version": version, "natoms": natoms, "simulation_part": part, "step": step, "time_ps": t}


def inspect_tpr(tpr: Path, cwd: Path | None = None) -> dict:
    """The run parameters of a tpr that matter here (from ``gmx dump -s``)."""
    tpr = Path(tpr).absolute()
    output = run_gmx("dump", [("-s", tpr)], cwd=cwd or tpr.parent, subject=tpr, log_file=Path(os.devnull))
    values = {}
    for key in (
        "integrator",
        "tinit",
        "dt",
        "nsteps",
        "init-step",
        "nstxout-compressed",
        "nstenergy",
        "nstcalcenergy",
        "pcoupl",
        "ld-seed",
        "nstxout",
        "ref-t",
    ):
        match = re.search(rf"(?m)^\s+{re.escape(key)}\s+=\s+(\S+)", output)
        if match:
            values[key] = match.group(1)
    natoms = re.search(r"(?m)^\s+natoms\s+=\s+(\d+)", output)
    xtc_groups = re.search(r"(?m)^grp\[Compressed X\]\s+nr=(\d+), name=\[(.*)\]", output)
    xtc_atoms = None  # all
    if xtc_groups and int(xtc_groups.group(1)) > 1:
        # Per-atom group numbers: one column per group type, in the order of the grp[...] lines;
        # the last group ("rest") is not written.
        column = re.findall(r"(?m)^grp\[(.*?)\s*\]", output).index("Compressed X")
        rest = int(xtc_groups.group(1)) - 1
        rows = re.findall(r"(?m)^\s+groupnr\[\s*(\d+)\]\s+=\s+(.*)$", output)
        xtc_atoms = [int(atom) for atom, numbers in rows if int(numbers.split()[column]) != rest]
    info = {
        "integrator": values.get("integrator"),
        "tinit_ps": float(values.get("tinit", 0)),
        "dt_ps": float(values["dt"]),
        "nsteps": int(values["nsteps"]),
        "init_step": int(values.get("init-step", 0)),
        "nstxout_compressed": int(values.get("nstxout-compressed", 0)),
        "nstenergy": int(values.get("nstenergy", 0)),
        "pcoupl": values.get("pcoupl"),
        "ld_seed": int(values["ld-seed"]) if "ld-seed" in values else None,
        "atoms": int(natoms.group(1)) if natoms else None,
        "compressed_x_groups": xtc_groups.group(2).split() if xtc_groups else None,
        "xtc_atoms": xtc_atoms,
    }
    return info


# --------------------------------------------------------------------------- segments


def _ns_per_day(steps: int, timestep_ps: float, seconds: float) -> float | None:
    if steps <= 0 or seconds <= 0:
        return None
    return round(steps * timestep_ps / 1000.0 / seconds * 86400.0, 3)


def _set_parent_death_signal():  # pragma: no cover - runs in the child before exec
    """mdrun runs in its own session (so that a Ctrl-C reaches it once, through us);
    if this process dies (kill -9), the kernel kills mdrun too."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class _MdrunProcess:
    """One mdrun, watched: stop signals and the deadline become one SIGTERM to mdrun,
    which then stops at the next neighbour-search step with a checkpoint."""

    def __init__(self, options: list, cwd: Path, threads: int | None, log_path: Path):
        self.argv = gmx_argv("mdrun", options)
        self.cwd = cwd
        self.log_path = log_path
        self.stop_reason: str | None = None
        self._output = open(log_path, "a")  # noqa: SIM115 - mdrun writes it for the process's life; closed in wait()
        self._output.write(f"$ {' '.join(self.argv)}\n")
        self._output.flush()
        try:
            self.process = subprocess.Popen(
                self.argv,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=self._output,
                stderr=subprocess.STDOUT,
                env=_environment(threads),
                start_new_session=True,
                preexec_fn=_set_parent_death_signal,
            )
        except OSError:
            self._output.close()
            raise GromacsError(
                f"gmx mdrun: {gmx_problem() or f'the GROMACS program {GMX!r} could not be run'}"
            ) from None
        self._signalled = False

    def stop(self, reason: str) -> None:
        if not self._signalled and self.process.poll() is None:
            self.stop_reason = reason
            self.process.send_signal(signal.SIGTERM)
            self._signalled = True

    def wait(self, deadline: float | None, requested) -> int:
        try:
            while True:
                try:
                    return self.process.wait(timeout=0.25)
                except subprocess.TimeoutExpired:
                    pass
                if requested():
                    self.stop(f"signal {requested()}")
                if deadline is not None and time.time() > deadline:
                    # -maxh should have stopped it; this is the backstop.
                    self.stop("time budget: deadline reached")
        finally:
            self._output.close()


def run_segment(
    tpr: Path,
    start_cpt: Path | None,
    work_dir: Path,
    segment_index: int,
    protocol: Protocol,
    threads: int | None = None,
    deadline: float | None = None,
    pin_offset: int | None = None,
    gpu: int | None = None,
    name: str = "segment",
) -> tuple[bool, dict]:
    """Run (or resume, or recognise as done) segment ``segment_index`` in ``work_dir``.

    ``tpr``: the simulation's production input (``system.tpr``, a replica's tpr or a
    lab's own); ``start_cpt``: where the segment starts (setup's ``start.cpt`` or the
    previous segment's ``final_state.cpt``; None only for segment 0 of a lab's tpr, which
    starts from the tpr's own state). ``deadline``: epoch seconds by which mdrun must
    have stopped. Returns ``(True, info)`` when the segment is complete (outputs
    ``trajectory.xtc``, ``energies.csv``, ``final_state.cpt``, ``segment.json`` in
    ``work_dir``), ``(False, {"step", "reason"})`` when it stopped early with its
    progress checkpointed: the same call continues it exactly."""
    work = Path(work_dir).absolute()
    work.mkdir(parents=True, exist_ok=True)
    with sole_runner(work, name, segment_index):
        try:
            return _run_segment(tpr, start_cpt, work, segment_index, protocol, threads, deadline, pin_offset, gpu, name)
        finally:
            withdraw_runner(work)


def _run_segment(
    tpr: Path,
    start_cpt: Path | None,
    work: Path,
    segment_index: int,
    protocol: Protocol,
    threads: int | None,
    deadline: float | None,
    pin_offset: int | None,
    gpu: int | None,
    name: str,
) -> tuple[bool, dict]:
    tpr = Path(tpr).absolute()
    start_cpt = Path(start_cpt).absolute() if start_cpt is not None else None
    if start_cpt is None and segment_index != 0:
        raise SegmentError(f"{name} segment {segment_index}: needs the previous segment's final_state.cpt")
    start_sha = sha256_file(tpr) + ":" + (sha256_file(start_cpt) if start_cpt else "-")
    done = _completed_info(work, start_sha)
    if done is not None:
        log.info("%s segment %d is already complete in %s", name, segment_index, work)
        return True, done

    marker_path = work / "run.json"
    marker = _read_json(marker_path)
    if marker.get("start_sha256") != start_sha or marker.get("segment") != segment_index:
        marker = {}
    gmx_log = work / "gromacs.log"
    parameters = marker.get("tpr") or inspect_tpr(tpr, cwd=work)
    first = parameters["init_step"] + segment_index * protocol.segment_steps
    last = first + protocol.segment_steps
    _check_tpr_matches(parameters, protocol, tpr, name)
    if start_cpt is not None:
        header = checkpoint_header(start_cpt)
        if header is None:
            raise SegmentError(f"{name} segment {segment_index}: {start_cpt} is not a GROMACS checkpoint")
        if header["step"] != first:
            raise SegmentError(
                f"{name} segment {segment_index}: {start_cpt} is at step {header['step']}, but the "
                f"segment starts at step {first}"
            )
    seg_tpr = work / "segment.tpr"
    if not marker or not seg_tpr.exists():
        # A fresh start: nothing of an earlier attempt (or of another start) is kept.
        _clear_runs(work, keep_tpr=False)
        for path in (work / n for n in (*OUTPUT_FILES, "mdrun.log")):
            path.unlink(missing_ok=True)
        run_gmx(
            "convert-tpr",
            [("-s", tpr), ("-nsteps", last - parameters["init_step"]), ("-o", seg_tpr)],
            cwd=work,
            subject=tpr,
            log_file=gmx_log,
        )
        marker = {
            "segment": segment_index,
            "start_sha256": start_sha,
            "tpr": parameters,
            "first_step": first,
            "last_step": last,
            "history": [],
        }
        atomic_write_json(marker_path, marker)
    history = marker["history"]
    if marker.get("running"):
        # The previous run was killed with its wrapper (kill -9, node failure).
        killed = marker.pop("running")
        reached = own_checkpoint_step(work)
        history.append(
            {
                **killed,
                "stop_reason": "killed (no record of its end)",
                "to_step": reached if reached is not None else killed["from_step"],
            }
        )

    stop_reason = None
    redone_end = False
    announce_runner(work)
    with StopRequest() as stop:
        while True:
            resume = _choose_resume(work, first, last)
            if resume and resume[1] >= last:
                if _spliced_outputs(work, parameters, first, last) is not None:
                    break
                if redone_end:
                    raise SegmentError(
                        f"{name} segment {segment_index}: mdrun reached step {last} but its "
                        f"trajectory or energy file lacks frames of steps {first}-{last}; see {gmx_log}"
                    )
                redone_end = True
                # Killed while mdrun was finishing: redo the end from the previous checkpoint.
                previous = checkpoint_header(work / "segment_prev.cpt")
                if previous and first <= previous["step"] < last:
                    resume = (work / "segment_prev.cpt", previous["step"])
                else:
                    resume = None
            if resume is None:
                _clear_runs(work)
            step = resume[1] if resume else first
            if stop.signal_name:
                stop_reason = f"signal {stop.signal_name}"
                break
            # Every run writes its own part files (segment.partNNNN.*); the finished segment
            # is spliced from them (see _spliced_outputs). No -noconfout: mdrun writes its
            # final checkpoint only together with the final coordinates.
            options = [("-s", seg_tpr), ("-deffnm", "segment")]
            if resume or start_cpt is not None:
                options += [("-cpi", resume[0] if resume else start_cpt), ("-noappend", True)]
            calibrating = "ns_per_day_measured" not in marker
            steps_per_checkpoint = protocol.checkpoint_steps
            if calibrating:
                # One checkpoint interval first, ending with a checkpoint: measures the speed.
                end = min(last, step + steps_per_checkpoint)
                options.append(("-nsteps", end - step))  # counted from where the run starts
                options.append(("-cpt", 15.0))  # GROMACS's default, until the speed is known
            else:
                minutes = (
                    max(
                        MIN_CHECKPOINT_SECONDS,
                        protocol.checkpoint_interval_ps / 1000.0 / marker["ns_per_day_measured"] * 86400.0,
                    )
                    / 60.0
                )
                options.append(("-cpt", round(minutes, 4)))
                end = last
            mdrun_deadline = None
            if deadline is not None:
                remaining = deadline - time.time()
                margin = min(60.0, max(5.0, 0.05 * remaining))
                if remaining - margin < 1.0:
                    stop_reason = f"time budget: {max(0.0, remaining):.0f} s left"
                    break
                options.append(("-maxh", round((remaining - margin) / 3600.0, 6)))
                mdrun_deadline = deadline - margin / 2
            options += _thread_options(threads, pin_offset, gpu)
            run = {
                "host": host_platform.node(),
                "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                "slot": current_slot(),
                "platform": "GROMACS " + (f"GPU {gpu}" if gpu is not None else "CPU"),
                "threads": threads,
                "pin_offset": pin_offset,
                "from_step": step,
                "started_at": iso_time(time.time()),
            }
            marker["running"] = run
            atomic_write_json(marker_path, marker)
            began = time.time()
            log_offset = gmx_log.stat().st_size if gmx_log.exists() else 0
            mdrun = _MdrunProcess(options, work, threads, gmx_log)
            returncode = mdrun.wait(mdrun_deadline, lambda: stop.signal_name)
            elapsed = time.time() - began
            reached = own_checkpoint_step(work)
            reached = step if reached is None else reached
            run.update(
                {
                    "to_step": reached,
                    "wall_seconds": round(elapsed, 2),
                    "ns_per_day": _ns_per_day(reached - step, protocol.timestep_ps, elapsed),
                }
            )
            marker.pop("running", None)
            output = _tail(gmx_log, start=log_offset)
            # mdrun stopped by a signal (ours, or the scheduler's) checkpoints, then exits 1.
            signalled = re.search(r"Received the (?:second )?(?:TERM|INT|INT/TERM) signal", output)
            if returncode > 0 and signalled:
                mdrun.stop_reason = mdrun.stop_reason or "signal to mdrun"
                returncode = 0
            if returncode != 0:
                run["stop_reason"] = (
                    f"killed by {signal.Signals(-returncode).name}"
                    if returncode < 0
                    else f"mdrun failed (exit status {returncode})"
                )
                history.append(run)
                atomic_write_json(marker_path, marker)
                message = failure_message("mdrun", seg_tpr, "" if returncode < 0 else output, gmx_log, returncode)
                raise GromacsError(
                    f"{name} segment {segment_index} (steps {first}-{last}): {message}; progress "
                    f"up to the last checkpoint (step {reached}) is kept, run again to continue"
                )
            if calibrating and reached > step and elapsed > 0:
                marker["ns_per_day_measured"] = _mdrun_performance(work) or _ns_per_day(
                    reached - step, protocol.timestep_ps, elapsed
                )
            if reached < end:
                run["stop_reason"] = mdrun.stop_reason or _mdrun_stop_reason(gmx_log) or "stopped early"
                history.append(run)
                atomic_write_json(marker_path, marker)
                stop_reason = run["stop_reason"]
                break
            run["stop_reason"] = None
            history.append(run)
            atomic_write_json(marker_path, marker)
    if stop_reason is not None:
        reached = own_checkpoint_step(work) or first
        log.warning(
            "%s segment %d paused at step %d of %d (%s); progress is saved, run again to continue",
            name,
            segment_index,
            reached,
            last,
            stop_reason,
        )
        return False, {"step": reached, "reason": stop_reason}
    info = _finish(work, marker, parameters, protocol, start_sha, first, last, name, segment_index)
    return True, info


def _check_tpr_matches(
    parameters: dict, protocol: Protocol, tpr: Path, name: str, error: type[Exception] = SegmentError
) -> None:
    problems = []
    if abs(parameters["dt_ps"] - protocol.timestep_ps) > 1e-9:
        problems.append(f"its timestep is {parameters['dt_ps'] * 1000:g} fs, the protocol's {protocol.timestep_fs} fs")
    if parameters["nstxout_compressed"] != protocol.frame_steps:
        problems.append(
            f"it writes a frame every {parameters['nstxout_compressed']} steps (nstxout-compressed), "
            f"the protocol every {protocol.frame_steps}"
        )
    if parameters["nstenergy"] <= 0 or protocol.frame_steps % parameters["nstenergy"]:
        problems.append(
            f"its nstenergy ({parameters['nstenergy']}) does not divide the frame interval "
            f"({protocol.frame_steps} steps)"
        )
    if parameters["init_step"] % protocol.frame_steps:
        problems.append(
            f"its init-step ({parameters['init_step']}) is not a multiple of the frame interval "
            f"({protocol.frame_steps} steps)"
        )
    if problems:
        raise error(
            f"{name}: {tpr} does not match the protocol: {'; '.join(problems)} (set timestep_fs and "
            "frame_interval_ps for this system to the inputs' values, as systems-table columns)"
        )


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _completed_info(work: Path, start_sha: str) -> dict | None:
    info = _read_json(work / "segment.json")
    if not info or info.get("start_sha256") != start_sha:
        return None
    if not all((work / name).exists() for name in OUTPUT_FILES):
        return None
    return info


def own_checkpoint_step(work: Path) -> int | None:
    header = checkpoint_header(work / "segment.cpt")
    return header["step"] if header else None


def _choose_resume(work: Path, first: int, last: int):
    """The segment's own checkpoint to continue from, as (path, step), or None (then the
    segment starts from its start checkpoint). A checkpoint at the last step whose
    outputs are not all on disk (killed while mdrun was finishing) is passed over for
    the previous one: GROMACS then truncates the outputs to it and redoes the rest."""
    for candidate in (work / "segment.cpt", work / "segment_prev.cpt"):
        header = checkpoint_header(candidate)
        if header is None or not first <= header["step"] <= last:
            continue
        return candidate, header["step"]
    return None


_MDRUN_FILE = re.compile(r"^segment(\.part\d+)?\.(xtc|edr|log|gro|trr|cpt|tpr)$|^segment_prev\.cpt$")


def _clear_runs(work: Path, keep_tpr: bool = True) -> None:
    """Remove mdrun's files (of an earlier attempt, or of a finished segment)."""
    for path in work.iterdir():
        if _MDRUN_FILE.match(path.name) and not (keep_tpr and path.name == "segment.tpr"):
            path.unlink(missing_ok=True)


def _parts(work: Path) -> list[tuple[int, dict[str, Path]]]:
    """mdrun's output files per simulation part, oldest first: ``segment.xtc`` (part 1,
    a run that started from the tpr) and ``segment.partNNNN.xtc`` (runs that started
    from a checkpoint), with their ``.edr``."""
    parts: dict[int, dict[str, Path]] = {}
    for path in work.iterdir():
        match = re.match(r"^segment(?:\.part(\d+))?\.(xtc|edr)$", path.name)
        if match:
            parts.setdefault(int(match.group(1) or 1), {})[match.group(2)] = path
    return sorted(parts.items())


def _xtc_frames(path: Path) -> list[tuple[int, int, float]]:
    """(offset, step, time) of every complete frame."""
    frames = []
    with open(path, "rb") as handle:
        for offset in xtc.frame_offsets(path):
            handle.seek(offset)
            _, _, step, time_ps, *_ = xtc._HEADER.unpack(handle.read(xtc._HEADER.size))
            frames.append((offset, step, time_ps))
    return frames


def _edr_frames(path: Path) -> tuple[list[str], list[tuple[int, float, list[float]]]]:
    """Term names and (step, time, values) of every complete frame of an .edr file
    (a run killed while writing leaves a torn last frame: it is left out)."""
    from pyedr.pyedr import EDRFile

    edr = EDRFile(str(path))
    names = [nm.name for nm in edr.nms]
    frames = []
    iterator = iter(edr)
    while True:
        try:
            frame = next(iterator)
        except StopIteration:
            break
        except Exception:  # noqa: BLE001 - torn last frame
            break
        if frame.ener:
            frames.append((int(frame.step), float(frame.t), [e.e for e in frame.ener]))
    return names, frames


def _spliced_outputs(work: Path, parameters: dict, first: int, last: int):
    """The segment's frames and energy rows, spliced from mdrun's part files, or None
    if some are missing.

    Each run continues from a checkpoint and writes its own part, starting with the
    frame at its start step; what an earlier part holds from that step on was written
    after the checkpoint by a run that was then killed, and is replaced (what ``gmx
    trjcat`` does). Only frames at steps first+F .. last are kept: the frame at the
    start step is the previous segment's last."""
    frame_steps = parameters["nstxout_compressed"]
    expected = list(range(first + frame_steps, last + 1, frame_steps))
    frames: list[tuple[int, Path, int, int]] = []  # step, file, offset, length
    rows: list[tuple[int, dict]] = []  # step, values
    for _, part in _parts(work):
        if "xtc" in part:
            found = []
            offsets = _xtc_frames(part["xtc"])
            ends = [o for o, _, _ in offsets[1:]] + [xtc._end_of_frame(part["xtc"], [o for o, _, _ in offsets])]
            for (offset, stored_step, _), end in zip(offsets, ends[: len(offsets)], strict=True):
                # XTC keeps the step as a 32-bit integer (its time is a float, too coarse
                # for long simulations): recover the full step from the segment's range.
                step = first + (stored_step - first) % 2**32
                if (step - first) % frame_steps == 0:
                    found.append((step, part["xtc"], offset, end - offset))
            if found:
                frames = [f for f in frames if f[0] < found[0][0]] + found
        if "edr" in part:
            try:
                names, energy_frames = _edr_frames(part["edr"])
            except Exception:  # noqa: BLE001 - an empty or unreadable part: nothing from it
                continue
            found = [
                (step, dict(zip(names, values, strict=False)))
                for step, _, values in energy_frames
                if (step - first) % frame_steps == 0
            ]
            if found:
                rows = [r for r in rows if r[0] < found[0][0]] + found
    frames = [f for f in frames if first < f[0] <= last]
    rows = [r for r in rows if first < r[0] <= last]
    if [f[0] for f in frames] != expected or [r[0] for r in rows] != expected:
        return None
    return frames, rows


def _finish(
    work: Path,
    marker: dict,
    parameters: dict,
    protocol: Protocol,
    start_sha: str,
    first: int,
    last: int,
    name: str,
    segment_index: int,
) -> dict:
    spliced = _spliced_outputs(work, parameters, first, last)
    if spliced is None:
        raise SegmentError(
            f"{name} segment {segment_index}: mdrun finished but its trajectory or energy files do "
            f"not have every frame of steps {first}-{last}; see {work / 'gromacs.log'}"
        )
    kept, rows = spliced
    _write_frames(work / "trajectory.xtc", kept)
    dt, tinit = parameters["dt_ps"], parameters["tinit_ps"]
    lines = [",".join(ENERGY_COLUMNS)]
    for step, energies in rows:
        values = []
        for column in ENERGY_COLUMNS[2:]:
            term, factor = EDR_TERMS[column]
            values.append(f"{float(energies[term]) * factor:.8g}" if term in energies else "")
        lines.append(",".join([str(step), f"{tinit + step * dt:.6f}"] + values))
    atomic_write_text(work / "energies.csv", "\n".join(lines) + "\n")
    final = work / "segment.cpt"
    header = checkpoint_header(final)
    if header is None or header["step"] != last:
        raise SegmentError(f"{name} segment {segment_index}: the final checkpoint is not at step {last}")
    atomic_write_bytes(work / "final_state.cpt", final.read_bytes())
    history = marker["history"]
    total_wall = sum(run.get("wall_seconds") or 0 for run in history)
    info = {
        "simulation": name,
        "segment": segment_index,
        "engine": "gromacs",
        "first_step": first,
        "last_step": last,
        "timestep_fs": protocol.timestep_fs,
        "time_start_ps": round(tinit + first * dt, 6),
        "time_end_ps": round(tinit + last * dt, 6),
        "simulated_ns": round((last - first) * dt / 1000.0, 9),
        "frames": len(kept),
        "frame_interval_ps": protocol.frame_interval_ps,
        "platform": history[-1]["platform"] if history else None,
        "ns_per_day": _ns_per_day(last - first, dt, total_wall),
        "checkpoint_minutes": round(
            max(
                MIN_CHECKPOINT_SECONDS,
                protocol.checkpoint_interval_ps / 1000.0 / marker["ns_per_day_measured"] * 86400.0,
            )
            / 60.0,
            4,
        )
        if marker.get("ns_per_day_measured")
        else None,
        "runs": history,
        "start_sha256": start_sha,
        "gmx_version": available(),
        "finished_at": iso_time(time.time()),
        **clock(work),
    }
    atomic_write_json(work / "segment.json", info)
    # mdrun's own files are no longer needed; keep its logs, in order, as one.
    with open(work / "mdrun.log.tmp", "wb") as handle:
        for path in sorted(work.glob("segment*.log"), key=lambda p: int(re.sub(r"\D", "", p.name) or 1)):
            handle.write(path.read_bytes())
    os.replace(work / "mdrun.log.tmp", work / "mdrun.log")
    _clear_runs(work, keep_tpr=False)
    (work / "run.json").unlink(missing_ok=True)
    log.info(
        "%s segment %d complete: %d frames, %.1f ns/day (GROMACS)",
        name,
        segment_index,
        len(kept),
        info["ns_per_day"] or 0,
    )
    return info


def _write_frames(path: Path, frames) -> None:
    """Copy XTC frames (file, offset, length) into one file, atomically."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as out:
        for _, source, offset, length in frames:
            with open(source, "rb") as handle:
                handle.seek(offset)
                out.write(handle.read(length))
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def _tail(path: Path, size: int = 20000, start: int = 0) -> str:
    with open(path, "rb") as handle:
        handle.seek(max(start, path.stat().st_size - size))
        return handle.read().decode("utf-8", "replace")


def _mdrun_performance(work: Path) -> float | None:
    """ns/day of the last mdrun, from its log (without start-up time)."""
    logs = sorted(work.glob("segment*.log"))
    if not logs:
        return None
    found = re.findall(r"(?m)^Performance:\s+([\d.]+)", _tail(logs[-1]))
    return float(found[-1]) if found else None


def _mdrun_stop_reason(gmx_log: Path) -> str | None:
    text = _tail(gmx_log)
    if "Run time exceeded" in text:
        return "time budget (-maxh)"
    if re.search(r"Received the (?:second )?(?:TERM|INT|INT/TERM) signal", text):
        return "signal to mdrun"
    return None


# --------------------------------------------------------------------------- a lab's own inputs


def import_inputs(
    tpr: Path | None = None,
    gro: Path | None = None,
    top: Path | None = None,
    mdp: Path | None = None,
    *,
    out_dir: Path,
    ndx: Path | None = None,
    protocol: Protocol | None = None,
) -> dict:
    """A lab's own GROMACS inputs as ``out_dir/system.tpr``: a ``.tpr`` used as given, or
    ``.gro`` + ``.top`` + ``.mdp`` (and an optional index ``ndx``) through grompp. A bad
    file fails in one line naming it (grompp's error line). Also writes
    ``topology.pdb`` and ``trajectory_topology.pdb`` and returns the run parameters
    (timestep, frame interval...). With a ``protocol``, the inputs must match its
    timestep and frame interval (one line naming the file and the keys to set).
    ``.gro`` + ``.top`` + ``.mdp`` are recorded (``own_inputs.json``, and a copy of the
    .mdp) so that :func:`replica_tpr` can make each replica's tpr with its own seeds."""
    out = Path(out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    gmx_log = out / "gromacs.log"
    if tpr is not None:
        if any(x is not None for x in (gro, top, mdp, ndx)):
            raise CampaignError("give either a .tpr or .gro + .top + .mdp, not both")
        tpr = Path(tpr).absolute()
        if not tpr.is_file():
            raise CampaignError(f"GROMACS input '{tpr}' does not exist")
        shutil.copy2(tpr, out / "system.tpr")
        source = {"tpr": str(tpr)}
    else:
        missing = [label for label, value in (("gro", gro), ("top", top), ("mdp", mdp)) if value is None]
        if missing:
            raise CampaignError(f"GROMACS inputs: {', '.join(missing)} missing (give a .tpr, or .gro + .top + .mdp)")
        files = {"gro": Path(gro).absolute(), "top": Path(top).absolute(), "mdp": Path(mdp).absolute()}
        if ndx is not None:
            files["ndx"] = Path(ndx).absolute()
        for label, path in files.items():
            if not path.is_file():
                raise CampaignError(f"GROMACS input '{path}' ({label}) does not exist")
        options = [
            ("-f", files["mdp"]),
            ("-c", files["gro"]),
            ("-p", files["top"]),
            ("-o", out / "system.tpr"),
            ("-po", out / "mdout.mdp"),
            ("-maxwarn", 0),
        ]
        if "ndx" in files:
            options.append(("-n", files["ndx"]))
        # grompp runs next to the topology, so its relative #includes resolve as the lab's do.
        output = run_gmx(
            "grompp",
            options,
            cwd=files["top"].parent,
            subject=_grompp_subject(files),
            error=CampaignError,
            log_file=gmx_log,
        )
        if re.search(r"(?m)^ERROR \d+", output):  # pragma: no cover - grompp exits non-zero then
            raise CampaignError(failure_message("grompp", files["mdp"], output, gmx_log))
        source = {k: str(v) for k, v in files.items()}
        shutil.copyfile(files["mdp"], out / OWN_MDP)
        atomic_write_json(out / OWN_INPUTS, source)
    parameters = inspect_tpr(out / "system.tpr", cwd=out)
    if protocol is not None:
        _check_tpr_matches(
            parameters, protocol, Path(source.get("tpr") or source["mdp"]), "its inputs", error=CampaignError
        )
    if parameters["integrator"] not in ("md", "sd", "bd", "md-vv", "md-vv-avek"):
        raise CampaignError(f"GROMACS input {source}: integrator '{parameters['integrator']}' is not dynamics")
    if parameters["nstxout_compressed"] <= 0:
        raise CampaignError(
            f"GROMACS input {source}: nstxout-compressed is 0, so mdrun would write no XTC "
            "trajectory; set it to the frame interval in steps"
        )
    if parameters["nstenergy"] <= 0 or parameters["nstxout_compressed"] % parameters["nstenergy"]:
        raise CampaignError(
            f"GROMACS input {source}: nstenergy ({parameters['nstenergy']}) must divide "
            f"nstxout-compressed ({parameters['nstxout_compressed']}) so that every frame has "
            "an energy row"
        )
    run_gmx("editconf", [("-f", out / "system.tpr"), ("-o", out / "topology.pdb")], cwd=out, log_file=gmx_log)
    # The atoms mdrun writes to the XTC (compressed-x-grps), for reading the trajectory.
    subset = parameters["xtc_atoms"]
    if subset is None:
        shutil.copy2(out / "topology.pdb", out / "trajectory_topology.pdb")
    else:
        _write_index(out / "trajectory.ndx", {"Trajectory": subset})
        run_gmx(
            "trjconv",
            [
                ("-s", out / "system.tpr"),
                ("-f", out / "topology.pdb"),
                ("-n", out / "trajectory.ndx"),
                ("-o", out / "trajectory_topology.pdb"),
            ],
            cwd=out,
            stdin="Trajectory\n",
            log_file=gmx_log,
        )
    parameters = {k: v for k, v in parameters.items() if k != "xtc_atoms"}
    return {
        "engine": "gromacs",
        "source": source,
        "gmx_version": available(),
        **parameters,
        "trajectory_atoms": len(subset) if subset is not None else parameters["atoms"],
        "timestep_fs": round(parameters["dt_ps"] * 1000.0, 6),
        "frame_interval_ps": round(parameters["nstxout_compressed"] * parameters["dt_ps"], 6),
    }


def _grompp_subject(files: dict) -> str:
    return f"{files['mdp']} / {files['top']} / {files['gro']}"


# --------------------------------------------------------------------------- command line


def main(argv=None) -> int:
    """Run one GROMACS segment outside Snakemake (debugging, benchmarks, tests):

    python -m mdcampaign.gromacs --tpr system.tpr --start start.cpt --work work/ \\
        --protocol protocol.json [--segment K] [--threads N] [--budget-seconds S]
    Exit status: 0 complete, EXIT_PAUSED (progress saved), EXIT_FAILED.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mdcampaign.gromacs", description=main.__doc__)
    parser.add_argument("--tpr", required=True, type=Path)
    parser.add_argument("--start", type=Path, default=None)
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--protocol", required=True, type=Path, help="JSON file with every protocol key")
    parser.add_argument("--segment", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--pin-offset", type=int, default=None)
    parser.add_argument("--gpu", type=int, default=None)
    parser.add_argument("--budget-seconds", type=float, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    protocol = Protocol(**json.loads(args.protocol.read_text()))
    deadline = time.time() + args.budget_seconds if args.budget_seconds else None
    try:
        complete, _ = run_segment(
            args.tpr, args.start, args.work, args.segment, protocol, args.threads, deadline, args.pin_offset, args.gpu
        )
    except (SegmentError, CampaignError) as error:
        log.error("%s", error)
        return EXIT_FAILED
    return 0 if complete else EXIT_PAUSED


if __name__ == "__main__":
    raise SystemExit(main())
