"""The seam between the workflow and the MD engines.

Rules, jobs, packing, status and doctor call an :class:`Engine` (from :func:`engine_for`)
and never ask which engine it is: setting a system up, where its segment 0 starts, running
a segment, how far an interrupted segment got, whether the engine is installed. What an
engine cannot do with a protocol is checked with the campaign (``forcefields.ENGINE_PROBLEMS``,
through ``Protocol.problems``), before anything runs. Each
engine's own module (``segment``/``prepare`` for OpenMM, ``gromacs``) is imported only
when a job needs it, so that planning a campaign imports neither engine.

An engine's file names (its system, its states) are in :data:`layout.ENGINE_FILES`;
everything else a segment writes is the same for all engines: ``trajectory.xtc`` with
absolute steps and times, ``energies.csv`` with the columns of
:data:`runs.ENERGY_COLUMNS`, ``segment.json``.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import layout
from .protocol import Protocol
from .runs import Outcome, SegmentTask
from .systems import LigandSpec

ENGINES = ("openmm", "gromacs")


class Engine:
    name: str

    @property
    def files(self) -> layout.EngineFiles:
        return layout.ENGINE_FILES[self.name]

    def version(self) -> str | None:
        """The installed engine's version, or None when it cannot run here."""
        raise NotImplementedError

    install_hint = ""

    def problem(self) -> str | None:
        """Why this engine cannot run here, in one line with the fix, or None."""
        return None if self.version() else f"{self.name} is not installed: {self.install_hint}"

    def prepare(
        self,
        inputs: dict[str, Path],
        protocol: Protocol,
        out_dir: Path,
        platform: str,
        threads: int,
        seed: int,
        ligand: LigandSpec | None = None,
    ) -> dict:
        """Set a system up in ``out_dir`` (files: layout.SETUP_OUTPUTS and this engine's
        system and, unless the system's own inputs carry it, setup state) from
        ``inputs`` (``structure``, or the lab's own inputs: System.own_inputs) and its
        ``ligand``, if any; returns what setup.json records."""
        raise NotImplementedError

    def simulation_system(self, setup_dir: Path, seed: int, work_dir: Path) -> Path:
        """The system file a new simulation (replica) pins, made from setup's."""
        return setup_dir / self.files.system

    def setup_state(self, setup_dir: Path) -> Path | None:
        """Where segment 0 starts; None: from the system file's own state."""
        return setup_dir / self.files.setup_state

    def run_segment(self, task: SegmentTask) -> Outcome:
        raise NotImplementedError

    def checkpoint_step(self, work_dir: Path) -> int | None:
        """The step an interrupted segment's newest checkpoint is at, if any (cheap:
        `mdcampaign status` asks it for every running segment)."""
        raise NotImplementedError


class OpenMMEngine(Engine):
    name = "openmm"
    install_hint = "pip install openmm (or conda install -c conda-forge openmm)"

    def version(self) -> str | None:
        try:
            import openmm
        except ImportError:
            return None
        return openmm.version.version

    def prepare(self, inputs, protocol, out_dir, platform, threads, seed, ligand=None) -> dict:
        from .prepare import prepare

        return prepare(inputs["structure"], protocol, out_dir, platform, threads, seed, ligand)

    def run_segment(self, task: SegmentTask) -> Outcome:
        from .segment import run_segment

        return run_segment(task)

    def checkpoint_step(self, work_dir: Path) -> int | None:
        from .segment import latest_checkpoint_header

        header = latest_checkpoint_header(work_dir)
        return header["step"] if header else None


class GromacsEngine(Engine):
    name = "gromacs"
    install_hint = (
        "install GROMACS: `apt install gromacs` (Debian/Ubuntu), `module load gromacs` (TACC and most "
        "clusters), or `conda install -c conda-forge gromacs`; or point MDCAMPAIGN_GMX at its gmx"
    )

    def version(self) -> str | None:
        from .gromacs import available

        return available()

    def problem(self) -> str | None:
        from .gromacs import gmx_problem

        return gmx_problem()

    def prepare(self, inputs, protocol, out_dir, platform, threads, seed, ligand=None) -> dict:
        from .gromacs import import_inputs, prepare

        if "structure" in inputs:
            return prepare(inputs["structure"], protocol, out_dir, threads, seed)
        return import_inputs(**inputs, out_dir=out_dir, protocol=protocol)

    def simulation_system(self, setup_dir: Path, seed: int, work_dir: Path) -> Path:
        """Replicas share the equilibrated state and differ by their random seeds, which
        a tpr holds: each simulation gets its own, made once (grompp) in its first
        segment's work folder. A lab's .tpr runs as given (one replica)."""
        from .gromacs import can_reseed, replica_tpr

        if not can_reseed(setup_dir):
            return setup_dir / self.files.system
        replica = work_dir / f"replica-{seed}.tpr"
        if not replica.exists():
            work_dir.mkdir(parents=True, exist_ok=True)
            partial = work_dir / f".replica-{seed}.partial.tpr"
            replica_tpr(setup_dir, seed, partial)
            os.replace(partial, replica)
        return replica

    def setup_state(self, setup_dir: Path) -> Path | None:
        state = setup_dir / self.files.setup_state
        return state if state.exists() else None  # a lab's own inputs start from their tpr

    def run_segment(self, task: SegmentTask) -> Outcome:
        from .gromacs import run_segment
        from .slots import slot_device

        complete, info = run_segment(
            task.system,
            task.start_state,
            task.work_dir,
            task.segment,
            task.protocol,
            threads=task.threads,
            deadline=task.deadline,
            gpu=slot_device(),
            name=task.name,
        )
        return Outcome(complete, info)

    def checkpoint_step(self, work_dir: Path) -> int | None:
        from .gromacs import own_checkpoint_step

        return own_checkpoint_step(work_dir)


_ENGINES = {engine.name: engine for engine in (OpenMMEngine(), GromacsEngine())}


def engine_for(name: str) -> Engine:
    return _ENGINES[name]
