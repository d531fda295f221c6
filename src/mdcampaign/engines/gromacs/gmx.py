"""Calling GROMACS's ``gmx``: the one module that builds its command lines. Every call
goes through :func:`gmx_argv` (never a shell, our options first, every path made
absolute so that no user value can be read as an option) and is run by :func:`run_gmx`
(or, for a segment's long mdrun, by the runner's process); a failure becomes one line
naming the gmx command, the file and gmx's own error line (grompp's ``ERROR 1 [file
x.mdp, line 3]: ...``, or the text after ``Fatal error:``). Also: which gmx runs here
(``MDCAMPAIGN_GMX``), mdrun's thread options, and what a .tpr and a checkpoint say."""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import struct
import subprocess
from pathlib import Path

from ...errors import SegmentError
from ...protocol import Protocol

GMX_VARIABLE = "MDCAMPAIGN_GMX"


GMX = os.environ.get(GMX_VARIABLE, "gmx")


# mdrun -reprod on CPUs: the same segment run twice gives identical frames (without it,
# a 2-thread run of 1000 atoms diverges from an identical one within picoseconds), for
# 0-10% of speed. GPU nonbonded kernels sum in a varying order either way.
REPRODUCIBLE_ON_CPU = True


CPT_MAGIC = 171817


_OPTION = re.compile(r"^-[a-z][a-z0-9_]*$")


_NUMBER = re.compile(r"^-?\d+(\.\d*)?([eE][-+]?\d+)?$")


class GromacsError(SegmentError):
    """A gmx command failed; the message is one line."""


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


def gmx_environment(threads: int | None = None) -> dict[str, str]:
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
            env=gmx_environment(threads),
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
            env=gmx_environment(),
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"{named} could not be run ({error})"
    match = re.search(r"GROMACS version:\s*(\S+)", result.stdout)
    if result.returncode != 0 or not match:
        said = error_line(result.stdout + result.stderr) or f"exit status {result.returncode}"
        return None, f"{named} does not run as gmx (`gmx --version`: {said})"
    return match.group(1), None


def thread_options(threads: int | None, pin_offset: int | None = None, gpu: int | None = None) -> list:
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


def write_index(path: Path, groups: dict[str, list[int]]) -> None:
    with open(path, "w") as handle:
        for name, indices in groups.items():
            handle.write(f"[ {name} ]\n")
            numbers = [str(i + 1) for i in indices]
            handle.writelines(" ".join(numbers[start : start + 15]) + "\n" for start in range(0, len(numbers), 15))


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


def check_tpr_matches(
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
